"""The CRM's inbound REST API over HTTP (aiohttp test client, SQLite and PostgreSQL): the
bearer token, idempotent upserts, versions, concurrent requests, orders, merges, batch
results, bad bodies, hostile text, and no outbox rows for anything the CRM said."""

from __future__ import annotations

import asyncio
import gc
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from yarl import URL

from crm_sync.models import Customer, CustomerMerge, Interaction, OutboxRow, Phone
from cti.settings import CrmSettings, PbxSettings, Settings, StoreSettings, WebSettings
from cti_app.stack import run_stack
from pbxsim import AmiServer
from screenpop.crm_api import MAX_BATCH, MAX_BODY
from tests.support.screenpop import (
    ROOT,
    accounts,
    build_app,
    client_for,
    login,
    new_pop,
    new_store,
)

Client = TestClient[web.Request, web.Application]
TOKEN = "crm-token-7f3a9c2e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
V1, V2 = "2026-12-04T09:00:00Z", "2026-12-04T11:00:00+01:00"  # V2: an hour later
HOSTILE = '<script>alert("x")</script><img src=x onerror="alert(1)"> O\'Brien & 张伟 😀'


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[Client]:
    store = new_store(engine)
    pop = new_pop(store)
    try:
        async with client_for(build_app(pop, store, crm_token=TOKEN)) as http:
            yield http
    finally:
        await pop.close()


def wei(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "person",
        "name": "张伟",
        "phones": ["138 0013 8000", "+86 139 0000 0001"],
        "email": "wei@example.com",
        "updated_at": V1,
    }
    body.update(fields)
    return body


async def put(client: Client, path: str | URL, body: Any, status: int = 200) -> dict[str, Any]:
    response = await client.put(path, json=body, headers=AUTH)
    assert response.status == status, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def post(client: Client, path: str, body: Any, status: int = 200) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=AUTH)
    assert response.status == status, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def count(engine: AsyncEngine, model: type[Any], *where: Any) -> int:
    async with AsyncSession(engine) as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def one(engine: AsyncEngine, model: type[Any], *where: Any) -> Any:
    async with AsyncSession(engine) as session:
        return (await session.scalars(select(model).where(*where))).one()


# -- the token -------------------------------------------------------------------------------


