"""Member controls over JSON: pause, queue log-in/out and listen-in, each one audited; and
the supervisors' ratings of agents (stored, not audited: a rating row says who gave it).

Every control goes the same way: the permission first (a supervisor may control any agent;
an agent may only pause and unpause themselves), then the input (through
:class:`cti.controls.MemberControls`, which refuses anything that is not a configured agent,
PBX or a printable short text, checked as received), then the AMI action, then one audit row
holding what was sent, committed before the answer. A refused permission is audited too
(``denied: …``; its body is not read, so a denied pause is logged as ``pause`` either way),
but bounded per login (:func:`crm_sync.audit.record_denied`): identical ones fold into one
row, and past the limit the answer is 429. Bad input is answered 422 and not audited, since
nothing was asked of the PBX. Without a customer store there is nowhere to audit, so no
control is done (503).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync import audit, ratings
from crm_sync.models import AgentRating, AuditEntry
from crm_sync.store import CustomerStore
from cti.call_control import TARGET_KINDS, CallControls
from cti.controls import SPY_OPTIONS, ControlError, MemberControls, Mode, Sent, check_text
from screenpop.denials import refuse
from screenpop.errors import ApiError
from screenpop.inputs import json_object
from screenpop.keys import CALL_CONTROLS, CLOCK, CONTROLS, POP, SESSION, STORE, WORK_CHANGED

log = logging.getLogger(__name__)

_STATUS = {"invalid": 422, "refused": 409, "failed": 502}
_IDS = {"invalid": "invalid_field", "refused": "pbx_refused", "failed": "pbx_failed"}
_OWN_CALLS = "Agents may act only on the calls they are on."


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/agents/{agent_id}/pause", pause, name="api_pause")
    app.router.add_get("/api/agents/{agent_id}/pause", pause_state, name="api_pause_state")
    app.router.add_post("/api/queues/{queue}/members", queue_add, name="api_queue_add")
    app.router.add_delete(
        "/api/queues/{queue}/members/{agent_id}", queue_remove, name="api_queue_remove"
    )
    app.router.add_post("/api/calls/{pbx}/{call_id}/listen", listen, name="api_listen")
    app.router.add_post("/api/calls/{pbx}/{call_id}/hangup", hangup, name="api_hangup")
    app.router.add_post("/api/calls/{pbx}/{call_id}/transfer", transfer, name="api_transfer")
    app.router.add_get("/api/audit", audit_log, name="api_audit")
    app.router.add_post("/api/agents/{agent_id}/ratings", rate, name="api_rate")
    app.router.add_get("/api/agents/{agent_id}/ratings", rating_list, name="api_ratings")


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What goes into the audit row besides who asked and how it ended."""

    action: str
    agent: str
    queue: str | None = None
    pbx: str | None = None
    detail: str = ""


async def pause(request: web.Request) -> web.StreamResponse:
    """``{"paused": bool, "reason": str, "queue"?: str, "pbx"?: str}``."""
    agent = request.match_info["agent_id"]
    await _permit(request, _Attempt("pause", agent), own=True)
    controls = _ready(request)
    body = await json_object(request)
    paused = body.get("paused")
    if not isinstance(paused, bool):
        raise _invalid("paused", "true or false")
    reason = _checked("reason", _text(body, "reason") or "", required=paused)
    queue = _text(body, "queue")
    queue = _checked("queue", queue) if queue is not None else None
    pbx = _pbx(controls, _text(body, "pbx"))
    attempt = _Attempt("pause" if paused else "unpause", agent, queue, pbx, reason)
    return await _run(request, attempt, lambda: controls.pause(pbx, agent, paused, reason, queue))


async def pause_state(request: web.Request) -> web.StreamResponse:
    """The agent's pause in Asterisk now: ``{"paused", "reason", "queues": {queue: reason or
    null}}`` (``?pbx=`` when several). Paused when paused in any queue; a read, not audited."""
    agent = request.match_info["agent_id"]
    account = request[SESSION].account
    if account.role != "supervisor" and account.agent_id != agent:
        raise ApiError(403, "not_allowed", "Agents may see only their own pause.")
    controls = request.app[CONTROLS]
    if controls is None:
        raise ApiError(503, "no_pbx", "No PBX is configured: member controls are unavailable.")
    pbx = _pbx(controls, request.query.get("pbx"))
    try:
        queues = await controls.paused_in(pbx, agent)
    except ControlError as exc:
        raise _api_error(exc) from exc
    reasons = [r for r in queues.values() if r is not None]
    return web.json_response(
        {"paused": bool(reasons), "reason": next(iter(reasons), ""), "queues": queues}
    )


