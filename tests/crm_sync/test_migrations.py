"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.migrate import alembic_config, current_revision, head_revision, upgrade
from crm_sync.models import Base


async def test_migrated_schema_matches_the_models(engine: AsyncEngine, db_url: str) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []
    assert await current_revision(engine) == head_revision(db_url)


async def test_upgrade_twice_is_a_no_op(engine: AsyncEngine, db_url: str) -> None:
    await asyncio.to_thread(upgrade, db_url)
    assert await current_revision(engine) == head_revision(db_url)


async def test_audit_log_revision_down_and_up(engine: AsyncEngine, db_url: str) -> None:
    """0003 adds only ``audit_log``: down to 0002 drops it and keeps the rest, up brings it
    back (on a live database, as ``cti db upgrade`` would)."""

    async def tables() -> set[str]:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))

    assert "audit_log" in await tables()
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0002")
    assert await current_revision(engine) == "0002"
    assert {"customers", "call_scores"} <= await tables()
    assert "audit_log" not in await tables()
    await asyncio.to_thread(upgrade, db_url)
    assert "audit_log" in await tables()
    assert await current_revision(engine) == head_revision(db_url)


async def test_outcomes_without_a_customer_keep_every_row_and_the_cascade(
    engine: AsyncEngine, db_url: str
) -> None:
    """0008 rebuilds ``interactions`` on SQLite (NOT NULL cannot be dropped in place): the
    rows stay, the customer's cascade still deletes theirs, and a wrong number's outcome may
    then be stored without a customer."""
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0007")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO customers (id, kind, name, tier, lifecycle, tags, created_at,"
                " updated_at, segment_stale) VALUES (1, 'person', 'Ana', 'regular', 'active',"
                " '[]', :at, :at, true)"
            ),
            {"at": at},
        )
        await conn.execute(
            text(
                "INSERT INTO interactions (customer_id, kind, occurred_at, title, agent)"
                " VALUES (1, 'call', :at, 'Call', 'alice')"
            ),
            {"at": at},
        )
    await asyncio.to_thread(upgrade, db_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO interactions (customer_id, kind, occurred_at, title, agent)"
                " VALUES (NULL, 'outcome', :at, 'wrong_number', 'alice')"
            ),
            {"at": at},
        )
        rows = (await conn.execute(text("SELECT customer_id, kind FROM interactions"))).all()
        assert sorted(rows, key=str) == sorted([(1, "call"), (None, "outcome")], key=str)
        await conn.execute(text("DELETE FROM customers WHERE id = 1"))
        left = (await conn.execute(text("SELECT customer_id, kind FROM interactions"))).all()
        assert left == [(None, "outcome")]  # the cascade held through the rebuild
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert diff == []
