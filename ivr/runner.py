"""The IVR's I/O edge: one :class:`~ivr.walk.Walk` per AGI session, its actions carried out
on the channel and in the customer store.

Theory of operation
-------------------
:class:`MenuHandler` is the FastAGI handler of one menu. It reads the call id first
(``CHANNEL(linkedid)``: the AGI runs on the caller's channel or on a Local ``;2`` half, and
only the linkedid is the call id the AMI side uses), then loops: the walk says what to do,
the handler does it and hands back the result. Whenever what the walk has learned changes,
it is reported at once to the :class:`FindingsSink` (the pop: the agent's card shows it),
so a caller hanging up at any point leaves everything learned so far attached to the call.

Store actions run under the walk's :class:`~ivr.walk.StoreBudget`: past its ``seconds`` the
holding prompt plays while the store goes on, up to ``store_limit`` in all; then the walk
gets ``StoreFailed("timeout")`` and takes the step's error path. A store that fails gives
``StoreFailed("error")``. The caller is never left in silence longer than the budget.

Scores of a survey menu (``rate`` steps) are saved when its walk ends, hung up or not,
against the call, the agent who last handled it and the call's customer (``agent_for`` and
``customer_for`` ask the call model, which knows them from AMI and the pop).

What a FastAGI peer says is not trusted (docs/ivr.md, Security). PIN checks go through the
:class:`~ivr.guard.PinLimiter` shared by every session: a customer locked out gets
``PinRefused`` and the walk goes on unidentified. With ``calls`` (a :class:`LiveCalls`),
findings are held back until the AMI side knows the call *and* this session's channel as one
of its channels; a callback or survey for the call waits for the same proof. Because AMI
events may come in just after the AGI session starts, the check is made again at each
report; a callback waits up to ``call_wait`` seconds for the call to show, and so do the last
findings, in the background once the session is over (the dialplan goes on meanwhile). A
call never proven: nothing reaches the card, no callback, no scores, one WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any, Protocol, TypeVar

from crm_sync.store import StoreUnavailable
from ivr.agi import AgiCommandError, AgiRequest, ChannelHungUp
from ivr.guard import PinLimiter
from ivr.menus import Figure, Menu
from ivr.server import AgiSession
from ivr.walk import (
    Ack,
    Action,
    CallbackCreated,
    CallerInfo,
    Collect,
    Collected,
    CustomerInfo,
    CustomersFound,
    Done,
    FetchFigure,
    FigureValue,
    FindCustomer,
    Findings,
    Hangup,
    PinChecked,
    PinRefused,
    Play,
    Played,
    RequestCallback,
    Result,
    Route,
    Say,
    SayDigits,
    SayNumber,
    SaySound,
    SetLanguage,
    StoreBudget,
    StoreFailed,
    VerifyPin,
    Walk,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
STORE_LIMIT = 5.0  # seconds a store action may take in all, holding prompt included
CALL_WAIT = 2.0  # seconds to wait for AMI to show the call before its findings are dropped
CALL_POLL = 0.05  # how often the call model is asked again meanwhile

# Channel variables the dialplan reads after AGI() (see docs/ivr.md)
QUEUE_VAR = "IVR_QUEUE"
PRIORITY_VAR = "QUEUE_PRIO"  # app_queue reads it as the caller's priority
OWNER_VAR = "IVR_OWNER"
WINBACK_VAR = "IVR_WINBACK"
CUSTOMER_VAR = "IVR_CUSTOMER"


class MenuStore(Protocol):
    """What the IVR asks of the customer store (:class:`ivr.store.IvrStore`). Every method
    raises :class:`~crm_sync.store.StoreUnavailable` when the database fails."""

    async def find_by_phone(self, number: str) -> tuple[CustomerInfo, ...]: ...

    async def find_by_account(self, account: str) -> tuple[CustomerInfo, ...]: ...

    async def verify_pin(self, customer_id: int, pin: str) -> bool: ...

    async def figure(self, figure: Figure, customer_id: int) -> FigureValue: ...

    async def request_callback(
        self, queue: str, number: str, customer_id: int | None, call_id: str | None
    ) -> str: ...

    async def save_survey(
        self,
        pbx: str,
        call_id: str,
        agent: str | None,
        customer_id: int | None,
        scores: Mapping[str, int],
    ) -> None: ...


class FindingsSink(Protocol):
    def ivr_learned(self, pbx: str, call_id: str, findings: dict[str, Any]) -> None: ...


class LiveCalls(Protocol):
    """The AMI side's live calls (:class:`ivr.guard.TrackedCalls`)."""

    def has_channel(self, pbx: str, call_id: str, channel: str, uniqueid: str) -> bool:
        """Whether ``call_id`` is a live call of ``pbx`` with this channel among its own."""
        ...