async def test_without_a_configured_token_the_api_is_off(engine: AsyncEngine) -> None:
    store = new_store(engine)
    pop = new_pop(store)
    try:
        async with client_for(build_app(pop, store)) as http:
            response = await http.put("/api/crm/customers/P-1", json=wei(), headers=AUTH)
            assert response.status == 503
            answer = await response.json()
            assert answer["error_id"] == "crm_api_off"
            assert "inbound_token" in answer["message"]
    finally:
        await pop.close()
    assert await count(engine, Customer) == 0


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
async def test_a_missing_or_wrong_token_is_refused(
    client: Client, engine: AsyncEngine, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in (("PUT", "/api/crm/customers/P-1"), ("POST", "/api/crm/merges")):
        response = await client.request(method, path, json=wei(), headers=headers)
        assert response.status == 401
        assert (await response.json())["error_id"] == "unauthenticated"
    assert await count(engine, Customer) == 0


async def test_a_session_cookie_is_not_the_token(client: Client, engine: AsyncEngine) -> None:
    csrf = await login(client, "sue")  # a supervisor, logged in
    response = await client.put(
        "/api/crm/customers/P-1", json=wei(), headers={"X-CSRF-Token": csrf}
    )
    assert response.status == 401
    assert await count(engine, Customer) == 0
    # the right token needs no session and no CSRF token
    assert (await put(client, "/api/crm/customers/P-1", wei()))["status"] == "inserted"


# -- customers -------------------------------------------------------------------------------


async def test_the_same_customer_twice_is_one_row(client: Client, engine: AsyncEngine) -> None:
    first = await put(client, "/api/crm/customers/P-1", wei())
    again = await put(client, "/api/crm/customers/P-1", wei())
    assert first == {"external_id": "P-1", "status": "inserted", "id": first["id"]}
    assert again == {**first, "status": "unchanged"}
    assert (await count(engine, Customer), await count(engine, Phone)) == (1, 2)
    newer = await put(client, "/api/crm/customers/P-1", wei(phones=["13800138000"], updated_at=V2))
    assert newer["status"] == "updated"
    assert await count(engine, Phone) == 1
    assert await count(engine, OutboxRow) == 0


async def test_an_older_update_is_ignored_and_said_so(client: Client, engine: AsyncEngine) -> None:
    await put(client, "/api/crm/customers/P-1", wei(name="Wei (new)", updated_at=V2))
    late = await put(client, "/api/crm/customers/P-1", wei(name="Wei (old)", updated_at=V1))
    assert late["status"] == "stale"
    assert (await one(engine, Customer)).name == "Wei (new)"


async def test_concurrent_puts_of_one_id_end_in_one_customer(
    client: Client, engine: AsyncEngine
) -> None:
    base = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    minutes = [4, 9, 1, 7, 3, 8, 2, 6]
    answers = await asyncio.gather(
        *(
            put(
                client,
                "/api/crm/customers/P-7",
                wei(name=f"v{m}", updated_at=(base + timedelta(minutes=m)).isoformat()),
            )
            for m in minutes
        )
    )
    statuses = [answer["status"] for answer in answers]
    assert statuses.count("inserted") == 1 and len({a["id"] for a in answers}) == 1
    assert await count(engine, Customer) == 1
    assert (await one(engine, Customer)).name == f"v{max(minutes)}"


async def test_a_batch_answers_per_item(client: Client, engine: AsyncEngine) -> None:
    items = [
        {"external_id": "C-1", "kind": "company", "name": "ACME", "updated_at": V1},
        {**wei(company_external_id="C-1"), "external_id": "P-1"},
        {**wei(email="nope@"), "external_id": "P-2"},
        {**wei(), "external_id": "P-3", "nickname": "W"},
        "not an object",
        {**wei(), "external_id": "P-1"},
        {**wei(), "external_id": ""},
    ]
    answer = await post(client, "/api/crm/customers", {"items": items})
    results = answer["results"]
    assert [(r["index"], r["status"]) for r in results] == [
        (0, "inserted"),
        (1, "inserted"),
        (2, "invalid"),
        (3, "invalid"),
        (4, "invalid"),
        (5, "invalid"),
        (6, "invalid"),
    ]
    assert [r.get("field") for r in results[2:]] == [
        "email",
        "nickname",
        "body",
        "external_id",
        "external_id",
    ]
    assert "given twice" in results[5]["message"]
    assert answer["counts"] == {"inserted": 2, "invalid": 5}
    assert results[2]["external_id"] == "P-2"
    contact = await one(engine, Customer, Customer.external_id == "P-1")
    assert contact.company_id == results[0]["id"]
    again = await post(client, "/api/crm/customers", {"items": items[:2]})
    assert again["counts"] == {"unchanged": 2}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": {"a": 1}}, "items"),
        ({"items": [wei()] * (MAX_BATCH + 1)}, "items"),
        ([wei()], "items"),
    ],
)
async def test_a_batch_must_be_a_list_of_up_to_a_thousand(
    client: Client, body: Any, field: str
) -> None:
    answer = await post(client, "/api/crm/customers", body, status=422)
    assert (answer["error_id"], answer["field"]) == ("invalid_field", field)


# -- orders, tickets, notes ------------------------------------------------------------------


def order(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "customer_external_id": "P-1",
        "occurred_at": "2026-12-01T08:00:00+08:00",
        "title": "Order 17",
        "status": status,
        "amount": 199.9,
        **fields,
    }


