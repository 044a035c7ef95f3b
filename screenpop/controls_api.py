"""Member controls over JSON: pause, queue log-in/out and listen-in, each one audited; and
the supervisors' ratings of agents (stored, not audited: a rating row says who gave it).

Every control goes the same way: the permission first (a supervisor may control any agent;
an agent may only pause and unpause themselves), then the input (through
:class:`cti.controls.MemberControls`, which refuses anything that is not a configured agent,
PBX or a printable short text), then the AMI action, then one audit row, committed before
the answer. A refused permission is audited too (``denied: …``; its body is not read, so a
denied pause is logged as ``pause`` either way); bad input is answered 422 and not audited,
since nothing was asked of the PBX. Without a customer store there is nowhere to audit, so
no control is done (503).
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
from cti.controls import SPY_OPTIONS, ControlError, MemberControls, Mode
from screenpop.api import _body
from screenpop.errors import ApiError
from screenpop.keys import CLOCK, CONTROLS, POP, SESSION, STORE, WORK_CHANGED

log = logging.getLogger(__name__)

_STATUS = {"invalid": 422, "refused": 409, "failed": 502}
_IDS = {"invalid": "invalid_field", "refused": "pbx_refused", "failed": "pbx_failed"}


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/agents/{agent_id}/pause", pause, name="api_pause")
    app.router.add_get("/api/agents/{agent_id}/pause", pause_state, name="api_pause_state")
    app.router.add_post("/api/queues/{queue}/members", queue_add, name="api_queue_add")
    app.router.add_delete(
        "/api/queues/{queue}/members/{agent_id}", queue_remove, name="api_queue_remove"
    )
    app.router.add_post("/api/calls/{pbx}/{call_id}/listen", listen, name="api_listen")
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
    body = await _body(request)
    paused = body.get("paused")
    if not isinstance(paused, bool):
        raise _invalid("paused", "true or false")
    reason = _text(body, "reason") or ""
    queue = _text(body, "queue")
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
    body = await _body(request)
    agent = _text(body, "agent")
    if agent is None:
        raise _invalid("agent", "the agent to log in")
    penalty = body.get("penalty")
    if penalty is not None and (isinstance(penalty, bool) or not isinstance(penalty, int)):
        raise _invalid("penalty", "a whole number from 0")
    pbx = _pbx(controls, _text(body, "pbx"))
    detail = f"penalty {penalty}" if penalty is not None else ""
    attempt = _Attempt("queue_add", agent, queue, pbx, detail)
    return await _run(request, attempt, lambda: controls.add(pbx, agent, queue, penalty))


async def queue_remove(request: web.Request) -> web.StreamResponse:
    """Log the agent out of the queue; ``?pbx=`` when several PBXs are configured."""
    queue, agent = request.match_info["queue"], request.match_info["agent_id"]
    await _permit(request, _Attempt("queue_remove", agent, queue))
    controls = _ready(request)
    pbx = _pbx(controls, request.query.get("pbx"))
    attempt = _Attempt("queue_remove", agent, queue, pbx)
    return await _run(request, attempt, lambda: controls.remove(pbx, agent, queue))


async def listen(request: web.Request) -> web.StreamResponse:
    """``{"mode": "listen" | "whisper" | "barge"}``: ring the supervisor's own phone (the
    account's ``device``) into the call of the agent who handles it."""
    pbx, call_id = request.match_info["pbx"], request.match_info["call_id"]
    handled = request.app[POP].book.handled_by(pbx, call_id)
    agent = handled[-1] if handled else ""
    await _permit(request, _Attempt("listen", agent, None, pbx))
    controls = _ready(request)
    body = await _body(request)
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


async def audit_log(request: web.Request) -> web.StreamResponse:
    """``?limit=N`` (1 to 500, default 100): the newest entries first. Supervisors only."""
    if request[SESSION].account.role != "supervisor":
        raise ApiError(403, "supervisors_only", "Only supervisors may read the audit log.")
    store = _store(request)
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= audit.MAX_LIMIT:
        raise _invalid("limit", f"a whole number from 1 to {audit.MAX_LIMIT}")
    entries = await audit.recent(store.sessions, int(raw))
    return web.json_response({"entries": [_entry(e) for e in entries]})


async def rate(request: web.Request) -> web.StreamResponse:
    """``{"score": 1..5, "note"?: str}``: a supervisor's rating of a configured agent. The
    wallboard's figures are refreshed from the store at once."""
    agent = _rated_agent(request)
    body = await _body(request)
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


async def _permit(request: web.Request, attempt: _Attempt, *, own: bool = False) -> None:
    """Raise 403 (and audit the refusal) unless the account may do this."""
    account = request[SESSION].account
    if account.role == "supervisor" or (own and account.agent_id == attempt.agent):
        return
    message = (
        "Agents may pause and unpause only themselves." if own else "Only supervisors may do this."
    )
    if request.app[STORE] is not None:
        try:
            await _record(request, attempt, f"denied: {message}")
        except (SQLAlchemyError, OSError) as exc:
            log.error("audit entry not written: %s %s", attempt, exc)
    raise ApiError(403, "not_allowed", message)


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
    request: web.Request, attempt: _Attempt, act: Callable[[], Awaitable[None]]
) -> web.StreamResponse:
    """Do the control, audit how it ended, answer. Bad input is neither done nor audited."""
    try:
        await act()
    except ControlError as exc:
        if exc.kind == "invalid":
            raise _api_error(exc) from exc
        try:
            await _record(request, attempt, f"{exc.kind}: {exc.message}")
        except (SQLAlchemyError, OSError) as audit_exc:
            log.error("audit entry not written: %s %s: %s", attempt, exc.kind, audit_exc)
        raise _api_error(exc) from exc
    try:
        await _record(request, attempt, "ok")
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


async def _record(request: web.Request, attempt: _Attempt, result: str) -> None:
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
    )


def _pbx(controls: MemberControls, requested: str | None) -> str:
    try:
        return controls.pbx_for(requested)
    except ControlError as exc:
        raise ApiError(422, "invalid_field", exc.message, field=exc.field) from exc


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
    }
