"""The screen pop's login sessions in the store (``web_sessions``), so a restart logs nobody out.

A row is keyed by the sha256 of the session's token: the token itself lives only in the
browser's cookie (and the serving process's memory), so a copy of the database opens no
session. The web side (screenpop.auth) keeps a cache in front of this table; here are only
the few statements it needs. Every call has a time limit and raises StoreUnavailable when the
database does not answer, so the caller can tell "no such session" from "cannot say".
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from asyncpg import PostgresError
from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.models import WebSession
from crm_sync.store import StoreUnavailable

_FAILURES = (SQLAlchemyError, OSError, sqlite3.Error, PostgresError, TimeoutError)
_CHUNK = 500  # hashes per IN list: far below every driver's parameter limit


@dataclass(frozen=True, slots=True)
class SessionRow:
    token_hash: str
    login: str
    role: str
    agent_id: str
    csrf: str
    created_at: datetime  # UTC
    last_seen: datetime  # UTC


class SessionTable:
    """Reads and writes of ``web_sessions``; ``budget`` bounds each call, in seconds."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], budget: float = 3.0) -> None:
        self.sessions = sessions
        self.budget = budget

    async def add(self, row: SessionRow, *, expired_before: datetime) -> None:
        """Store a new session, and sweep the rows idle since before ``expired_before``
        (done here: rows only grow at login, so the table stays bounded)."""
        async with self._session() as session, session.begin():
            await session.execute(delete(WebSession).where(WebSession.last_seen < expired_before))
            session.add(
                WebSession(
                    token_hash=row.token_hash,
                    login=row.login,
                    role=row.role,
                    agent_id=row.agent_id,
                    csrf=row.csrf,
                    created_at=row.created_at,
                    last_seen=row.last_seen,
                )
            )

    async def find(self, token_hashes: Collection[str]) -> dict[str, SessionRow]:
        """The stored sessions among ``token_hashes``, by hash (a missing one has ended)."""
        hashes = list(token_hashes)
        found: dict[str, SessionRow] = {}
        async with self._session() as session:
            for start in range(0, len(hashes), _CHUNK):
                chunk = hashes[start : start + _CHUNK]
                rows = await session.scalars(
                    select(WebSession).where(WebSession.token_hash.in_(chunk))
                )
                found.update((r.token_hash, _row(r)) for r in rows)
        return found

    async def touch(self, seen: Mapping[str, datetime]) -> None:
        """Record when each session was last used (hash -> time); an ended one is skipped."""
        if not seen:
            return
        table = cast(Table, WebSession.__table__)
        statement = (
            update(table)
            .where(table.c.token_hash == bindparam("hash"))
            .values(last_seen=bindparam("at"))
        )
        async with self._session() as session, session.begin():
            await session.execute(statement, [{"hash": h, "at": at} for h, at in seen.items()])

    async def remove(self, token_hash: str) -> None:
        async with self._session() as session, session.begin():
            await session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        try:
            async with asyncio.timeout(self.budget), self.sessions() as session:
                yield session
        except _FAILURES as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc


def _row(stored: WebSession) -> SessionRow:
    return SessionRow(
        stored.token_hash,
        stored.login,
        stored.role,
        stored.agent_id,
        stored.csrf,
        _utc(stored.created_at),
        _utc(stored.last_seen),
    )


def _utc(at: datetime) -> datetime:
    """SQLite keeps no zone: what it holds is UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
