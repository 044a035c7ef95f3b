"""Follow-ups as work items: who owns them, what is due, how a callback went, and how often
the center may call a customer.

Theory of operation
-------------------
A follow-up is an ``interactions`` row of kind ``followup``. Its ``owner`` is an agent id, or
``queue:<name>`` (any member of that queue may do it); ``due_at`` says when; ``status`` is its
state, ``result`` how it ended (closed) or how the last callback went (open)::

    open ──dial──▶ dialling ──reached──▶ closed (result reached)
     ▲                │
     └────────────────┘ no_answer | busy | failed | unknown | not_placed: stays open
    open | dialling ──close──▶ closed (result done | cancelled | no_answer)

``closed_at`` is when it ended; closed is final: a dial result that arrives after an agent
closed the follow-up by hand is kept on the call only. A follow-up left ``dialling`` longer
than the ring time and ``DIAL_GRACE`` lost its result (the service stopped mid-call): it may
be dialled or closed again, and that old call's result is recorded as ``unknown``.

Every callback is an outbound call on the customer's timeline (kind ``call``, direction
``outbound``), written when the dial starts, in the transaction that checks the contact rule
(:func:`contact_decision`). That transaction starts by locking the customer's row (a write
that changes nothing), so two agents dialling one customer at once cannot both pass the rule.
The call's ``call_id`` is the Uniqueid the Originate gives the channel
(``cti-cb-<follow-up id>-<random>``), hence the call id the call model reports for it, and its
``external_id`` is the one ``crm_sync.call_writes.record_call`` would use for that call: it is
on the timeline once.

The outbox (crm_sync.outbox) hears, each in the transaction of its change:
``followup.created`` (a missed call filed one), ``call.placed`` (a callback's result, once
known), ``followup.closed``. Starting a dial is not sent: the call it starts is, with its
result.

The work list is read a page at a time, in the order (due_at, id) with the undated last, by
keyset (:class:`Cursor`): a page is one range scan of the (kind, status, due_at) index, however
deep the agent has paged, and a follow-up done meanwhile shifts no other one out of view.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.models import Customer, Interaction, Phone
from crm_sync.outbox import enqueue
from crm_sync.timeline import followup_data
from cti.callbacks import DialResult
from cti.events import CallRecord
from cti.settings import FollowupSettings

QUEUE_OWNER = "queue:"
WORKING = ("open", "dialling")  # the states of work still to do
CLOSE_RESULTS = ("done", "cancelled", "no_answer")  # what an agent may close one with
DIAL_TEXT: dict[str, str] = {
    "reached": "the customer answered",
    "no_answer": "no answer",
    "busy": "busy",
    "failed": "the call failed",
    "unknown": "result unknown",
    "not_placed": "not placed",
}
CALL_PREFIX = "cti-cb-"  # the Uniqueid prefix of a callback's channel
OUT_PREFIX = "cti-out-"  # the Uniqueid prefix of a call placed from a customer's page
DIAL_GRACE = timedelta(seconds=60)  # past the ring time, a dial still running lost its result
PAGE = 50  # follow-ups per page of the work list
MAX_PAGE = 200
MAX_NOTE = 2000
MAX_AHEAD = timedelta(days=366)  # how far ahead a follow-up may be put off
# a missed queue call becomes a callback (CallRecord.outcome -> what the follow-up says)
MISSED: dict[str, str] = {
    "timeout": "not answered in {queue} (queue timeout)",
    "leave_empty": "not answered in {queue} (no agent available)",
    "unanswered": "not answered in {queue}",
}
ABANDONED = "hung up while waiting in {queue}"
_E164_IN_TEXT = re.compile(r"\+[1-9][0-9]{6,14}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FollowupError(Exception):
    """A follow-up change that was not made (nothing was written). ``kind``: ``missing`` (no
    such follow-up), ``conflict`` (its state does not allow it), ``invalid`` (bad input),
    ``refused`` (the contact rule); ``field`` names the bad input, if that was it."""

    def __init__(self, message: str, kind: str = "conflict", field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.field = field


@dataclass(frozen=True, slots=True)
class ContactDecision:
    """Whether the center may call the customer now; ``next_at`` when it may, if not."""

    allowed: bool
    placed: int  # calls placed to the customer inside the window
    limit: int
    next_at: datetime | None
    message: str


class ContactRefused(FollowupError):
    """The contact-frequency rule forbids calling this customer now."""

    def __init__(self, decision: ContactDecision) -> None:
        super().__init__(decision.message, "refused")
        self.decision = decision


@dataclass(frozen=True, slots=True)
class FollowupItem:
    """A follow-up as the work list shows it."""

    id: int
    customer_id: int
    customer_name: str
    number: str | None  # the E.164 number a callback dials
    title: str  # why
    body: str | None
    owner: str | None
    due_at: datetime | None
    state: str  # open | dialling | closed
    result: str | None
    overdue: bool
    created_at: datetime
    closed_at: datetime | None
    call_id: str | None  # the call it came from
    dialling_since: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer": {"id": self.customer_id, "name": self.customer_name},
            "number": self.number,
            "title": self.title,
            "body": self.body,
            "owner": self.owner,
            "due_at": _iso(self.due_at),
            "state": self.state,
            "result": self.result,
            "overdue": self.overdue,
            "created_at": _iso(self.created_at),
            "closed_at": _iso(self.closed_at),
            "call_id": self.call_id,
            "dialling_since": _iso(self.dialling_since),
        }


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of the work list ends: its last follow-up's (due_at, id); the next page
    starts after it. As text (``?after=``): ``<due in µs since the epoch>_<id>``, or
    ``none_<id>`` among the undated."""

    due_at: datetime | None
    id: int

    def text(self) -> str:
        if self.due_at is None:
            return f"none_{self.id}"
        return f"{(_utc(self.due_at) - _EPOCH) // timedelta(microseconds=1)}_{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Raises FollowupError (field ``after``) for text no page gave."""
        due, _, ident = text.partition("_")
        try:
            if not ident.isdigit() or not (due == "none" or due.lstrip("-").isdigit()):
                raise ValueError(text)
            at = None if due == "none" else _EPOCH + timedelta(microseconds=int(due))
            return cls(at, int(ident))
        except (ValueError, OverflowError) as exc:
            message = "after: the next value of the page before"
            raise FollowupError(message, "invalid", "after") from exc