async def queue_add(request: web.Request) -> web.StreamResponse:
    """``{"agent": str, "pbx"?: str, "penalty"?: int}``: log the agent in to the queue."""
    queue = request.match_info["queue"]
    await _permit(request, _Attempt("queue_add", "", queue))
    controls = _ready(request)
    body = await json_object(request)
    agent = _text(body, "agent")
    if agent is None:
        raise _invalid("agent", "the agent to log in")
    penalty = body.get("penalty")
    if penalty is not None and (isinstance(penalty, bool) or not isinstance(penalty, int)):
        raise _invalid("penalty", "a whole number from 0")
    pbx = _pbx(controls, _text(body, "pbx"))
    detail = f"penalty {penalty}" if penalty is not None else ""
    attempt = _Attempt("queue_add", agent, _checked("queue", queue), pbx, detail)
    return await _run(request, attempt, lambda: controls.add(pbx, agent, queue, penalty))


async def queue_remove(request: web.Request) -> web.StreamResponse:
    """Log the agent out of the queue; ``?pbx=`` when several PBXs are configured."""
    queue, agent = request.match_info["queue"], request.match_info["agent_id"]
    await _permit(request, _Attempt("queue_remove", agent, queue))
    controls = _ready(request)
    pbx = _pbx(controls, request.query.get("pbx"))
    attempt = _Attempt("queue_remove", agent, _checked("queue", queue), pbx)
    return await _run(request, attempt, lambda: controls.remove(pbx, agent, queue))


async def listen(request: web.Request) -> web.StreamResponse:
    """``{"mode": "listen" | "whisper" | "barge"}``: ring the supervisor's own phone (the
    account's ``device``) into the call of the agent who handles it."""
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    handled = request.app[POP].book.handled_by(pbx, call_id)
    agent = handled[-1] if handled else ""
    await _permit(request, _Attempt("listen", agent, None, pbx))
    controls = _ready(request)
    body = await json_object(request)
    raw = body.get("mode", "listen")
    if not isinstance(raw, str) or raw not in SPY_OPTIONS:  # a list is no key: not a 500
        raise _invalid("mode", f"one of {', '.join(SPY_OPTIONS)}")
    mode = cast(Mode, raw)  # one of SPY_OPTIONS' keys, as just checked
    if not agent:
        raise ApiError(404, "no_call", "No such call, or no agent handles it.")
    pbx = _pbx(controls, pbx)
    device = request[SESSION].account.device
    attempt = _Attempt("listen", agent, None, pbx, mode)
    return await _run(request, attempt, lambda: controls.listen(pbx, agent, device, mode))


async def hangup(request: web.Request) -> web.StreamResponse:
    """``{"agent"?: str}``: hang up the agent's side of the call (an agent's own; a
    supervisor's of the agent named, by default the one who handles the call now)."""
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    body = await json_object(request)
    agent = _on_call(request, body, pbx, call_id)
    attempt = _Attempt("hangup", agent, None, pbx, call_id)
    await _permit(request, attempt, own=True, message=_OWN_CALLS)
    controls = _call_controls(request)
    return await _run(request, attempt, lambda: controls.hangup(pbx, call_id, agent))


async def transfer(request: web.Request) -> web.StreamResponse:
    """``{"type": "blind", "kind": "queue" | "agent" | "number", "target": str,
    "agent"?: str}``: send the caller to the target; the agent's part ends."""
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    body = await json_object(request)
    agent = _on_call(request, body, pbx, call_id)
    await _permit(
        request, _Attempt("transfer", agent, None, pbx, call_id), own=True, message=_OWN_CALLS
    )
    controls = _call_controls(request)
    if body.get("type", "blind") != "blind":
        raise _invalid("type", "blind")
    kind, target = _text(body, "kind"), _text(body, "target")
    if kind not in TARGET_KINDS:
        raise _invalid("kind", f"one of {', '.join(TARGET_KINDS)}")
    if target is None:
        raise _invalid("target", "the queue, agent or number to transfer to")
    detail = f"{call_id} blind to {kind} {_checked('target', target)}"
    queue = target if kind == "queue" else None
    attempt = _Attempt("transfer", agent, queue, pbx, detail)
    return await _run(
        request, attempt, lambda: controls.blind_transfer(pbx, call_id, agent, kind, target)
    )


