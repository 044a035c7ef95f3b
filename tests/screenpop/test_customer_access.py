"""Who may read a customer (screenpop.access, issue 22 finding 11): an agent, the customers of
their work (a card now, a call, outcome or follow-up of theirs, a search of the last hour),
each refusal 403 and audited, bounded; a supervisor, any, each read audited and folded.

Tests marked with the ``engine`` fixture run on SQLite and on PostgreSQL; the app's clock is
a test clock, so a search's grant expires when the test says so.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from crm_sync.audit import DENIED_LIMIT, READ_WINDOW
from crm_sync.followups import Followups
from crm_sync.models import Interaction
from crm_sync.store import CustomerStore
from cti.settings import FollowupSettings
from screenpop.access import Access, SearchGrants, decide
from screenpop.app import create_app
from screenpop.followups_api import FollowupDesk
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    PBX,
    TWINS,
    Calls,
    Seeded,
    accounts,
    client_for,
    dispositions,
    eventually,
    login,
    new_pop,
    new_store,
    now,
    seed,
)

Client = TestClient[web.Request, web.Application]
T0 = now()


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Lab:
    client: Client
    pop: PopService
    store: CustomerStore
    seeded: Seeded
    clock: Clock
    csrf: str = ""

    async def as_user(self, name: str) -> None:
        """Log out whoever is in, log ``name`` in."""
        if self.csrf:
            await self.client.post("/logout", data={"csrf_token": self.csrf})
        self.csrf = await login(self.client, name)

    async def status(self, path: str) -> int:
        return (await self.client.get(path)).status

    async def work(self, customer_id: int, kind: str, **fields: Any) -> None:
        """A row of somebody's work on the customer's timeline, written as the store would."""
        async with self.store.sessions() as session, session.begin():
            session.add(
                Interaction(
                    customer_id=customer_id, kind=kind, occurred_at=T0, title=kind, **fields
                )
            )

    async def audit(self, **query: str) -> list[dict[str, Any]]:
        """The audit log as a supervisor reads it (the caller is logged in as one)."""
        response = await self.client.get("/api/audit", params={"limit": "500", **query})
        assert response.status == 200, await response.text()
        return (await response.json())["entries"]  # type: ignore[no-any-return]


@pytest.fixture
async def lab(engine: Any) -> AsyncIterator[Lab]:
    store = new_store(engine)
    seeded = await seed(store)
    pop = new_pop(store)
    clock = Clock()
    desk = FollowupDesk(
        Followups(store.sessions, FollowupSettings()),
        None,
        lambda agent: frozenset({"support"}) if agent == "Bob" else frozenset(),
    )
    app = create_app(
        pop=pop,
        accounts=accounts(),
        dispositions=dispositions(),
        store=store,
        now=clock,
        followups=desk,
    )
    try:
        async with client_for(app) as client:
            yield Lab(client, pop, store, seeded, clock)
    finally:
        await pop.close()


def test_the_rule() -> None:
    assert decide("supervisor", remembered=False) is Access.AUDITED
    assert decide("agent", remembered=True) is Access.READ  # memory answers: no query
    assert decide("agent", remembered=False) is Access.ASK_STORE
    assert decide("agent", remembered=False, in_work=True) is Access.READ
    assert decide("agent", remembered=False, in_work=False) is Access.REFUSED


def test_search_grants_are_bounded_and_expire() -> None:
    grants = SearchGrants(ttl=timedelta(hours=1), size=3)
    grants.grant("alice", [1, 2, 3], now=T0)
    grants.grant("alice", [1, 4], now=T0 + timedelta(minutes=1))  # 1 is fresh again: 2 goes
    held = [c for c in range(1, 6) if grants.holds("alice", c, now=T0 + timedelta(minutes=2))]
    assert held == [1, 3, 4]
    assert not grants.holds("bob", 1, now=T0)  # per login
    late = T0 + timedelta(minutes=60, seconds=30)
    assert [c for c in (1, 3, 4) if grants.holds("alice", c, now=late)] == [1, 4]


async def test_walking_ids_is_refused_and_audited(lab: Lab) -> None:
    await lab.work(lab.seeded.twin_a, "call", agent="Alice", call_id="c-old")
    await lab.as_user("alice")
    statuses = {c: await lab.status(f"/api/customers/{c}") for c in range(1, 51)}
    assert statuses[lab.seeded.twin_a] == 200
    refused = [s for c, s in statuses.items() if c != lab.seeded.twin_a]
    # the first DENIED_LIMIT refusals of the minute are 403, the rest 429 (no more rows)
    assert refused == [403] * DENIED_LIMIT + [429] * (49 - DENIED_LIMIT)
    body = await (await lab.client.get(f"/api/customers/{lab.seeded.wei}")).json()
    assert body["error_id"] == "too_many_attempts"
    lab.clock.at += timedelta(seconds=61)  # the minute passed: refused again, not throttled
    again = await lab.client.get(f"/api/customers/{lab.seeded.wei}")
    assert (again.status, (await again.json())["error_id"]) == (403, "not_your_customer")
    assert await lab.status(f"/api/customers/{lab.seeded.twin_a}") == 200  # hers throughout

    await lab.as_user("sue")
    rows = await lab.audit(login="alice", outcome="denied")
    assert {(r["action"], r["agent"], r["result"]) for r in rows} == {
        ("customer.read", "Alice", "denied: not your customer")
    }
    assert sum(r["attempts"] for r in rows) == 49 + 2  # every refusal counted
    assert len(rows) == DENIED_LIMIT + 1  # but rows bounded: one per id until the limit
    details = {r["detail"] for r in rows}
    assert f"customer {lab.seeded.wei}" in details and "customer 1" in details
    assert f"customer {lab.seeded.twin_a}" not in details


async def test_the_grounds_that_make_a_customer_readable(lab: Lab) -> None:
    seeded = lab.seeded
    await lab.as_user("alice")
    paths = {c: f"/api/customers/{c}" for c in (seeded.wei, seeded.twin_a, seeded.twin_b)}
    assert [await lab.status(p) for p in paths.values()] == [403, 403, 403]
    # Wei: the caller of her ringing card (the pop's lookup for her call)
    Calls(lab.pop).ring("c1", "Alice", "008613800138000")
    await eventually(lambda: lab.pop.lookup_for(PBX, "c1") is not None)
    assert await lab.status(paths[seeded.wei]) == 200
    # Ana: a call she handled; Bea: a follow-up she owns
    await lab.work(seeded.twin_a, "call", agent="Alice", call_id="c-old")
    await lab.work(seeded.twin_b, "followup", owner="Alice", status="open")
    assert await lab.status(paths[seeded.twin_a]) == 200
    assert await lab.status(paths[seeded.twin_b]) == 200
    # ACME: found by her search
    acme = f"/api/customers/{seeded.acme}"
    assert await lab.status(acme) == 403
    found = await (await lab.client.get("/api/customers/search", params={"q": "ACME"})).json()
    assert seeded.acme in [c["id"] for c in found["customers"]]
    assert await lab.status(acme) == 200
    # a queue's follow-up: readable by its members (Bob is in support), not by Alice
    hostile = f"/api/customers/{seeded.hostile}"
    await lab.work(seeded.hostile, "followup", owner="queue:support", status="open")
    assert await lab.status(hostile) == 403
    await lab.as_user("bob")
    assert await lab.status(hostile) == 200
    assert await lab.status(paths[seeded.twin_b]) == 403  # Alice's follow-up is not Bob's


async def test_a_search_grant_lasts_an_hour(lab: Lab) -> None:
    await lab.as_user("alice")
    twins = [f"/api/customers/{lab.seeded.twin_a}", f"/customers/{lab.seeded.twin_b}"]
    assert [await lab.status(p) for p in twins] == [403, 403]
    found = await (await lab.client.get("/api/customers", params={"phone": TWINS})).json()
    assert len(found["cards"]) == 2
    lab.clock.at += timedelta(minutes=59)
    assert [await lab.status(p) for p in twins] == [200, 200]
    lab.clock.at += timedelta(minutes=1, seconds=1)
    assert [await lab.status(p) for p in twins] == [403, 403]
    # the search page grants too
    assert (await lab.client.get("/search", params={"q": TWINS})).status == 200
    assert [await lab.status(p) for p in twins] == [200, 200]


async def test_a_supervisor_reads_anyone_and_each_read_is_audited(lab: Lab) -> None:
    seeded = lab.seeded
    await lab.as_user("sue")
    for path in (
        f"/api/customers/{seeded.wei}",
        f"/customers/{seeded.wei}",
        f"/api/customers/{seeded.wei}",
        f"/api/customers/{seeded.hostile}",
    ):
        assert await lab.status(path) == 200
    lab.clock.at += READ_WINDOW + timedelta(seconds=1)
    assert await lab.status(f"/api/customers/{seeded.wei}") == 200
    rows = await lab.audit(login="sue", action="customer.read")
    assert [(r["detail"], r["attempts"], r["result"]) for r in rows] == [
        (f"customer {seeded.wei}", 1, "ok"),  # a new window, a new row
        (f"customer {seeded.hostile}", 1, "ok"),
        (f"customer {seeded.wei}", 3, "ok"),  # one row counts the run of reads
    ]


async def test_the_customer_page_and_its_forms_follow_the_rule(lab: Lab) -> None:
    await lab.as_user("alice")
    page = f"/customers/{lab.seeded.twin_a}"
    refused = await lab.client.get(page, headers={"Accept": "text/html"})
    assert refused.status == 403
    assert refused.content_type == "text/html" and "not_your_customer" in await refused.text()
    note = {"csrf_token": lab.csrf, "text": "sneaky", "key": secrets.token_hex(12)}
    posted = await lab.client.post(f"{page}/notes", data=note, allow_redirects=False)
    assert posted.status == 403
    contact = {"csrf_token": lab.csrf, "email": "x@example.com", "key": secrets.token_hex(12)}
    posted = await lab.client.post(f"{page}/contact", data=contact, allow_redirects=False)
    assert posted.status == 403
    assert await _notes(lab.store, lab.seeded.twin_a) == 0
    await lab.client.get("/api/customers", params={"phone": TWINS})  # now she may
    assert await lab.status(page) == 200
    posted = await lab.client.post(f"{page}/notes", data=note, allow_redirects=False)
    assert posted.status == 303
    assert await _notes(lab.store, lab.seeded.twin_a) == 1
    await lab.as_user("sue")
    rows = await lab.audit(login="alice")
    assert {(r["action"], r["detail"]) for r in rows} == {
        ("customer.read", f"customer {lab.seeded.twin_a}"),
        ("customer.note", f"customer {lab.seeded.twin_a}"),
        ("customer.contact", f"customer {lab.seeded.twin_a}"),
    }


async def _notes(store: CustomerStore, customer_id: int) -> int:
    query = select(func.count()).where(
        Interaction.kind == "note", Interaction.customer_id == customer_id
    )
    async with store.sessions() as session:
        return int(await session.scalar(query) or 0)
