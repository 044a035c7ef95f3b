"""Segments in the store (crm_sync.segmenting) on SQLite and PostgreSQL: stale customers are
recomputed and only they; the writers of orders and survey answers mark them; the full pass
finds those whom time alone moved; a writer racing a recompute loses nothing; the service's
task does both; the card carries the quadrant and the reasons."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_sync.customers import InteractionIn, add_interaction
from crm_sync.models import CallScore, Customer
from crm_sync.phones import PhoneNormalizer
from crm_sync.segmenting import (
    keep_segments,
    mark_moved,
    recompute_all,
    recompute_stale,
)
from crm_sync.segments import DEFAULT_RULES
from crm_sync.store import CustomerStore
from ivr.store import IvrStore
from tests.support.commands import cti

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PHONES = PhoneNormalizer("CN")
ROOT = Path(__file__).parent.parent.parent


class Stored(NamedTuple):
    """A customer's segment columns as stored."""

    tier: str
    lifecycle: str
    quadrant: str | None
    why: tuple[str, ...]
    stale: bool
    segmented_at: datetime | None
    updated_at: datetime | None


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC (SQLite gives naive UTC back)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def customer(engine: AsyncEngine, name: str, **fields: Any) -> int:
    async with sessions(engine)() as session, session.begin():
        row = Customer(
            kind="person",
            name=name,
            tags=[],
            created_at=NOW - timedelta(days=800),
            updated_at=NOW - timedelta(days=800),
            **fields,
        )
        session.add(row)
        await session.flush()
        return row.id


async def order(
    engine: AsyncEngine, customer_id: int, days: float, amount: str, status: str = "delivered"
) -> None:
    async with sessions(engine)() as session, session.begin():
        await add_interaction(session, entry(customer_id, days, amount, status))


def entry(customer_id: int, days: float, amount: str, status: str = "delivered") -> InteractionIn:
    return InteractionIn(
        customer_external_id=None,
        customer_id=customer_id,
        kind="order",
        occurred_at=NOW - timedelta(days=days),
        title="Web order",
        amount=Decimal(amount),
        status=status,
    )


async def score(engine: AsyncEngine, customer_id: int, call_id: str, value: int) -> None:
    async with sessions(engine)() as session, session.begin():
        session.add(
            CallScore(
                pbx="lab",
                call_id=call_id,
                agent="alice",
                customer_id=customer_id,
                question="attitude",
                score=value,
                created_at=NOW - timedelta(days=3),
            )
        )


async def stored(engine: AsyncEngine, customer_id: int) -> Stored:
    async with sessions(engine)() as session:
        row = await session.get_one(Customer, customer_id)
        why = tuple((row.segment_why or {}).get("reasons", ()))
        return Stored(
            row.tier,
            row.lifecycle,
            row.quadrant,
            why,
            row.segment_stale,
            utc(row.segmented_at),
            utc(row.updated_at),
        )


async def stale(engine: AsyncEngine, ids: Sequence[int]) -> list[int]:
    async with sessions(engine)() as session:
        query = select(Customer.id).where(Customer.id.in_(ids), Customer.segment_stale)
        return list((await session.scalars(query.order_by(Customer.id))).all())


async def test_stale_customers_are_computed_stored_and_shown_on_the_card(
    engine: AsyncEngine,
) -> None:
    vip = await customer(engine, "张伟", currency="CNY")
    for days, amount in ((6, "20000"), (40, "9000"), (80, "12000"), (120, "7200")):
        await order(engine, vip, days, amount)
    await score(engine, vip, "c1", 5)
    await score(engine, vip, "c2", 4)
    prospect = await customer(engine, "Émilie Dubois", tier="vip", lifecycle="active")
    assert await stale(engine, [vip, prospect]) == [vip, prospect]  # new customers are stale

    assert await recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW) == 2

    assert await stored(engine, vip) == Stored(
        "vip",
        "active",
        "loyal",
        (
            "VIP: 4 orders in 12 months, ¥48,200 spent, last order 6 days ago",
            "Active: last order 6 days ago",
            "Loyal: satisfaction 4.5 of 5 (2 answers), 4 orders in 12 months",
        ),
        False,
        NOW,
        NOW - timedelta(days=800),  # the CRM's version is not ours to move
    )
    assert (await stored(engine, prospect))[:4] == (
        "regular",
        "prospect",
        None,
        ("Regular: no order yet", "Prospect: no order yet"),
    )
    store = CustomerStore(engine, PHONES)
    try:
        card = await store.card(vip, now=NOW)
        assert card is not None
        assert (card.tier, card.lifecycle, card.quadrant) == ("vip", "active", "loyal")
        assert card.why[0] == "VIP: 4 orders in 12 months, ¥48,200 spent, last order 6 days ago"
        fresh = await store.card(await customer(engine, "Not yet"), now=NOW)
        assert fresh is not None and (fresh.quadrant, fresh.why) == (None, ())
    finally:
        await store.close()


