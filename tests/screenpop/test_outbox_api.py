"""The outbox for supervisors over HTTP: counts and rows, reviving dead rows (audited)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.models import OutboxRow
from crm_sync.outbox import enqueue
from tests.screenpop.test_controls import Lab, open_lab, post

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
async def lab(engine: AsyncEngine) -> AsyncIterator[Lab]:
    async with open_lab(engine) as opened:
        yield opened


async def fill(lab: Lab) -> None:
    """Three rows, the first two given up as dead."""
    sessions = lab.pop.store.sessions  # type: ignore[union-attr]
    async with sessions() as session, session.begin():
        for n in range(3):
            enqueue(
                session, topic="call.ended", key=f"call:p:{n}", customer_id=None, data={}, now=NOW
            )
    async with sessions() as session, session.begin():
        await session.execute(
            update(OutboxRow)
            .where(OutboxRow.key.in_(["call:p:0", "call:p:1"]))
            .values(state="dead", attempts=300, last_error="HTTP 500 <b>oops</b>")
        )


async def test_a_supervisor_sees_dead_rows_and_sends_them_again(lab: Lab) -> None:
    await fill(lab)
    sue = await lab.login("sue")
    listed = await lab.client.get("/api/outbox")
    assert listed.status == 200
    body = await listed.json()
    assert body["counts"] == {"pending": 1, "delivered": 0, "dead": 2}
    assert body["oldest_pending"] == NOW.isoformat()
    assert [r["key"] for r in body["rows"]] == ["call:p:1", "call:p:0"]
    assert body["rows"][0]["last_error"] == "HTTP 500 <b>oops</b>"
    status, answer = await post(lab, "/api/outbox/retry", sue, {"ids": [body["rows"][0]["id"]]})
    assert (status, answer) == (200, {"revived": 1})
    status, answer = await post(lab, "/api/outbox/retry", sue, {"all_dead": True})
    assert (status, answer) == (200, {"revived": 1})
    after = await (await lab.client.get("/api/outbox?state=pending&limit=5")).json()
    assert after["counts"]["dead"] == 0 and len(after["rows"]) == 3
    assert [e.action for e in await lab.audit()] == ["outbox_retry", "outbox_retry"]


async def test_bad_requests_and_agents_are_refused(lab: Lab) -> None:
    sue = await lab.login("sue")
    for query in ("?state=gone", "?limit=0", "?limit=501", "?limit=x"):
        assert (await lab.client.get("/api/outbox" + query)).status == 422
    bodies: list[object] = [
        {},
        {"ids": []},
        {"ids": ["1"]},
        {"ids": [True]},
        {"all_dead": 1},
        {"ids": [0]},
        {"ids": [2**63]},  # past a 64-bit INTEGER: an OverflowError and a 500 before
        {"ids": [10**30]},
    ]
    for body in bodies:
        status, answer = await post(lab, "/api/outbox/retry", sue, body)
        assert (status, answer["error_id"]) == (422, "invalid_field"), body
    status, answer = await post(lab, "/api/outbox/retry", sue, [1])  # not an object
    assert (status, answer["error_id"]) == (400, "bad_json")


async def test_agents_may_not_see_or_revive_the_outbox(lab: Lab) -> None:
    alice = await lab.login("alice")
    assert (await lab.client.get("/api/outbox")).status == 403
    status, _ = await post(lab, "/api/outbox/retry", alice, {"all_dead": True})
    assert status == 403