def _on_call(request: web.Request, body: dict[str, Any], pbx: str, call_id: str) -> str:
    """Whose side of the call to act on: the agent's own; a supervisor's choice, by
    default the agent who handles the call now (404 when nobody does)."""
    account = request[SESSION].account
    named = _text(body, "agent")
    if account.role != "supervisor":
        return named or account.agent_id or ""  # another agent's name is refused by _permit
    if named:
        return named
    handled = request.app[POP].book.handled_by(pbx, call_id)
    if not handled:
        raise ApiError(404, "no_call", "No such call, or no agent handles it.")
    return handled[-1]


def _call_controls(request: web.Request) -> CallControls:
    controls = request.app[CALL_CONTROLS]
    if controls is None:
        raise ApiError(503, "no_pbx", "No PBX is configured: call controls are unavailable.")
    _store(request)
    return controls


async def audit_log(request: web.Request) -> web.StreamResponse:
    """``?limit=N`` (1 to 500, default 100), ``?before=<id>`` (the page after that entry),
    ``?login=``, ``?action=``, ``?agent=``, ``?outcome=`` (ok, denied, refused, failed): the
    newest entries first, and ``next`` (the ``before`` of the next page, or null).
    Supervisors only."""
    if request[SESSION].account.role != "supervisor":
        raise ApiError(403, "supervisors_only", "Only supervisors may read the audit log.")
    store = _store(request)
    query = request.query
    limit = _whole(query.get("limit", "100"), "limit", audit.MAX_LIMIT)
    before = _whole(query["before"], "before", 2**63 - 1) if "before" in query else None
    outcome = query.get("outcome")
    if outcome is not None and outcome not in audit.OUTCOMES:
        raise _invalid("outcome", f"one of {', '.join(audit.OUTCOMES)}")
    entries = await audit.page(
        store.sessions,
        limit,
        before=before,
        login=query.get("login"),
        action=query.get("action"),
        agent=query.get("agent"),
        outcome=outcome,
    )
    after = entries[-1].id if len(entries) == limit else None
    return web.json_response({"entries": [_entry(e) for e in entries], "next": after})


async def rate(request: web.Request) -> web.StreamResponse:
    """``{"score": 1..5, "note"?: str}``: a supervisor's rating of a configured agent. The
    wallboard's figures are refreshed from the store at once."""
    agent = _rated_agent(request)
    body = await json_object(request)
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or score not in ratings.SCORES:
        raise _invalid("score", "a whole number from 1 to 5")
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > ratings.MAX_NOTE:
        raise _invalid("note", f"a text of at most {ratings.MAX_NOTE} characters")
    rating_id = await ratings.record(
        _store(request).sessions,
        at=request.app[CLOCK](),
        agent=agent,
        rater=request[SESSION].account.login,
        score=score,
        note=note,
    )
    request.app[WORK_CHANGED]()
    return web.json_response({"ok": True, "id": rating_id}, status=201)


async def rating_list(request: web.Request) -> web.StreamResponse:
    """The agent's last 50 ratings, newest first. Supervisors only."""
    agent = _rated_agent(request)
    found = await ratings.recent(_store(request).sessions, agent)
    return web.json_response({"ratings": [_rating(r) for r in found]})


def _rated_agent(request: web.Request) -> str:
    """The agent of the path, if a supervisor asks and it is a configured agent."""
    if request[SESSION].account.role != "supervisor":
        raise ApiError(403, "supervisors_only", "Only supervisors rate agents.")
    agent = request.match_info["agent_id"]
    if not _ready(request).knows(agent):
        raise _invalid("agent", f"{agent!r} is not a configured agent")
    return agent


