"""Finished calls written many to a transaction (SQLite and PostgreSQL): each row and its
outbox event as one call alone would write them, a call already there reported as such."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.call_writes import record_calls
from crm_sync.models import Customer, Interaction, OutboxRow
from cti.replay import replay_file
from tests.crm_sync.test_timeline import record

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent.parent / "fixtures"


async def test_a_batch_writes_every_call_and_tells_the_crm_of_known_customers(
    engine: AsyncEngine,
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        wei = Customer(kind="person", name="Wei", tags=[], created_at=NOW, updated_at=NOW)
        session.add(wei)
    calls = [(wei.id, record("c1")), (None, record("c2")), (wei.id, record("c3"))]
    assert await record_calls(sessions, calls, now=NOW) == [True, True, True]
    async with sessions() as session:
        written = (
            await session.execute(
                select(Interaction.call_id, Interaction.customer_id, Interaction.external_id)
                .where(Interaction.kind == "call")
                .order_by(Interaction.call_id)
            )
        ).all()
        told = (await session.execute(select(OutboxRow.key).order_by(OutboxRow.key))).all()
    assert [tuple(r) for r in written] == [
        ("c1", wei.id, "call:p:c1"),
        ("c2", None, "call:p:c2"),
        ("c3", wei.id, "call:p:c3"),
    ]
    assert [k for (k,) in told] == ["call:p:c1", "call:p:c3"]  # nobody to attach c2 to


async def test_a_call_already_written_does_not_keep_the_others_out(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    assert await record_calls(sessions, [(None, record("c2"))], now=NOW) == [True]
    again = [(None, record("c1")), (None, record("c2")), (None, record("c3"))]
    assert await record_calls(sessions, again, now=NOW) == [True, False, True]
    async with sessions() as session:
        ids = (
            await session.execute(
                select(Interaction.call_id)
                .where(Interaction.kind == "call")
                .order_by(Interaction.call_id)
            )
        ).all()
    assert [c for (c,) in ids] == ["c1", "c2", "c3"]
    assert await record_calls(sessions, [], now=NOW) == []


async def test_a_call_row_lists_its_transfers_as_the_recording_had_them(
    engine: AsyncEngine,
) -> None:
    """The real recording of three AMI blind transfers into ``sales``: each call's row says
    who handed it on, to where, and when, in words; a call without a transfer has no body."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    replayed = replay_file(FIXTURES / "transfer_blind_to_queue.txt").records
    assert await record_calls(sessions, [(None, r) for r in replayed], now=NOW) == [True] * 3
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Interaction.call_id, Interaction.body).where(Interaction.kind == "call")
            )
        ).all()
    bodies = dict(rows)
    for call in replayed:
        (transfer,) = call.transfers
        assert call.started_at is not None and transfer.at is not None
        seconds = round(transfer.at - call.started_at)
        assert bodies[call.call_id] == (
            f"Blind transfer from {transfer.from_agent} to sales, "
            f"{seconds // 60}:{seconds % 60:02d} into the call"
        )
    assert {r.answered_by for r in replayed} == {"Alice", "Bob", "Dave"}
    assert await record_calls(sessions, [(None, record("c9"))], now=NOW) == [True]
    async with sessions() as session:
        assert (
            await session.scalar(select(Interaction.body).where(Interaction.call_id == "c9"))
            is None
        )
