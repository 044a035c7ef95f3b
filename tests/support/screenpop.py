"""Shared by the screen-pop tests (no tests here): seeded customers, accounts, calls, login.

The customers are real rows in the test database (SQLite or PostgreSQL); calls are the domain
events of cti/events.py fed to a real PopService, as the CTI service would.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.models import Customer, Interaction, Phone
from crm_sync.phones import PhoneNormalizer
from crm_sync.search import index_names
from crm_sync.store import CustomerStore
from cti.ami import AmiClient, Item
from cti.events import (
    AgentRinging,
    CallAnswered,
    CallEnded,
    CallQueued,
    CallRecord,
    CallStarted,
    DomainEvent,
)
from cti.hashing import hash_password
from cti.settings import PbxSettings
from ivr.walk import Findings, Route
from pbxsim import AmiServer
from screenpop.app import create_app
from screenpop.auth import Account, Accounts
from screenpop.cards import PopBook
from screenpop.dispositions import Dispositions
from screenpop.hub import Hub
from screenpop.pipeline import PopService

ROOT = Path(__file__).parent.parent.parent
HOSTILE = '<script>alert(\'x\')</script><img src=x onerror="alert(1)"> "O\'Brien" & Co'
PBX = "lab"
WEI = "+8613800138000"  # one customer: 张伟, a contact of a VIP company
TWINS = "+4930123456"  # two customers share it
HOSTILE_PHONE = "+442079460958"  # the customer with the hostile name and note
NOBODY = "+15550100999"  # in no customer's record
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "sue": "sue-pw-3"}


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Seeded:
    wei: int
    acme: int
    twin_a: int
    twin_b: int
    hostile: int


def accounts() -> Accounts:
    """Alice and Bob answer calls as agents ``Alice`` and ``Bob``; Sue supervises. The hashes
    are cheap (n=2**10): the tests log in often, the cost parameter is not under test here."""

    def account(login: str, name: str, agent: str, role: Any) -> Account:
        return Account(login, name, agent, role, hash_password(PASSWORDS[login], n=2**10))

    return Accounts(
        [
            account("alice", "Alice Agent", "Alice", "agent"),
            account("bob", "Bob Agent", "Bob", "agent"),
            account("sue", "Sue Supervisor", "", "supervisor"),
        ]
    )


def dispositions() -> Dispositions:
    return Dispositions.load(ROOT / "config" / "dispositions.toml")


async def seed(store: CustomerStore) -> Seeded:
    """Customers with a story: open items, a recent call (repeat caller), hostile text."""
    at = now()

    async def add(session: AsyncSession, name: str, phones: list[str], **fields: Any) -> Customer:
        customer = Customer(
            kind=fields.pop("kind", "person"),
            name=name,
            tier=fields.pop("tier", "regular"),
            lifecycle=fields.pop("lifecycle", "active"),
            tags=fields.pop("tags", []),
            created_at=at,
            updated_at=at,
            **fields,
        )
        session.add(customer)
        await session.flush()
        await index_names(session, [(customer.id, name)])  # as the store's writers do
        session.add_all(Phone(customer_id=customer.id, e164=p) for p in phones)
        return customer

    def entry(customer: Customer, kind: str, ago: timedelta, title: str, **f: Any) -> Interaction:
        return Interaction(
            customer_id=customer.id, kind=kind, occurred_at=at - ago, title=title, **f
        )

    async with store.sessions() as session, session.begin():
        acme = await add(session, "ACME 有限公司", [], kind="company", tier="vip")
        wei = await add(
            session, "张伟", [WEI], company_id=acme.id, tier="vip", owner="alice", language="zh"
        )
        twin_a = await add(session, "Ana Twin", [TWINS])
        twin_b = await add(session, "Bea Twin", [TWINS], lifecycle="lapsed")
        hostile = await add(session, HOSTILE, [HOSTILE_PHONE], tier="low", lifecycle="prospect")
        session.add_all(
            [
                entry(wei, "order", timedelta(days=20), "Order #1001"),
                entry(wei, "ticket", timedelta(days=2), "Broken hinge", status="open"),
                entry(wei, "call", timedelta(hours=3), "Call about the hinge", agent="Bob"),
                entry(
                    wei,
                    "followup",
                    timedelta(days=1),
                    "Call back about the refund",
                    status="open",
                    due_at=at + timedelta(days=1),
                ),
                entry(hostile, "note", timedelta(hours=1), HOSTILE),
            ]
        )
    return Seeded(wei.id, acme.id, twin_a.id, twin_b.id, hostile.id)


def ivr_findings(**changes: Any) -> dict[str, Any]:
    """What the IVR reports to the pop (``Findings.to_json()``, the real shape): by default an
    unidentified caller who pressed 0 instead of a customer number and was put through;
    ``changes`` are Findings fields."""
    unidentified = Findings(
        menu="main",
        customer_id=None,
        customer_name=None,
        tier=None,
        lifecycle=None,
        identified_by="none",
        language="en",
        path=(("welcome", "played"), ("identify", "skip"), ("agent", "routed")),
        callback=None,
        route=Route("support", 0, None, False),
        scores={},
        hung_up=False,
        ended_at_step="agent",
    )
    return replace(unidentified, **changes).to_json()


def new_pop(store: CustomerStore | None) -> PopService:
    """A pop for tests of the page and API: a loaded machine must not turn a known caller
    into "store unavailable" (the lookup's time budget has tests of its own)."""
    return PopService(PopBook(), Hub(), store, clock=now, budget=10.0)


def buffered(hub: Hub, agent: str, since: int = 0) -> list[dict[str, Any]]:
    """The agent's buffered messages after ``since``, decoded as a browser would."""
    items = hub.since(agent, since)
    assert items is not None, f"messages after {since} are no longer buffered"
    return [json.loads(text) for _, text in items]


def new_store(engine: AsyncEngine) -> CustomerStore:
    return CustomerStore(engine, PhoneNormalizer("CN"))


def build_app(pop: PopService, store: CustomerStore | None, **options: Any) -> web.Application:
    return create_app(
        pop=pop,
        accounts=accounts(),
        dispositions=dispositions(),
        store=store,
        now=now,
        **options,
    )


@asynccontextmanager
async def client_for(
    app: web.Application,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app)) as client:
        yield client


