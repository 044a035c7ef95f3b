"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.migrate import current_revision, head_revision, upgrade
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
