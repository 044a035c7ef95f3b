"""The screen-pop web application: ``create_app`` assembles it from objects built elsewhere.

Routes (details in docs/api.md): pages ``/login``, ``/logout``, ``/``, ``/customers/{id}``;
JSON ``/api/...``; the live push ``/ws``; the supervisors' wallboard (``/wallboard``, its API
and socket: screenpop/wallboard.py); supervisor controls (pause, queue members, listen, the
audit log, ratings of agents: screenpop/controls_api.py); the external CRM's inbound API
(``/api/crm/…``, bearer token instead of a session: screenpop/crm_api.py); follow-ups (the
work list, one-click callback, close: screenpop/followups_api.py); static files ``/static/``.
Middlewares, outermost first: errors (one place turns failures into responses), then
sessions (every route but the login page and static files needs a session; every unsafe
method needs the session's CSRF token; with a store, sessions are kept in it and survive a
restart). Security headers are added to every response, errors and WebSockets included.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from crm_sync.sessions import SessionTable
from crm_sync.store import CustomerStore, StoreUnavailable
from cti.call_control import CallControls
from cti.controls import MemberControls
from screenpop import (
    access,
    api,
    controls_api,
    crm_api,
    day_api,
    followups_api,
    openapi,
    outbox_api,
    search,
    views,
    wallboard,
    ws,
)
from screenpop.auth import Accounts, LoginLimiter, SessionStore
from screenpop.dispositions import Dispositions
from screenpop.errors import ApiError, error_middleware, store_unavailable, wants_json
from screenpop.keys import (
    ACCOUNTS,
    AGENT_QUEUES,
    CALL_CONTROLS,
    CLOCK,
    CONTROLS,
    CRM_TOKEN,
    DISPOSITIONS,
    EPOCH,
    FOLLOWUP_OWNERS,
    LOGIN_LIMITER,
    PING_INTERVAL,
    POP,
    SECURE_COOKIES,
    SESSION,
    SESSIONS,
    STORE,
    WORK_CHANGED,
)
from screenpop.pipeline import PopService

STATIC = Path(__file__).parent / "static"
# the CRM's have their own token; probes and scrapers have no login, and none of theirs
# carries customer data (screenpop.health, screenpop.metrics)
PUBLIC_ROUTES = frozenset({"login", "static", "healthz", "readyz", "metrics", *crm_api.ROUTES})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SECURITY_HEADERS = {
    # no inline script at all: even an escaping bug could not run injected code
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(
    *,
    pop: PopService,
    accounts: Accounts,
    dispositions: Dispositions,
    store: CustomerStore | None,
    now: Callable[[], datetime],
    secure_cookies: bool = False,
    ping_interval: float = 15.0,
    board: wallboard.BoardView | None = None,
    controls: MemberControls | None = None,
    call_controls: CallControls | None = None,
    work_changed: Callable[[], None] = lambda: None,
    crm_token: str = "",
    followups: followups_api.FollowupDesk | None = None,
) -> web.Application:
    """The aiohttp application. ``pop`` and ``store`` belong to the caller (it closes them);
    ``now`` is the clock for outcomes and customer cards; ``secure_cookies`` for HTTPS;
    ``crm_token`` turns the CRM's inbound API on (empty: off)."""
    app = web.Application(middlewares=[error_middleware, session_middleware])
    app[POP] = pop
    app[ACCOUNTS] = accounts
    app[DISPOSITIONS] = dispositions
    app[STORE] = store
    app[CLOCK] = now
    # with a store, sessions are kept in it too and survive a restart (screenpop.auth)
    app[SESSIONS] = SessionStore(accounts, SessionTable(store.sessions) if store else None)
    app[LOGIN_LIMITER] = LoginLimiter()
    app[SECURE_COOKIES] = secure_cookies
    app[PING_INTERVAL] = ping_interval
    app[wallboard.BOARD] = board
    app[CONTROLS] = controls
    app[CALL_CONTROLS] = call_controls
    app[WORK_CHANGED] = work_changed
    app[EPOCH] = secrets.token_hex(8)
    app[CRM_TOKEN] = crm_token
    app[followups_api.FOLLOWUPS] = followups
    app[AGENT_QUEUES] = followups.queues_of if followups is not None else _no_queues
    app[access.GRANTS] = access.SearchGrants()  # what each agent's searches let them read
    app[FOLLOWUP_OWNERS] = lambda: followups_api.owners_offered(accounts, followups)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("screenpop", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        default_helpers=False,
    )
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_close_sockets)
    if store is not None:
        app.cleanup_ctx.append(_sessions_kept)
    views.add_routes(app)
    api.add_routes(app)
    wallboard.add_routes(app)
    controls_api.add_routes(app)
    crm_api.add_routes(app)
    followups_api.add_routes(app)
    day_api.add_routes(app)
    outbox_api.add_routes(app)
    search.add_routes(app)
    openapi.add_routes(app)
    app.router.add_get("/ws", ws.websocket, name="ws")
    app.router.add_static("/static/", STATIC, name="static")
    return app


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No session: 401 JSON for the API and WebSocket, a redirect to the login page otherwise;
    a session the store cannot confirm (it is down): 503. An unsafe method also needs the
    session's CSRF token (header or form field)."""
    if request.match_info.route.name in PUBLIC_ROUTES:
        return await handler(request)
    try:
        session = await request.app[SESSIONS].load(
            request.cookies.get(views.session_cookie(request.app))
        )
    except StoreUnavailable:
        raise store_unavailable() from None  # cannot tell: never a silent logout
    if session is None:
        if wants_json(request):
            raise ApiError(401, "unauthenticated", "Log in first.")
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    if request.method not in SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER)
        if presented is None and request.content_type == "application/x-www-form-urlencoded":
            value = (await request.post()).get(CSRF_FIELD)
            presented = value if isinstance(value, str) else None
        if not session.csrf_ok(presented):
            raise ApiError(403, "csrf_failed", "Missing or wrong CSRF token; reload the page.")
    request[SESSION] = session
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/static/"):
        del response.headers["Cache-Control"]  # scripts and styles may be cached


async def _sessions_kept(app: web.Application) -> AsyncIterator[None]:
    """Re-confirms cached sessions with the store while the app runs (SessionStore.run)."""
    task = asyncio.create_task(app[SESSIONS].run())
    yield
    task.cancel()
    await asyncio.wait([task])


async def _close_sockets(app: web.Application) -> None:
    """Browsers reconnect (and resume) after a restart; say it is one, don't just vanish."""
    for socket in app[SESSIONS].sockets():
        await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def _no_queues(agent: str) -> frozenset[str]:
    return frozenset()
