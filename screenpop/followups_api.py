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
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync import audit
from crm_sync.followups import (
    QUEUE_OWNER,
    ContactRefused,
    Dialling,
    FollowupError,
    FollowupItem,
    Followups,
    owners_for,
)
from cti.callbacks import CallbackDialer, DialOutcome
from cti.controls import ControlError
from screenpop.api import _body
from screenpop.auth import Account, Accounts
from screenpop.errors import ApiError, store_unavailable
from screenpop.keys import CLOCK, POP, SESSION, STORE, WORK_CHANGED

log = logging.getLogger(__name__)
Placed = tuple[DialOutcome, FollowupItem | None]  # how a dial ended; the follow-up after it

_STATUS = {"missing": 404, "conflict": 409, "invalid": 409, "refused": 409}
_IDS = {
    "missing": "no_followup",
    "conflict": "followup_state",
    "invalid": "followup_not_dialable",
    "refused": "contact_limit",
}


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
    app.on_cleanup.append(_close_desk)


async def work_list(request: web.Request) -> web.StreamResponse:
    """An agent's follow-ups to do: their own and their queues', the earliest due first. A
    supervisor gets everybody's, or one owner's with ``?owner=`` (``alice``,
    ``queue:support``)."""
    desk = _desk(request)
    account = request[SESSION].account
    if account.role == "supervisor":
        owner = request.query.get("owner", "").strip()
        owners = [owner[:64]] if owner else None
    else:
        owners = owners_for(account.agent_id, desk.queues_of(account.agent_id))
    items = await desk.followups.work(owners, now=request.app[CLOCK]())
    return web.json_response(
        {"followups": [i.to_json() for i in items], "owners": owners, "rule": _rule(desk)}
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
    dialer = desk.dialer
    if dialer is None:
        raise ApiError(503, "no_pbx", "No PBX is configured: callbacks cannot be placed.")
    body = await _body(request) if request.can_read_body else {}
    try:
        pbx = dialer.pbx_for(_text(body, "pbx"))
    except ControlError as exc:
        raise ApiError(422, "invalid_field", exc.message, field=exc.field) from exc
    device = account.device or (dialer.device_for(account.agent_id) or "")
    detail = f"follow-up {item.id} to {item.number or 'no number'}"
    talking = [c.call_id for c in request.app[POP].book.cards_for(agent) if c.state == "answered"]
    if talking:
        message = "You are on a call: dial the callback when it has ended."
        await _audit(request, "followup_dial", agent, queue, pbx, detail, f"refused: {message}")
        raise ApiError(409, "agent_busy", message, calls=talking)
    if not device:
        message = "Your account has no phone to call from (device, or an [[agents]] interface)."
        await _audit(request, "followup_dial", agent, queue, pbx, detail, f"refused: {message}")
        raise ApiError(409, "no_device", message)
    clock = request.app[CLOCK]
    try:
        dialling = await desk.followups.start_dial(
            item.id, agent=agent, pbx=pbx, token=secrets.token_hex(4), now=clock()
        )
    except ContactRefused as exc:
        await _audit(request, "followup_dial", agent, queue, pbx, detail, f"refused: {exc}")
        decision = exc.decision
        raise ApiError(
            409,
            "contact_limit",
            exc.message,
            next_allowed_at=decision.next_at.isoformat() if decision.next_at else None,
            placed=decision.placed,
            limit=decision.limit,
        ) from exc
    except FollowupError as exc:
        raise _refusal(exc) from exc
    outcome, done = await asyncio.shield(
        desk.run(_place(request.app, desk, dialer, dialling, device, account.agent_id))
    )
    said = f"{outcome.result}: {outcome.detail}"
    log.info("callback of follow-up %s by %s on %s: %s", item.id, agent, pbx, said)
    result = "failed" if outcome.result in ("unknown", "not_placed") else "ok"
    await _audit(request, "followup_dial", agent, queue, pbx, f"{detail}: {said}", result)
    if done is None:  # the call happened: retrying would call the customer again
        raise ApiError(
            503,
            "result_not_recorded",
            f"The call ended ({outcome.detail}) but the store did not take its result: "
            "do not dial again, tell an administrator.",
        )
    return web.json_response({"followup": done.to_json(), "call": {"id": dialling.call_id}})


async def close(request: web.Request) -> web.StreamResponse:
    """``{"result": "done" | "cancelled" | "no_answer", "note"?: str}``: close by hand."""
    desk = _desk(request)
    item = await _item(request, desk)
    account = request[SESSION].account
    agent = account.agent_id or account.login
    queue = _queue(item)
    await _permit(request, desk, item, "followup_close", agent, queue)
    body = await _body(request)
    result, note = body.get("result"), body.get("note", "")
    if not isinstance(result, str):
        raise ApiError(422, "invalid_field", "result: done, cancelled or no_answer", field="result")
    if not isinstance(note, str):
        raise ApiError(422, "invalid_field", "note: a text", field="note")
    try:
        closed = await desk.followups.close(
            item.id, result=result, note=note, by=agent, now=request.app[CLOCK]()
        )
    except FollowupError as exc:
        if exc.field is not None:
            raise ApiError(422, "invalid_field", exc.message, field=exc.field) from exc
        raise _refusal(exc) from exc
    detail = f"follow-up {item.id}: {result}"
    await _audit(request, "followup_close", agent, queue, None, detail, "ok")
    _changed(request.app, closed, account.agent_id)
    return web.json_response({"followup": closed.to_json()})


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
    return ApiError(_STATUS.get(exc.kind, 409), _IDS.get(exc.kind, "followup_state"), exc.message)


def _rule(desk: FollowupDesk) -> dict[str, Any]:
    settings = desk.followups.settings
    return {"contact_max": settings.contact_max, "window_hours": settings.contact_window_hours}


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(422, "invalid_field", f"{name}: a string", field=name)
    return value


async def _close_desk(app: web.Application) -> None:
    desk = app[FOLLOWUPS]
    if desk is not None:
        await desk.close()
