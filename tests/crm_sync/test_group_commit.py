"""Outcomes group-committed (SQLite and PostgreSQL): concurrent saves share transactions and
keep every promise of a save on its own: committed with their outbox rows, a repeated key
answers the first result, a bad outcome fails alone, a store down fails them all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.db import create_engine
from crm_sync.group_commit import OutcomeWriter
from crm_sync.models import Customer, Interaction, OutboxRow
from crm_sync.timeline import OutcomeError, OutcomeSaved, save_outcome
from tests.crm_sync.test_outbox import NOW
from tests.crm_sync.test_timeline import outcome


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[OutcomeWriter]:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        session.add_all(
            Customer(kind="person", name=f"C{n}", tags=[], created_at=NOW, updated_at=NOW)
            for n in range(5)
        )
    writer = OutcomeWriter(sessions, max_batch=50)
    yield writer
    await writer.close()


async def counted(writer: OutcomeWriter, model: type[Interaction] | type[OutboxRow]) -> int:
    async with writer.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_concurrent_outcomes_share_transactions(writer: OutcomeWriter) -> None:
    saved = await asyncio.gather(
        *(
            writer.save(outcome(f"k{n}", customer_id=n % 5 + 1, call_id=f"c{n}"), now=NOW)
            for n in range(120)
        )
    )
    assert len({s.interaction_id for s in saved}) == 120
    assert [s.customer_id for s in saved] == [n % 5 + 1 for n in range(120)]
    assert not any(s.duplicate for s in saved)
    assert 3 <= writer.batches < 10  # 120 in batches of at most 50, not 120 transactions
    assert (await counted(writer, Interaction), await counted(writer, OutboxRow)) == (120, 120)
    async with writer.sessions() as session:
        pairs = set((await session.execute(select(OutboxRow.key, OutboxRow.customer_id))).all())
    assert pairs == {(f"outcome:k{n}", n % 5 + 1) for n in range(120)}


async def test_a_bad_outcome_fails_alone_and_repeats_answer_the_first(
    writer: OutcomeWriter,
) -> None:
    before = await save_outcome(writer.sessions, outcome("old", customer_id=2), now=NOW)
    due = NOW.replace(day=10)
    results = await asyncio.gather(
        writer.save(outcome("a", customer_id=1, followup_due=due), now=NOW),
        writer.save(outcome("b", customer_id=999), now=NOW),  # no such customer
        writer.save(outcome("old", customer_id=2), now=NOW),  # a retry of a saved one
        writer.save(outcome("a", customer_id=1, followup_due=due), now=NOW),  # a double click
        writer.save(outcome("c", customer_id=None, new_customer_name="李娜"), now=NOW),
        return_exceptions=True,
    )
    first, missing, retried, again, created = results
    assert isinstance(first, OutcomeSaved) and first.followup_id is not None
    assert isinstance(missing, OutcomeError) and "no customer 999" in str(missing)
    assert retried == OutcomeSaved(before.interaction_id, 2, None, duplicate=True)
    assert again == OutcomeSaved(first.interaction_id, 1, first.followup_id, duplicate=True)
    assert isinstance(created, OutcomeSaved) and created.customer_id == 6
    # old + a (+ its follow-up) + c; outbox: those, the follow-up's and the new customer's
    assert (await counted(writer, Interaction), await counted(writer, OutboxRow)) == (4, 5)


async def test_bad_input_is_refused_before_any_batch(writer: OutcomeWriter) -> None:
    with pytest.raises(OutcomeError, match="disposition"):
        await writer.save(outcome("x", disposition=" "), now=NOW)
    assert writer.batches == 0


async def test_a_store_that_does_not_answer_fails_every_outcome_of_the_batch() -> None:
    engine = create_engine("postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens
    writer = OutcomeWriter(async_sessionmaker(engine, expire_on_commit=False))
    try:
        results = await asyncio.gather(
            *(writer.save(outcome(f"k{n}", customer_id=1), now=NOW) for n in range(3)),
            return_exceptions=True,
        )
    finally:
        await engine.dispose()
    assert all(isinstance(r, OSError | SQLAlchemyError) for r in results), results
    assert writer.batches == 0
