"""A million customers, fast, for the lookup benchmark (``cti bench --lookup``).

Bulk loading goes through the raw drivers (sqlite3 ``executemany``, asyncpg ``COPY``): the
ORM would take minutes for a million rows, and only the read path is being measured.
Numbers are ``+86 139 xxxx xxxx`` mobiles, one or two per customer, with a few interactions
on every hundredth customer so that cards are not all empty. Names are drawn from a few
hundred given and family names, Latin and Chinese, so that the search figures meet common
words (tens of thousands of "Smith") and rare ones as agents do; their search terms
(crm_sync.search) are loaded with them.
"""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from crm_sync.search import terms

BASE = 13_900_000_000
GIVEN = (
    "Anna", "Ben", "Chloé", "David", "Emma", "François", "Grace", "Hugo", "Isabel", "Jürgen",
    "Karen", "Liam", "Maria", "Noah", "Olivia", "Paul", "Quentin", "Rosa", "Sofia", "Tom",
    "Ursula", "Victor", "Wendy", "Xavier", "Yasmin", "Zoë", "Ahmed", "Björn", "Carmen", "Dmitri",
)  # fmt: skip
FAMILY = (
    "Smith", "Müller", "García", "Martin", "Rossi", "Jones", "Dubois", "Novak", "Kowalski",
    "Nielsen", "O'Brien", "McAllister", "Schmidt", "López", "Bianchi", "Jansen", "Silva",
    "Andersson", "Horvath", "Papadopoulos", "Taylor", "Fischer", "Moreau", "Costa", "Wagner",
    "Ivanova", "Yilmaz", "Tanaka", "Kim", "Nguyen",
)  # fmt: skip
SURNAMES_ZH = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗"
GIVEN_ZH = (
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "丽",
    "强",
    "磊",
    "军",
    "洋",
    "勇",
    "艳",
    "杰",
    "涛",
    "明",
)


def name(rng: random.Random, i: int) -> str:
    """One customer in three is Chinese; the others have a given and a family name, and one
    in ten a middle one."""
    if i % 3 == 0:
        return (
            rng.choice(SURNAMES_ZH) + rng.choice(GIVEN_ZH) + (rng.choice(GIVEN_ZH) if i % 2 else "")
        )
    middle = f" {rng.choice(GIVEN)}" if i % 10 == 1 else ""
    return f"{rng.choice(GIVEN)}{middle} {rng.choice(FAMILY)}"


def number(i: int) -> str:
    return f"+86{BASE + i}"


Rows = list[tuple[Any, ...]]


def _rows(count: int, now: datetime) -> tuple[Rows, Rows, Rows, Rows]:
    customers: Rows = []
    phones: Rows = []
    interactions: Rows = []
    words: Rows = []
    rng = random.Random(7)
    for i in range(1, count + 1):
        tier = "vip" if i % 20 == 0 else "regular"
        called = name(rng, i)
        customers.append((i, "person", called, tier, "active", "[]", now, now))
        words.extend((term, i) for term in terms(called))
        phones.append((i, i, number(i)))
        if i % 100 == 0:
            for k in range(3):
                interactions.append(
                    (i * 10 + k, i, rng.choice(("order", "email", "call")), now, f"item {k}")
                )
    return customers, phones, interactions, words


def load_sqlite(path: str, count: int) -> float:
    """Fill a migrated SQLite file; returns seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    customers, phones, interactions, words = _rows(count, now)
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
        db.executemany("INSERT INTO customer_terms (term, customer_id) VALUES (?, ?)", words)
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - started


async def load_postgres(url: str, count: int) -> float:
    """Fill a migrated PostgreSQL database with COPY; returns seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    customers, phones, interactions, words = _rows(count, now)
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
        await conn.copy_records_to_table(
            "customer_terms", records=words, columns=["term", "customer_id"]
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
