"""The outbox (SQLite and PostgreSQL): written with the change, claimed in order per customer,
leased, dead-lettered, revived; and the relay's pure parts (signature, backoff, Retry-After)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.call_writes import record_call
from crm_sync.models import Customer, Interaction, OutboxRow
from crm_sync.outbox import Outbox, enqueue
from crm_sync.relay import retry_after, retry_delay, sign, verify
from crm_sync.timeline import OutcomeError, save_outcome
from tests.crm_sync.test_timeline import outcome, record

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
async def outbox(engine: AsyncEngine) -> AsyncIterator[Outbox]:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        for name in ("Wei", "Émilie"):
            session.add(
                Customer(
                    kind="person",
                    name=name,
                    external_id=f"ext-{name}",
                    tags=[],
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    yield Outbox(sessions)


async def rows(outbox: Outbox) -> list[tuple[str, str, int | None]]:
    async with outbox.sessions() as session:
        found = await session.execute(
            select(OutboxRow.topic, OutboxRow.key, OutboxRow.customer_id).order_by(OutboxRow.id)
        )
        return [(t, k, c) for t, k, c in found.all()]


async def add(outbox: Outbox, key: str, customer_id: int | None, at: datetime = NOW) -> None:
    async with outbox.sessions() as session, session.begin():
        enqueue(
            session,
            topic="followup.created",
            key=key,
            customer_id=customer_id,
            data={"k": key},
            now=at,
        )


async def test_an_outcome_and_its_followup_enter_the_outbox_once(outbox: Outbox) -> None:
    due = NOW + timedelta(days=1)
    await save_outcome(outbox.sessions, outcome("k1", followup_due=due), now=NOW)
    await save_outcome(outbox.sessions, outcome("k1", followup_due=due), now=NOW)  # a retry
    assert await rows(outbox) == [
        ("outcome.saved", "outcome:k1", 1),
        ("followup.created", "outcome:k1:followup", 1),
    ]
    (claimed,) = await outbox.claim(NOW, 10, lease=30)  # one per customer at a time
    assert claimed.envelope["customer"] == {"id": 1, "external_id": "ext-Wei"}
    assert claimed.envelope["data"]["notes"] == '<b>fixed</b> "it"'
    assert claimed.envelope["data"]["disposition"] == "resolved"
    assert (claimed.attempt, claimed.envelope["id"]) == (1, "outcome:k1")


async def test_a_new_customer_is_announced_before_the_outcome(outbox: Outbox) -> None:
    await save_outcome(
        outbox.sessions,
        outcome("k2", customer_id=None, new_customer_name="李娜", caller_e164="+8613900139000"),
        now=NOW,
    )
    topics = [(topic, customer) for topic, _key, customer in await rows(outbox)]
    assert topics == [("customer.created", 3), ("outcome.saved", 3)]


async def test_the_outcome_is_not_saved_when_its_outbox_row_cannot_be(outbox: Outbox) -> None:
    """One transaction: an outbox row that fails (here a key already taken) takes the outcome
    down with it, and the agent is told, never shown "saved"."""
    await add(outbox, "outcome:k3", None)
    with pytest.raises(OutcomeError):
        await save_outcome(outbox.sessions, outcome("k3"), now=NOW)
    async with outbox.sessions() as session:
        outcomes = await session.scalar(
            select(func.count()).select_from(Interaction).where(Interaction.kind == "outcome")
        )
    assert outcomes == 0


async def test_a_finished_call_enters_the_outbox_once(outbox: Outbox) -> None:
    assert await record_call(outbox.sessions, 2, record("c9"), now=NOW) is True
    assert await record_call(outbox.sessions, 2, record("c9"), now=NOW) is False
    ((topic, key, customer),) = await rows(outbox)
    assert (topic, key, customer) == ("call.ended", "call:p:c9", 2)
    (claimed,) = await outbox.claim(NOW + timedelta(seconds=5), 10, lease=30)
    assert claimed.envelope["data"]["call"]["outcome"] == "answered"


async def test_a_customer_s_rows_are_claimed_one_at_a_time_in_order(outbox: Outbox) -> None:
    for key, customer in (("a1", 1), ("b1", 2), ("a2", 1), ("n1", None), ("n2", None)):
        await add(outbox, key, customer)
    first = await outbox.claim(NOW, 10, lease=30)
    assert [c.key for c in first] == ["a1", "b1", "n1", "n2"]  # rows without a customer: any order
    assert await outbox.claim(NOW, 10, lease=30) == []  # a1 is leased; a2 waits behind it
    await outbox.delivered([c.id for c in first], NOW)
    assert [c.key for c in await outbox.claim(NOW, 10, lease=30)] == ["a2"]


async def test_a_lease_that_ends_gives_the_row_again(outbox: Outbox) -> None:
    """A relay killed mid-delivery: the row comes back after its lease, same key, next attempt."""
    await add(outbox, "a1", 1)
    (first,) = await outbox.claim(NOW, 10, lease=30)
    assert await outbox.claim(NOW + timedelta(seconds=29), 10, lease=30) == []
    (again,) = await outbox.claim(NOW + timedelta(seconds=31), 10, lease=30)
    assert (again.id, again.key, again.attempt) == (first.id, "a1", 2)
    await outbox.release([again.id], NOW + timedelta(seconds=32))  # a graceful stop
    (after,) = await outbox.claim(NOW + timedelta(seconds=32), 10, lease=30)
    assert after.attempt == 2


async def test_dead_rows_are_counted_listed_and_revived(outbox: Outbox) -> None:
    await add(outbox, "a1", 1)
    await add(outbox, "a2", 1)
    (row,) = await outbox.claim(NOW, 10, lease=30)
    await outbox.failed(row.id, "HTTP 500 Internal Server Error " + "x" * 400, retry_at=None)
    counts = await outbox.counts()
    assert (counts.pending, counts.delivered, counts.dead) == (1, 0, 1)
    (dead,) = await outbox.rows("dead", 10)
    assert dead.key == "a1" and dead.last_error is not None and len(dead.last_error) == 300
    (next_row,) = await outbox.claim(NOW, 10, lease=30)  # a dead row does not block the rest
    assert next_row.key == "a2"
    assert await outbox.retry([999], NOW) == 0
    assert await outbox.retry(None, NOW) == 1
    await outbox.delivered([next_row.id], NOW)
    (revived,) = await outbox.claim(NOW, 10, lease=30)
    assert (revived.key, revived.attempt) == ("a1", 1)


async def test_a_failed_attempt_waits_until_its_retry_time(outbox: Outbox) -> None:
    await add(outbox, "a1", 1)
    (row,) = await outbox.claim(NOW, 10, lease=30)
    await outbox.failed(row.id, "HTTP 503", retry_at=NOW + timedelta(seconds=8))
    assert await outbox.claim(NOW + timedelta(seconds=7), 10, lease=30) == []
    (again,) = await outbox.claim(NOW + timedelta(seconds=8), 10, lease=30)
    assert again.attempt == 2
    counts = await outbox.counts()
    assert counts.oldest_pending == NOW


def test_unknown_topics_are_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        enqueue(None, topic="outcome", key="k", customer_id=None, data={}, now=NOW)  # type: ignore[arg-type]


def test_the_signature_covers_time_and_body() -> None:
    body = '{"id":"outcome:k1","notes":"张伟"}'.encode()
    header = sign("s3cret", 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header) == len("t=1700000000,v1=") + 64
    assert verify("s3cret", header, body, now=1_700_000_100)
    assert not verify("s3cret", header, body + b" ", now=1_700_000_100)  # body changed
    assert not verify("other", header, body, now=1_700_000_100)  # wrong secret
    assert not verify("s3cret", header, body, now=1_700_000_400)  # replayed 400 s later
    forged = header.replace("t=1700000000", "t=1700000300")
    assert not verify("s3cret", forged, body, now=1_700_000_300)  # time moved, mac not
    assert not verify("s3cret", "garbage", body, now=1_700_000_000)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (1, 0.5, 1.0),
        (2, 1.0, 2.0),
        (5, 8.0, 16.0),
        (9, 128.0, 256.0),
        (10, 150.0, 300.0),
        (400, 150.0, 300.0),
    ],
)
def test_backoff_doubles_with_jitter_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    assert retry_delay(attempt, 1.0, 300.0, lambda: 0.0) == low
    assert retry_delay(attempt, 1.0, 300.0, lambda: 1.0) == high


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("86400", 3600.0),  # capped: asked again within the hour
        ("Fri, 04 Dec 2026 09:00:30 GMT", 30.0),
        ("Fri, 04 Dec 2026 08:00:00 GMT", 0.0),  # in the past: at once
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_dates(header: str | None, seconds: float | None) -> None:
    assert retry_after(header, NOW) == seconds


async def test_a_customer_with_a_long_backlog_does_not_hold_up_the_others(outbox: Outbox) -> None:
    for n in range(20):
        await add(outbox, f"a{n}", 1)
    await add(outbox, "b0", 2)
    claimed = await outbox.claim(NOW, 2, lease=30)  # windows of 8 rows: b0 is in the third
    assert [c.key for c in claimed] == ["a0", "b0"]


async def test_a_merge_hands_the_merged_customer_s_pending_rows_to_the_survivor(
    outbox: Outbox,
) -> None:
    from crm_sync.merges import merge_customers

    await add(outbox, "about-2", 2)
    await add(outbox, "about-1", 1)
    async with outbox.sessions() as session, session.begin():
        await merge_customers(session, 1, 2, source="admin", by="root", now=NOW)
    claimed = await outbox.claim(NOW, 10, lease=30)
    assert [(c.key, c.envelope["customer"]["id"]) for c in claimed] == [("about-2", 1)]
