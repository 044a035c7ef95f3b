"""Pages: login and logout, the agent's page, one customer's timeline.

The login form is protected against CSRF before any session exists by a double-submit token
(a cookie scoped to ``/login`` plus the same value in the form). A successful login always
starts a new session (no fixation) and sets only an opaque token cookie. Sessions are kept
in the store when there is one (screenpop.auth): a login or logout the store cannot record
is refused with 503, never half done.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.corrections import ContactIn, CorrectionError, contact_of, correct_contact
from crm_sync.store import CustomerStore, StoreUnavailable
from crm_sync.timeline import OutcomeError
from crm_sync.timeline import add_note as add_note_to
from screenpop import access
from screenpop.api import MAX_NOTES as MAX_NOTE
from screenpop.api import customer_card
from screenpop.errors import store_unavailable
from screenpop.keys import (
    ACCOUNTS,
    CLOCK,
    DISPOSITIONS,
    FOLLOWUP_OWNERS,
    LOGIN_LIMITER,
    PING_INTERVAL,
    SECURE_COOKIES,
    SESSION,
    SESSIONS,
    STORE,
)

log = logging.getLogger(__name__)

LOGIN_COOKIE = "cti_login"
SESSION_LOST = 4401  # WebSocket close code: the session ended (logout, expiry); log in again
_NOTE_KEY = re.compile(r"[0-9a-f]{24}")  # the key the page put in the form
MAX_TARGET = 2000  # characters of a ``next`` target (longer: ``/``)
_NOT_IN_TARGET = re.compile(r"[\x00-\x1f\x7f\\]")  # C0 controls, DEL, backslash
_PRINTABLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page, name="login")
    app.router.add_post("/login", login, name="login")
    app.router.add_post("/logout", logout, name="logout")
    app.router.add_get("/", agent_page, name="agent")
    app.router.add_get(r"/customers/{customer_id:\d{1,18}}", customer_page, name="customer")
    app.router.add_post(r"/customers/{customer_id:\d{1,18}}/notes", add_note, name="customer_note")
    app.router.add_post(
        r"/customers/{customer_id:\d{1,18}}/contact", correct, name="customer_contact"
    )
    aiohttp_jinja2.get_env(app).filters["when"] = _when


def session_cookie(app: web.Application) -> str:
    """``__Host-`` binds the cookie to this host and path / when served over HTTPS."""
    return "__Host-cti_session" if app[SECURE_COOKIES] else "cti_session"


async def login_page(request: web.Request) -> web.StreamResponse:
    target = _local_target(request.query.get("next"))
    try:
        session = await request.app[SESSIONS].load(request.cookies.get(session_cookie(request.app)))
    except StoreUnavailable:
        raise store_unavailable() from None
    if session is not None:
        raise web.HTTPSeeOther(target)
    return _login_form(request, target)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the form, throttle (screenpop.auth.LoginLimiter), verify the password off the
    event loop."""
    app = request.app
    form = await request.post()
    name = _field(form.get("login"), 100).strip()
    password = _field(form.get("password"), 1024)
    target = _local_target(_field(form.get("next"), MAX_TARGET + 1))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    presented = _field(form.get("csrf_token"), 100)
    if not expected or not hmac.compare_digest(expected.encode(), presented.encode()):
        return _login_form(
            request, target, name, status=403, error="The form had expired; please try again."
        )
    limiter = app[LOGIN_LIMITER]
    attempt = limiter.start(name, request.remote)  # counted now: one in flight is a failure
    if attempt.wait > 0:
        wait = math.ceil(attempt.wait)
        log.warning("login %r from %s throttled after repeated failures", name, attempt.client)
        response = _login_form(
            request,
            target,
            name,
            status=429,
            error=f"Too many failed attempts; try again in {wait} s.",
        )
        response.headers["Retry-After"] = str(wait)
        return response
    account = await asyncio.to_thread(app[ACCOUNTS].verify, name, password)
    if account is None:
        log.info("failed login for %r from %s", name, attempt.client)
        return _login_form(request, target, name, status=401, error="Wrong login or password.")
    limiter.succeeded(attempt)
    sessions = app[SESSIONS]
    try:
        old = await sessions.end(request.cookies.get(session_cookie(app)))  # no fixation
        if old is not None:
            await _close(old.sockets)
        session = await sessions.create(account)
    except StoreUnavailable as exc:
        log.warning("login of %s refused: the store is unavailable (%s)", account.login, exc)
        return _login_form(
            request, target, name, status=503, error="The store is unavailable; try again."
        )
    log.info("%s logged in", account.login)
    if target == "/" and account.role == "supervisor" and not account.agent_id:
        target = "/wallboard"  # no calls pop for them: they land where their work is
    response = web.Response(status=303, headers={"Location": target})
    response.set_cookie(
        session_cookie(app),
        session.token,
        httponly=True,
        samesite="Lax",
        secure=app[SECURE_COOKIES] or None,
        path="/",
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """Ends the session everywhere (its row in the store too); when the store cannot delete
    it, 503 and nothing ended: a logout that the next restart would undo is no logout."""
    try:
        session = await request.app[SESSIONS].end(request[SESSION].token)
    except StoreUnavailable:
        raise store_unavailable() from None
    if session is not None:
        await _close(session.sockets)
        log.info("%s logged out", session.account.login)
    response = web.Response(status=303, headers={"Location": "/login"})
    response.del_cookie(session_cookie(request.app), path="/")
    return response


async def agent_page(request: web.Request) -> web.StreamResponse:
    """The page is a shell; its script gets the cards over the WebSocket."""
    session = request[SESSION]
    dispositions = request.app[DISPOSITIONS]
    config = {
        "agent_id": session.account.agent_id,
        "csrf": session.csrf,
        "ping_interval": request.app[PING_INTERVAL],
        "require_outcome": dispositions.require_outcome,
        "dispositions": {d.code: d.label for d in dispositions.items},
        "nobody_needed": [d.code for d in dispositions.items if not d.needs_customer],
    }
    return aiohttp_jinja2.render_template(
        "agent.html",
        request,
        {
            "account": session.account,
            "csrf": session.csrf,
            "config": config,
            "dispositions": dispositions,
            "owners": request.app[FOLLOWUP_OWNERS](),
        },
    )


async def customer_page(request: web.Request) -> web.StreamResponse:
    """One customer's page, if screenpop.access lets the account read it (403 otherwise)."""
    await access.check(request, int(request.match_info["customer_id"]))
    return await _customer_page(request)


async def _customer_page(
    request: web.Request,
    *,
    error: str | None = None,
    text: str = "",
    contact_error: str | None = None,
    contact: ContactIn | None = None,
) -> web.StreamResponse:
    card = await customer_card(request)
    store = request.app[STORE]
    session = request[SESSION]
    stored = await _contact(store, card.id)
    response = aiohttp_jinja2.render_template(
        "customer.html",
        request,
        {
            "account": session.account,
            "csrf": session.csrf,
            "card": card,
            "phones": [(p, store.phones.display(p) if store else p) for p in card.phones],
            "can_call": bool(session.account.agent_id or session.account.device),
            "labels": {d.code: d.label for d in request.app[DISPOSITIONS].items},
            "note_key": secrets.token_hex(12),  # one per form shown: a double submit adds once
            "note_error": error,
            "note_text": text,
            "contact_key": secrets.token_hex(12),
            "contact_error": contact_error,
            "contact": contact or stored[0],
            "crm_owned": stored[1],
        },
    )
    if error is not None or contact_error is not None:
        response.set_status(422)
    return response


async def correct(request: web.Request) -> web.StreamResponse:
    """The customer page's "Correct contact data" form: sent to the CRM, which owns these
    fields, and applied here at once only for a customer born here (crm_sync.corrections);
    then the page again (303), where the timeline says which it was."""
    form = await request.post()
    given = ContactIn(
        _field(form.get("email"), 300) or None,
        tuple(_field(form.get("phones"), 1000).splitlines()),
        _field(form.get("address"), 1100) or None,
    )
    key = _field(form.get("key"), 40)
    customer_id = int(request.match_info["customer_id"])
    await access.check(request, customer_id, access.CONTACT)
    store = request.app[STORE]
    if store is None:
        raise store_unavailable()
    if not _NOTE_KEY.fullmatch(key):
        return await _customer_page(
            request, contact_error="The form had expired; please try again.", contact=given
        )
    account = request[SESSION].account
    try:
        await correct_contact(
            store.sessions,
            store.phones,
            customer_id,
            given,
            agent=account.agent_id or account.login,
            key=key,
            now=request.app[CLOCK](),
        )
    except CorrectionError as exc:
        return await _customer_page(request, contact_error=f"Not sent: {exc}", contact=given)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("contact correction of customer %s not saved: %s", customer_id, exc)
        raise store_unavailable() from exc
    return web.Response(status=303, headers={"Location": f"/customers/{customer_id}#timeline"})


async def _contact(store: CustomerStore | None, customer_id: int) -> tuple[ContactIn, bool]:
    """The customer's contact data as stored, and whether the CRM owns it."""
    try:
        found = await contact_of(store.sessions, customer_id) if store is not None else None
    except (SQLAlchemyError, OSError) as exc:
        log.warning("contact data of customer %s not read: %s", customer_id, exc)
        raise store_unavailable() from exc
    return found or (ContactIn(None, (), None), False)


async def add_note(request: web.Request) -> web.StreamResponse:
    """The customer page's "Add a note" form (no call needed): stored with the agent's name,
    told to the CRM, then the page again (303), where the note tops the timeline."""
    form = await request.post()
    text = _field(form.get("text"), MAX_NOTE + 1)
    key = _field(form.get("key"), 40)
    customer_id = int(request.match_info["customer_id"])
    await access.check(request, customer_id, access.NOTE)
    store = request.app[STORE]
    if store is None:
        raise store_unavailable()
    if len(text) > MAX_NOTE:
        return await _customer_page(
            request, error=f"A note has at most {MAX_NOTE} characters.", text=text
        )
    if not _NOTE_KEY.fullmatch(key):
        return await _customer_page(
            request, error="The form had expired; please try again.", text=text
        )
    account = request[SESSION].account
    try:
        await add_note_to(
            store.sessions,
            customer_id,
            agent=account.agent_id or account.login,
            text=text,
            key=key,
            now=request.app[CLOCK](),
        )
    except OutcomeError as exc:
        return await _customer_page(request, error=f"Not added: {exc}.", text=text)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("note on customer %s not saved: %s", customer_id, exc)
        raise store_unavailable() from exc
    return web.Response(status=303, headers={"Location": f"/customers/{customer_id}#timeline"})


def _login_form(
    request: web.Request,
    target: str,
    name: str = "",
    *,
    status: int = 200,
    error: str | None = None,
) -> web.Response:
    # reuse the browser's token: several login tabs (or a favicon fetch) must not void each other
    token = request.cookies.get(LOGIN_COOKIE, "")
    if len(token) != 43:
        token = secrets.token_urlsafe(32)
    response = aiohttp_jinja2.render_template(
        "login.html",
        request,
        {"csrf": token, "next": target, "login": name, "error": error},
        status=status,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=request.app[SECURE_COOKIES] or None,
        path="/login",
    )
    return response


async def _close(sockets: set[web.WebSocketResponse]) -> None:
    for socket in list(sockets):
        await socket.close(code=SESSION_LOST, message=b"logged out")


def _local_target(value: str | None) -> str:
    """``value`` if it is a path on this site, else ``/``: never an open redirect, never a
    header aiohttp refuses to write. Browsers drop tab, CR and LF from a URL and read ``\\``
    as ``/`` (so ``/\\t/host`` becomes ``//host``, another origin): any control character or
    backslash is refused outright, not cleaned. Other non-ASCII is percent-encoded (a header
    is ASCII); a lone surrogate cannot be, and is refused."""
    if (
        not value
        or len(value) > MAX_TARGET
        or not value.startswith("/")
        or value.startswith("//")
        or _NOT_IN_TARGET.search(value)
    ):
        return "/"
    try:
        target = quote(value, safe=_PRINTABLE_ASCII)
    except UnicodeEncodeError:
        return "/"
    return target if len(target) <= MAX_TARGET else "/"


def _field(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _when(value: datetime | None) -> Markup:
    """A ``<time>`` the page's formats.js reads in the browser's locale and zone (the UTC
    text stays for a browser without it): one date and time format per locale everywhere."""
    if value is None:
        return Markup("")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # SQLite keeps no zone; the store writes UTC
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M UTC")
    )
