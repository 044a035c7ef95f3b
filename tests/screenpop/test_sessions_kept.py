"""Sessions kept in the store: a login outlives a restart, and loses none of its guarantees.

A restart is a second app (or SessionStore) on the same database: what one made, the other
accepts; what one ended, the other refuses within its cache bound. The token is stored only
as its sha256; idle expiry, accounts removed or changed, and a store that is down are checked
with an injected clock. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from alembic import command
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.db import create_engine
from crm_sync.migrate import alembic_config, current_revision, head_revision, upgrade
from crm_sync.models import WebSession
from crm_sync.sessions import SessionTable
from crm_sync.store import CustomerStore, StoreUnavailable
from cti.hashing import hash_password
from screenpop.auth import Account, Accounts, SessionStore
from screenpop.keys import SESSIONS
from tests.support.screenpop import accounts, build_app, client_for, login, new_pop, new_store

Client = TestClient[web.Request, web.Application]
COOKIE = "cti_session"
DEAD_URL = "postgresql://nobody@127.0.0.1:1/none"  # refuses at once


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


async def rows(engine: AsyncEngine) -> list[WebSession]:
    async with async_sessionmaker(engine)() as session:
        return list((await session.scalars(select(WebSession))).all())


def kept(engine: AsyncEngine, clock: FakeClock, people: Accounts | None = None) -> SessionStore:
    """One instance's sessions over the table of ``engine``."""
    table = SessionTable(new_store(engine).sessions)
    return SessionStore(people or accounts(), table, idle=3600, clock=clock)


def alice(people: Accounts) -> Account:
    account = people.get("alice")
    assert account is not None
    return account


# ---------------------------------------------------------------------- the store side


async def test_a_session_is_kept_as_a_hash_and_outlives_its_process(engine: AsyncEngine) -> None:
    clock = FakeClock()
    first = kept(engine, clock)
    session = await first.create(alice(first.accounts))
    [row] = await rows(engine)
    assert row.token_hash == hashlib.sha256(session.token.encode()).hexdigest()
    stored = [str(getattr(row, c)) for c in ("token_hash", "login", "role", "agent_id", "csrf")]
    assert not any(session.token in value for value in stored)  # never in clear
    assert (row.login, row.role, row.agent_id, row.csrf) == (
        "alice",
        "agent",
        "Alice",
        session.csrf,
    )

    restarted = kept(engine, clock)  # a new process: nothing in memory
    assert restarted.get(session.token) is None
    again = await restarted.load(session.token)
    assert again is not None and again is not session
    assert (again.account.login, again.csrf) == ("alice", session.csrf)
    assert again.csrf_ok(session.csrf)
    assert await restarted.load("forged") is None and await restarted.load(None) is None


async def test_an_end_reaches_the_other_instances_within_the_cache_bound(
    engine: AsyncEngine,
) -> None:
    clock = FakeClock()
    one, two = kept(engine, clock), kept(engine, clock)
    session = await one.create(alice(one.accounts))
    theirs = await two.load(session.token)
    assert theirs is not None
    assert await one.end(session.token) is session
    assert await rows(engine) == []
    clock.t += 10
    assert await two.load(session.token) is theirs  # cached, within cache_age (30 s)
    clock.t += two.cache_age
    assert await two.load(session.token) is None  # asked the table again: gone
    # the periodic pass drops a cached session ended elsewhere (its sockets then close)
    three = kept(engine, clock)
    session = await one.create(alice(one.accounts))
    assert await three.load(session.token) is not None
    await one.end(session.token)
    await three.refresh()
    assert three.get(session.token) is None


async def test_idle_sessions_expire_and_last_use_is_written_seldom(engine: AsyncEngine) -> None:
    clock = FakeClock()
    one = kept(engine, clock)
    session = await one.create(alice(one.accounts))
    created = datetime.fromtimestamp(clock.t, UTC)
    clock.t += 61
    assert one.get(session.token) is session  # used: an API call, a socket's ping
    await one.refresh()
    [row] = await rows(engine)
    assert row.last_seen.replace(tzinfo=UTC) == datetime.fromtimestamp(clock.t, UTC)
    assert row.created_at.replace(tzinfo=UTC) == created
    clock.t += 10
    one.get(session.token)
    await one.refresh()
    [row] = await rows(engine)
    assert row.last_seen.replace(tzinfo=UTC) == datetime.fromtimestamp(clock.t - 10, UTC)

    clock.t += 3000  # idle, but not long enough
    assert await kept(engine, clock).load(session.token) is not None
    clock.t += 3601  # idle too long, in memory and in the table
    assert one.get(session.token) is None
    assert await kept(engine, clock).load(session.token) is None
    assert await rows(engine) == []  # the stale row went with it

    stale = await one.create(alice(one.accounts))
    clock.t += 3601
    fresh = await one.create(alice(one.accounts))  # a login sweeps what expired
    assert [r.token_hash for r in await rows(engine)] == [fresh.token_hash]
    assert stale.token_hash != fresh.token_hash


async def test_an_account_removed_or_changed_keeps_no_session(engine: AsyncEngine) -> None:
    clock = FakeClock()
    one = kept(engine, clock)
    hashed = hash_password("pw", n=2**10)
    for changed in (
        Accounts([Account("bob", "Bob", "Bob", "agent", hashed)]),  # alice is gone
        Accounts([Account("alice", "Alice", "Alice", "supervisor", hashed)]),  # role
        Accounts([Account("alice", "Alice", "Alicia", "agent", hashed)]),  # agent id
    ):
        session = await one.create(alice(one.accounts))
        assert await kept(engine, clock, changed).load(session.token) is None
        assert await rows(engine) == []


