"""The screen-pop app over HTTP (aiohttp test client): sessions, CSRF, authorisation, the API,
outcomes committed before "saved", and hostile text escaped in server-rendered pages.

Tests marked with the ``engine`` fixture run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.db import create_engine
from crm_sync.models import Customer, Interaction, Phone
from crm_sync.store import CustomerStore
from cti.hashing import hash_password
from screenpop.app import create_app
from screenpop.auth import Account, Accounts
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    HOSTILE,
    HOSTILE_PHONE,
    NOBODY,
    PASSWORDS,
    PBX,
    TWINS,
    WEI,
    Calls,
    Seeded,
    buffered,
    build_app,
    client_for,
    dispositions,
    eventually,
    login,
    new_pop,
    new_store,
    now,
    seed,
    writes_blocked,
)

Client = TestClient[web.Request, web.Application]


@dataclass
class World:
    client: Client
    pop: PopService
    store: CustomerStore
    calls: Calls
    seeded: Seeded
    engine: AsyncEngine


@pytest.fixture
async def world(engine: AsyncEngine) -> AsyncIterator[World]:
    store = new_store(engine)
    seeded = await seed(store)
    pop = new_pop(store)
    try:
        async with client_for(build_app(pop, store)) as client:
            yield World(client, pop, store, Calls(pop), seeded, engine)
    finally:
        await pop.close()


@pytest.fixture
async def bare() -> AsyncIterator[Client]:
    """The app with no customer store (what the security tests need, fast)."""
    async with client_for(build_app(new_pop(None), None)) as client:
        yield client


def answered(world: World, call_id: str, agent: str, number: str) -> None:
    world.calls.ring(call_id, agent, number)
    world.calls.answer(call_id, agent)


async def outcome_rows(engine: AsyncEngine, call_id: str) -> list[tuple[str, int, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Interaction.kind, Interaction.customer_id, Interaction.body)
            .where(Interaction.call_id == call_id, Interaction.kind.in_(["outcome", "followup"]))
            .order_by(Interaction.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def post_outcome(
    client: Client, csrf: str, call_id: str, **body: Any
) -> aiohttp.ClientResponse:
    return await client.post(
        f"/api/calls/{PBX}/{call_id}/outcome", json=body, headers={"X-CSRF-Token": csrf}
    )


# ---------------------------------------------------------------------- sessions and CSRF


ROUTES = [
    ("GET", "/"),
    ("GET", "/customers/1"),
    ("POST", "/logout"),
    ("GET", "/api/me"),
    ("GET", "/api/calls"),
    ("GET", f"/api/calls/{PBX}/c1"),
    ("POST", f"/api/calls/{PBX}/c1/outcome"),
    ("GET", "/api/customers/1"),
    ("GET", "/api/customers?phone=13800138000"),
    ("GET", "/api/no-such-route"),
]


async def test_every_route_and_the_websocket_need_a_session(bare: Client) -> None:
    for method, path in ROUTES:
        response = await bare.request(method, path, allow_redirects=False)
        if path.startswith("/api/"):
            assert response.status == 401, path
            assert (await response.json())["error_id"] == "unauthenticated"
        else:
            assert response.status == 303, path
            assert response.headers["Location"].startswith("/login?next=")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await bare.ws_connect("/ws")
    assert refused.value.status == 401
    forged = await bare.get("/api/me", cookies={"cti_session": "forged"})
    assert forged.status == 401
    assert (await bare.get("/static/agent.js")).status == 200  # no data in static files


async def test_wrong_password_is_refused_and_throttled_without_logging_it(
    bare: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    page = await bare.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token
    form = {"login": "alice", "password": "guess-123", "csrf_token": token.group(1)}
    for _ in range(5):
        response = await bare.post("/login", data=form, allow_redirects=False)
        assert response.status == 401
        assert "Wrong login or password." in await response.text()
        assert "cti_session" not in response.cookies
    right = await bare.post(
        "/login", data={**form, "password": PASSWORDS["alice"]}, allow_redirects=False
    )
    assert right.status == 429  # throttled, even with the right password
    assert 0 < int(right.headers["Retry-After"]) <= 60
    bob = await bare.post(
        "/login",
        data={**form, "login": "bob", "password": PASSWORDS["bob"]},
        allow_redirects=False,
    )
    assert bob.status == 303  # throttling is per login
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed login for 'alice'" in logged
    assert "guess-123" not in logged and PASSWORDS["alice"] not in logged
    assert PASSWORDS["bob"] not in logged


async def test_login_form_needs_its_csrf_token(bare: Client) -> None:
    form = {"login": "alice", "password": PASSWORDS["alice"], "csrf_token": "made-up"}
    response = await bare.post("/login", data=form, allow_redirects=False)
    assert response.status == 403
    await bare.get("/login")  # now the cookie is there, but the form still lies
    response = await bare.post("/login", data=form, allow_redirects=False)
    assert response.status == 403
    assert "cti_session" not in response.cookies


async def test_login_sets_a_strict_cookie_and_never_redirects_off_site(bare: Client) -> None:
    page = await bare.get("/login?next=//evil.example/x")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token
    form = {
        "login": "alice",
        "password": PASSWORDS["alice"],
        "csrf_token": token.group(1),
        "next": "//evil.example/x",
    }
    response = await bare.post("/login", data=form, allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/")
    cookie = response.cookies["cti_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert not cookie["secure"]
    # logging in again from this browser: a new token, and the old one is worthless
    again = await bare.get("/login", cookies={"cti_session": ""})
    token = re.search(r'name="csrf_token" value="([^"]+)"', await again.text())
    assert token
    form = {**form, "csrf_token": token.group(1)}
    relogin = await bare.post("/login", data=form, allow_redirects=False)
    assert relogin.cookies["cti_session"].value != cookie.value
    assert (await bare.get("/api/me", cookies={"cti_session": cookie.value})).status == 401
    assert (await bare.get("/api/me")).status == 200


async def test_secure_cookies_over_https() -> None:
    async with client_for(build_app(new_pop(None), None, secure_cookies=True)) as client:
        page = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
        assert token
        assert page.cookies["cti_login"]["secure"]
        form = {"login": "sue", "password": PASSWORDS["sue"], "csrf_token": token.group(1)}
        response = await client.post(
            "/login",
            data=form,
            cookies={"cti_login": token.group(1)},  # the jar keeps Secure ones from http
            allow_redirects=False,
        )
        cookie = response.cookies["__Host-cti_session"]
        assert cookie["secure"] and cookie["httponly"] and cookie["path"] == "/"


async def test_posts_need_the_sessions_csrf_token(bare: Client) -> None:
    csrf = await login(bare, "alice")
    body = {"key": "k" * 16, "disposition": "resolved"}
    url = f"/api/calls/{PBX}/c1/outcome"
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        response = await bare.post(url, json=body, headers=headers)
        assert response.status == 403
        assert (await response.json())["error_id"] == "csrf_failed"
    refused = await bare.post("/logout", data={"csrf_token": "wrong"}, allow_redirects=False)
    assert refused.status == 403
    out = await bare.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert (out.status, out.headers["Location"]) == (303, "/login")
    assert (await bare.get("/api/me")).status == 401


async def test_pages_carry_security_headers_and_errors_have_ids(bare: Client) -> None:
    await login(bare, "alice")
    page = await bare.get("/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    missing = await bare.get("/api/nothing-here")
    assert missing.status == 404
    assert await missing.json() == {"error_id": "not_found", "message": "Not Found"}
    wrong_method = await bare.delete("/api/calls")
    assert (await wrong_method.json())["error_id"] in ("method_not_allowed", "csrf_failed")
    html = await bare.get("/nothing-here")
    assert html.status == 404 and "not_found" in await html.text()
    assert "Content-Security-Policy" in html.headers


# ---------------------------------------------------------------------- the call API


async def test_agents_see_only_their_calls_supervisors_all(world: World) -> None:
    world.calls.ring("c1", "Alice", "008613800138000")
    world.calls.ring("c2", "Bob", NOBODY)
    await eventually(lambda: world.pop.lookup_for(PBX, "c1") is not None)
    csrf = await login(world.client, "alice")
    mine = await (await world.client.get("/api/calls")).json()
    assert [c["call_id"] for c in mine["cards"]] == ["c1"]
    (card,) = mine["cards"]
    assert card["display_number"] == "138 0013 8000"
    assert card["lookup"]["status"] == "found"
    assert card["lookup"]["cards"][0]["name"] == "张伟"
    assert mine["seq"] == world.pop.hub.last_seq("Alice")
    one = await world.client.get(f"/api/calls/{PBX}/c1")
    assert [c["agent"] for c in (await one.json())["cards"]] == ["Alice"]
    for path in (f"/api/calls/{PBX}/c2", f"/api/calls/{PBX}/no-such-call"):
        other = await world.client.get(path)
        assert other.status == 403
        assert (await other.json())["error_id"] == "call_not_yours"
    await world.client.post("/logout", data={"csrf_token": csrf})
    await login(world.client, "sue")
    page = await (await world.client.get("/")).text()
    assert "no agent line" in page and "agent.js" not in page  # a supervisor takes no calls
    everyone = await (await world.client.get("/api/calls")).json()
    assert sorted(c["call_id"] for c in everyone["cards"]) == ["c1", "c2"]
    assert (await world.client.get(f"/api/calls/{PBX}/c2")).status == 200
    assert (await world.client.get(f"/api/calls/{PBX}/no-such-call")).status == 404


async def test_customer_api(world: World) -> None:
    csrf = await login(world.client, "bob")
    card = await (await world.client.get(f"/api/customers/{world.seeded.wei}")).json()
    assert (card["name"], card["company"], card["tier"], card["repeat_caller"]) == (
        "张伟",
        "ACME 有限公司",
        "vip",
        True,
    )
    assert [e["title"] for e in card["open_items"]] == [
        "Call back about the refund",
        "Broken hinge",
    ]
    # to an agent, a customer that does not exist is one more that is not theirs
    missing = await world.client.get("/api/customers/999999")
    assert (missing.status, (await missing.json())["error_id"]) == (403, "not_your_customer")
    found = await (await world.client.get("/api/customers?phone=13800138000")).json()
    assert (found["status"], found["e164"], found["display_number"]) == (
        "found",
        WEI,
        "138 0013 8000",
    )
    several = await (await world.client.get("/api/customers", params={"phone": TWINS})).json()
    assert [c["name"] for c in several["cards"]] == ["Ana Twin", "Bea Twin"]
    none = await (await world.client.get("/api/customers", params={"phone": NOBODY})).json()
    assert (none["status"], none["cards"]) == ("none", [])
    bad = await world.client.get("/api/customers")
    assert (bad.status, (await bad.json())["error_id"]) == (400, "phone_required")
    await world.client.post("/logout", data={"csrf_token": csrf})
    await login(world.client, "sue")  # a supervisor reads any id, so learns it is missing
    missing = await world.client.get("/api/customers/999999")
    assert (missing.status, (await missing.json())["error_id"]) == (404, "no_customer")


# ---------------------------------------------------------------------- outcomes


async def test_outcome_is_answered_only_after_the_commit(world: World) -> None:
    answered(world, "c1", "Alice", "008613800138000")
    await eventually(lambda: world.pop.lookup_for(PBX, "c1") is not None)
    world.calls.end("c1", "Alice", WEI)
    csrf = await login(world.client, "alice")
    since = world.pop.hub.last_seq("Alice")
    body = {
        "key": "draft-0001",
        "customer_id": world.seeded.wei,
        "disposition": "callback",
        "notes": "wants a refund",
        "followup_due": "2031-05-06T09:00:00+08:00",
        "followup_owner": "Bob",
    }
    async with writes_blocked(world.engine):
        pending = asyncio.create_task(post_outcome(world.client, csrf, "c1", **body))
        await asyncio.sleep(0.4)
        assert not pending.done()  # the database has not committed: no answer yet
        assert world.pop.hub.last_seq("Alice") == since  # and the card has not closed
    response = await pending
    assert response.status == 200
    saved = await response.json()
    assert saved["saved"] is True and saved["duplicate"] is False
    assert await outcome_rows(world.engine, "c1") == [
        ("outcome", world.seeded.wei, "wants a refund"),
        ("followup", world.seeded.wei, "wants a refund"),
    ]
    missed = buffered(world.pop.hub, "Alice", since)
    assert [(m["card"]["state"], m["card"]["closed_reason"]) for m in missed if "card" in m] == [
        ("closed", "outcome saved")
    ]
    # the new follow-up is announced to whoever will see it in their list: Alice and Bob
    told = [("followups", saved["followup_id"], "open")]
    assert [(m["type"], m["id"], m["state"]) for m in missed if m["type"] == "followups"] == told
    assert [(m["type"], m["id"], m["state"]) for m in buffered(world.pop.hub, "Bob")] == told
    assert world.pop.book.cards_for("Alice") == []
    # in the customer's timeline
    card = await (await world.client.get(f"/api/customers/{world.seeded.wei}")).json()
    recent = {(e["kind"], e["title"], e["agent"]) for e in card["recent"]}
    assert {
        ("outcome", "callback", "Alice"),
        ("followup", "Follow up: Callback needed", "Alice"),
    } <= recent
    followup = next(e for e in card["open_items"] if e["kind"] == "followup" and e["agent"])
    assert followup["due_at"].startswith("2031-05-06T01:00:00")  # stored in UTC
    # the page retrying the same draft (lost answer, double click) writes nothing new
    again = await post_outcome(world.client, csrf, "c1", **body)
    assert again.status == 200
    assert (await again.json())["duplicate"] is True
    assert len(await outcome_rows(world.engine, "c1")) == 2


async def test_only_the_agent_who_handled_the_call_records_its_outcome(world: World) -> None:
    answered(world, "c1", "Alice", "008613800138000")
    world.calls.ring("c2", "Bob", NOBODY)  # rung, never answered
    body = {"key": K, "disposition": D, "new_customer_name": "x"}
    bob = await login(world.client, "bob")
    for call_id in ("c1", "c2"):
        refused = await post_outcome(world.client, bob, call_id, **body)
        assert refused.status == 403
        assert (await refused.json())["error_id"] == "call_not_yours"
    assert await outcome_rows(world.engine, "c1") == []
    await world.client.post("/logout", data={"csrf_token": bob})
    sue = await login(world.client, "sue")
    wrong = await post_outcome(world.client, sue, "c1", agent="Bob", **body)
    assert (wrong.status, (await wrong.json())["field"]) == (422, "agent")
    done = await post_outcome(world.client, sue, "c1", agent="Alice", **body)
    assert done.status == 200  # a supervisor closes an agent's call for them
    assert [k for k, _, _ in await outcome_rows(world.engine, "c1")] == ["outcome"]
    # saved while the call goes on: Alice's card stays open, and closes when the call ends
    [card] = world.pop.book.cards_for("Alice")
    assert (card.state, card.outcome_saved) == ("answered", True)
    world.calls.end("c1", "Alice", WEI)
    assert world.pop.book.cards_for("Alice") == []


K, D = "k-00000001", "resolved"
BAD_OUTCOMES: list[tuple[Any, int, str]] = [
    ({"disposition": "resolved"}, 422, "invalid_field"),  # no key
    ({"key": "short", "disposition": "resolved"}, 422, "invalid_field"),
    ({"key": K, "disposition": "made_up"}, 422, "unknown_disposition"),
    ({"key": K, "disposition": D, "notes": 5}, 422, "invalid_field"),
    ({"key": K, "disposition": D, "notes": "x" * 4001}, 422, "invalid_field"),
    ({"key": K, "disposition": D, "customer_id": "1"}, 422, "invalid_field"),
    ({"key": K, "disposition": D, "customer_id": 999999}, 422, "outcome_rejected"),
    ({"key": K, "disposition": D, "followup_due": "2031-05-06T09:00"}, 422, "invalid_field"),
    ({"key": K, "disposition": D, "followup_due": "next week"}, 422, "invalid_field"),
    ({"key": K, "disposition": D, "followup_owner": "bobb"}, 422, "unknown_owner"),  # a typo
    ({"key": K, "disposition": D}, 422, "outcome_rejected"),  # which of the two customers?
    (["not", "an", "object"], 400, "bad_json"),
]


async def test_bad_outcomes_are_refused_with_stable_ids(world: World) -> None:
    answered(world, "c3", "Alice", TWINS)  # two customers match: the body must say which
    csrf = await login(world.client, "alice")
    for body, status, error_id in BAD_OUTCOMES:
        response = await world.client.post(
            f"/api/calls/{PBX}/c3/outcome", json=body, headers={"X-CSRF-Token": csrf}
        )
        error = await response.json()
        assert (response.status, error["error_id"]) == (status, error_id), body
        assert error["message"]
    invalid = await world.client.post(
        f"/api/calls/{PBX}/c3/outcome", data=b"{not json", headers={"X-CSRF-Token": csrf}
    )
    assert (await invalid.json())["error_id"] == "bad_json"
    assert await outcome_rows(world.engine, "c3") == []
    assert [c.state for c in world.pop.book.cards_for("Alice")] == ["answered"]


async def test_matched_picked_and_new_customers(world: World) -> None:
    answered(world, "c1", "Alice", "008613800138000")
    answered(world, "c3", "Alice", TWINS)
    answered(world, "c4", "Alice", NOBODY)
    await eventually(lambda: world.pop.lookup_for(PBX, "c1") is not None)
    world.calls.end("c1", "Alice", WEI)  # wrap-up: the pop no longer holds the lookup
    csrf = await login(world.client, "alice")
    matched = await post_outcome(world.client, csrf, "c1", key="k-00000001", disposition="resolved")
    assert (await matched.json())["customer_id"] == world.seeded.wei  # the one match
    picked = await post_outcome(
        world.client,
        csrf,
        "c3",
        key="k-00000003",
        disposition="resolved",
        customer_id=world.seeded.twin_b,
    )
    assert (await picked.json())["customer_id"] == world.seeded.twin_b
    new = await post_outcome(
        world.client,
        csrf,
        "c4",
        key="k-00000004",
        disposition="info_given",
        new_customer_name=HOSTILE,
    )
    created = (await new.json())["customer_id"]
    async with world.store.sessions() as session:
        customer = await session.get(Customer, created)
        assert customer is not None and customer.name == HOSTILE
        phones = await session.scalars(select(Phone.e164).where(Phone.customer_id == created))
        assert list(phones) == [NOBODY]  # the caller's number, so the next call finds them
    found = await (await world.client.get("/api/customers", params={"phone": NOBODY})).json()
    assert [c["name"] for c in found["cards"]] == [HOSTILE]


async def test_database_down_gives_503_and_the_draft_can_be_retried(world: World) -> None:
    answered(world, "c1", "Alice", "008613800138000")
    await eventually(lambda: world.pop.lookup_for(PBX, "c1") is not None)
    csrf = await login(world.client, "alice")
    working = world.store.sessions
    dead = create_engine("postgresql://nobody@127.0.0.1:1/none")
    try:
        world.store.sessions = CustomerStore(dead, world.store.phones).sessions
        world.store.outcomes.sessions = world.store.sessions  # the agent page's writer too
        body = {"key": "retry-0001", "disposition": "resolved"}
        down = await post_outcome(world.client, csrf, "c1", **body)
        assert down.status == 503
        error = await down.json()
        assert error["error_id"] == "store_unavailable"
        assert "Traceback" not in str(error)
        assert [c.state for c in world.pop.book.cards_for("Alice")] == ["answered"]
        world.store.sessions = working  # the database is back; the page retries its draft
        world.store.outcomes.sessions = working
        up = await post_outcome(world.client, csrf, "c1", **body)
        assert up.status == 200
        assert len(await outcome_rows(world.engine, "c1")) == 1
    finally:
        world.store.sessions = working
        world.store.outcomes.sessions = working
        await dead.dispose()


async def test_unexpected_errors_show_no_trace(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("internal detail /srv/secret.py")

    await login(world.client, "alice")
    await world.client.get("/api/customers", params={"phone": WEI})  # she may read Wei
    monkeypatch.setattr(world.store, "card", broken)
    for path in (f"/api/customers/{world.seeded.wei}", f"/customers/{world.seeded.wei}"):
        response = await world.client.get(path)
        text = await response.text()
        assert response.status == 500
        assert "internal" in text
        assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert "internal detail" in caplog.text  # but the log has it, for the operator


# ---------------------------------------------------------------------- hostile text


async def test_hostile_text_is_escaped_in_server_rendered_pages(world: World) -> None:
    escaped = (
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; &#34;O&#39;Brien&#34; &amp; Co"
    )
    await login(world.client, "alice")
    await world.client.get("/search", params={"q": HOSTILE_PHONE})  # she may read its finds
    page = await (await world.client.get(f"/customers/{world.seeded.hostile}")).text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count(escaped) == 4  # title, heading, the note, the Call button: all as text
    assert "+44 20 7946 0958" in page
    missing = await (await world.client.get("/customers/0", headers={"Accept": "text/html"})).text()
    assert "<script" not in missing.replace('<script src="/static/', "")
    not_found = await world.client.get("/%3Cscript%3Ealert(1)%3C/script%3E")
    assert "<script>alert" not in await not_found.text()
    # what the login page echoes back
    login_page = await world.client.get("/login?next=/%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
    assert "<script>alert" not in await login_page.text()


async def test_hostile_account_name_and_card_payload(engine: AsyncEngine) -> None:
    store = new_store(engine)
    await seed(store)
    pop = new_pop(store)
    accounts = Accounts(
        [Account("eve", HOSTILE, "Eve", "agent", hash_password(PASSWORDS["alice"], n=2**10))]
    )
    app = create_app(pop=pop, accounts=accounts, dispositions=dispositions(), store=store, now=now)
    try:
        async with client_for(app) as client:
            page = await client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
            assert token
            form = {"login": "eve", "password": PASSWORDS["alice"], "csrf_token": token.group(1)}
            await client.post("/login", data=form)
            Calls(pop).ring("h1", "Eve", HOSTILE_PHONE)
            await eventually(lambda: pop.lookup_for(PBX, "h1") is not None)
            html = await (await client.get("/")).text()
            assert HOSTILE not in html and "&lt;script&gt;alert(&#39;x&#39;)" in html
            # the page's JSON config is inert too (no "</script>" can close its element)
            config = re.search(r'id="page-config">(.*?)</script>', html, re.S)
            assert config and "<" not in config.group(1)
            # the cards carry the raw text: the browser test shows it is rendered as text
            cards = await (await client.get("/api/calls")).json()
            assert cards["cards"][0]["lookup"]["cards"][0]["name"] == HOSTILE
    finally:
        await pop.close()