@dataclass(frozen=True, slots=True)
class WorkPage:
    """One page of the work list; ``next`` is where the following page starts (None: last)."""

    items: list[FollowupItem]
    next: Cursor | None


@dataclass(frozen=True, slots=True)
class Dialling:
    """A call being placed: what the Originate needs, and what its result updates. A call an
    agent places from a customer's page has no follow-up (``followup_id`` None)."""

    followup_id: int | None
    customer_id: int
    customer_name: str
    owner: str | None
    number: str
    call_id: str
    pbx: str
    agent: str
    placed_at: datetime


@dataclass(frozen=True, slots=True)
class WorkCounts:
    """Follow-ups still to do, and how many of them are overdue: per queue, per agent."""

    queues: dict[str, tuple[int, int]]
    agents: dict[str, tuple[int, int]]


def contact_decision(
    placed_at: Iterable[datetime], *, now: datetime, limit: int, window: timedelta
) -> ContactDecision:
    """At most ``limit`` calls placed to a customer within any ``window``: a call counts while
    ``now < placed + window``. Refused, ``next_at`` is when enough of them have aged out."""
    recent = sorted(t for t in placed_at if t > now - window)
    hours = f"{window.total_seconds() / 3600:g}"
    if len(recent) < limit:
        return ContactDecision(True, len(recent), limit, None, "")
    if limit <= 0:
        message = "Calling customers back is switched off ([followups] contact_max = 0)."
        return ContactDecision(False, len(recent), limit, None, message)
    next_at = recent[len(recent) - limit] + window
    times = "once" if len(recent) == 1 else f"{len(recent)} times"
    message = (
        f"Not called: the center called this customer {times} in the last {hours} hours "
        f"(at most {limit}); the next call is allowed from "
        f"{next_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC."
    )
    return ContactDecision(False, len(recent), limit, next_at, message)


