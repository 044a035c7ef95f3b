"""A million customers, fast, for the lookup benchmark (``cti bench --lookup``).

Bulk loading goes through the raw drivers (sqlite3 ``executemany``, asyncpg ``COPY``): the
ORM would take minutes for a million rows, and only the read path is being measured.
Numbers are ``+86 139 xxxx xxxx`` mobiles, one or two per customer, with a few interactions
on every hundredth customer so that cards are not all empty.
"""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

BASE = 13_900_000_000


def number(i: int) -> str:
    return f"+86{BASE + i}"


Rows = list[tuple[Any, ...]]


def _rows(count: int, now: datetime) -> tuple[Rows, Rows, Rows]:
    customers: Rows = []
    phones: Rows = []
    interactions: Rows = []
    rng = random.Random(7)
    for i in range(1, count + 1):
        tier = "vip" if i % 20 == 0 else "regular"
        customers.append((i, "person", f"Customer {i}", tier, "active", "[]", now, now))
        phones.append((i, i, number(i)))
        if i % 100 == 0:
            for k in range(3):
                interactions.append(
                    (i * 10 + k, i, rng.choice(("order", "email", "call")), now, f"item {k}")
                )
    return customers, phones, interactions


def load_sqlite(path: str, count: int) -> float:
    """Fill a migrated SQLite file; returns seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    customers, phones, interactions = _rows(count, now)
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO customers (id, kind, name, tier, lifecycle, tags, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            customers,
        )
        db.executemany("INSERT INTO phones (id, customer_id, e164) VALUES (?, ?, ?)", phones)
        db.executemany(
            "INSERT INTO interactions (id, customer_id, kind, occurred_at, title)"
            " VALUES (?, ?, ?, ?, ?)",
            interactions,
        )
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - started


async def load_postgres(url: str, count: int) -> float:
    """Fill a migrated PostgreSQL database with COPY; returns seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    customers, phones, interactions = _rows(count, now)
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )
    try:
        await conn.copy_records_to_table(
            "customers",
            records=customers,
            columns=["id", "kind", "name", "tier", "lifecycle", "tags", "created_at", "updated_at"],
        )
        await conn.copy_records_to_table(
            "phones", records=phones, columns=["id", "customer_id", "e164"]
        )
        await conn.copy_records_to_table(
            "interactions",
            records=interactions,
            columns=["id", "customer_id", "kind", "occurred_at", "title"],
        )
        for table in ("customers", "phones", "interactions"):  # COPY gave the ids: move the
            await conn.execute(  # sequences past them, or the next insert collides
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started
