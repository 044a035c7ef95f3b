"""``GET /api/agents/me/day``: the store's calls and outcomes merged with the pop's wrap-up
cards, on SQLite and PostgreSQL. The day's bounds are built around the test's own "now", so
it holds on any date."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from screenpop.pipeline import PopService
from tests.support.screenpop import (
    HOSTILE,
    HOSTILE_PHONE,
    NOBODY,
    PBX,
    WEI,
    Calls,
    Seeded,
    build_app,
    client_for,
    eventually,
    login,
    new_pop,
    new_store,
    now,
    seed,
)

Client = TestClient[web.Request, web.Application]


@dataclass
class World:
    client: Client
    pop: PopService
    calls: Calls
    seeded: Seeded


@pytest.fixture
async def world(engine: AsyncEngine) -> AsyncIterator[World]:
    store = new_store(engine)
    seeded = await seed(store)
    pop = new_pop(store)
    try:
        async with client_for(build_app(pop, store)) as client:
            yield World(client, pop, Calls(pop), seeded)
    finally:
        await pop.close()


async def take(world: World, call_id: str, number: str) -> None:
    """Alice answers a call; it ends once the lookup answered (the store then records it)."""
    world.calls.ring(call_id, "Alice", number)
    await eventually(lambda: world.pop.lookup_for(PBX, call_id) is not None)
    world.calls.answer(call_id, "Alice")
    world.calls.end(call_id, "Alice", number)


def bounds(offset_hours: int = 0) -> dict[str, str]:
    """A day around now, as a browser with this UTC offset sends it."""
    zone = timezone(timedelta(hours=offset_hours))
    at = now().astimezone(zone)
    return {
        "day_start": (at - timedelta(hours=12)).isoformat(),
        "day_end": (at + timedelta(hours=12)).isoformat(),
    }


async def day(client: Client, **query: str) -> dict[str, Any]:
    response = await client.get("/api/agents/me/day", params=query or bounds(5))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def stored(client: Client, call_id: str) -> dict[str, Any]:
    """The call once the pipeline wrote its row (after the lookup, in the background)."""
    deadline = time.monotonic() + 5
    while True:
        calls = {c["call_id"]: c for c in (await day(client))["calls"]}
        if call_id in calls and calls[call_id]["talk_seconds"] is not None:
            return calls[call_id]
        assert time.monotonic() < deadline, f"{call_id} not stored: {calls}"
        await asyncio.sleep(0.05)


async def save(client: Client, csrf: str, call_id: str, **body: Any) -> None:
    response = await client.post(
        f"/api/calls/{PBX}/{call_id}/outcome",
        json={"key": f"key-{call_id}-1", **body},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status == 200, await response.text()


async def test_the_days_calls_known_and_unknown_with_outcomes(world: World) -> None:
    csrf = await login(world.client, "alice")
    for call_id, number in (("c1", WEI), ("c2", NOBODY), ("c3", HOSTILE_PHONE)):
        await take(world, call_id, number)
        await asyncio.sleep(0.01)  # distinct times: newest first is checked

    known = await stored(world.client, "c1")
    assert known["customer"] == {"id": world.seeded.wei, "name": "张伟"}
    assert (known["outcome_missing"], known["outcome"], known["finishable"]) == (True, None, True)
    assert (known["pbx"], known["card_id"], known["direction"]) == (
        PBX,
        f"{PBX}/c1/Alice",
        "inbound",
    )
    assert known["talk_seconds"] == 40.0
    await stored(world.client, "c3")
    calls = (await day(world.client))["calls"]
    assert [c["at"] for c in calls] == sorted((c["at"] for c in calls), reverse=True)
    assert [c["call_id"] for c in calls if c["call_id"] != "c2"] == ["c3", "c1"]
    (unknown,) = [c for c in calls if c["call_id"] == "c2"]
    assert unknown["customer"] is None and unknown["number"] == "+1 555-010-0999"
    assert (unknown["outcome_missing"], unknown["card_id"]) == (True, f"{PBX}/c2/Alice")

    await save(world.client, csrf, "c1", disposition="resolved", notes=HOSTILE)
    await save(world.client, csrf, "c2", disposition="callback", new_customer_name="Neu Kunde")
    body = await day(world.client)
    assert body["store_ok"] is True
    calls = {c["call_id"]: c for c in body["calls"]}
    assert set(calls) == {"c1", "c2", "c3"}  # each once: the outcome replaced the card
    assert calls["c1"]["outcome"]["label"] == "Resolved on the call"
    assert calls["c1"]["outcome"]["notes"] == HOSTILE  # as stored: the page shows it as text
    assert calls["c1"]["outcome_missing"] is False and calls["c1"]["card_id"] is None
    assert calls["c2"]["customer"]["name"] == "Neu Kunde"
    assert calls["c2"]["outcome"]["label"] == "Callback needed"
    assert calls["c3"]["customer"]["name"] == HOSTILE and calls["c3"]["outcome_missing"]


async def test_only_the_agents_own_calls(world: World) -> None:
    await take(world, "c1", WEI)
    await login(world.client, "alice")
    await stored(world.client, "c1")
    world.client.session.cookie_jar.clear()
    await login(world.client, "bob")
    assert (await day(world.client))["calls"] == []


async def test_a_day_in_another_offset_is_the_same_instant(world: World) -> None:
    await take(world, "c1", NOBODY)
    await login(world.client, "alice")
    for offset in (-11, 0, 14):
        assert [c["call_id"] for c in (await day(world.client, **bounds(offset)))["calls"]] == [
            "c1"
        ]
    later = now() + timedelta(hours=13)  # the day after the call: nothing but open wrap-ups
    after = {"day_start": later.isoformat(), "day_end": (later + timedelta(hours=24)).isoformat()}
    assert [c["call_id"] for c in (await day(world.client, **after))["calls"]] == ["c1"]
    before = now() - timedelta(hours=30)  # a day before the call: it is not there
    earlier = {
        "day_start": before.isoformat(),
        "day_end": (before + timedelta(hours=24)).isoformat(),
    }
    assert (await day(world.client, **earlier))["calls"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "day_start"),
        ({"day_start": "2026-03-29T00:00:00", "day_end": "2026-03-30T00:00:00+02:00"}, "day_start"),
        ({"day_start": "2026-03-29T00:00:00+01:00", "day_end": "tomorrow"}, "day_end"),
        (
            {"day_start": "2026-03-29T00:00:00+01:00", "day_end": "2026-03-30T03:00:00+01:00"},
            "day_end",
        ),
        (
            {"day_start": "2026-03-29T00:00:00+01:00", "day_end": "2026-03-29T00:00:00+01:00"},
            "day_end",
        ),
    ],
)
async def test_bad_bounds_are_refused_with_their_field(
    world: World, query: dict[str, str], field: str
) -> None:
    await login(world.client, "alice")
    response = await world.client.get("/api/agents/me/day", params=query)
    assert response.status == 422
    assert (await response.json())["field"] == field


async def test_a_supervisor_without_an_agent_line_has_no_day(world: World) -> None:
    await login(world.client, "sue")
    response = await world.client.get("/api/agents/me/day", params=bounds())
    assert response.status == 409
    assert (await response.json())["error_id"] == "no_agent_line"


async def test_without_a_session_401(world: World) -> None:
    response = await world.client.get("/api/agents/me/day", params=bounds())
    assert response.status == 401


async def test_after_a_restart_the_agents_stored_calls_still_take_their_outcome(
    engine: AsyncEngine,
) -> None:
    """Issue 21: a call answered and not yet given its outcome when the service restarts is
    in the store (its call row, with who took it); the new process's pop knows nothing of it,
    yet My day offers it and the outcome is taken from the agent who took it, nobody else."""
    store = new_store(engine)
    seeded = await seed(store)
    before = new_pop(store)
    try:
        async with client_for(build_app(before, store)) as client:
            await login(client, "alice")
            world = World(client, before, Calls(before), seeded)
            await take(world, "c1", WEI)
            await stored(client, "c1")
    finally:
        await before.close()
    after = new_pop(store)  # the restarted service: an empty pop
    try:
        async with client_for(build_app(after, store)) as client:
            bob = await login(client, "bob")
            response = await client.post(
                f"/api/calls/{PBX}/c1/outcome",
                json={"key": "key-c1-bob", "disposition": "resolved", "customer_id": seeded.wei},
                headers={"X-CSRF-Token": bob},
            )
            assert response.status == 403  # Bob did not take it
            client.session.cookie_jar.clear()
            alice = await login(client, "alice")
            (row,) = [c for c in (await day(client))["calls"] if c["call_id"] == "c1"]
            assert (row["outcome_missing"], row["finishable"], row["card_id"]) == (
                True, True, None,
            )  # fmt: skip
            await save(client, alice, "c1", disposition="resolved", customer_id=seeded.wei)
            (row,) = [c for c in (await day(client))["calls"] if c["call_id"] == "c1"]
            assert row["outcome"]["label"] == "Resolved on the call"
    finally:
        await after.close()


async def test_after_a_restart_an_unknown_callers_call_still_takes_its_outcome(
    engine: AsyncEngine,
) -> None:
    """Issue 21: a caller nobody knows has no timeline, yet the call an agent took is kept
    (a row without a customer), so after a restart My day still offers its outcome; the
    outcome that names a new customer gives the call that customer."""
    store = new_store(engine)
    seeded = await seed(store)
    before = new_pop(store)
    try:
        async with client_for(build_app(before, store)) as client:
            await login(client, "alice")
            await take(World(client, before, Calls(before), seeded), "c9", NOBODY)
            await eventually(lambda: not before.writes_pending)  # the call's row is written
    finally:
        await before.close()
    after = new_pop(store)
    try:
        async with client_for(build_app(after, store)) as client:
            alice = await login(client, "alice")
            (row,) = (await day(client))["calls"]
            assert (row["call_id"], row["customer"], row["number"]) == ("c9", None, None)
            assert (row["outcome_missing"], row["finishable"], row["card_id"]) == (
                True, True, None,
            )  # fmt: skip
            await save(client, alice, "c9", disposition="callback", new_customer_name="Neu Kunde")
            (row,) = (await day(client))["calls"]
            assert row["customer"]["name"] == "Neu Kunde" and row["outcome_missing"] is False
    finally:
        await after.close()
