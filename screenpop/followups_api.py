"""Follow-ups over JSON: the agent's work list, one-click callback, and closing by hand.

Who may work a follow-up: its owner agent, any member of its owner queue (``queue:<name>``,
as Asterisk reports the agent's membership), and supervisors (any). A refused permission
is audited (``denied: …``), as in screenpop/controls_api.py.

A Dial goes: permission, then the store (:meth:`Followups.start_dial`: the follow-up may be
dialled, the contact-frequency rule allows a call, which is recorded), then the Originate
(cti/callbacks.py), then its result back into the store, then one audit row, then the answer.
The Originate and the result's write run in a task of their own, kept by
:class:`FollowupDesk`: an agent who closes the page does not cut the call's record short.
The answer comes once the customer answered or gave up (at most the ring time plus the
action timeout); the agent's other tabs are told to reload their list (``{"type":
"followups"}`` on the live push), and the wallboard's figures are refreshed.

The work list comes a page at a time (``next`` → ``?after=``), filtered by ``show``; "today"
is the agent's day, which only the browser knows (its time zone, a DST change that day): it
sends the day's bounds, and the server never guesses them from its own clock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync import audit
from crm_sync.followups import (
    MAX_NOTE,
    MAX_PAGE,
    PAGE,
    QUEUE_OWNER,
    ContactRefused,
    Cursor,
    Dialling,
    FollowupError,
    FollowupItem,
    Followups,
    owners_for,
)
from cti.callbacks import CallbackDialer, DialOutcome
from cti.controls import ControlError
from screenpop import access
from screenpop.auth import Account, Accounts
from screenpop.day_api import day_bounds
from screenpop.errors import ApiError, store_unavailable
from screenpop.inputs import json_object, text, when
from screenpop.keys import CLOCK, FOLLOWUP_OWNERS, POP, SESSION, STORE, WORK_CHANGED

log = logging.getLogger(__name__)
Placed = tuple[DialOutcome, FollowupItem | None]  # how a dial ended; the follow-up after it

_STATUS = {"missing": 404, "conflict": 409, "invalid": 409, "refused": 409}
_IDS = {
    "missing": "no_followup",
    "conflict": "followup_state",
    "invalid": "followup_not_dialable",
    "refused": "contact_limit",
}
SHOWS = ("all", "mine", "queues", "overdue", "today")  # the work list's filters


@dataclass(eq=False)
class FollowupDesk:
    """What the follow-up routes work with: the store's follow-ups, the dialer (None: no
    PBX), and each agent's queues (from the wallboard's membership)."""

    followups: Followups
    dialer: CallbackDialer | None
    queues_of: Callable[[str], frozenset[str]]
    _dials: set[asyncio.Task[Placed]] = field(default_factory=set)

    def run(self, work: Coroutine[Any, Any, Placed]) -> asyncio.Task[Placed]:
        """Run a dial to its end whatever happens to the request that asked for it."""
        task = asyncio.create_task(work)
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)
        return task

    async def close(self) -> None:
        """Let dials in flight record their result (the PBX link ends them at shutdown)."""
        await asyncio.gather(*self._dials, return_exceptions=True)


FOLLOWUPS = web.AppKey[FollowupDesk | None]("followups")  # None: no store


def owners_offered(accounts: Accounts, desk: FollowupDesk | None) -> dict[str, str]:
    """Who a follow-up may be given to: every agent with an account, then every queue one of
    them is a member of now (as Asterisk says, through the board)."""
    agents = {a.agent_id: a.name or a.agent_id for a in accounts if a.agent_id}
    queues: set[str] = set()
    if desk is not None:
        for agent in agents:
            queues |= desk.queues_of(agent)
    return {**agents, **{QUEUE_OWNER + q: f"queue {q}" for q in sorted(queues)}}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/followups", work_list, name="api_followups")
    app.router.add_post(r"/api/followups/{followup_id:\d{1,18}}/dial", dial, name="api_dial")
    app.router.add_post(
        r"/api/followups/{followup_id:\d{1,18}}/close", close, name="api_followup_close"
    )
    app.router.add_post(
        r"/api/customers/{customer_id:\d{1,18}}/call", call_customer, name="api_customer_call"
    )
    app.router.add_post(
        r"/api/followups/{followup_id:\d{1,18}}/reschedule",
        reschedule,
        name="api_followup_reschedule",
    )
    app.on_cleanup.append(_close_desk)


async def work_list(request: web.Request) -> web.StreamResponse:
    """A page of an agent's follow-ups to do: their own and their queues', the earliest due
    first. A supervisor gets everybody's, or one owner's with ``?owner=`` (``alice``,
    ``queue:support``). ``?show=`` mine | queues | overdue | today (with ``day_start`` and
    ``day_end``: the agent's day, ISO with offset) | all; ``?after=`` the ``next`` of the page
    before; ``?limit=`` up to 200. ``counts``: the whole list's (``todo``, ``overdue``) and
    how many the filter matches (``matching``), whatever page this is."""
    desk = _desk(request)
    account = request[SESSION].account
    query = request.query
    show = query.get("show", "all") or "all"
    if show not in SHOWS:
        raise ApiError(422, "invalid_field", f"show: one of {', '.join(SHOWS)}", field="show")
    queues = desk.queues_of(account.agent_id)
    if account.role == "supervisor":
        owner = query.get("owner", "").strip()
        owners = [owner[:64]] if owner else None
    else:
        owners = owners_for(account.agent_id, queues)
    shown = owners
    if show == "mine":
        shown = [account.agent_id] if account.agent_id else []
    elif show == "queues":
        shown = owners_for(account.agent_id, queues)[1:]
    now = request.app[CLOCK]()
    due_from, due_before = None, None
    if show == "overdue":
        due_before = now
    elif show == "today":
        due_from, due_before = day_bounds(query)
    limit = _limit(query.get("limit"))
    try:
        after = Cursor.parse(query["after"]) if query.get("after") else None
        page = await desk.followups.work(
            shown, now=now, due_from=due_from, due_before=due_before, after=after, limit=limit
        )
    except FollowupError as exc:
        raise ApiError(422, "invalid_field", exc.message, field=exc.field) from exc
    todo, overdue = await desk.followups.tally(owners, now=now)
    matching = todo
    if shown != owners or due_from is not None or due_before is not None:
        matching, _ = await desk.followups.tally(
            shown, now=now, due_from=due_from, due_before=due_before
        )
    labels = request.app[FOLLOWUP_OWNERS]()
    return web.json_response(
        {
            "followups": [_json(i, labels) for i in page.items],
            "next": page.next.text() if page.next is not None else None,
            "counts": {"todo": todo, "overdue": overdue, "matching": matching},
            "show": show,
            "owners": owners,
            "rule": _rule(desk),
        }
    )


async def dial(request: web.Request) -> web.StreamResponse:
    """``{"pbx"?: str}``: call the customer back, then the agent's own phone. 200 with the
    follow-up once the customer answered (it is then closed) or did not (it stays open, with
    the attempt's result); 409 ``contact_limit`` (with ``next_allowed_at``) when the
    contact-frequency rule forbids the call, 409 for a follow-up closed or being dialled."""
    desk = _desk(request)
    item = await _item(request, desk)
    account = request[SESSION].account
    agent = account.agent_id or account.login
    queue = _queue(item)
    await _permit(request, desk, item, "followup_dial", agent, queue)
    detail = f"follow-up {item.id} to {item.number or 'no number'}"
    dialer, pbx, device = await _ready(request, desk, "followup_dial", queue, detail)
    try:
        dialling = await desk.followups.start_dial(
            item.id, agent=agent, pbx=pbx, token=secrets.token_hex(4), now=request.app[CLOCK]()
        )
    except ContactRefused as exc:
        raise await _contact_limit(request, "followup_dial", queue, pbx, detail, exc) from exc
    except FollowupError as exc:
        raise _refusal(exc) from exc
    outcome, done = await _placed(
        request, desk, dialer, dialling, device, "followup_dial", queue, detail
    )
    if done is None:  # the call happened: retrying would call the customer again
        raise ApiError(
            503,
            "result_not_recorded",
            f"The call ended ({outcome.detail}) but the store did not take its result: "
            "do not dial again, tell an administrator.",
        )
    followup = _json(done, request.app[FOLLOWUP_OWNERS]())
    return web.json_response({"followup": followup, "call": {"id": dialling.call_id}})


async def close(request: web.Request) -> web.StreamResponse:
    """``{"result": "done" | "cancelled" | "no_answer", "note"?: str}``: close by hand."""
    desk = _desk(request)
    item = await _item(request, desk)
    account = request[SESSION].account
    agent = account.agent_id or account.login
    queue = _queue(item)
    await _permit(request, desk, item, "followup_close", agent, queue)
    body = await json_object(request)
    result = body.get("result")
    if not isinstance(result, str):
        raise ApiError(422, "invalid_field", "result: done, cancelled or no_answer", field="result")
    note = text(body, "note", MAX_NOTE, multiline=True) or ""
    try:
        closed = await desk.followups.close(
            item.id, result=result, note=note, by=agent, now=request.app[CLOCK]()
        )
    except FollowupError as exc:
        raise _refusal(exc) from exc
    detail = f"follow-up {item.id}: {result}"
    await _audit(request, "followup_close", agent, queue, None, detail, "ok")
    _changed(request.app, closed, account.agent_id)
    return web.json_response({"followup": _json(closed, request.app[FOLLOWUP_OWNERS]())})


async def reschedule(request: web.Request) -> web.StreamResponse:
    """``{"due_at": "2026-12-05T09:00:00+01:00"}``: put the follow-up off to that time (later
    than now, with its offset). 422 with ``field`` for a bad or past time; 409 once closed."""
    desk = _desk(request)
    item = await _item(request, desk)
    account = request[SESSION].account
    agent = account.agent_id or account.login
    queue = _queue(item)
    await _permit(request, desk, item, "followup_due", agent, queue)
    due_at = when(await json_object(request), "due_at")
    if due_at is None:
        message = "due_at: a date and time with its UTC offset, e.g. 2026-12-05T09:00:00+01:00"
        raise ApiError(422, "invalid_field", message, field="due_at")
    try:
        moved, before = await desk.followups.reschedule(
            item.id, due_at=due_at, by=agent, now=request.app[CLOCK]()
        )
    except FollowupError as exc:
        raise _refusal(exc) from exc
    detail = f"follow-up {item.id}: due {_iso(before)} -> {_iso(moved.due_at)}"
    await _audit(request, "followup_due", agent, queue, None, detail, "ok")
    _changed(request.app, moved, account.agent_id)
    return web.json_response({"followup": _json(moved, request.app[FOLLOWUP_OWNERS]())})


async def call_customer(request: web.Request) -> web.StreamResponse:
    """``{"number": str, "pbx"?: str}``: an agent calls a customer from their page, the
    customer first, then the agent's own phone, as a callback but with no follow-up. The
    number is any spelling (E.164 after normalizing). 200 ``{"call": {"id", "result",
    "detail"}}`` once the customer answered or not; 409 ``contact_limit``, ``agent_busy``,
    ``no_device`` as for a callback; 422 ``number``."""
    desk = _desk(request)
    store = request.app[STORE]
    assert store is not None  # _desk checked it
    customer_id = int(request.match_info["customer_id"])
    await access.check(request, customer_id, "customer.call")
    body = await json_object(request)
    raw = text(body, "number", 40) or ""
    number = store.phones.to_e164(raw)
    if number is None:
        message = "number: a phone number (an internal extension is not a customer's)"
        raise ApiError(422, "invalid_field", message, field="number")
    agent = request[SESSION].account.agent_id or request[SESSION].account.login
    detail = f"customer {customer_id} at {number}"
    dialer, pbx, device = await _ready(request, desk, "customer_call", None, detail, body)
    try:
        dialling = await desk.followups.start_call(
            customer_id,
            number,
            agent=agent,
            pbx=pbx,
            token=secrets.token_hex(4),
            now=request.app[CLOCK](),
        )
    except ContactRefused as exc:
        raise await _contact_limit(request, "customer_call", None, pbx, detail, exc) from exc
    except FollowupError as exc:
        raise ApiError(404, "no_customer", exc.message) from exc
    outcome, _ = await _placed(
        request, desk, dialer, dialling, device, "customer_call", None, detail
    )
    call = {"id": dialling.call_id, "result": outcome.result, "detail": outcome.detail}
    return web.json_response({"call": call})


async def _ready(
    request: web.Request,
    desk: FollowupDesk,
    action: str,
    queue: str | None,
    detail: str,
    body: dict[str, Any] | None = None,
) -> tuple[CallbackDialer, str, str]:
    """The dialer, PBX and agent's phone for a call the agent asked for; refuses (audited)
    while the agent is on a call or has no phone."""
    account = request[SESSION].account
    agent = account.agent_id or account.login
    dialer = desk.dialer
    if dialer is None:
        raise ApiError(503, "no_pbx", "No PBX is configured: calls cannot be placed.")
    if body is None:
        body = await json_object(request) if request.can_read_body else {}
    try:
        pbx = dialer.pbx_for(text(body, "pbx", 64))
    except ControlError as exc:
        raise ApiError(422, "invalid_field", exc.message, field=exc.field) from exc
    device = account.device or (dialer.device_for(account.agent_id) or "")
    talking = [c.call_id for c in request.app[POP].book.cards_for(agent) if c.state == "answered"]
    if talking:
        message = "You are on a call: place the call when this one has ended."
        await _audit(request, action, agent, queue, pbx, detail, f"refused: {message}")
        raise ApiError(409, "agent_busy", message, calls=talking)
    if not device:
        message = "Your account has no phone to call from (device, or an [[agents]] interface)."
        await _audit(request, action, agent, queue, pbx, detail, f"refused: {message}")
        raise ApiError(409, "no_device", message)
    return dialer, pbx, device


async def _contact_limit(
    request: web.Request,
    action: str,
    queue: str | None,
    pbx: str,
    detail: str,
    exc: ContactRefused,
) -> ApiError:
    """The audited 409 of a call the contact-frequency rule forbids."""
    account = request[SESSION].account
    agent = account.agent_id or account.login
    await _audit(request, action, agent, queue, pbx, detail, f"refused: {exc}")
    decision = exc.decision
    return ApiError(
        409,
        "contact_limit",
        exc.message,
        next_allowed_at=decision.next_at.isoformat() if decision.next_at else None,
        placed=decision.placed,
        limit=decision.limit,
    )


async def _placed(
    request: web.Request,
    desk: FollowupDesk,
    dialer: CallbackDialer,
    dialling: Dialling,
    device: str,
    action: str,
    queue: str | None,
    detail: str,
) -> Placed:
    """Place the recorded call (in the desk's task: a closed page does not cut it short),
    log and audit how it went."""
    account = request[SESSION].account
    agent = account.agent_id or account.login
    outcome, done = await asyncio.shield(
        desk.run(_place(request.app, desk, dialer, dialling, device, account.agent_id))
    )
    said = f"{outcome.result}: {outcome.detail}"
    log.info("call %s by %s on %s: %s", dialling.call_id, agent, dialling.pbx, said)
    result = "failed" if outcome.result in ("unknown", "not_placed") else "ok"
    await _audit(request, action, agent, queue, dialling.pbx, f"{detail}: {said}", result)
    return outcome, done


async def _place(
    app: web.Application,
    desk: FollowupDesk,
    dialer: CallbackDialer,
    dialling: Dialling,
    device: str,
    notify: str,
) -> Placed:
    """The Originate and its result's record (a task: see the module's docstring)."""
    try:
        outcome = await dialer.place(
            dialling.pbx,
            number=dialling.number,
            device=device,
            call_id=dialling.call_id,
            caller_name=dialling.customer_name,
            followup_id=dialling.followup_id,
        )
    except ControlError as exc:  # a number or device no header may carry
        outcome = DialOutcome("not_placed", exc.message)
    try:
        done = await desk.followups.finish_dial(
            dialling, outcome.result, outcome.detail, now=app[CLOCK]()
        )
    except (SQLAlchemyError, OSError) as exc:
        log.error("callback %s ended (%s) but not recorded: %s", dialling.call_id, outcome, exc)
        return outcome, None
    if done is not None:
        _changed(app, done, notify)
    return outcome, done


def _changed(app: web.Application, item: FollowupItem, *agents: str) -> None:
    """Tell the pages that show this follow-up, and the wallboard, that it changed."""
    hub = app[POP].hub
    owner = item.owner or ""
    told = {a for a in (*agents, owner) if a and not a.startswith(QUEUE_OWNER)}
    for agent in told:
        hub.publish(agent, {"type": "followups", "id": item.id, "state": item.state})
    app[WORK_CHANGED]()


async def _item(request: web.Request, desk: FollowupDesk) -> FollowupItem:
    followup_id = int(request.match_info["followup_id"])
    item = await desk.followups.get(followup_id, now=request.app[CLOCK]())
    if item is None:
        raise ApiError(404, "no_followup", f"There is no follow-up {followup_id}.")
    return item


def may_work(account: Account, item: FollowupItem, queues: frozenset[str]) -> bool:
    """The owner agent, a member of the owner queue, or a supervisor."""
    if account.role == "supervisor":
        return True
    owner = item.owner or ""
    if owner == account.agent_id:
        return True
    return owner.startswith(QUEUE_OWNER) and owner[len(QUEUE_OWNER) :] in queues


async def _permit(
    request: web.Request,
    desk: FollowupDesk,
    item: FollowupItem,
    action: str,
    agent: str,
    queue: str | None,
) -> None:
    account = request[SESSION].account
    if may_work(account, item, desk.queues_of(account.agent_id)):
        return
    message = "Only the owner, a member of the owner queue or a supervisor may do this."
    await _audit(request, action, agent, queue, None, f"follow-up {item.id}", f"denied: {message}")
    raise ApiError(403, "not_allowed", message)


async def _audit(
    request: web.Request,
    action: str,
    agent: str,
    queue: str | None,
    pbx: str | None,
    detail: str,
    result: str,
) -> None:
    """One audit row; a failure to write it is logged, never hides what was done."""
    account = request[SESSION].account
    try:
        await audit.record(
            request.app[STORE].sessions,  # type: ignore[union-attr]  # _desk checked it
            at=request.app[CLOCK](),
            login=account.login,
            role=account.role,
            action=action,
            agent=agent,
            queue=queue,
            pbx=pbx,
            detail=detail,
            result=result,
        )
    except (SQLAlchemyError, OSError) as exc:
        log.error("audit entry not written: %s %s %s: %s", action, detail, result, exc)


def _desk(request: web.Request) -> FollowupDesk:
    desk = request.app[FOLLOWUPS]
    if desk is None or request.app[STORE] is None:
        raise store_unavailable()
    return desk


def _queue(item: FollowupItem) -> str | None:
    owner = item.owner or ""
    return owner[len(QUEUE_OWNER) :] if owner.startswith(QUEUE_OWNER) else None


def _refusal(exc: FollowupError) -> ApiError:
    """The answer to a refused follow-up action: 422 naming a bad field, else by its kind."""
    if exc.field is not None:
        return ApiError(422, "invalid_field", exc.message, field=exc.field)
    return ApiError(_STATUS.get(exc.kind, 409), _IDS.get(exc.kind, "followup_state"), exc.message)


def _json(item: FollowupItem, labels: dict[str, str]) -> dict[str, Any]:
    """A follow-up for the page, with its owner as a person reads it."""
    owner = item.owner or ""
    label = labels.get(owner) or (
        f"queue {owner[len(QUEUE_OWNER) :]}" if owner.startswith(QUEUE_OWNER) else owner
    )
    return {**item.to_json(), "owner_label": label or None}


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(422, "invalid_field", f"limit: 1 to {MAX_PAGE}", field="limit")
    return int(text)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "no due time"


def _rule(desk: FollowupDesk) -> dict[str, Any]:
    settings = desk.followups.settings
    return {"contact_max": settings.contact_max, "window_hours": settings.contact_window_hours}


async def _close_desk(app: web.Application) -> None:
    desk = app[FOLLOWUPS]
    if desk is not None:
        await desk.close()