class MenuHandler:
    """Runs ``menu`` for each AGI session routed to it."""

    def __init__(
        self,
        menu: Menu,
        store: MenuStore,
        sink: FindingsSink,
        *,
        pbx_for: Callable[[AgiRequest], str],
        agent_for: Callable[[str, str], str | None] = lambda pbx, call_id: None,
        customer_for: Callable[[str, str], int | None] = lambda pbx, call_id: None,
        store_limit: float = STORE_LIMIT,
        pins: PinLimiter | None = None,
        calls: LiveCalls | None = None,
        call_wait: float = CALL_WAIT,
    ) -> None:
        """``pins``: one limiter for every menu (None: no limit); ``calls``: the live-call
        check (None: every call is taken as real, for tests of the walk alone)."""
        self.menu = menu
        self.store = store
        self.sink = sink
        self.pbx_for = pbx_for
        self.agent_for = agent_for
        self.customer_for = customer_for
        self.store_limit = store_limit
        self.pins = pins
        self.calls = calls
        self.call_wait = call_wait
        self._late: set[asyncio.Task[None]] = set()  # finish() of calls AMI does not show yet

    async def __call__(self, session: AgiSession) -> None:
        request = session.request
        pbx = self.pbx_for(request)
        call_id = await session.get_variable("CHANNEL(linkedid)") or request.uniqueid
        walk = Walk(self.menu, CallerInfo(request.callerid, request.language or None))
        call = _Call(self, session, pbx, call_id, walk)
        try:
            await call.run()
        except ChannelHungUp:
            walk.hung_up()
            raise
        finally:
            if call.check() or call.refused:
                await call.finish()
            else:  # AMI is behind: the dialplan goes on, the findings wait for the call
                task = asyncio.create_task(call.finish())
                self._late.add(task)
                task.add_done_callback(self._late.discard)

    async def settle(self) -> None:
        """Wait for the findings still waiting for AMI (each at most ``call_wait``)."""
        await asyncio.gather(*self._late, return_exceptions=True)


