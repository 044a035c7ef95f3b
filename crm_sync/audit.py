"""The audit log of member controls: one committed row per control, newest read first.

Rows are only ever added. Texts are cut to their columns' sizes here, so a long error message
from a PBX can never make the row (and so the record of what happened) fail to be written.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_sync.models import AuditEntry

MAX_LIMIT = 500
Target = AsyncEngine | async_sessionmaker[AsyncSession]


async def record(
    target: Target,
    *,
    at: datetime,
    login: str,
    role: str,
    action: str,
    agent: str,
    queue: str | None,
    pbx: str | None,
    detail: str,
    result: str,
) -> int:
    """Commit one entry; its id. ``at`` must be timezone-aware (stored as UTC)."""
    if at.tzinfo is None:
        raise ValueError("an audit time needs its time zone")
    entry = AuditEntry(
        at=at.astimezone(UTC),
        login=login[:64],
        role=role[:16],
        action=action[:16],
        agent=agent[:64],
        queue=queue[:64] if queue is not None else None,
        pbx=pbx[:64] if pbx is not None else None,
        detail=detail[:200],
        result=result[:300],
    )
    async with _sessions(target)() as session, session.begin():
        session.add(entry)
        await session.flush()
        return entry.id


async def recent(target: Target, limit: int = 100) -> list[AuditEntry]:
    """The last ``limit`` entries (at most MAX_LIMIT), newest first, with ``at`` in UTC."""
    query = (
        select(AuditEntry)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(max(1, min(limit, MAX_LIMIT)))
    )
    async with _sessions(target)() as session:
        entries = list((await session.scalars(query)).all())
    for entry in entries:
        if entry.at.tzinfo is None:  # SQLite keeps no zone: what it holds is UTC
            entry.at = entry.at.replace(tzinfo=UTC)
    return entries


def _sessions(target: Target) -> async_sessionmaker[AsyncSession]:
    if isinstance(target, AsyncEngine):
        return async_sessionmaker(target, expire_on_commit=False)
    return target