async def test_a_store_that_is_down_is_said_never_taken_for_a_logout(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    one = kept(engine, clock)
    session = await one.create(alice(one.accounts))
    other = await one.create(alice(one.accounts))
    dead = create_engine(DEAD_URL)
    try:
        table = one.table
        assert table is not None
        table.sessions = CustomerStore(dead, new_store(engine).phones).sessions
        clock.t += one.cache_age + 1
        assert await one.load(session.token) is session  # known here: goes on
        await one.refresh()
        assert "store is unavailable" in caplog.text
        assert one.get(other.token) is other  # not dropped for want of an answer
        restarted = kept(engine, clock)
        restarted_table = restarted.table
        assert restarted_table is not None
        restarted_table.sessions = table.sessions
        with pytest.raises(StoreUnavailable):
            await restarted.load(session.token)  # cannot tell: not "logged out"
        with pytest.raises(StoreUnavailable):
            await restarted.create(alice(restarted.accounts))
        with pytest.raises(StoreUnavailable):
            await one.end(session.token)
        assert one.get(session.token) is session  # nothing ended
    finally:
        await dead.dispose()


async def test_the_sessions_revision_down_and_up(engine: AsyncEngine, db_url: str) -> None:
    async def tables() -> set[str]:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))

    assert "web_sessions" in await tables()
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0008")
    assert "web_sessions" not in await tables() and "interactions" in await tables()
    await asyncio.to_thread(upgrade, db_url)
    assert "web_sessions" in await tables()
    assert await current_revision(engine) == head_revision(db_url)


# ---------------------------------------------------------------------- two runs of the app


@dataclass
class Instance:
    client: Client
    app: web.Application

    async def get(self, path: str, token: str, **headers: str) -> Any:
        return await self.client.get(
            path, headers={"Cookie": f"{COOKIE}={token}", **headers}, allow_redirects=False
        )


@asynccontextmanager
async def instance(url: str, cache_age: float = 30.0, **options: Any) -> AsyncIterator[Instance]:
    """One run of the web side on the database at ``url``, with its own engine."""
    engine = create_engine(url)
    store = new_store(engine)
    pop = new_pop(store)
    app = build_app(pop, store, **options)
    app[SESSIONS].cache_age = cache_age  # before it starts: its re-checks follow it
    try:
        async with client_for(app) as client:
            yield Instance(client, client.app)
    finally:
        await pop.close()
        await engine.dispose()


def token_of(client: Client) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value


async def test_a_login_outlives_a_restart_and_a_logout_reaches_every_instance(
    db_url: str, engine: AsyncEngine
) -> None:
    async with instance(db_url, cache_age=0.4, ping_interval=0.2) as first:
        csrf = await login(first.client, "alice")
        token = token_of(first.client)
        tab = await first.client.ws_connect("/ws")
        assert (await tab.receive_json(timeout=2))["type"] == "snapshot"

        async with instance(db_url) as second:  # the restarted service
            me = await second.get("/api/me", token)
            assert me.status == 200 and (await me.json())["login"] == "alice"
            page = await second.get("/", token)
            assert page.status == 200 and csrf in await page.text()  # the same CSRF token
            socket = await second.client.ws_connect("/ws", headers={"Cookie": f"{COOKIE}={token}"})
            assert (await socket.receive_json(timeout=2))["type"] == "snapshot"
            bye = await second.client.post(
                "/logout",
                data={"csrf_token": csrf},
                headers={"Cookie": f"{COOKIE}={token}"},
                allow_redirects=False,
            )
            assert bye.status == 303
            closed = await socket.receive(timeout=2)  # this instance's tab: at once
            assert (closed.type, closed.data) == (WSMsgType.CLOSE, 4401)
            assert await rows(engine) == []

        # the first instance's tab closes within its cache bound and a ping
        while (message := await tab.receive(timeout=3)).type == WSMsgType.TEXT:
            pass
        assert (message.type, message.data) == (WSMsgType.CLOSE, 4401)
        me = await first.get("/api/me", token)
        assert me.status == 401


async def test_a_session_cookie_with_the_store_down_gets_503_never_a_logout(db_url: str) -> None:
    async with instance(db_url) as working:
        await login(working.client, "alice")
        token = token_of(working.client)
    async with instance(DEAD_URL) as down:
        me = await down.get("/api/me", token)
        assert me.status == 503 and (await me.json())["error_id"] == "store_unavailable"
        page = await down.get("/", token, Accept="text/html")
        assert page.status == 503  # not the login page
        assert (await down.get("/login", token)).status == 503
        anonymous = await down.client.get("/api/me")
        assert anonymous.status == 401  # no cookie: nothing to check
        form = await down.client.get("/login")
        assert form.status == 200
        tried = await down.client.post(
            "/login",
            data={
                "login": "alice",
                "password": "alice-pw-1",
                "csrf_token": token_of_form(await form.text()),
                "next": "/",
            },
            allow_redirects=False,
        )
        assert tried.status == 503 and "unavailable" in await tried.text()


def token_of_form(html: str) -> str:
    marker = 'name="csrf_token" value="'
    return html.split(marker, 1)[1].split('"', 1)[0]


async def test_without_a_store_sessions_stay_in_memory() -> None:
    async with client_for(build_app(new_pop(None), None)) as client:
        await login(client, "alice")
        assert client.app is not None and client.app[SESSIONS].table is None
        assert (await client.get("/api/me")).status == 200
