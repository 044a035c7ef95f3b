"""What makes a bulk import fast, and must not change what it does: the bulk statements of
crm_sync.bulk (on SQLite and PostgreSQL), the worker process that checks a big file's rows
(the same rows, in the same order, as this process checks them), the transaction settings
of inbound writes on PostgreSQL (the text rule itself: test_text_rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.bulk import insert_rows, one_of
from crm_sync.import_rows import Checked, checked_rows
from crm_sync.importer import import_csv
from crm_sync.inbound import begin_write
from crm_sync.models import Base
from crm_sync.phones import PhoneNormalizer

PHONES = PhoneNormalizer("CN")
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
CUSTOMERS = Base.metadata.tables["customers"]
NEW = ("external_id", "kind", "name", "tags", "balance", "tier", "lifecycle", "created_at")
NEW += ("updated_at", "segment_stale")
HOSTILE = 'O\'Brien "the boss", 张伟 \\ 😀 <b>'


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def test_insert_rows_keeps_every_kind_of_value(engine: AsyncEngine) -> None:
    later = datetime(2026, 12, 4, 17, 30, tzinfo=timezone(timedelta(hours=8)))
    if engine.dialect.name == "sqlite":  # it keeps no zone: the store gives it UTC times
        later = later.astimezone(UTC)
    rows = [
        (
            "B-1",
            "person",
            HOSTILE,
            ["b2b", "微信"],
            Decimal("-12.50"),
            "vip",
            "new",
            NOW,
            later,
            True,
        ),
        ("B-2", "company", "ACME", [], None, "regular", "active", NOW, NOW, False),
    ]
    async with AsyncSession(engine) as session:
        added = await insert_rows(session, CUSTOMERS, NEW, rows, returning=("external_id", "id"))
        await session.commit()
        found = await session.execute(
            select(*(CUSTOMERS.c[name] for name in NEW), CUSTOMERS.c.id)
            .where(one_of(session, CUSTOMERS.c.external_id, ["B-1", "B-2", "B-3"]))
            .order_by(CUSTOMERS.c.external_id)
        )
        stored = [tuple(row) for row in found]
    assert sorted(added) == sorted((row[0], row[-1]) for row in stored)
    assert [row[:7] for row in stored] == [row[:7] for row in rows]
    assert [(utc(row[7]), utc(row[8]), row[9]) for row in stored] == [
        (NOW, later, True),
        (NOW, NOW, False),
    ]


async def test_insert_rows_wants_the_columns_with_python_defaults(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        with pytest.raises(ValueError, match=r"defaulted columns \['segment_stale'\]"):
            await insert_rows(session, CUSTOMERS, NEW[:-1], [("B-9", "person", "x")])
        assert await insert_rows(session, CUSTOMERS, NEW, []) == []


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # its planner's settings
async def test_inbound_writes_find_rows_by_index_whatever_the_statistics(
    engine: AsyncEngine,
) -> None:
    lookup = text("EXPLAIN SELECT id FROM phones WHERE customer_id = ANY(:ids)")
    ids = {"ids": list(range(1, 2001))}
    async with AsyncSession(engine) as session:
        await session.execute(  # rows a bulk load leaves before autovacuum analyzed them
            text(
                "INSERT INTO customers (kind, name, tags, tier, lifecycle, created_at, "
                "updated_at) SELECT 'person', 'P ' || n, '[]', 'regular', 'active', now(), "
                "now() FROM generate_series(1, 20000) AS n"
            )
        )
        await session.execute(
            text("INSERT INTO phones (customer_id, e164) SELECT id, '+86' || id FROM customers")
        )
        await session.commit()
        plain = "\n".join(await session.scalars(lookup, ids))
        await session.rollback()
        await begin_write(session)
        plan = "\n".join(await session.scalars(lookup, ids))
        settings = await session.execute(
            text("SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode')")
        )
        assert tuple(settings.one()) == ("off", "force_custom_plan")
        await session.commit()
        after = await session.scalar(text("SELECT current_setting('enable_seqscan')"))
    assert "Seq Scan on phones" in plain  # no statistics: the planner would scan it whole
    assert "Seq Scan" not in plan and "phones_customer_id_e164_key" in plan
    assert after == "on"  # for that transaction only


ROWS = (
    "external_id,kind,name,company_external_id,email,phones,address,tags\n"
    "P-1,person,张伟,C-1,,13800138000; 010 6552 9988,,b2b;wechat\n"  # company comes later
    "P-2,person,Bad Mail,,nope@,,,\n"
    "P-3,person,Short\n"
    ",person,No Id,,,,,\n"
    "P-1,person,Again,,,,,\n"
    "P-4,person,Ext,,,1001,,\n"
    'C-1,company,"ACME, 有限公司",,,+86 20 7946 0958,"Line 1\nLine 2",\n'
)


def many_rows(count: int) -> str:
    lines = [ROWS]
    for n in range(count):
        phones = f"+86 139 {n:04d} {n % 7:04d}" if n % 5 else "8000"  # every fifth refused
        lines.append(f'X-{n},person,"{HOSTILE.replace(chr(34), chr(34) * 2)} {n}",,,{phones},,\n')
    return "".join(lines)


@pytest.mark.parametrize("count", [0, 3500], ids=["one chunk", "several chunks"])
async def test_the_worker_checks_rows_as_this_process_does(tmp_path: Path, count: int) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(many_rows(count), encoding="utf-8")
    here = [row async for row in checked_rows(path, "customers", PHONES, in_worker=False)]
    there = [row async for row in checked_rows(path, "customers", PHONES, in_worker=True)]
    assert there == here and len(here) == 7 + count
    assert [row.line for row in here[:7]] == [2, 3, 4, 5, 6, 7, 8]
    first, repeat = here[0].record, here[4].record
    assert first is not None and first.phones == ("+8613800138000", "+861065529988")
    assert repeat is not None and repeat.name == "Again"
    assert here[1:6] == [
        Checked(3, "P-2", None, "email: 'nope@' is not an e-mail address"),
        Checked(4, "P-3", None, "3 fields where the header has 8", unkeyed=True),
        Checked(5, None, None, "external_id: must not be empty (re-imports match on it)", True),
        Checked(6, "P-1", here[4].record),  # a repeat: for the importer to refuse
        Checked(7, "P-4", None, "phones: '1001' is an internal extension, not a customer's"),
    ]


async def test_a_file_checked_by_the_worker_imports_as_one_checked_here(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(many_rows(50), encoding="utf-8")
    report = await import_csv(engine, path, phones=PHONES, now=NOW, parallel_from=1)
    again = await import_csv(engine, path, phones=PHONES, now=NOW, parallel_from=10**9)
    assert (report.inserted, report.unchanged, again.unchanged, again.inserted) == (42, 0, 42, 0)
    assert [(r.line, r.reason) for r in report.rejected[:5]] == [
        (3, "email: 'nope@' is not an e-mail address"),
        (4, "3 fields where the header has 8"),
        (5, "external_id: must not be empty (re-imports match on it)"),
        (6, "external_id 'P-1' already on line 2"),
        (7, "phones: '1001' is an internal extension, not a customer's"),
    ]
    assert again.rejected == report.rejected and len(report.rejected) == 5 + 10