async def test_only_stale_customers_are_touched(engine: AsyncEngine) -> None:
    first = await customer(engine, "First")
    second = await customer(engine, "Second")
    await order(engine, first, 10, "100")
    await recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW)
    async with sessions(engine)() as session, session.begin():  # a value nothing recomputes
        await session.execute(update(Customer).where(Customer.id == first).values(tier="low"))

    await order(engine, second, 3, "700")
    assert await stale(engine, [first, second]) == [second]
    later = NOW + timedelta(hours=1)
    assert await recompute_stale(sessions(engine), DEFAULT_RULES, now=later) == 1
    assert ((await stored(engine, first)).tier, (await stored(engine, first)).segmented_at) == (
        "low",
        NOW,
    )
    second_now = await stored(engine, second)
    assert (second_now.lifecycle, second_now.segmented_at, second_now.stale) == (
        "new",
        later,
        False,
    )
    assert await recompute_stale(sessions(engine), DEFAULT_RULES, now=later) == 0


async def test_orders_and_survey_answers_mark_the_customer_and_other_entries_do_not(
    engine: AsyncEngine,
) -> None:
    ids = [await customer(engine, name) for name in ("Order", "Ticket", "Survey")]
    buyer, writer, surveyed = ids
    await recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW)
    assert await stale(engine, ids) == []
    await order(engine, buyer, 1, "5", status="cancelled")  # even a cancelled one: it may undo
    ticket = InteractionIn(None, "ticket", NOW, "Broken hinge", status="open", customer_id=writer)
    async with sessions(engine)() as session, session.begin():
        await add_interaction(session, ticket)
    ivr = IvrStore(engine, CustomerStore(engine, PHONES), PHONES, clock=lambda: NOW)
    try:
        await ivr.save_survey("lab", "call-1", "alice", surveyed, {"attitude": 2})
        await ivr.save_survey("lab", "call-2", "alice", None, {"attitude": 5})  # nobody's
    finally:
        await ivr.store.close()
    assert await stale(engine, ids) == [buyer, surveyed]
    await recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW)
    assert (await stored(engine, surveyed)).quadrant == "defecting"
    assert (await stored(engine, buyer)).lifecycle == "prospect"


async def test_the_full_pass_finds_whom_time_moved(engine: AsyncEngine) -> None:
    active = await customer(engine, "Active")
    await order(engine, active, 170, "300")
    await order(engine, active, 400, "300")
    prospect = await customer(engine, "Prospect")
    loyal = await customer(engine, "Loyal")
    await order(engine, loyal, 5, "100")
    await order(engine, loyal, 300, "100")
    await recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW)
    assert (await stored(engine, active)).lifecycle == "active"

    # a day later only the reasons of the recent buyer moved ("5 days ago" is "6 days ago");
    # "5 months ago" and "no order yet" still hold
    checked, moved = await mark_moved(
        sessions(engine), DEFAULT_RULES, now=NOW + timedelta(days=1), batch=2
    )
    assert (checked, moved) == (3, 1)
    assert await stale(engine, [active, prospect, loyal]) == [loyal]

    later = NOW + timedelta(days=12)  # the active customer's last order is 182 days old
    report = await recompute_all(sessions(engine), DEFAULT_RULES, now=later, batch=2)
    assert (report.checked, report.moved, report.recomputed) == (2, 1, 2)
    assert (await stored(engine, active)).why[1] == (
        "Lapsed: last order 5 months ago (lapses after 180 days)"
    )
    assert (await stored(engine, prospect)).segmented_at == NOW  # nothing moved it
    assert await stale(engine, [active, prospect, loyal]) == []
    again = await recompute_all(sessions(engine), DEFAULT_RULES, now=later, batch=2)
    assert (again.checked, again.moved, again.recomputed) == (3, 0, 0)