async def test_an_order_status_update_changes_the_same_row(
    client: Client, engine: AsyncEngine
) -> None:
    await put(client, "/api/crm/customers/P-1", wei())
    first = await put(client, "/api/crm/orders/17", order("processing"))
    same = await put(client, "/api/crm/orders/17", order("processing"))
    shipped = await put(client, "/api/crm/orders/17", order("shipped"))
    assert [first["status"], same["status"], shipped["status"]] == [
        "inserted",
        "unchanged",
        "updated",
    ]
    assert first["id"] == shipped["id"]
    stored = await one(engine, Interaction)
    assert (stored.kind, stored.status, str(stored.amount)) == ("order", "shipped", "199.90")
    ticket = await put(
        client,
        "/api/crm/tickets/17",
        {"customer_external_id": "P-1", "occurred_at": V1, "title": "Broken", "body": HOSTILE},
    )
    closed = await put(
        client,
        "/api/crm/tickets/17",
        {
            "customer_external_id": "P-1",
            "occurred_at": V1,
            "title": "Broken",
            "body": HOSTILE,
            "status": "closed",
        },
    )
    assert (ticket["status"], closed["status"], closed["id"]) == (
        "inserted",
        "updated",
        ticket["id"],
    )
    assert await count(engine, Interaction) == 2  # order 17 and ticket 17 are two entries
    batch = await post(
        client,
        "/api/crm/notes",
        {
            "items": [
                {
                    "customer_external_id": "P-1",
                    "occurred_at": V1,
                    "title": "Met",
                    "external_id": "N1",
                },
                {
                    "customer_external_id": "P-404",
                    "occurred_at": V1,
                    "title": "?",
                    "external_id": "N2",
                },
                {"customer_external_id": "P-1", "occurred_at": V1, "title": "x", "status": "open"},
            ]
        },
    )
    assert [(r["status"], r.get("field")) for r in batch["results"]] == [
        ("inserted", None),
        ("invalid", "customer_external_id"),
        ("invalid", "status"),
    ]
    assert await count(engine, OutboxRow) == 0


async def test_an_order_for_an_unknown_customer_is_refused(client: Client) -> None:
    answer = await put(client, "/api/crm/orders/17", order("shipped"), status=422)
    assert (answer["field"], answer["message"]) == (
        "customer_external_id",
        "customer_external_id: unknown customer 'P-1'",
    )


# -- merges ----------------------------------------------------------------------------------


async def test_a_merge_from_the_crm_moves_everything_and_later_data_follows(
    client: Client, engine: AsyncEngine
) -> None:
    survivor = await put(client, "/api/crm/customers/S-1", wei(phones=["13800138000"]))
    merged = await put(client, "/api/crm/customers/M-1", wei(name=HOSTILE, phones=["13900000001"]))
    await put(client, "/api/crm/orders/17", order("processing", customer_external_id="M-1"))
    ask = {"survivor_external_id": "S-1", "merged_external_id": "M-1", "by": "crm-user-4"}
    done = await post(client, "/api/crm/merges", ask)
    assert (done["status"], done["survivor_id"], done["merged_id"]) == (
        "merged",
        survivor["id"],
        merged["id"],
    )
    assert done["moved"]["phones"] == 1 and done["moved"]["interactions"] == {"order": 1}
    again = await post(client, "/api/crm/merges", ask)
    assert (again["status"], again["merge_id"]) == ("already_merged", done["merge_id"])
    record = await one(engine, CustomerMerge)
    assert (record.source, record.detail["by"], record.merged_name) == (
        "crm",
        "crm-user-4",
        HOSTILE,
    )
    later = await put(client, "/api/crm/orders/18", order("shipped", customer_external_id="M-1"))
    assert (await one(engine, Interaction, Interaction.id == later["id"])).customer_id == survivor[
        "id"
    ]
    resent = await put(client, "/api/crm/customers/M-1", wei(updated_at=V2))
    assert (resent["status"], resent["id"]) == ("merged", survivor["id"])
    assert await count(engine, Customer) == 1
    assert await count(engine, OutboxRow) == 0  # the CRM merged it: nothing to tell it


