"""The hot read paths in plain SQL on the raw drivers: a card in three statements; the IVR's
figures in one.

Measured on the benchmark machine (100k customers): the SQL itself takes ~6 µs in SQLite, but
each statement through SQLAlchemy async + aiosqlite costs ~0.65 ms (pool checkout and a thread
hop per call), so a card took 4 to 9 ms. Here SQLite runs all three statements in one call with
the stdlib driver, and PostgreSQL runs them on an asyncpg pool with prepared statements. The
ORM keeps the schema and every write.

A SQLite read first runs on the event loop itself, under a budget of ``INLINE_BUDGET``
(checked by SQLite's progress handler) and without waiting on locks; only a read that runs
over, meets a lock or fails goes to the reader thread. The reads are 20 to 130 µs from the page
cache, and the hop cost more than that: with 500 IVR sessions, a thread hop per figure let the
reader and the loop take turns at the GIL (up to the 5 ms switch interval per turn), and step
p99 was 7 to 16 ms; on the loop, 3.7 to 8.4 ms (docs/benchmarks.md).

Datetimes: SQLite stores SQLAlchemy's aware datetimes as naive UTC text; they are read back as
UTC. Writers must store UTC (crm_sync writes ``datetime.now(UTC)``-based values).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy.engine import URL

Row = tuple[Any, ...]
T = TypeVar("T")

INLINE_BUDGET = 0.002  # seconds a SQLite read may hold the event loop before the thread takes it
_PROGRESS_STEPS = 1000  # SQLite VM instructions between two looks at the clock

_CUSTOMER_COLUMNS = """
    c.id, c.kind, c.name, co.name, c.tier, c.lifecycle, c.language, c.owner, c.email, c.tags,
    EXISTS (SELECT 1 FROM interactions i WHERE i.customer_id = c.id AND i.kind = 'call'
            AND i.occurred_at >= {since}),
    c.quadrant, c.segment_why
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
    """Reads with the stdlib driver: on the event loop when SQLite can answer at once, else
    on one dedicated thread (one hop per card, not three)."""

    def __init__(self, path: str, *, inline_budget: float = INLINE_BUDGET) -> None:
        self._path = path
        self._inline_budget = inline_budget
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # the reader thread's
        self._loop_db: sqlite3.Connection | None = None  # the event loop's
        self._deadline = 0.0
        self.handed_over = 0  # reads the loop gave to the thread (slow, locked or failed)

    def _open(self, busy_timeout_ms: int, *, any_thread: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, check_same_thread=not any_thread)
        db.execute("PRAGMA query_only=ON")
        db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        return db

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open(5000, any_thread=True)
        return self._db

    def _loop_connection(self) -> sqlite3.Connection:
        if self._loop_db is None:
            self._loop_db = self._open(0, any_thread=False)  # a lock is the thread's to wait on
            self._loop_db.set_progress_handler(self._overdue, _PROGRESS_STEPS)
        return self._loop_db

    def _overdue(self) -> bool:
        """SQLite's progress handler: true interrupts the statement."""
        return time.perf_counter() > self._deadline

    async def by_phone(self, e164: str, since: datetime, recent: int, limit: int) -> Rows:
        where = "c.id IN (SELECT customer_id FROM phones WHERE e164 = ?) ORDER BY c.id LIMIT ?"
        return await self._run(self._read, where, (e164, limit), since, recent)

    async def by_id(self, customer_id: int, since: datetime, recent: int) -> Rows:
        return await self._run(self._read, "c.id = ?", (customer_id,), since, recent)

    async def figures(self, customer_id: int) -> Row | None:
        return await self._run(self._figures, customer_id)

    def _figures(self, db: sqlite3.Connection, customer_id: int) -> Row | None:
        cursor = db.execute(_FIGURES_SQL.format(id="?"), (customer_id,))
        row: Row | None = cursor.fetchone()
        return row

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(connection, *args)`` on the loop if it is done within the budget and meets
        no lock; otherwise again, from the start, on the reader thread."""
        try:
            self._deadline = time.perf_counter() + self._inline_budget
            return work(self._loop_connection(), *args)
        except sqlite3.OperationalError:  # interrupted, locked, or a real fault the thread repeats
            self.handed_over += 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="cti-sqlite-reader")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, lambda: work(self._connection(), *args)
        )

    def _read(
        self, db: sqlite3.Connection, where: str, args: Row, since: datetime, recent: int
    ) -> Rows:
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
        """Close the connections and stop the thread (a later read opens them again)."""
        loop_db, self._loop_db = self._loop_db, None
        if loop_db is not None:
            loop_db.close()
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
                    # no floor: with one, asyncpg tries to restore it every second while
                    # the database is down, logging a traceback each time; connections
                    # used are kept warm anyway (idle up to 5 min)
                    min_size=0,
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
        SELECT customer_id, kind, occurred_at, title, status, agent, due_at, body, rank FROM (
            SELECT customer_id, kind, occurred_at, title, status, agent, due_at, body,
                   row_number() OVER (PARTITION BY customer_id ORDER BY occurred_at DESC) AS rank
            FROM interactions WHERE customer_id {ids}
        ) AS ranked WHERE rank <= {recent} OR status = 'open'
    """


def _utc_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_customer(row: Row) -> Row:
    tags, why = (json.loads(row[i]) if row[i] else None for i in (9, 12))
    return (*row[:9], tags or [], bool(row[10]), row[11], why)


def _sqlite_entry(row: Row) -> Row:
    customer, kind, at, title, status, agent, due, body, rank = row
    return (customer, kind, _utc_text(at), title, status, agent, _utc_text(due), body, rank)


def _pg_customer(row: Any) -> Row:
    tags, why = (json.loads(row[i]) if isinstance(row[i], str) else row[i] for i in (9, 12))
    return (*tuple(row)[:9], tags or [], row[10], row[11], why)
