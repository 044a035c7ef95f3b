"""``cti import --kind …`` for the CRM's orders, tickets and notes, versions in the customers
file, and ``cti merge`` end to end (SQLite and PostgreSQL below the CLI; the CLI on SQLite in
a subprocess)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.importer import KINDS, ImportFileError, import_csv
from crm_sync.models import Customer, Interaction, OutboxRow
from crm_sync.phones import PhoneNormalizer
from cti_app.cli import build_parser
from tests.support.commands import cti

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PHONES = PhoneNormalizer("CN")
HOSTILE = '<script>alert("x")</script> O\'Brien 张伟 😀'
QUOTED = HOSTILE.replace('"', '""')  # as a CSV cell in quotes
CUSTOMERS = (
    "external_id,kind,name,phones,balance,currency,updated_at\n"
    "P-1,person,张伟,13800138000,-12.50,CNY,2026-12-04T09:00:00Z\n"
    "P-2,person,Wei Zhang,13900000001,,,2026-12-04T09:00:00Z\n"
)
ORDERS = (
    "external_id,customer_external_id,occurred_at,title,status,amount,body\n"
    "17,P-1,2026-12-01T08:00:00+08:00,Order 17,processing,199.90,\n"
    f'18,P-1,2026-12-02T08:00:00+08:00,Order 18,shipped,5,"{QUOTED}"\n'
    "19,P-404,2026-12-02T08:00:00+08:00,Order 19,shipped,5,\n"  # line 4: unknown customer
    "20,P-1,2 Dec 2026,Order 20,shipped,5,\n"  # line 5: not ISO 8601
    "21,P-1,2026-12-02T08:00:00+08:00,Order 21,lost,5,\n"  # line 6: no such status
    "22,P-1,2026-12-02T08:00:00+08:00,Order 22,shipped,5 CNY,\n"  # line 7: not an amount
    "17,P-1,2026-12-01T08:00:00+08:00,Order 17 again,shipped,1,\n"  # line 8: repeated
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def run(engine: AsyncEngine, path: Path, kind: str = "customers", **options: Any) -> Any:
    return await import_csv(engine, path, phones=PHONES, now=NOW, kind=kind, **options)


async def count(engine: AsyncEngine, model: type[Any], *where: Any) -> int:
    async with AsyncSession(engine) as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def test_orders_import_by_their_id_and_report_bad_rows(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await run(engine, write(tmp_path / "c.csv", CUSTOMERS))
    report = await run(engine, write(tmp_path / "o.csv", ORDERS), "orders", batch_size=1)
    assert (report.rows, report.inserted, report.updated, report.unchanged) == (7, 2, 0, 0)
    assert [(r.line, r.reason.split(":")[0]) for r in report.rejected] == [
        (4, "customer_external_id"),
        (5, "occurred_at"),
        (6, "status"),
        (7, "amount"),
        (8, "external_id '17' already on line 2"),
    ]
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(select(Interaction).order_by(Interaction.id))).all()
        assert [(r.external_id, r.status, str(r.amount), r.body) for r in rows] == [
            ("crm:order:17", "processing", "199.90", None),
            ("crm:order:18", "shipped", "5.00", HOSTILE),
        ]
    again = await run(engine, tmp_path / "o.csv", "orders")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    header, first_order = ORDERS.splitlines()[:2]
    write(tmp_path / "o.csv", f"{header}\n{first_order.replace('processing', 'delivered')}\n")
    moved = await run(engine, tmp_path / "o.csv", "orders")
    assert (moved.updated, await count(engine, Interaction)) == (1, 2)
    assert await count(engine, OutboxRow) == 0


async def test_tickets_and_notes_have_their_own_columns(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await run(engine, write(tmp_path / "c.csv", CUSTOMERS))
    tickets = write(
        tmp_path / "t.csv",
        "external_id,customer_external_id,occurred_at,title,owner,due_at,status\n"
        "17,P-2,2026-12-01T08:00:00Z,Broken parcel,bob,2026-12-05T08:00:00Z,\n"
        "18,P-2,2026-12-01T08:00:00Z,Old issue,bob,,closed\n",
    )
    notes = write(
        tmp_path / "n.csv",
        "external_id,customer_external_id,occurred_at,title,body,owner\n"
        '17,P-2,2026-12-01T08:00:00Z,Visit,"Line 1\nLine 2",carol\n',
    )
    assert (await run(engine, tickets, "tickets")).inserted == 2
    assert (await run(engine, notes, "notes")).inserted == 1
    async with AsyncSession(engine) as session:
        found = await session.execute(
            select(Interaction.external_id, Interaction.kind, Interaction.status).order_by(
                Interaction.id
            )
        )
        assert found.all() == [
            ("crm:ticket:17", "ticket", "open"),
            ("crm:ticket:18", "ticket", "closed"),
            ("crm:note:17", "note", None),
        ]
    with pytest.raises(
        ImportFileError, match=r"wrong header for notes: unknown columns \['status'\]"
    ):
        await run(engine, write(tmp_path / "bad.csv", "external_id,status\n"), "notes")
    with pytest.raises(ImportFileError, match="missing columns"):
        await run(engine, write(tmp_path / "bad.csv", "external_id,title\n"), "orders")


async def test_a_customers_row_older_than_the_store_is_ignored(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    first = await run(engine, write(tmp_path / "c.csv", CUSTOMERS))
    assert (first.inserted, first.ignored) == (2, ())
    older = write(
        tmp_path / "old.csv",
        "external_id,kind,name,updated_at\n"
        "P-1,person,Old name,2026-12-03T09:00:00Z\n"
        "P-2,person,New name,2026-12-05T09:00:00Z\n"
        "P-3,person,No version,\n",
    )
    report = await run(engine, older)
    assert (report.inserted, report.updated, report.rejected) == (1, 1, ())
    assert [(r.line, r.external_id, r.reason) for r in report.ignored] == [
        (2, "P-1", "ignored: older than the stored version (updated_at)")
    ]
    async with AsyncSession(engine) as session:
        names = await session.execute(
            select(Customer.external_id, Customer.name).order_by(Customer.external_id)
        )
        assert names.all() == [("P-1", "张伟"), ("P-2", "New name"), ("P-3", "No version")]
    assert await count(engine, OutboxRow) == 0


def test_the_cli_offers_every_kind_of_the_importer() -> None:
    for kind in KINDS:
        assert build_parser().parse_args(["import", "--kind", kind, "f.csv"]).kind == kind


def test_cli_imports_orders_and_merges(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite3"
    url = f"sqlite:///{db}"
    customers = cti("import", str(write(tmp_path / "c.csv", CUSTOMERS)), "--url", url, cwd=tmp_path)
    assert customers.returncode == 0, customers.stderr
    orders = cti(
        "import",
        "--kind",
        "orders",
        str(write(tmp_path / "o.csv", ORDERS)),
        "--url",
        url,
        cwd=tmp_path,
    )
    assert orders.returncode == 1, orders.stderr
    assert "2 accepted (2 new, 0 updated, 0 unchanged), 5 rejected, of 7 rows" in orders.stdout
    assert "line 4: customer_external_id: unknown customer 'P-404'" in orders.stdout

    merged = cti("merge", "1", "2", "--by", "sue", "--url", url, cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert "customer 2 ('Wei Zhang', external id P-2) merged into 1: 1 phone(s)" in merged.stdout
    with sqlite3.connect(db) as connection:
        record = connection.execute(
            "SELECT survivor_id, merged_external_id, source, detail FROM customer_merges"
        ).fetchall()
        told = connection.execute("SELECT topic, customer_id, payload FROM outbox").fetchall()
    assert [(s, m, source, json.loads(d)["by"]) for s, m, source, d in record] == [
        (1, "P-2", "admin", "sue")
    ]
    assert [(t, c, json.loads(p)["merged"]["external_id"]) for t, c, p in told] == [
        ("customer.merged", 1, "P-2")
    ]
    again = cti("merge", "1", "2", "--url", url, cwd=tmp_path)
    assert again.returncode == 2 and "there is no customer 2" in again.stderr
    itself = cti("merge", "1", "1", "--url", url, cwd=tmp_path)
    assert itself.returncode == 2 and "cannot be merged into itself" in itself.stderr

    notes = write(
        tmp_path / "n.csv",
        "external_id,customer_external_id,occurred_at,title\nN-1,P-2,2026-12-04T10:00:00Z,Later\n",
    )
    later = cti("import", "--kind", "notes", str(notes), "--url", url, cwd=tmp_path)
    assert later.returncode == 0 and "1 accepted (1 new" in later.stdout
    stale = write(
        tmp_path / "s.csv", "external_id,kind,name,updated_at\nP-2,person,X,2026-12-05T00:00:00Z\n"
    )
    ignored = cti("import", str(stale), "--url", url, cwd=tmp_path)
    assert ignored.returncode == 0
    assert "0 accepted (0 new, 0 updated, 0 unchanged), 1 ignored, 0 rejected" in ignored.stdout
    assert "line 2: ignored: names a customer merged into customer 1" in ignored.stdout
    with sqlite3.connect(db) as connection:
        owners = connection.execute("SELECT DISTINCT customer_id FROM interactions").fetchall()
    assert owners == [(1,)]  # the orders of P-1 and the later note for P-2
