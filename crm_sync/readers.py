"""The hot read paths in plain SQL on the raw drivers: a card in three statements and one
hop; the IVR's figures in one.

Measured on the benchmark machine (100k customers): the SQL itself takes ~6 µs in SQLite, but
each statement through SQLAlchemy async + aiosqlite costs ~0.65 ms (pool checkout and a thread
hop per call), so a card took 4 to 9 ms. Here SQLite runs all three statements in one call on a
dedicated reader thread with the stdlib driver, and PostgreSQL runs them on an asyncpg pool
with prepared statements. The ORM keeps the schema and every write.

Datetimes: SQLite stores SQLAlchemy's aware datetimes as naive UTC text; they are read back as
UTC. Writers must store UTC (crm_sync writes ``datetime.now(UTC)``-based values).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy.engine import URL

Row = tuple[Any, ...]
T = TypeVar("T")

_CUSTOMER_COLUMNS = """
    c.id, c.kind, c.name, co.name, c.tier, c.lifecycle, c.language, c.owner, c.email, c.tags,
    EXISTS (SELECT 1 FROM interactions i WHERE i.customer_id = c.id AND i.kind = 'call'
            AND i.occurred_at >= {since})
    FROM customers c LEFT JOIN customers co ON c.company_id = co.id
"""


# what the IVR says: the balance, the last order's status, the open tickets (one statement)
_FIGURES_SQL = """
    SELECT c.balance, c.currency,
        (SELECT i.status FROM interactions i WHERE i.customer_id = c.id AND i.kind = 'order'
         ORDER BY i.occurred_at DESC, i.id DESC LIMIT 1),
        (SELECT count(*) FROM interactions i WHERE i.customer_id = c.id AND i.kind = 'ticket'
         AND i.status = 'open')
    FROM customers c WHERE c.id = {id}
"""


class CardRows(Protocol):
    """Raw rows for cards: customers, their phones, their timeline (recent and open)."""

    async def by_phone(self, e164: str, since: datetime, recent: int, limit: int) -> Rows: ...

    async def by_id(self, customer_id: int, since: datetime, recent: int) -> Rows: ...

    async def figures(self, customer_id: int) -> Row | None: ...

    async def close(self) -> None: ...


Rows = tuple[list[Row], list[Row], list[Row]]


class SqliteRows:
    """Reads with the stdlib driver on one dedicated thread (one hop per card, not three)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self._path, check_same_thread=False)
            self._db.execute("PRAGMA query_only=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
        return self._db

    async def by_phone(self, e164: str, since: datetime, recent: int, limit: int) -> Rows:
        where = "c.id IN (SELECT customer_id FROM phones WHERE e164 = ?) ORDER BY c.id LIMIT ?"
        return await self._run(where, (e164, limit), since, recent)

    async def by_id(self, customer_id: int, since: datetime, recent: int) -> Rows:
        return await self._run("c.id = ?", (customer_id,), since, recent)

    async def figures(self, customer_id: int) -> Row | None:
        return await self._in_thread(self._figures, customer_id)

    def _figures(self, customer_id: int) -> Row | None:
        cursor = self._connection().execute(_FIGURES_SQL.format(id="?"), (customer_id,))
        row: Row | None = cursor.fetchone()
        return row

    async def _run(self, where: str, args: Row, since: datetime, recent: int) -> Rows:
        return await self._in_thread(self._read, where, args, since, recent)

    async def _in_thread(self, work: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="cti-sqlite-reader")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def _read(self, where: str, args: Row, since: datetime, recent: int) -> Rows:
        db = self._connection()
        stamp = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        sql = "SELECT" + _CUSTOMER_COLUMNS.format(since="?") + " WHERE " + where
        customers = [_sqlite_customer(r) for r in db.execute(sql, (stamp, *args))]
        if not customers:
            return [], [], []
        ids = [r[0] for r in customers]
        marks = ",".join("?" * len(ids))
        phones = db.execute(
            f"SELECT customer_id, e164 FROM phones WHERE customer_id IN ({marks}) ORDER BY id", ids
        ).fetchall()
        timeline = [
            _sqlite_entry(r)
            for r in db.execute(_timeline_sql(f"IN ({marks})", "?"), (*ids, recent))
        ]
        return customers, phones, timeline

    async def close(self) -> None:
        """Close the connection and stop the thread (a later read opens them again)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        executor.shutdown(wait=True)


class PostgresRows:
    """Reads on an asyncpg pool; statements are prepared once per connection by asyncpg."""

    def __init__(self, url: URL) -> None:
        self._url = url
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _acquire_pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                u = self._url
                self._pool = await asyncpg.create_pool(
                    host=u.host,
                    port=u.port,
                    user=u.username,
                    password=u.password,
                    database=u.database,
                    min_size=1,
                    max_size=4,
                    timeout=5,
                )
            return self._pool

    async def by_phone(self, e164: str, since: datetime, recent: int, limit: int) -> Rows:
        where = "c.id IN (SELECT customer_id FROM phones WHERE e164 = $2) ORDER BY c.id LIMIT $3"
        return await self._run(where, (e164, limit), since, recent)

    async def by_id(self, customer_id: int, since: datetime, recent: int) -> Rows:
        return await self._run("c.id = $2", (customer_id,), since, recent)

    async def figures(self, customer_id: int) -> Row | None:
        pool = await self._acquire_pool()
        async with pool.acquire() as conn:
            row = await conn.fetchrow(_FIGURES_SQL.format(id="$1"), customer_id)
        return None if row is None else tuple(row)

    async def _run(self, where: str, args: Row, since: datetime, recent: int) -> Rows:
        pool = await self._acquire_pool()
        async with pool.acquire() as conn:
            sql = "SELECT" + _CUSTOMER_COLUMNS.format(since="$1") + " WHERE " + where
            customers = [_pg_customer(r) for r in await conn.fetch(sql, since, *args)]
            if not customers:
                return [], [], []
            ids = [r[0] for r in customers]
            phones = [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT customer_id, e164 FROM phones WHERE customer_id = ANY($1::int[])"
                    " ORDER BY id",
                    ids,
                )
            ]
            timeline = [
                tuple(r)
                for r in await conn.fetch(_timeline_sql("= ANY($1::int[])", "$2"), ids, recent)
            ]
        return customers, phones, timeline

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def card_rows(url: URL) -> CardRows:
    """The reader for this database URL."""
    if url.get_backend_name() == "sqlite":
        return SqliteRows(url.database or ":memory:")
    return PostgresRows(url)


def _timeline_sql(ids: str, recent: str) -> str:
    return f"""
        SELECT customer_id, kind, occurred_at, title, status, agent, due_at, rank FROM (
            SELECT customer_id, kind, occurred_at, title, status, agent, due_at,
                   row_number() OVER (PARTITION BY customer_id ORDER BY occurred_at DESC) AS rank
            FROM interactions WHERE customer_id {ids}
        ) AS ranked WHERE rank <= {recent} OR status = 'open'
    """


def _utc_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_customer(row: Row) -> Row:
    return (*row[:9], json.loads(row[9]) if row[9] else [], bool(row[10]))


def _sqlite_entry(row: Row) -> Row:
    customer, kind, at, title, status, agent, due, rank = row
    return (customer, kind, _utc_text(at), title, status, agent, _utc_text(due), rank)


def _pg_customer(row: Any) -> Row:
    tags = row[9]
    return (*tuple(row)[:9], json.loads(tags) if isinstance(tags, str) else (tags or []), row[10])