@pytest.mark.parametrize(
    ("ask", "status", "error_id"),
    [
        ({"survivor_external_id": "S-1", "merged_external_id": "M-404"}, 404, "no_customer"),
        ({"survivor_external_id": "S-1", "merged_external_id": "C-1"}, 422, "merge_refused"),
        ({"survivor_external_id": "S-1"}, 422, "invalid_field"),
        ({"survivor_external_id": "S-1", "merged_external_id": "S-1"}, 422, "invalid_field"),
    ],
)
async def test_a_merge_that_cannot_be_done_is_refused(
    client: Client, engine: AsyncEngine, ask: dict[str, Any], status: int, error_id: str
) -> None:
    await put(client, "/api/crm/customers/S-1", wei())
    await put(
        client, "/api/crm/customers/C-1", {"kind": "company", "name": "ACME", "updated_at": V1}
    )
    answer = await post(client, "/api/crm/merges", ask, status=status)
    assert answer["error_id"] == error_id
    assert await count(engine, Customer) == 2


# -- bad bodies and hostile text -------------------------------------------------------------


async def test_bad_bodies_are_refused_with_their_reason(
    client: Client, engine: AsyncEngine
) -> None:
    path = "/api/crm/customers/P-1"
    for data in (b"{", b"\xff\xfe", b'{"balance": NaN, "name": "x"}'):
        response = await client.put(path, data=data, headers=AUTH)
        assert (response.status, (await response.json())["error_id"]) == (400, "bad_json")
    huge = json.dumps(wei(address="x" * MAX_BODY)).encode()
    response = await client.put(path, data=io.BytesIO(huge), headers=AUTH)
    assert (response.status, (await response.json())["error_id"]) == (413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(20):
            yield b" " * 65536

    response = await client.put(path, data=chunks(), headers=AUTH)
    assert response.status == 413
    for body, field in (
        (wei(updated_at=None), "updated_at"),
        (wei(updated_at="2026-12-04T09:00:00"), "updated_at"),  # no zone
        (wei(name="a\x00b"), "name"),
        (wei(kind="robot"), "kind"),
        (wei(external_id="P-2"), "external_id"),
        (wei(tier="platinum"), "tier"),
    ):
        answer = await put(client, path, body, status=422)
        assert (answer["error_id"], answer["field"]) == ("invalid_field", field), answer
    assert await count(engine, Customer) == 0


async def test_hostile_text_is_stored_as_given_and_escaped_on_pages(
    client: Client, engine: AsyncEngine
) -> None:
    saved = await put(
        client, "/api/crm/customers/P-1", wei(name=HOSTILE, address=f"{HOSTILE}\nline 2")
    )
    note = {"customer_external_id": "P-1", "occurred_at": V1, "title": HOSTILE, "body": HOSTILE}
    # the id goes into the URL percent-encoded, its "/" as %2F
    await put(client, URL(f"/api/crm/notes/{quote(HOSTILE[:40], safe='')}", encoded=True), note)
    stored = await one(engine, Customer)
    assert (stored.name, stored.address) == (HOSTILE, f"{HOSTILE}\nline 2")
    entry = await one(engine, Interaction)
    assert (entry.title, entry.body, entry.external_id) == (
        HOSTILE,
        HOSTILE,
        f"crm:note:{HOSTILE[:40]}",
    )
    await login(client, "sue")
    page = await (await client.get(f"/customers/{saved['id']}")).text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


async def test_the_stack_serves_the_api_with_the_configured_token(tmp_path: Path) -> None:
    server = AmiServer(auth_delay=0.0)
    await server.start()
    settings = Settings(
        pbxs=(PbxSettings(name="sim", port=server.port, secret=server.secret),),
        store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}"),
        web=WebSettings(port=0, dispositions_file=str(ROOT / "config" / "dispositions.toml")),
        crm=CrmSettings(inbound_token=TOKEN),
    )
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_stack(
            settings, accounts=accounts(), on_ready=lambda at: ready.set_result(at.agent_page or "")
        )
    )
    try:
        page = await asyncio.wait_for(ready, 10)
        async with aiohttp.ClientSession() as http:
            url = f"{page}api/crm/customers/P-1"
            async with http.put(url, json=wei(), headers=AUTH) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["status"] == "inserted"
            async with http.put(url, json=wei(), headers={"Authorization": "Bearer no"}) as refused:
                assert refused.status == 401
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()
        await server.stop()
