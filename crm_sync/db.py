"""Database engines: a SQLite file by default (no set-up), PostgreSQL through DATABASE_URL.

SQLite runs in WAL mode with a busy timeout, so the pop's reads never wait on a writer and a
writer waits briefly instead of failing. URLs are plain SQLAlchemy ones; ``sqlite:///`` and
``postgresql://`` get their asyncio drivers (aiosqlite, asyncpg) added.

Engines hide bound parameters from their errors: a failed write's message is logged, and its
parameters are customers' names, phones and agents' notes, which have no place in a log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cti.settings import DEFAULT_URL


def async_url(url: str) -> URL:
    """The URL with its asyncio driver (``postgresql://`` → ``postgresql+asyncpg://``)."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def create_engine(url: str = DEFAULT_URL, **kwargs: Any) -> AsyncEngine:
    """An async engine; for a SQLite file its folder is created and WAL is switched on.
    Its errors never quote bound parameters (``hide_parameters``)."""
    parsed = async_url(url)
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(parsed, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