async def login(client: TestClient[web.Request, web.Application], name: str) -> str:
    """Log in through the form; the session's CSRF token (read from the agent page)."""
    page = await client.get("/login")
    form_token = _attr(await page.text(), "csrf_token")
    response = await client.post(
        "/login",
        data={"login": name, "password": PASSWORDS[name], "csrf_token": form_token, "next": "/"},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    page = await client.get("/")
    assert page.status == 200
    return _attr(await page.text(), "csrf_token")


def _attr(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert match, f"no {name} in the page"
    return match.group(1)


class Calls:
    """Feeds one PBX's calls to the pop, the way the call model reports them."""

    def __init__(self, pop: PopService) -> None:
        self.pop = pop

    def feed(self, *events: DomainEvent) -> None:
        for event in events:
            self.pop.publish(event)

    def ring(self, call_id: str, agent: str, number: str, name: str = "") -> None:
        at = time.time()
        self.feed(
            CallStarted(PBX, call_id, at - 20, number, name, "800"),
            CallQueued(PBX, call_id, at - 18, "support", 1, number, name),
            AgentRinging(PBX, call_id, at, agent, agent, f"Local/{agent}", "support", number, name),
        )

    def answer(self, call_id: str, agent: str) -> None:
        self.feed(CallAnswered(PBX, call_id, time.time(), agent, "support", 18.0, 2.0))

    def end(self, call_id: str, agent: str, number: str) -> None:
        at = time.time()
        record = CallRecord(
            call_id, PBX, number, "", "800", ("support",), (agent,), agent, (agent,), (),
            "answered", at - 60, at - 58, at - 40, at, 18.0, 40.0, (),
        )  # fmt: skip
        self.feed(CallEnded(PBX, call_id, at, record))


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``check()`` holds (background lookups take a moment)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def writes_blocked(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the database's write lock, so a commit waits until the block ends."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            raw = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await raw.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                await raw.exec_driver_sql("ROLLBACK")
        else:
            async with conn.begin() as transaction:
                await conn.exec_driver_sql("LOCK TABLE interactions IN SHARE ROW EXCLUSIVE MODE")
                try:
                    yield
                finally:
                    await transaction.rollback()


async def pause_state(ami: AmiClient) -> tuple[str, str]:
    """Alice's (Paused, PausedReason) in the simulator's support queue, as Asterisk says."""
    reply = await ami.send_action({"Action": "QueueStatus", "Queue": "support"}, timeout=5)
    items = reply if isinstance(reply, list) else [reply]
    alice = "Local/1001@agents/n"  # her interface in the simulator's queues
    [member] = [m for m in items if m.get("Event") == "QueueMember" and m["Location"] == alice]
    return member["Paused"], member["PausedReason"]


@asynccontextmanager
async def simulated_pbx() -> AsyncIterator[tuple[AmiServer, AmiClient]]:
    """The PBX simulator on loopback and a connected AmiClient (PBX name ``PBX``)."""
    server = AmiServer(auth_delay=0.05)
    await server.start()
    queue: asyncio.Queue[Item] = asyncio.Queue()
    ami = AmiClient(PbxSettings(name=PBX, port=server.port, secret="cti-secret"), queue)
    runner = asyncio.create_task(ami.run())
    try:
        await eventually(lambda: ami.connected)
        yield server, ami
    finally:
        server.thaw()
        await ami.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await server.stop()


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """The app on a free loopback port for a real browser; its base URL (no trailing /)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