async def _permit(
    request: web.Request, attempt: _Attempt, *, own: bool = False, message: str = ""
) -> None:
    """Raise 403 (and audit the refusal, bounded per login) unless the account may do this;
    429 once the login was refused too often of late. ``own``: an agent may, on themselves."""
    account = request[SESSION].account
    if account.role == "supervisor" or (own and account.agent_id == attempt.agent):
        return
    message = message or (
        "Agents may pause and unpause only themselves." if own else "Only supervisors may do this."
    )
    await refuse(
        request,
        error_id="not_allowed",
        message=message,
        action=attempt.action,
        result=message,
        agent=attempt.agent,
        queue=attempt.queue,
        pbx=attempt.pbx,
    )


def _ready(request: web.Request) -> MemberControls:
    """The controls, if there is a PBX to control and a store to audit in."""
    controls = request.app[CONTROLS]
    if controls is None:
        raise ApiError(503, "no_pbx", "No PBX is configured: member controls are unavailable.")
    _store(request)
    return controls


def _store(request: web.Request) -> CustomerStore:
    store = request.app[STORE]
    if store is None:
        raise ApiError(
            503, "audit_unavailable", "The audit log is unavailable, so no control is done."
        )
    return store


async def _run(
    request: web.Request, attempt: _Attempt, act: Callable[[], Awaitable[Sent]]
) -> web.StreamResponse:
    """Do the control, audit how it ended and what was sent, answer. Bad input is neither
    done nor audited."""
    try:
        sent = await act()
    except ControlError as exc:
        if exc.kind == "invalid":
            raise _api_error(exc) from exc
        try:
            await _record(request, attempt, f"{exc.kind}: {exc.message}", exc.sent)
        except (SQLAlchemyError, OSError) as audit_exc:
            log.error("audit entry not written: %s %s: %s", attempt, exc.kind, audit_exc)
        raise _api_error(exc) from exc
    try:
        await _record(request, attempt, "ok", sent)
    except (SQLAlchemyError, OSError) as exc:
        log.error("audit entry not written: %s ok: %s", attempt, exc)
        raise ApiError(
            503,
            "audit_failed",
            "Done, but the audit log could not be written: tell an administrator.",
            done=True,
        ) from exc
    return web.json_response({"ok": True})


def _api_error(exc: ControlError) -> ApiError:
    """The answer for a control Asterisk (or the input) refused."""
    if exc.kind == "invalid":
        return ApiError(422, "invalid_field", exc.message, field=exc.field)
    return ApiError(_STATUS[exc.kind], _IDS[exc.kind], exc.message)


async def _record(request: web.Request, attempt: _Attempt, result: str, sent: Sent) -> None:
    account = request[SESSION].account
    await audit.record(
        _store(request).sessions,
        at=request.app[CLOCK](),
        login=account.login,
        role=account.role,
        action=attempt.action,
        agent=attempt.agent,
        queue=attempt.queue,
        pbx=attempt.pbx,
        detail=attempt.detail,
        result=result,
        sent=sent,
    )


def _pbx(controls: MemberControls, requested: str | None) -> str:
    try:
        return controls.pbx_for(requested)
    except ControlError as exc:
        raise ApiError(422, "invalid_field", exc.message, field=exc.field) from exc


def _checked(name: str, value: str, *, required: bool = True) -> str:
    """The text as it will be sent (see :func:`cti.controls.check_text`), for the audit row;
    the controls check it again, whatever the caller did."""
    try:
        return check_text(name, value, required=required)
    except ControlError as exc:
        raise _api_error(exc) from exc


def _whole(raw: str, name: str, most: int) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise _invalid(name, f"a whole number from 1 to {most}")
    return int(raw)


def _text(body: dict[str, Any], name: str) -> str | None:
    """A string field or None; its content is checked by the controls."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid(name, "a string")
    return value


def _invalid(field: str, expected: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {expected}.", field=field)


def _rating(rating: AgentRating) -> dict[str, Any]:
    return {
        "id": rating.id,
        "at": rating.at.isoformat(),
        "agent": rating.agent,
        "rater": rating.rater,
        "score": rating.score,
        "note": rating.note,
    }


def _entry(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "login": entry.login,
        "role": entry.role,
        "action": entry.action,
        "agent": entry.agent,
        "queue": entry.queue,
        "pbx": entry.pbx,
        "detail": entry.detail,
        "result": entry.result,
        "sent": entry.sent,
        "attempts": entry.attempts,
        "last_at": (entry.last_at or entry.at).isoformat(),
    }
