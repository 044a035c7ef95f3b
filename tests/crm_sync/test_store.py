"""The pop's lookup on SQLite and PostgreSQL: every spelling of a number, cards, time budget."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.db import create_engine
from crm_sync.models import Customer, Interaction, Phone
from crm_sync.phones import PhoneNormalizer
from crm_sync.readers import SqliteRows
from crm_sync.store import CustomerStore, StoreUnavailable

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script> \"O'Brien\" 😀"


async def add(session: AsyncSession, name: str, phones: list[str], **fields: Any) -> Customer:
    customer = Customer(
        kind=fields.pop("kind", "person"),
        name=name,
        tier=fields.pop("tier", "regular"),
        lifecycle=fields.pop("lifecycle", "active"),
        tags=fields.pop("tags", []),
        created_at=NOW,
        updated_at=NOW,
        **fields,
    )
    session.add(customer)
    await session.flush()
    for number in phones:
        session.add(Phone(customer_id=customer.id, e164=number))
    return customer


def note(customer: Customer, kind: str, ago: timedelta, title: str, **fields: Any) -> Interaction:
    return Interaction(
        customer_id=customer.id, kind=kind, occurred_at=NOW - ago, title=title, **fields
    )


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[CustomerStore]:
    store = CustomerStore(engine, PhoneNormalizer("CN"))
    async with store.sessions() as session, session.begin():
        acme = await add(session, "ACME 有限公司", ["+862079460958"], kind="company", tier="vip")
        wei = await add(
            session,
            "张伟",
            ["+8613800138000", "+15550100001"],
            company_id=acme.id,
            owner="alice",
            language="zh",
            tags=["b2b"],
        )
        session.add_all(
            [
                note(wei, "order", timedelta(days=30), "Order #1001"),
                note(wei, "ticket", timedelta(days=3), "Broken hinge", status="open"),
                note(wei, "call", timedelta(hours=2), "Call about the hinge", agent="bob"),
                note(
                    wei,
                    "followup",
                    timedelta(days=1),
                    "Call back",
                    status="open",
                    due_at=NOW + timedelta(days=1),
                    owner="alice",
                ),
                note(wei, "email", timedelta(minutes=30), HOSTILE),
            ]
        )
        twin_a = await add(session, "Ana Twin", ["+4930123456"])
        twin_b = await add(session, HOSTILE, ["+4930123456"], lifecycle="lapsed")
        session.add(note(twin_a, "call", timedelta(days=2), "old call"))
        assert twin_b.id > twin_a.id
    yield store
    await store.close()


@pytest.mark.parametrize(
    "spelling", ["+86 138 0013 8000", "008613800138000", "13800138000", "+8613800138000"]
)
async def test_every_spelling_finds_the_same_customer(store: CustomerStore, spelling: str) -> None:
    result = await store.lookup(spelling, now=NOW)
    assert (result.status, result.e164) == ("found", "+8613800138000")
    (card,) = result.cards
    assert (card.name, card.company, card.owner, card.language) == (
        "张伟",
        "ACME 有限公司",
        "alice",
        "zh",
    )
    assert card.phones == ("+8613800138000", "+15550100001")


async def test_card_carries_the_story(store: CustomerStore) -> None:
    (card,) = (await store.lookup("+1 555 010 0001", now=NOW)).cards
    assert [e.title for e in card.recent] == [
        HOSTILE,
        "Call about the hinge",
        "Call back",
        "Broken hinge",
        "Order #1001",
    ]
    assert [e.title for e in card.open_items] == ["Call back", "Broken hinge"]
    assert card.repeat_caller is True
    assert card.recent[0].title == HOSTILE  # stored as written; escaping is the page's job
    assert card.recent[0].occurred_at.astimezone(UTC) == NOW - timedelta(minutes=30)


async def test_several_matches_and_none_and_company(store: CustomerStore) -> None:
    several = await store.lookup("+49 30 123456", now=NOW)
    assert several.status == "several"
    assert [(c.name, c.lifecycle, c.repeat_caller) for c in several.cards] == [
        ("Ana Twin", "active", False),
        (HOSTILE, "lapsed", False),
    ]
    company = await store.lookup("020 7946 0958", now=NOW)
    assert [(c.kind, c.tier) for c in company.cards] == [("company", "vip")]
    assert (await store.lookup("+44 20 7946 0000", now=NOW)).status == "none"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("1001", "internal"),
        ("5001", "internal"),
        ("", "invalid"),
        ("<unknown>", "invalid"),
        ("anonymous", "invalid"),
    ],
)
async def test_extensions_and_junk_never_match(store: CustomerStore, raw: str, status: str) -> None:
    result = await store.lookup(raw, now=NOW)
    assert (result.status, result.cards) == (status, ())


async def test_card_by_id(store: CustomerStore) -> None:
    (found,) = (await store.lookup("13800138000", now=NOW)).cards
    assert await store.card(found.id, now=NOW) == found
    assert await store.card(999_999, now=NOW) is None


async def test_slow_store_answers_within_budget(store: CustomerStore, db_url: str) -> None:
    """F11: a store that hangs must not hold the pop beyond its budget."""
    if db_url.startswith("postgresql"):
        blocker = create_engine(db_url)
        async with blocker.connect() as conn:
            await conn.execute(text("BEGIN"))
            await conn.execute(text("LOCK TABLE phones IN ACCESS EXCLUSIVE MODE"))
            started = time.perf_counter()
            result = await store.lookup("13800138000", now=NOW, budget=0.2)
            waited = time.perf_counter() - started
            await conn.execute(text("ROLLBACK"))
        await blocker.dispose()
        await store.close()
    else:
        # In WAL mode an SQLite reader never waits on a writer (BEGIN EXCLUSIVE included), so
        # a stall can only be the disk: stand one in for the query itself.
        real = store._cards

        async def stalled(e164: str, now: datetime) -> Any:
            await asyncio.sleep(0.5)
            return await real(e164, now)

        store._cards = stalled  # type: ignore[method-assign]
        started = time.perf_counter()
        result = await store.lookup("13800138000", now=NOW, budget=0.2)
        waited = time.perf_counter() - started
        store._cards = real  # type: ignore[method-assign]
        await store.close()
    assert (result.status, result.cards, result.e164) == ("timeout", (), "+8613800138000")
    assert waited < 0.4
    assert (await store.lookup("13800138000", now=NOW)).status == "found"  # and it recovers


@contextmanager
def sqlite_write_lock(db_url: str) -> Iterator[None]:
    """Hold SQLite's exclusive lock the only way WAL lets one connection stop readers: in
    exclusive locking mode, taken while no other connection has the file open."""
    blocker = sqlite3.connect(make_url(db_url).database or "", isolation_level=None)
    try:
        blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
        blocker.execute("BEGIN EXCLUSIVE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


def sqlite_rows(store: CustomerStore) -> SqliteRows:
    rows = store._rows
    assert isinstance(rows, SqliteRows)
    return rows


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sqlite_reads_run_on_the_loop_without_a_thread(store: CustomerStore) -> None:
    result = await store.lookup("13800138000", now=NOW)
    figures = await store.figures(result.cards[0].id)
    assert result.status == "found" and figures is not None
    assert (sqlite_rows(store).handed_over, sqlite_rows(store)._executor) == (0, None)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sqlite_read_over_its_budget_is_redone_on_the_thread(
    store: CustomerStore,
) -> None:
    """A customer with a long history: the timeline runs for thousands of SQLite steps."""
    async with store.sessions() as session, session.begin():
        (wei,) = (await store.lookup("13800138000", now=NOW)).cards
        session.add_all(
            Interaction(
                customer_id=wei.id, kind="email", occurred_at=NOW - timedelta(minutes=n), title=""
            )
            for n in range(1, 500)
        )
    rows = sqlite_rows(store)
    rows._inline_budget = 1.0  # on the loop, however loaded the machine is
    on_loop = await store.lookup("13800138000", now=NOW)
    assert rows.handed_over == 0
    rows._inline_budget = 0.0  # overdue at SQLite's first look at the clock
    on_thread = await store.lookup("13800138000", now=NOW)
    assert rows.handed_over == 1 and rows._executor is not None
    assert on_thread.cards == on_loop.cards and on_thread.status == "found"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_locked_sqlite_never_stalls_the_loop(
    store: CustomerStore, engine: AsyncEngine, db_url: str
) -> None:
    """While the lookup waits for the lock on the reader thread, the loop goes on ticking."""
    await engine.dispose()
    await store.close()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    with sqlite_write_lock(db_url):
        results = await asyncio.gather(
            *(store.lookup("13800138000", now=NOW, budget=0.3) for _ in range(5))
        )
    ticking.cancel()
    assert [r.status for r in results] == ["timeout"] * 5
    assert len(gaps) > 20 and max(gaps) < 0.05
    assert (await store.lookup("13800138000", now=NOW)).status == "found"


async def test_unreachable_store_is_an_error_result_not_an_exception() -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/none")
    store = CustomerStore(engine, PhoneNormalizer("CN"))
    result = await store.lookup("13800138000", now=NOW, budget=2.0)
    await engine.dispose()
    assert (result.status, result.cards) == ("error", ())


async def test_card_of_an_unreachable_store_raises_store_unavailable() -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/none")
    store = CustomerStore(engine, PhoneNormalizer("CN"))
    with pytest.raises(StoreUnavailable):
        await store.card(1, now=NOW)
    await store.close()
    await engine.dispose()