class _Call:
    """One session's walk: actions out to the channel and store, results back in."""

    def __init__(
        self, handler: MenuHandler, session: AgiSession, pbx: str, call_id: str, walk: Walk
    ) -> None:
        self.handler = handler
        self.session = session
        self.pbx = pbx
        self.call_id = call_id
        self.walk = walk
        self.reported: tuple[object, ...] = ()  # what was last reported, in brief
        self.proven = handler.calls is None  # the AMI side knows this call and channel
        self.refused = False  # the call was never proven: nothing goes out for it

    async def run(self) -> None:
        action: Action = self.walk.start()
        while not isinstance(action, Done):
            action = self.walk.send(await self.execute(action))
            self.report(self.walk.findings)

    async def finish(self) -> None:
        """Whatever ended the walk (its end, a hang-up, an error): report, save the scores."""
        findings = self.walk.findings
        await self.prove()
        self.report(findings)
        if findings.scores and self.proven:
            handler, call = self.handler, (self.pbx, self.call_id)
            agent = handler.agent_for(*call)
            customer = findings.customer_id or handler.customer_for(*call)
            try:
                await handler.store.save_survey(*call, agent, customer, findings.scores)
            except StoreUnavailable as exc:
                log.warning("survey scores of call %s not saved: %s", self.call_id, exc)

    def check(self) -> bool:
        """Is the call proven now? (Asks the call model, without waiting.)"""
        calls = self.handler.calls
        if not self.proven and not self.refused and calls is not None:
            request = self.session.request
            self.proven = calls.has_channel(
                self.pbx, self.call_id, request.channel, request.uniqueid
            )
        return self.proven

    async def prove(self) -> bool:
        """Wait up to ``call_wait`` for the AMI side to show the call; past it the call is
        refused for good, with one WARNING."""
        if self.check() or self.refused:
            return self.proven
        polls = max(1, round(self.handler.call_wait / CALL_POLL))
        for _ in range(polls):  # the call model has no "tell me when": ask a few times
            await asyncio.sleep(CALL_POLL)
            if self.check():
                return True
        self.refused = True
        request = self.session.request
        log.warning(
            "IVR %s: call %r with channel %r (%r) is not a live call of PBX %r; its findings, "
            "callback and scores are dropped",
            self.handler.menu.name, self.call_id, request.channel, request.uniqueid, self.pbx,
        )  # fmt: skip
        return False

    def report(self, findings: Findings) -> None:
        # a brief of atoms, not the findings themselves: nothing per session for the
        # collector to walk between steps (the path only grows)
        if not self.check():
            return  # held back: sent at the next report once proven, or never
        brief = (
            len(findings.path),
            findings.customer_id,
            findings.language,
            findings.callback,
            findings.route is not None,
            len(findings.scores),
            findings.hung_up,
        )
        if brief != self.reported:
            self.reported = brief
            self.handler.sink.ivr_learned(self.pbx, self.call_id, findings.to_json())

    async def execute(self, action: Action) -> Result:
        session, store = self.session, self.handler.store
        match action:
            case Play(prompts=prompts, interrupt=interrupt):
                for prompt in prompts:
                    if digit := await self.play(prompt, interrupt):
                        return Played(digit)
                return Played()
            case Collect():
                return await self.collect(action)
            case Say(parts=parts):
                for part in parts:
                    await self.say(part)
                return Played()
            case FindCustomer(by="phone", value=value, budget=budget):
                found = await self.stored(store.find_by_phone(value), budget)
                return found if isinstance(found, StoreFailed) else CustomersFound(found)
            case FindCustomer(value=value, budget=budget):
                found = await self.stored(store.find_by_account(value), budget)
                return found if isinstance(found, StoreFailed) else CustomersFound(found)
            case VerifyPin(customer_id=customer, pin=pin, budget=budget):
                return await self.verify_pin(customer, pin, budget)
            case FetchFigure(figure=figure, customer_id=customer, budget=budget):
                return await self.stored(store.figure(figure, customer), budget)
            case RequestCallback(queue=queue, number=number, customer_id=customer, budget=b):
                if not await self.prove():
                    return StoreFailed("error")
                made = await self.stored(
                    store.request_callback(queue, number, customer, self.call_id), b
                )
                return made if isinstance(made, StoreFailed) else CallbackCreated(made)
            case SetLanguage(language=language):
                await session.set_variable("CHANNEL(language)", language)
                return Ack()
            case Route():
                await self.route(action)
                return Ack()
            case Hangup():
                await session.hangup()
                return Ack()
        raise AssertionError(f"no edge for {action!r}")

    async def verify_pin(self, customer: int, pin: str, budget: StoreBudget) -> Result:
        """The store's PIN check, unless the customer is locked out of guessing."""
        pins = self.handler.pins
        if pins is not None and not pins.attempt(customer):
            log.warning(
                "IVR %s: PIN of customer %s not checked on call %r: too many attempts",
                self.handler.menu.name, customer, self.call_id,
            )  # fmt: skip
            return PinRefused()
        ok = await self.stored(self.handler.store.verify_pin(customer, pin), budget)
        if isinstance(ok, StoreFailed):
            return ok
        if ok and pins is not None:
            pins.succeeded(customer)
        return PinChecked(ok)

    async def play(self, prompt: str, interrupt: str = "") -> str:
        """STREAM FILE; a prompt Asterisk cannot play is skipped (logged), not fatal."""
        try:
            return await self.session.stream_file(prompt, interrupt)
        except AgiCommandError as exc:
            log.warning("IVR %s: prompt %r not played: %s", self.handler.menu.name, prompt, exc)
            return ""

    async def collect(self, action: Collect) -> Collected:
        timeout_ms = round(action.timeout_s * 1000)
        try:
            digits, timed_out = await self.session.get_data(
                action.prompt, timeout_ms, action.max_digits
            )
        except AgiCommandError as exc:  # e.g. the prompt is missing: counts as no input
            log.warning(
                "IVR %s: GET DATA %r failed: %s", self.handler.menu.name, action.prompt, exc
            )
            return Collected("", timed_out=True)
        if not digits and not timed_out and action.terminator == "":
            digits = "#"  # GET DATA ends on '#' with nothing; here '#' is a choice
        return Collected(digits, timed_out)

    async def say(self, part: SaySound | SayNumber | SayDigits) -> None:
        try:
            match part:
                case SaySound(name=name):
                    await self.session.stream_file(name)
                case SayNumber(value=value):
                    await self.session.say_number(value)
                case SayDigits(value=value):
                    await self.session.say_digits(value)
        except AgiCommandError as exc:
            log.warning("IVR %s: %r not said: %s", self.handler.menu.name, part, exc)

    async def route(self, route: Route) -> None:
        """The variables the dialplan's Queue() uses: set before the AGI returns."""
        session = self.session
        await session.set_variable(QUEUE_VAR, route.queue)
        await session.set_variable(PRIORITY_VAR, str(route.priority))
        await session.set_variable(OWNER_VAR, route.owner or "")
        await session.set_variable(WINBACK_VAR, "1" if route.winback else "")
        customer = self.walk.findings.customer_id
        await session.set_variable(CUSTOMER_VAR, "" if customer is None else str(customer))

    async def stored(self, work: Awaitable[T], budget: StoreBudget) -> T | StoreFailed:
        """``work`` under the budget: the holding prompt past ``budget.seconds``, then
        StoreFailed("timeout") at ``store_limit``; StoreFailed("error") if the store fails."""
        task = asyncio.ensure_future(work)
        limit = self.handler.store_limit
        started = time.monotonic()
        try:
            done, _ = await asyncio.wait({task}, timeout=min(budget.seconds, limit))
            if not done and budget.holding_prompt:
                await self.play(budget.holding_prompt)
            left = limit - (time.monotonic() - started)
            if not task.done() and left > 0:
                await asyncio.wait({task}, timeout=left)
            if not task.done():
                log.warning("IVR %s: store gave no answer in %g s", self.handler.menu.name, limit)
                return StoreFailed("timeout")
            return task.result()
        except StoreUnavailable as exc:
            log.warning("IVR %s: store unavailable: %s", self.handler.menu.name, exc)
            return StoreFailed("error")
        finally:
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError, StoreUnavailable):
                    await task


def pbx_from_query(default: str | None, known: frozenset[str]) -> Callable[[AgiRequest], str]:
    """With several PBXs, the dialplan names its own: ``agi://host:4573/main?pbx=paris``.
    Without (or with an unknown name) the default, if there is one; else the name given, so
    the findings are at least kept under it."""

    def pbx(request: AgiRequest) -> str:
        named = request.query.get("pbx", "")
        if named in known:
            return named
        if default is not None:
            return default
        if named:
            log.warning("FastAGI from %s names unknown PBX %r", request.channel, named)
        return named or "unknown"

    return pbx
