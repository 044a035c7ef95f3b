"""From domain events to agents' screens: cards first, customer data as soon as it is known.

:class:`PopService` is an event sink of the CTI service. It never waits: a card goes to the
agent's mailbox the moment the model says the phone rings, and the customer lookup (started
as soon as the caller's number is known, usually before any agent rings) enriches the card
when it returns, within its time budget (and tells the wallboard the caller's value tier:
:class:`CallerTiers`). When a call ends, it is written to the timeline of
the customer it was matched to, in the background; a queue call of that customer nobody
answered also becomes a callback for the queue (crm_sync.followups.file_missed_call).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from crm_sync.call_writes import record_calls
from crm_sync.followups import Followups
from crm_sync.store import CustomerStore, Lookup, StoreUnavailable
from crm_sync.workday import owed_calls
from cti.events import AgentRinging, CallEnded, CallerIdentified, CallQueued, DomainEvent
from cti.waits import wait_set
from screenpop.call_writer import CallWriter, EndedCall
from screenpop.cards import CardUpdate, PopBook, card_view
from screenpop.hub import Hub
from screenpop.links import PbxLinks

log = logging.getLogger(__name__)
REMEMBERED_CALLS = 20_000
WRITE_RETRY_FIRST, WRITE_RETRY_MAX = 1.0, 30.0  # seconds between attempts at a callback's write
T = TypeVar("T")


def _remember(memory: OrderedDict[tuple[str, str], T], key: tuple[str, str], value: T) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > REMEMBERED_CALLS:
        memory.popitem(last=False)


class WrapupControl(Protocol):
    """Keeps an agent from being offered calls while an outcome is owed (e.g. QueuePause)."""

    def hold(self, pbx: str, agent: str) -> None: ...

    def release(self, pbx: str, agent: str) -> None: ...

    def adopt(self, pbx: str, agent: str) -> None:
        """Take over the hold an earlier run placed, without placing it again."""


class MissingOutcomes(Protocol):
    """Told how many outcomes an agent still owes past the longest wrap-up (the wallboard:
    cti.board.Board), each time that changes."""

    def set_outcomes_missing(self, pbx: str, agent: str, count: int) -> None: ...


class CallerTiers(Protocol):
    """Told the value tier of each call's caller once the lookup knows it (the wallboard:
    cti.board.Board); None when the number matched nobody or several customers."""

    def set_caller(self, pbx: str, call_id: str, tier: str | None) -> None: ...


class PopService:
    def __init__(
        self,
        book: PopBook,
        hub: Hub,
        store: CustomerStore | None,
        *,
        clock: Callable[[], datetime],
        budget: float = 0.3,
        wrapup: WrapupControl | None = None,
        followups: Followups | None = None,
    ) -> None:
        self.book = book
        self.hub = hub
        self.store = store
        self.clock = clock
        self.budget = budget
        # number each call was looked up by, and the result: kept through wrap-up (when the
        # outcome is posted), the oldest forgotten first
        self._numbers: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lookups: OrderedDict[tuple[str, str], Lookup] = OrderedDict()
        # the customer the IVR identified (account number + PIN): wins over the number's
        self._by_ivr: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lookups_running: set[asyncio.Task[Any]] = set()
        self._looking: dict[tuple[str, str], asyncio.Task[Lookup | None]] = {}  # in flight
        self.calls = CallWriter(self._write_ended)  # finished calls, to the timeline
        self._writes: set[asyncio.Task[None]] = set()  # missed calls' callbacks
        self._closing = asyncio.Event()  # close(): writes waiting to retry give up
        self.wrapup = wrapup
        self._owed: set[tuple[str, str, str]] = set()  # (pbx, agent, call) in wrap-up
        self._released: set[tuple[str, str, str]] = set()  # owed, past the longest wrap-up
        self.followups = followups  # files callbacks for missed calls; None: none filed
        self.callers: CallerTiers | None = None  # the wallboard, told each caller's tier
        self.missing: MissingOutcomes | None = None  # the wallboard, told outcomes missing
        self.links = PbxLinks(hub)  # PBXs down, for the agents' pages (a state sink)
        # whether the service is behind a PBX's events (cti.service.CtiService.behind):
        # then lookups are skipped, cards are not
        self.behind: Callable[[str], bool] = lambda pbx: False
        self.lookups_skipped = 0
        self._skipped: OrderedDict[tuple[str, str], None] = OrderedDict()  # looked up later

    def publish(self, event: DomainEvent) -> None:
        """EventSink: update cards now; start a lookup or a timeline write in the background."""
        self.send(self.book.apply(event))
        key = (event.pbx, event.call_id)
        if key in self._skipped and not self.behind(event.pbx):  # caught up: look now
            del self._skipped[key]
            number = self._numbers.get(key)
            if self.store is not None and number and not isinstance(event, CallEnded):
                self._start_lookup(self.store, key, number)
        if isinstance(event, CallerIdentified | CallQueued | AgentRinging):
            number = event.caller_number
            if self.store is not None and number and self._numbers.get(key) != number:
                _remember(self._numbers, key, number)
                if self.behind(event.pbx):
                    self._skip_lookup(key, number)
                else:
                    self._start_lookup(self.store, key, number)
        elif isinstance(event, CallEnded):
            if self.store is not None:
                self._ended(self.store, key, event)
            self._forget_if_settled(key)

    def _ended(self, store: CustomerStore, key: tuple[str, str], event: CallEnded) -> None:
        """Write the ended call once its caller is known: a lookup still out (a short call)
        is waited for, so a known caller's call is not written as an unknown one's."""
        running = self._looking.get(key)
        if running is None:
            self._write_call(store, event, self._lookups.get(key))
            return

        def looked_up(task: asyncio.Task[Lookup | None]) -> None:
            result = None if task.cancelled() or task.exception() else task.result()
            self._write_call(store, event, self._lookups.get(key) or result)

        running.add_done_callback(looked_up)

    def _write_call(self, store: CustomerStore, event: CallEnded, lookup: Lookup | None) -> None:
        known = lookup is not None and len(lookup.cards) == 1
        # a call an agent took is kept even when nobody knows the caller: its row is what
        # lets a restarted service take the outcome the agent still owes
        if not (known or event.record.answered_by):
            return
        customer_id = lookup.cards[0].id if lookup is not None and known else None
        e164 = lookup.e164 if lookup is not None else None
        if not self.calls.add(EndedCall(customer_id, event.record, e164)):
            log.error(  # the store has been away for hours of calls: memory comes first
                "call %s not written: %d calls already wait for the store",
                event.call_id,
                self.calls.pending,
                extra={"call_id": event.call_id, "pbx": event.pbx},
            )

    @property
    def writes_pending(self) -> int:
        """Finished calls and callbacks not yet in the store."""
        return self.calls.pending + len(self._writes)

    def dismiss(self, pbx: str, call_id: str, agent: str) -> bool:
        """Close a wrap-up card from a call that ended while the agent was away; False if
        there is none to close."""
        updates = self.book.dismiss(pbx, call_id, agent)
        if updates is None:
            return False
        self.send(updates)
        self._forget_if_settled((pbx, call_id))
        return True

    def outcome_saved(self, pbx: str, call_id: str, agent: str) -> None:
        """The agent's outcome is committed: their wrap-up card closes."""
        self.send(self.book.outcome_saved(pbx, call_id, agent))
        self._forget_if_settled((pbx, call_id))

    def _forget_if_settled(self, key: tuple[str, str]) -> None:
        """Once the book has let go of a call, so do we (what the collector need not walk)."""
        if not self.book.knows(*key):
            for memory in (self._numbers, self._lookups, self._by_ivr, self._skipped):
                memory.pop(key, None)

    def send(self, updates: list[CardUpdate]) -> None:
        phones = self.store.phones if self.store is not None else None
        for update in updates:
            card = card_view(update.card, phones)
            self.hub.publish(update.agent, {"type": "card", "card": card})
            if self.wrapup is not None:
                self._track_wrapup(update)

    def ivr_learned(self, pbx: str, call_id: str, findings: dict[str, Any]) -> None:
        """What the IVR learned about a call (``ivr.walk.Findings.to_json()``) shows on its
        cards, so the agent never asks again. A customer it identified by account number
        becomes the call's customer, whatever the caller's number matched (nobody, several,
        someone else's phone)."""
        self.send(self.book.learned(pbx, call_id, findings))
        customer = findings.get("customer_id")
        key = (pbx, call_id)
        if self.store is None or not isinstance(customer, int) or key in self._by_ivr:
            return
        _remember(self._by_ivr, key, customer)
        lookup = self._lookups.get(key)
        if lookup is None or [card.id for card in lookup.cards] != [customer]:
            self._spawn(self._lookups_running, self._identified(self.store, key, customer))

    async def restore_wrapups(self, since: datetime) -> int:
        """After a restart: give back the wrap-up cards of calls that ended at ``since`` or
        later and still owe their outcome (the store's call rows), and own the agents'
        wrap-up pauses again, so a reconcile releases only agents who owe nothing. How many
        cards came back; 0 when the store does not answer (My day still lists them)."""
        if self.store is None:
            return 0
        try:
            owed = await owed_calls(self.store.sessions, since=since)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("wrap-ups owed before the restart not read: %s", exc)
            return 0
        restored = 0
        for call in owed:
            lookup = await self._stored_lookup(self.store, call.customer_id)
            updates = self.book.restore(
                call.pbx, call.call_id, call.agent, ended_at=call.ended_at.timestamp(),
                lookup=lookup,
            )  # fmt: skip
            if not updates:
                continue
            restored += 1
            if self.wrapup is not None:
                self._owed.add((call.pbx, call.agent, call.call_id))  # before send: held
                self.wrapup.adopt(call.pbx, call.agent)
            self.send(updates)
        if restored:
            log.info("%d wrap-ups owed before the restart are back on the agents' pages", restored)
        return restored

    async def _stored_lookup(self, store: CustomerStore, customer_id: int | None) -> Lookup | None:
        if customer_id is None:
            return None
        try:
            card = await store.card(customer_id, now=self.clock())
        except StoreUnavailable:
            return None
        return Lookup("", None, "found", (card,)) if card is not None else None

    def wrapup_expired(self, pbx: str, agent: str) -> None:
        """The agent's hold reached the longest wrap-up: they are released though outcomes
        are still owed. Their cards keep the outcome form and do not hold them again."""
        expired = {key for key in self._owed if key[:2] == (pbx, agent)}
        self._owed -= expired
        self._released |= expired
        self._tell_missing(pbx, agent)
        if self.wrapup is not None:
            self.wrapup.release(pbx, agent)
        for _, _, call_id in sorted(expired):
            self.send(self.book.release_hold(pbx, call_id, agent))

    def _track_wrapup(self, update: CardUpdate) -> None:
        """An agent is held from a card entering wrap-up until the last one closes.

        Every card that enters wrap-up holds again: the agent (or a supervisor) may have
        unpaused them while an earlier outcome was still owed, and the next call must not
        slip through (QueuePause of a paused member changes nothing in Asterisk). Only an
        agent with the page open is held: one who cannot record the outcome would otherwise
        be taken out of the queues without anybody noticing.
        """
        card = update.card
        key = (card.pbx, update.agent, card.call_id)
        if card.state == "closed" and key in self._released:
            self._released.discard(key)
            self._tell_missing(card.pbx, update.agent)
        seen = key in self._owed or key in self._released
        if card.state == "wrapup" and not seen and not card.away:
            if not self.hub.connected(update.agent):
                self.send(self.book.mark_away(card.pbx, card.call_id, update.agent))
                return
            self._owed.add(key)
            if self.wrapup is not None:
                self.wrapup.hold(card.pbx, update.agent)
        elif card.state == "closed" and key in self._owed:
            self._owed.discard(key)
            still = any(p == card.pbx and a == update.agent for p, a, _ in self._owed)
            if not still and self.wrapup is not None:
                self.wrapup.release(card.pbx, update.agent)

    def _tell_missing(self, pbx: str, agent: str) -> None:
        if self.missing is not None:
            count = sum(1 for p, a, _ in self._released if (p, a) == (pbx, agent))
            self.missing.set_outcomes_missing(pbx, agent, count)

    def _tell_tier(self, key: tuple[str, str], lookup: Lookup) -> None:
        if self.callers is not None:
            tier = lookup.cards[0].tier if len(lookup.cards) == 1 else None
            self.callers.set_caller(key[0], key[1], tier)

    def _skip_lookup(self, key: tuple[str, str], number: str) -> None:
        """Overload: the service is behind its PBX, and a lookup per call is the work that
        can go (the card cannot). The card says the caller was not looked up; the lookup
        runs at the call's next event (its answer) if the service has caught up by then."""
        self.lookups_skipped += 1
        _remember(self._skipped, key, None)
        e164 = self.store.phones.to_e164(number) if self.store is not None else None
        lookup = Lookup(number, e164, "skipped")
        _remember(self._lookups, key, lookup)
        self.send(self.book.enrich(key[0], key[1], lookup))

    def lookup_for(self, pbx: str, call_id: str) -> Lookup | None:
        return self._lookups.get((pbx, call_id))

    async def close(self) -> None:
        """Drop lookups in flight (nobody waits for them); let timeline writes finish (a write
        waiting for the store to come back tries once more, then is given up, logged)."""
        self._closing.set()
        for task in list(self._lookups_running):
            task.cancel()
        await asyncio.gather(*self._lookups_running, *self._writes, return_exceptions=True)
        await self.calls.close()  # with the calls ended meanwhile
        await asyncio.gather(*self._writes, return_exceptions=True)  # their callbacks
        if self.store is not None:
            await self.store.close()

    @staticmethod
    def _spawn(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _start_lookup(self, store: CustomerStore, key: tuple[str, str], number: str) -> None:
        task = asyncio.create_task(self._lookup(store, key, number))
        self._lookups_running.add(task)
        self._looking[key] = task

        def done(task: asyncio.Task[Lookup | None]) -> None:
            self._lookups_running.discard(task)
            if self._looking.get(key) is task:
                del self._looking[key]

        task.add_done_callback(done)

    async def _lookup(
        self, store: CustomerStore, key: tuple[str, str], number: str
    ) -> Lookup | None:
        """Look the caller up and show it on the call's cards; the result (for the call's
        write), or None when a newer lookup or the IVR's customer wins."""
        lookup = await store.lookup(number, now=self.clock(), budget=self.budget)
        if key not in self._numbers:
            return lookup  # the call is over and forgotten: only its write wants this
        if self._numbers[key] != number:
            return None  # the caller's number changed meanwhile; a newer lookup is running
        if key in self._by_ivr:
            return None  # the IVR identified the caller: that customer's card is (being) shown
        _remember(self._lookups, key, lookup)
        self._tell_tier(key, lookup)
        self.send(self.book.enrich(key[0], key[1], lookup))
        return lookup

    async def _identified(self, store: CustomerStore, key: tuple[str, str], customer: int) -> None:
        try:
            card = await store.card(customer, now=self.clock())
        except StoreUnavailable as exc:
            log.warning("card of customer %s (identified in the IVR) not read: %s", customer, exc)
            return
        if card is None:
            return
        number = self._numbers.get(key) or self.book.caller_number(*key) or ""
        lookup = Lookup(number, store.phones.to_e164(number) if number else None, "found", (card,))
        _remember(self._lookups, key, lookup)
        self._tell_tier(key, lookup)
        self.send(self.book.enrich(key[0], key[1], lookup))

    async def _write_ended(self, batch: list[EndedCall]) -> None:
        """CallWriter's write: the batch in one transaction, then, for a known customer's
        missed queue call, its callback (retried on its own while the store is away). A call
        must not vanish from the timeline, nor its outcome become impossible to record,
        because the database was restarting when it ended."""
        if self.store is None:
            return
        calls = [(call.customer_id, call.record) for call in batch]
        await record_calls(self.store.sessions, calls, now=self.clock())
        followups = self.followups
        if followups is None:
            return
        for call in batch:
            if call.customer_id is not None:
                self._spawn(self._writes, self._file_callback(followups, call))

    async def _file_callback(self, followups: Followups, call: EndedCall) -> None:
        customer_id, record = call.customer_id, call.record
        if customer_id is None:
            return
        await self._retrying(
            f"callback for missed call {record.call_id}",
            lambda: followups.file_missed_call(
                customer_id, record, number=call.number, now=self.clock()
            ),
            {"call_id": record.call_id, "pbx": record.pbx},
        )

    async def _retrying(
        self, what: str, write: Callable[[], Awaitable[object]], extra: dict[str, str]
    ) -> bool:
        """Run ``write`` until it succeeds, waiting longer between attempts (up to
        WRITE_RETRY_MAX); True once it did. At close, one last attempt, then it is given up."""
        delay = WRITE_RETRY_FIRST
        while True:
            try:
                await write()
                return True
            except (SQLAlchemyError, OSError) as exc:
                if self._closing.is_set():
                    log.error("%s not written, the service is stopping: %s", what, exc, extra=extra)
                    return False
                log.warning("%s not written (retry in %.0f s): %s", what, delay, exc, extra=extra)
            await wait_set(self._closing, delay)
            delay = min(delay * 2, WRITE_RETRY_MAX)
