"""Bad input at every door is a 4xx naming what is wrong, never a 500, and writes nothing:
hostile text (CR, LF, NUL, U+202E) in one-line fields, lone surrogates, times whose offset
overflows, ids past BIGINT, JSON nested 100,000 deep. On SQLite and PostgreSQL (where a NUL
in notes once made an outcome unsavable for good)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.models import AgentRating, Customer, Interaction
from screenpop.errors import ApiError
from screenpop.inputs import MAX_DEPTH, depth, parse_json
from tests.screenpop.test_controls import open_lab
from tests.screenpop.test_crm_api import AUTH, TOKEN, wei
from tests.support.screenpop import (
    PBX,
    TWINS,
    Calls,
    build_app,
    client_for,
    login,
    new_pop,
    new_store,
    seed,
)

Client = TestClient[web.Request, web.Application]
LINE_BREAKERS = ["a\rb", "a\nb", "a\x00b", "a\u202eb"]
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
async def site(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[tuple[Client, Calls, AsyncEngine]]:
    store = new_store(engine)
    await seed(store)
    pop = new_pop(store)
    try:
        async with client_for(build_app(pop, store, crm_token=TOKEN)) as client:
            with caplog.at_level(logging.WARNING):
                yield client, Calls(pop), engine
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert errors == [], [r.getMessage() for r in errors]
    finally:
        await pop.close()


async def rows(engine: AsyncEngine) -> list[int]:
    """How many customers, timeline entries and ratings are stored."""
    counts = []
    async with engine.connect() as conn:
        for model in (Customer, Interaction, AgentRating):
            counts.append(int(await conn.scalar(select(func.count()).select_from(model)) or 0))
    return counts


async def wrapped_up(client: Client, calls: Calls, call_id: str) -> str:
    """Alice's call from the twins' number (two matches: no customer picked for her)."""
    csrf = await login(client, "alice")
    calls.ring(call_id, "Alice", TWINS)
    calls.answer(call_id, "Alice")
    return csrf


async def outcome(
    client: Client, csrf: str, call_id: str, raw: bytes | None = None, **body: Any
) -> ClientResponse:
    fields = {"key": f"key-{call_id}-1", "disposition": "resolved", **body}
    url = f"/api/calls/{PBX}/{call_id}/outcome"
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    if raw is not None:
        return await client.post(url, data=raw, headers=headers)
    return await client.post(url, json=fields, headers={"X-CSRF-Token": csrf})


@pytest.mark.parametrize("bad", LINE_BREAKERS)
async def test_a_new_customers_name_breaking_the_line_rule_is_422(
    site: tuple[Client, Calls, AsyncEngine], bad: str
) -> None:
    client, calls, engine = site
    csrf = await wrapped_up(client, calls, "n1")
    before = await rows(engine)
    response = await outcome(client, csrf, "n1", new_customer_name=bad)
    assert response.status == 422, await response.text()
    body = await response.json()
    assert (body["error_id"], body["field"]) == ("invalid_field", "new_customer_name")
    assert await rows(engine) == before


async def test_notes_keep_line_breaks_and_a_nul_is_422_then_clean_notes_save(
    site: tuple[Client, Calls, AsyncEngine],
) -> None:
    client, calls, engine = site
    csrf = await wrapped_up(client, calls, "n2")
    before = await rows(engine)
    response = await outcome(client, csrf, "n2", customer_id=1, notes="bad\x00notes")
    assert response.status == 422 and (await response.json())["field"] == "notes"
    assert await rows(engine) == before
    response = await outcome(client, csrf, "n2", customer_id=1, notes="one\r\ntwo\tthree")
    assert response.status == 200, await response.text()
    async with engine.connect() as conn:
        body = await conn.scalar(
            select(Interaction.body).where(
                Interaction.kind == "outcome", Interaction.call_id == "n2"
            )
        )
    assert body == "one\ntwo\tthree"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": 10**30}, "customer_id"),
        ({"customer_id": 2**63}, "customer_id"),
        ({"customer_id": 1, "followup_due": "0001-01-01T00:00:00+05:00"}, "followup_due"),
        ({"customer_id": 1, "followup_due": "9999-12-31T23:00:00-05:00"}, "followup_due"),
        ({"customer_id": 1, "followup_due": "2026-12-01T09:00:00"}, "followup_due"),
    ],
)
async def test_out_of_range_ids_and_times_are_422(
    site: tuple[Client, Calls, AsyncEngine], body: dict[str, Any], field: str
) -> None:
    client, calls, engine = site
    csrf = await wrapped_up(client, calls, "n3")
    before = await rows(engine)
    response = await outcome(client, csrf, "n3", **body)
    assert response.status == 422, await response.text()
    assert (await response.json())["field"] == field
    assert await rows(engine) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"key": "key-n4-0001", "disposition": "resolved", "notes": "\\ud800"}',
        b'{"key": "key-n4-0001", "disposition": "resolved", "\\udfff": 1}',
        DEEP,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"notes": NaN}',
        b"\xff\xfe",
    ],
)
async def test_json_that_cannot_be_stored_is_400_bad_json(
    site: tuple[Client, Calls, AsyncEngine], raw: bytes
) -> None:
    client, calls, engine = site
    csrf = await wrapped_up(client, calls, "n4")
    before = await rows(engine)
    response = await outcome(client, csrf, "n4", raw=raw)
    assert response.status == 400, await response.text()
    assert (await response.json())["error_id"] == "bad_json"
    assert await rows(engine) == before


@pytest.mark.parametrize("bad", LINE_BREAKERS)
async def test_the_crm_api_refuses_the_same_names(
    site: tuple[Client, Calls, AsyncEngine], bad: str
) -> None:
    client, _, engine = site
    before = await rows(engine)
    response = await client.put("/api/crm/customers/P-9", json=wei(name=bad), headers=AUTH)
    assert response.status == 422, await response.text()
    assert (await response.json())["field"] == "name"
    response = await client.post(
        "/api/crm/merges",
        json={"survivor_external_id": bad, "merged_external_id": "P-9"},
        headers=AUTH,
    )
    assert response.status == 422 and (await response.json())["field"] == "survivor_external_id"
    assert await rows(engine) == before


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (DEEP, 400),
        (b'{"items": [{"name": "\\ud800"}]}', 400),
        (b'{"items": [{"external_id": "P-1", "kind": "person", "name": "W", '
         b'"updated_at": "9999-12-31T23:00:00-05:00"}]}', 200),
    ],
)  # fmt: skip
async def test_the_crm_api_refuses_deep_json_surrogates_and_overflowing_times(
    site: tuple[Client, Calls, AsyncEngine], raw: bytes, status: int
) -> None:
    client, _, engine = site
    before = await rows(engine)
    headers = {**AUTH, "Content-Type": "application/json"}
    response = await client.post("/api/crm/customers", data=raw, headers=headers)
    assert response.status == status, await response.text()
    if status == 200:  # a batch answers per item: this one invalid, naming the field
        (result,) = (await response.json())["results"]
        assert (result["status"], result["field"]) == ("invalid", "updated_at")
    assert await rows(engine) == before


async def test_a_rating_note_with_a_nul_is_422_through_the_store_rule(
    engine: AsyncEngine,
) -> None:
    async with open_lab(engine) as lab:
        sue = await lab.login("sue")
        response = await lab.client.post(
            "/api/agents/Bob/ratings", json={"score": 3, "note": "a\x00"}, headers=sue
        )
        assert response.status == 422, await response.text()
        assert (await response.json())["field"] == "note"
        assert (await rows(engine))[2] == 0


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert depth('{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert depth("") == 0 and depth(DEEP.decode()) == 100_000
    parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    with pytest.raises(ApiError):
        parse_json(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
