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
    ) -> None:
        self.menu = menu
        self.store = store
        self.sink = sink
        self.pbx_for = pbx_for
        self.agent_for = agent_for
        self.customer_for = customer_for
        self.store_limit = store_limit

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
            await call.finish()


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

    async def run(self) -> None:
        action: Action = self.walk.start()
        while not isinstance(action, Done):
            action = self.walk.send(await self.execute(action))
            self.report(self.walk.findings)

    async def finish(self) -> None:
        """Whatever ended the walk (its end, a hang-up, an error): report, save the scores."""
        findings = self.walk.findings
        self.report(findings)
        if findings.scores:
            handler, call = self.handler, (self.pbx, self.call_id)
            agent = handler.agent_for(*call)
            customer = findings.customer_id or handler.customer_for(*call)
            try:
                await handler.store.save_survey(*call, agent, customer, findings.scores)
            except StoreUnavailable as exc:
                log.warning("survey scores of call %s not saved: %s", self.call_id, exc)

    def report(self, findings: Findings) -> None:
        # a brief of atoms, not the findings themselves: nothing per session for the
        # collector to walk between steps (the path only grows)
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
                ok = await self.stored(store.verify_pin(customer, pin), budget)
                return ok if isinstance(ok, StoreFailed) else PinChecked(ok)
            case FetchFigure(figure=figure, customer_id=customer, budget=budget):
                return await self.stored(store.figure(figure, customer), budget)
            case RequestCallback(queue=queue, number=number, customer_id=customer, budget=b):
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