def owners_for(agent_id: str, queues: Iterable[str]) -> list[str]:
    """The owners whose follow-ups an agent works: themselves and each of their queues."""
    return [agent_id, *(QUEUE_OWNER + q for q in sorted(queues))]


def number_to_call(body: str | None, phones: Sequence[str]) -> str | None:
    """The number a callback dials: the one the follow-up names ("Call back +86…", what the
    caller asked to be called on), else the customer's first phone."""
    found = _E164_IN_TEXT.search(body or "")
    if found is not None:
        return found.group(0)
    return phones[0] if phones else None


def missed_call_reason(record: CallRecord, settings: FollowupSettings) -> str | None:
    """Why this finished call needs a callback (the follow-up's title), or None: only queue
    calls nobody answered, as switched on by ``from_abandoned`` / ``from_missed``. Other
    exits (a key, a redirect, withdrawn) were sent on by the dialplan on purpose."""
    if not record.queues or record.answered_by is not None or record.outcome is None:
        return None
    queue = record.queues[-1]
    if record.outcome == "abandoned":
        return ABANDONED.format(queue=queue) if settings.from_abandoned else None
    missed = MISSED.get(record.outcome)
    return missed.format(queue=queue) if missed is not None and settings.from_missed else None


async def work_counts(sessions: async_sessionmaker[AsyncSession], *, now: datetime) -> WorkCounts:
    """Per owner, follow-ups still to do and how many are past due (one grouped query)."""
    late = case((Interaction.due_at < _utc(now), 1), else_=0)
    query = (
        select(Interaction.owner, func.count(), func.sum(late))
        .where(
            Interaction.kind == "followup",
            Interaction.status.in_(WORKING),
            Interaction.owner.is_not(None),
        )
        .group_by(Interaction.owner)
    )
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    queues: dict[str, tuple[int, int]] = {}
    agents: dict[str, tuple[int, int]] = {}
    for owner, total, overdue in rows:
        name = str(owner)
        if name.startswith(QUEUE_OWNER):
            queues[name[len(QUEUE_OWNER) :]] = (int(total), int(overdue or 0))
        else:
            agents[name] = (int(total), int(overdue or 0))
    return WorkCounts(queues, agents)