async def test_many_customers_go_through_in_batches(engine: AsyncEngine) -> None:
    async with sessions(engine)() as session, session.begin():
        rows = [
            Customer(kind="person", name=f"C{i}", tags=[], created_at=NOW, updated_at=NOW)
            for i in range(23)
        ]
        session.add_all(rows)
    assert await recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW, batch=5) == 23
    assert await stale(engine, [row.id for row in rows]) == []


async def test_an_order_written_while_a_recompute_runs_is_not_lost(engine: AsyncEngine) -> None:
    buyer = await customer(engine, "Buyer")  # stale already: the writer's mark changes nothing
    others = [await customer(engine, f"Other {i}") for i in range(3)]
    async with sessions(engine)() as writer, writer.begin():
        await add_interaction(writer, entry(buyer, 2, "30000"))  # not committed yet
        running = asyncio.create_task(recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW))
        # PostgreSQL: the others are done, the buyer skipped (the writer's mark locks it);
        # SQLite: the recompute waits for the writer's lock
        await asyncio.sleep(0.3)
    await running
    after = await stored(engine, buyer)
    assert after.stale or after.lifecycle == "new"  # never computed without the order, unmarked
    await recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW)
    assert (await stored(engine, buyer)).lifecycle == "new"
    assert await stale(engine, [buyer, *others]) == []


async def test_the_service_task_runs_a_full_pass_then_the_stale_ones(
    engine: AsyncEngine,
) -> None:
    lapsing = await customer(engine, "Lapsing")
    await order(engine, lapsing, 175, "100")
    await recompute_stale(sessions(engine), DEFAULT_RULES, now=NOW)
    clock = [NOW + timedelta(days=10)]
    task = asyncio.create_task(
        keep_segments(sessions(engine), DEFAULT_RULES, clock=lambda: clock[0], every=0.05)
    )
    try:
        for _ in range(200):
            if (await stored(engine, lapsing)).lifecycle == "lapsed":
                break
            await asyncio.sleep(0.05)
        assert (await stored(engine, lapsing)).lifecycle == "lapsed"  # the pass at start
        newcomer = await customer(engine, "Newcomer")
        await order(engine, newcomer, 1, "100")
        for _ in range(200):
            if not await stale(engine, [newcomer]):
                break
            await asyncio.sleep(0.05)
        assert (await stored(engine, newcomer)).lifecycle == "new"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_service_task_survives_a_store_that_fails(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    broken = async_sessionmaker(engine.execution_options(schema_translate_map={None: "nowhere"}))
    task = asyncio.create_task(keep_segments(broken, DEFAULT_RULES, clock=lambda: NOW, every=0.01))
    try:
        for _ in range(300):
            if len([r for r in caplog.records if "not recomputed" in r.message]) >= 2:
                break
            await asyncio.sleep(0.01)
        alive = not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len([r for r in caplog.records if "not recomputed" in r.message]) >= 2
    assert alive  # it tried again instead of ending


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_command_recomputes_stale_or_all(
    engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    buyer = await customer(engine, "Buyer")
    ordered = datetime.now(UTC) - timedelta(days=100)  # the command computes at the real now
    async with sessions(engine)() as session, session.begin():
        await add_interaction(session, replace(entry(buyer, 0, "300"), occurred_at=ordered))

    stale_run = await asyncio.to_thread(cti, "segments", "recompute", "--url", db_url, cwd=tmp_path)
    assert stale_run.returncode == 0, stale_run.stderr
    assert re.fullmatch(r"1 stale customers recomputed in \d+\.\d\d s\n", stale_run.stdout)
    assert (await stored(engine, buyer)).lifecycle == "active"

    rules = tmp_path / "rules.toml"
    rules.write_text("[lifecycle]\nlapsed_days = 60\n", encoding="utf-8")
    full = await asyncio.to_thread(
        cti, "segments", "recompute", "--all", "--rules", str(rules), "--url", db_url, cwd=tmp_path
    )
    assert full.returncode == 0, full.stderr
    assert full.stdout.startswith("1 customers checked, 1 had moved; 1 recomputed in ")
    assert (await stored(engine, buyer)).lifecycle == "lapsed"

    rules.write_text("[lifecycle]\nlapsed_days = 'soon'\n", encoding="utf-8")
    refused = await asyncio.to_thread(
        cti, "segments", "recompute", "--rules", str(rules), "--url", db_url, cwd=tmp_path
    )
    assert (refused.returncode, refused.stdout) == (2, "")
    assert "rules.toml: [lifecycle] lapsed_days: must be a whole number" in refused.stderr