class Followups:
    """The follow-up work of the store. Methods raise FollowupError for what they refuse, and
    SQLAlchemyError / OSError when the database fails."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: FollowupSettings
    ) -> None:
        self._sessions = sessions
        self.settings = settings

    @property
    def window(self) -> timedelta:
        return timedelta(hours=self.settings.contact_window_hours)

    @property
    def dial_timeout(self) -> timedelta:
        """How long a dial may stay ``dialling`` before its result counts as lost."""
        return timedelta(seconds=self.settings.ring_seconds) + DIAL_GRACE

    # ------------------------------------------------------------------ reading

    async def work(
        self,
        owners: Sequence[str] | None,
        *,
        now: datetime,
        due_from: datetime | None = None,
        due_before: datetime | None = None,
        after: Cursor | None = None,
        limit: int = PAGE,
    ) -> WorkPage:
        """A page of follow-ups still to do of these owners (None: everybody's), the earliest
        due (so the overdue) first, the undated last; with ``due_from`` / ``due_before`` only
        those due in ``[due_from, due_before)`` (and no undated one)."""
        limit = max(1, min(limit, MAX_PAGE))
        ranged = due_from is not None or due_before is not None
        base = (
            select(Interaction, Customer.name)
            .join(Customer, Customer.id == Interaction.customer_id)
            .where(Interaction.kind == "followup")
        )
        if owners is not None:
            base = base.where(Interaction.owner.in_(list(owners)))
        dated = base.where(Interaction.due_at.is_not(None))
        if due_from is not None:
            dated = dated.where(Interaction.due_at >= _utc(due_from))
        if due_before is not None:
            dated = dated.where(Interaction.due_at < _utc(due_before))
        if after is not None and after.due_at is not None:
            at = _utc(after.due_at)
            dated = dated.where(
                Interaction.due_at >= at,
                or_(Interaction.due_at > at, Interaction.id > after.id),
            )
        undated = base.where(Interaction.due_at.is_(None))
        if after is not None and after.due_at is None:
            undated = undated.where(Interaction.id > after.id)
        async with self._sessions() as session:
            rows: list[tuple[Interaction, str]] = []
            if after is None or after.due_at is not None:
                rows = await _scan(session, dated, limit + 1)
            if len(rows) <= limit and not ranged:
                rows += await _scan(session, undated, limit + 1 - len(rows))
            shown = rows[:limit]
            items = await self._items(session, shown, _utc(now))
        last = shown[-1][0] if len(rows) > limit else None
        cursor = None if last is None else Cursor(_utc_or_none(last.due_at), last.id)
        return WorkPage(items, cursor)

    async def tally(
        self,
        owners: Sequence[str] | None,
        *,
        now: datetime,
        due_from: datetime | None = None,
        due_before: datetime | None = None,
    ) -> tuple[int, int]:
        """How many follow-ups :meth:`work` would list over all its pages, and how many of
        them are overdue (one counting query on the same index)."""
        late = case((Interaction.due_at < _utc(now), 1), else_=0)
        query = select(func.count(), func.sum(late)).where(
            Interaction.kind == "followup", Interaction.status.in_(WORKING)
        )
        if owners is not None:
            query = query.where(Interaction.owner.in_(list(owners)))
        if due_from is not None:
            query = query.where(Interaction.due_at >= _utc(due_from))
        if due_before is not None:
            query = query.where(Interaction.due_at < _utc(due_before))
        async with self._sessions() as session:
            total, overdue = (await session.execute(query)).one()
        return int(total), int(overdue or 0)

    async def get(self, followup_id: int, *, now: datetime) -> FollowupItem | None:
        """One follow-up in any state; None if there is none with this id."""
        query = (
            select(Interaction, Customer.name)
            .join(Customer, Customer.id == Interaction.customer_id)
            .where(Interaction.id == followup_id, Interaction.kind == "followup")
        )
        async with self._sessions() as session:
            found = (await session.execute(query)).first()
            if found is None:
                return None
            items = await self._items(session, [(found[0], str(found[1]))], _utc(now))
        return items[0]

    # ------------------------------------------------------------------ callbacks

    async def start_dial(
        self, followup_id: int, *, agent: str, pbx: str, token: str, now: datetime
    ) -> Dialling:
        """Check the follow-up can be dialled and the contact rule allows a call, then mark it
        ``dialling`` and record the outbound call, in one transaction. ``token`` makes the
        call's Uniqueid unique. Raises FollowupError, ContactRefused."""
        now = _utc(now)
        async with self._sessions() as session, session.begin():
            row = await session.get(Interaction, followup_id)
            if row is None or row.kind != "followup":
                raise FollowupError(f"There is no follow-up {followup_id}.", "missing")
            customer_id = _customer(row)
            name = await _lock_customer(session, customer_id)
            stale = None  # the call of a dial whose result never came
            if row.status == "dialling":
                stale = await self._latest_call(session, row.id, customer_id)
                if stale is not None and _utc(stale.occurred_at) + self.dial_timeout > now:
                    raise FollowupError("This follow-up is being dialled right now.")
            if row.status not in WORKING:
                raise FollowupError(f"This follow-up is closed ({row.result or 'done'}).")
            await self._contact_allowed(session, customer_id, now)
            number = number_to_call(row.body, await _phones(session, customer_id))
            if number is None:
                raise FollowupError("The customer has no phone number to call.", "invalid")
            if stale is not None:
                await self._settle_call(session, stale, "unknown", "no result came", now)
            if not await _move(session, row.id, (row.status,), status="dialling"):
                raise FollowupError("This follow-up changed meanwhile; reload it.")
            call_id = f"{CALL_PREFIX}{row.id}-{token}"
            session.add(
                Interaction(
                    customer_id=row.customer_id,
                    kind="call",
                    direction="outbound",
                    occurred_at=now,
                    title=f"Callback to {number}"[:200],
                    body=row.title,
                    call_id=call_id,
                    agent=agent[:64],
                    external_id=f"call:{pbx}:{call_id}"[:64],
                )
            )
        return Dialling(row.id, customer_id, str(name), row.owner, number, call_id, pbx, agent, now)

    async def start_call(
        self, customer_id: int, number: str, *, agent: str, pbx: str, token: str, now: datetime
    ) -> Dialling:
        """An agent calls a customer from their page (no follow-up): the contact rule applies
        as to callbacks, and the call is recorded before it is placed, in one transaction.
        ``number`` is E.164. Raises FollowupError (missing customer), ContactRefused."""
        now = _utc(now)
        async with self._sessions() as session, session.begin():
            name = await _lock_customer(session, customer_id)
            if name is None:
                raise FollowupError(f"There is no customer {customer_id}.", "missing")
            await self._contact_allowed(session, customer_id, now)
            call_id = f"{OUT_PREFIX}{customer_id}-{token}"
            session.add(
                Interaction(
                    customer_id=customer_id,
                    kind="call",
                    direction="outbound",
                    occurred_at=now,
                    title=f"Call to {number}"[:200],
                    call_id=call_id,
                    agent=agent[:64],
                    external_id=f"call:{pbx}:{call_id}"[:64],
                )
            )
        return Dialling(None, customer_id, name, None, number, call_id, pbx, agent, now)

    async def _contact_allowed(
        self, session: AsyncSession, customer_id: int, now: datetime
    ) -> None:
        """Raises ContactRefused when the center already called the customer as often as the
        rule allows (calls never placed do not count)."""
        placed = await session.scalars(
            select(Interaction.occurred_at).where(
                Interaction.customer_id == customer_id,
                Interaction.kind == "call",
                Interaction.direction == "outbound",
                Interaction.occurred_at > now - self.window,
                (Interaction.result.is_(None)) | (Interaction.result != "not_placed"),
            )
        )
        decision = contact_decision(
            (_utc(t) for t in placed),
            now=now,
            limit=self.settings.contact_max,
            window=self.window,
        )
        if not decision.allowed:
            raise ContactRefused(decision)

    async def finish_dial(
        self, dialling: Dialling, result: DialResult, detail: str, *, now: datetime
    ) -> FollowupItem | None:
        """Record how the callback went: on the call, in the outbox (unless it was never
        placed), and on the follow-up if it is still dialling this call: reached closes it,
        anything else leaves it open with the attempt's result."""
        now = _utc(now)
        for _ in range(2):  # again if it was closed by hand at that very moment
            try:
                async with self._sessions() as session, session.begin():
                    await self._finish(session, dialling, result, detail, now)
                break
            except IntegrityError:
                continue
        if dialling.followup_id is None:
            return None
        return await self.get(dialling.followup_id, now=now)

    async def _finish(
        self,
        session: AsyncSession,
        dialling: Dialling,
        result: DialResult,
        detail: str,
        now: datetime,
    ) -> None:
        call = await session.scalar(
            select(Interaction).where(
                Interaction.external_id == f"call:{dialling.pbx}:{dialling.call_id}"[:64]
            )
        )
        if call is None:
            return
        await self._settle_call(session, call, result, detail, now)
        if dialling.followup_id is None:
            return
        current = await self._latest_call(session, dialling.followup_id, dialling.customer_id)
        if current is not call:
            return  # a later dial of the same follow-up is what counts now
        if result != "reached":
            await _move(session, dialling.followup_id, ("dialling",), status="open", result=result)
        elif await _move(
            session,
            dialling.followup_id,
            ("dialling",),
            status="closed",
            result="reached",
            closed_at=now,
        ):
            row = await session.get(Interaction, dialling.followup_id)
            if row is not None:
                self._closed(session, row, "reached", by=dialling.agent, note="", now=now)

    async def close(
        self, followup_id: int, *, result: str, note: str, by: str, now: datetime
    ) -> FollowupItem:
        """Close a follow-up by hand (``done``, ``cancelled`` or ``no_answer``), with an
        optional note kept in its text. Raises FollowupError."""
        if result not in CLOSE_RESULTS:
            raise FollowupError(f"result: one of {', '.join(CLOSE_RESULTS)}", "invalid", "result")
        if len(note) > MAX_NOTE or any(not c.isprintable() and c not in "\n\t" for c in note):
            message = f"note: at most {MAX_NOTE} characters, no control ones"
            raise FollowupError(message, "invalid", "note")
        now, note = _utc(now), note.strip()
        try:
            async with self._sessions() as session, session.begin():
                row = await session.get(Interaction, followup_id)
                if row is None or row.kind != "followup":
                    raise FollowupError(f"There is no follow-up {followup_id}.", "missing")
                body = row.body
                if note:
                    done = f"Closed ({result}) by {by}: {note}"
                    body = f"{body}\n\n{done}" if body else done
                moved = await _move(
                    session,
                    row.id,
                    WORKING,
                    status="closed",
                    result=result,
                    closed_at=now,
                    body=body,
                )
                if not moved:
                    raise FollowupError(f"This follow-up is closed ({row.result or 'done'}).")
                self._closed(session, row, result, by=by, note=note, now=now)
        except IntegrityError as exc:  # closed at the same moment by someone else
            raise FollowupError("This follow-up was closed meanwhile.") from exc
        item = await self.get(followup_id, now=now)
        if item is None:
            raise FollowupError(f"There is no follow-up {followup_id}.", "missing")
        return item

    async def reschedule(
        self, followup_id: int, *, due_at: datetime, by: str, now: datetime
    ) -> tuple[FollowupItem, datetime | None]:
        """Put a follow-up still to do off to ``due_at`` (later than now, at most
        ``MAX_AHEAD`` ahead); the follow-up and its due time before. Raises FollowupError."""
        if due_at.tzinfo is None:
            message = "due_at: a date and time with its UTC offset"
            raise FollowupError(message, "invalid", "due_at")
        now, due_at = _utc(now), _utc(due_at)
        if due_at <= now:
            message = f"due_at: {due_at:%Y-%m-%d %H:%M} UTC is in the past; pick a later time"
            raise FollowupError(message, "invalid", "due_at")
        if due_at > now + MAX_AHEAD:
            message = f"due_at: at most {MAX_AHEAD.days} days ahead"
            raise FollowupError(message, "invalid", "due_at")
        async with self._sessions() as session, session.begin():
            row = await session.get(Interaction, followup_id)
            if row is None or row.kind != "followup":
                raise FollowupError(f"There is no follow-up {followup_id}.", "missing")
            before = _utc_or_none(row.due_at)
            if not await _move(session, row.id, WORKING, due_at=due_at):
                raise FollowupError(f"This follow-up is closed ({row.result or 'done'}).")
            enqueue(
                session,
                topic="followup.rescheduled",
                key=f"followup.rescheduled:{row.id}:{now.isoformat()}",
                customer_id=row.customer_id,
                data={
                    "followup_id": row.id,
                    "owner": row.owner,
                    "due_at": due_at.isoformat(),
                    "was_due_at": _iso(before),
                    "by": by,
                    "at": now.isoformat(),
                },
                now=now,
            )
        item = await self.get(followup_id, now=now)
        if item is None:
            raise FollowupError(f"There is no follow-up {followup_id}.", "missing")
        return item, before

    # ------------------------------------------------------------------ automatic ones

    async def file_missed_call(
        self, customer_id: int, record: CallRecord, *, number: str | None, now: datetime
    ) -> int | None:
        """File a callback for the queue of a missed call of a known customer (see
        :func:`missed_call_reason`), due in ``due_minutes``; once per call, and not while the
        customer has a follow-up still to do. Its id, or None if none was filed."""
        why = missed_call_reason(record, self.settings)
        if why is None:
            return None
        now = _utc(now)
        key = _missed_key(record)
        queue = record.queues[-1]
        try:
            async with self._sessions() as session, session.begin():
                filed = await session.scalar(
                    select(Interaction.id).where(Interaction.external_id == key)
                )
                pending = await session.scalar(
                    select(Interaction.id)
                    .where(
                        Interaction.customer_id == customer_id,
                        Interaction.kind == "followup",
                        Interaction.status.in_(WORKING),
                    )
                    .limit(1)
                )
                if filed is not None or pending is not None:
                    return None
                row = Interaction(
                    customer_id=customer_id,
                    kind="followup",
                    occurred_at=now,
                    title=f"Call back: {why}"[:200],
                    body=f"Call back {number}" if number else None,
                    status="open",
                    due_at=now + timedelta(minutes=self.settings.due_minutes),
                    owner=(QUEUE_OWNER + queue)[:64],
                    call_id=record.call_id,
                    external_id=key,
                )
                session.add(row)
                await session.flush()
                enqueue(
                    session,
                    topic="followup.created",
                    key=f"followup.created:{row.id}",
                    customer_id=customer_id,
                    data=followup_data(row.id, row, source="missed_call"),
                    now=now,
                )
                return row.id
        except IntegrityError:
            return None  # the same call's end, handled at the same moment elsewhere

    # ------------------------------------------------------------------ helpers

    async def _items(
        self, session: AsyncSession, rows: list[tuple[Interaction, str]], now: datetime
    ) -> list[FollowupItem]:
        ids = sorted({_customer(row) for row, _ in rows})
        phones: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            found = await session.execute(
                select(Phone.customer_id, Phone.e164)
                .where(Phone.customer_id.in_(ids))
                .order_by(Phone.customer_id, Phone.id)
            )
            for owner, e164 in found.all():
                phones[owner].append(e164)
        items = []
        for row, name in rows:
            since = None
            if row.status == "dialling":
                call = await self._latest_call(session, row.id, _customer(row))
                since = _utc(call.occurred_at) if call is not None else None
            due = _utc(row.due_at) if row.due_at is not None else None
            items.append(
                FollowupItem(
                    id=row.id,
                    customer_id=_customer(row),
                    customer_name=name,
                    number=number_to_call(row.body, phones.get(_customer(row), [])),
                    title=row.title,
                    body=row.body,
                    owner=row.owner,
                    due_at=due,
                    state=row.status or "open",
                    result=row.result,
                    overdue=row.status in WORKING and due is not None and due < now,
                    created_at=_utc(row.occurred_at),
                    closed_at=_utc(row.closed_at) if row.closed_at is not None else None,
                    call_id=row.call_id,
                    dialling_since=since,
                )
            )
        return items

    async def _latest_call(
        self, session: AsyncSession, followup_id: int, customer_id: int
    ) -> Interaction | None:
        """The last callback placed for this follow-up (among its customer's rows: indexed)."""
        prefix = f"{CALL_PREFIX}{followup_id}-"
        return await session.scalar(
            select(Interaction)
            .where(
                Interaction.customer_id == customer_id,
                Interaction.kind == "call",
                Interaction.direction == "outbound",
                Interaction.call_id.startswith(prefix, autoescape=True),
            )
            .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
            .limit(1)
        )

    async def _settle_call(
        self, session: AsyncSession, call: Interaction, result: str, detail: str, now: datetime
    ) -> None:
        """A callback's result, on its call and (once: the key) to the CRM."""
        if call.result is not None:
            return  # already settled (a late result of a superseded call)
        call.result = result
        what = "Callback" if (call.call_id or "").startswith(CALL_PREFIX) else "Call"
        call.title = f"{what} to {_number_of(call)}: {DIAL_TEXT.get(result, result)}"[:200]
        if result == "not_placed":
            return
        followup = _followup_of(call.call_id)
        enqueue(
            session,
            topic="call.placed",
            key=f"call.placed:{call.call_id}",
            customer_id=call.customer_id,
            data={
                "interaction_id": call.id,
                "call_id": call.call_id,
                "followup_id": followup,
                "number": _number_of(call),
                "agent": call.agent,
                "placed_at": _utc(call.occurred_at).isoformat(),
                "result": result,
                "detail": detail[:200],
            },
            now=now,
        )

    def _closed(
        self,
        session: AsyncSession,
        row: Interaction,
        result: str,
        *,
        by: str,
        note: str,
        now: datetime,
    ) -> None:
        enqueue(
            session,
            topic="followup.closed",
            key=f"followup.closed:{row.id}",
            customer_id=row.customer_id,
            data={
                "followup_id": row.id,
                "owner": row.owner,
                "result": result,
                "closed_at": now.isoformat(),
                "by": by,
                "note": note or None,
            },
            now=now,
        )


def _customer(row: Interaction) -> int:
    """A follow-up's customer: every follow-up has one (only some outcomes have none)."""
    if row.customer_id is None:
        raise FollowupError(f"Follow-up {row.id} belongs to no customer.", "invalid")
    return row.customer_id


async def _lock_customer(session: AsyncSession, customer_id: int) -> str | None:
    """Lock the customer's row for this transaction; their name, None if there is none.

    The lock is a write that changes nothing: PostgreSQL locks the row, SQLite takes its one
    write lock (a SELECT would take neither). So two dials of one customer at once see each
    other's calls."""
    await session.execute(
        update(Customer)
        .where(Customer.id == customer_id)
        .values(updated_at=Customer.updated_at)
        .execution_options(synchronize_session=False)
    )
    name = await session.scalar(select(Customer.name).where(Customer.id == customer_id))
    return None if name is None else str(name)


async def _move(
    session: AsyncSession, followup_id: int, states: Sequence[str], **values: Any
) -> bool:
    """Change the follow-up if it is still in one of ``states`` (checked by the UPDATE
    itself, so a change committed meanwhile is never overwritten); whether it was."""
    moved = await session.execute(
        update(Interaction)
        .where(Interaction.id == followup_id, Interaction.status.in_(list(states)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(moved.rowcount == 1)  # type: ignore[attr-defined]


async def _scan(
    session: AsyncSession, query: Select[Interaction, str], limit: int
) -> list[tuple[Interaction, str]]:
    """The first ``limit`` rows of a work-list query in (due_at, id) order: one query per
    state still to do, each an ordered range of the (kind, status, due_at) index that stops
    at ``limit`` (an ``IN`` over the states would read and sort all of them), merged here."""
    rows: list[tuple[Interaction, str]] = []
    for state in WORKING:
        ordered = query.where(Interaction.status == state)
        ordered = ordered.order_by(Interaction.due_at, Interaction.id).limit(limit)
        rows += [(row, str(name)) for row, name in (await session.execute(ordered)).all()]
    rows.sort(
        key=lambda found: (found[0].due_at is None, _utc_or_none(found[0].due_at), found[0].id)
    )
    return rows[:limit]


async def _phones(session: AsyncSession, customer_id: int) -> list[str]:
    found = await session.scalars(
        select(Phone.e164).where(Phone.customer_id == customer_id).order_by(Phone.id)
    )
    return list(found)


def _number_of(call: Interaction) -> str:
    """The number a callback row was placed to (its title says it when it is written)."""
    found = _E164_IN_TEXT.search(call.title)
    return found.group(0) if found else ""


def _followup_of(call_id: str | None) -> int | None:
    """The follow-up a callback's Uniqueid names (``cti-cb-<id>-<token>``)."""
    middle = (call_id or "").removeprefix(CALL_PREFIX).split("-", 1)[0]
    return int(middle) if middle.isdigit() else None


def _missed_key(record: CallRecord) -> str:
    """The automatic follow-up's idempotency key: one per call (fits external_id's 64)."""
    key = f"missed:{record.pbx}:{record.call_id}"
    if len(key) <= 64:
        return key
    return "missed:" + hashlib.sha256(key.encode()).hexdigest()[:48]


def _utc(value: datetime) -> datetime:
    """SQLite keeps no time zone: what it holds is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return _utc(value) if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
