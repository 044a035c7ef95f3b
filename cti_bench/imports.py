"""Bulk import (``cti bench --import-customers N``): the real ``cti import`` path,
crm_sync.importer.import_csv, on a generated CRM export of N customers into PostgreSQL.

The file is what a CRM export looks like: one company in twenty, with contact persons (a
few of them listed before their company, which the importer retries after the last row;
many give their company's switchboard as a second number); Chinese, Western and accented
names, quotes and commas in them, an address with a line break now and then; one or two
phones per customer in the spellings people type (national, ``+86 …``, ``0086…``, dashes,
brackets, landlines, numbers abroad); e-mails, owners, languages, tags, balances, and the
CRM's version (``updated_at``, in three zones) on nine rows in ten. One row in a thousand is
bad (an e-mail without ``@``, an internal extension as a phone) and must be reported, not
imported.

Two figures in one scratch database, dropped after: the first import into an empty store,
and the same file again, where every row is ``unchanged``. Each is checked against what the
file holds (customers and numbers stored, rows refused), so a fast wrong import fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from crm_sync.db import create_engine
from crm_sync.import_rows import PARALLEL_FROM
from crm_sync.importer import COLUMNS, ImportReport, import_csv
from crm_sync.migrate import upgrade
from crm_sync.models import Customer, Phone
from crm_sync.phones import PhoneNormalizer
from cti_bench.run import _admin

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
COMPANY_EVERY = 20  # one row in twenty is a company account
BAD_EVERY = 1000  # one row in a thousand is refused

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉"
_FIRST: tuple[str, ...] = (
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
)
_FIRST += ("David", "Sophie", "Lukas", "Émilie", "José", "Zoë", "Søren", "Małgorzata", "Ömer")
_LAST: tuple[str, ...] = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Müller",
    "García",
    "O'Brien",
)
_LAST += ("Dubois", "Rossi", "Novák", "Nguyen")
_FIRMS = ("{} 有限公司", "{} GmbH", "{}, Jones & Co", '"{}" Trading Ltd', "{} 科技股份有限公司")
_CITIES = ("北京市朝阳区建国路 {} 号", "上海市浦东新区世纪大道 {} 号", "{} Baker Street\nLondon")
_TAGS = ("vip-event", "wechat", "b2b", "newsletter", "late-payer", "reseller")
_OWNERS = ("alice", "bob", "carol", "dave", "eve")
_ZONES = (UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=1)))
_MOBILE = ("138", "139", "150", "186", "188", "135", "177")


@dataclass(frozen=True)
class ExportFacts:
    """What the generated file holds, for checking what an import made of it."""

    rows: int
    companies: int
    contacts: int
    bad: int  # rows the importer must refuse
    early_contacts: int  # contacts listed before their company
    phones: int  # numbers of the good rows (distinct within each customer)
    size: int  # bytes


@dataclass(frozen=True)
class ImportFigure:
    name: str
    report: ImportReport

    @property
    def rate(self) -> float:
        return self.report.rows / self.report.seconds if self.report.seconds else 0.0

    def line(self) -> str:
        r = self.report
        return (
            f"{self.name:<26} {self.rate:>11,.0f} rows/s  ({r.rows:,} in {r.seconds:.1f}s: "
            f"{r.inserted:,} new, {r.updated:,} updated, {r.unchanged:,} unchanged, "
            f"{len(r.rejected):,} rejected)"
        )


def _phone(rng: random.Random, i: int, second: bool) -> str:
    """A number of row ``i`` (its second one: another), in one of the usual spellings."""
    n = i * 2 + second
    style = rng.randrange(10)
    if style < 6:  # a mobile
        digits = f"{rng.choice(_MOBILE)}{n:08d}"
        spellings = (
            digits,
            f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}",
            f"0086{digits}",
            f"{digits[:3]}-{digits[3:7]}-{digits[7:]}",
            f"+86{digits}",
            f"(+86) {digits[:3]} {digits[3:7]} {digits[7:]}",
        )
        return spellings[style]
    if style < 8:  # a landline in Beijing or Shanghai
        area = rng.choice(("10", "21"))
        return rng.choice((f"0{area} {n:08d}", f"+86 {area} {n:08d}", f"(0{area}) {n:08d}"))
    if style == 8:  # London
        return f"+44 20 7{n // 10_000:03d} {n % 10_000:04d}"
    return f"+1 ({212 + n % 700}) {n // 10_000:03d}-{n % 10_000:04d}"


def _name(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.randint(1, 2)))
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def write_customers_csv(path: Path, count: int, seed: int = 11) -> ExportFacts:
    """Write a CRM export of ``count`` customers to ``path``; what it holds."""
    rng = random.Random(seed)
    companies = contacts = bad = early = numbers = 0
    company: tuple[str, str] | None = None  # the account whose contacts follow, its number
    later: dict[int, str] = {}  # row → a company to list there, named by an earlier contact
    with path.open("w", encoding="utf-8", newline="") as file:
        out = csv.writer(file)
        out.writerow(COLUMNS)
        for i in range(1, count + 1):
            key, kind, name, parent = f"CRM-{i:07d}", "person", _name(rng), ""
            phones = [_phone(rng, i, False)]
            due = min(count, i + rng.randint(600, 3000))
            if i in later:
                key, kind, name = later.pop(i), "company", _company(rng)
                companies += 1
            elif i % COMPANY_EVERY == 0 and rng.random() < 0.05 and due > i and due not in later:
                parent = later[due] = f"ACC-{i:07d}"
                contacts += 1
                early += 1
            elif i % COMPANY_EVERY == 0:
                kind, name, company = "company", _company(rng), (key, phones[0])
                companies += 1
            elif company is not None and rng.random() < 0.3:
                parent = company[0]
                contacts += 1
            if parent and company is not None and parent == company[0] and rng.random() < 0.5:
                phones.append(company[1])  # the switchboard, spelt as on the company
            elif rng.random() < 0.35:
                phones.append(_phone(rng, i, True))
            email = (
                f"user{i}@example.{rng.choice(('com', 'cn', 'de'))}" if rng.random() < 0.6 else ""
            )
            if i % BAD_EVERY == 507 and kind == "person":  # a company's contacts need it
                bad += 1
                if rng.random() < 0.5:
                    email = f"user{i}(at)example.com"
                else:
                    phones.append(str(8000 + i % 1000))  # an extension, not a customer's
            else:
                numbers += len(phones)
            stamp = NOW - timedelta(days=rng.randint(0, 900), seconds=rng.randint(0, 86_399))
            balance = f"{rng.randint(-50_000, 500_000) / 100:.2f}" if rng.random() < 0.2 else ""
            out.writerow(
                (
                    key,
                    kind,
                    name,
                    parent,
                    email,
                    "; ".join(phones),
                    rng.choice(_CITIES).format(rng.randint(1, 999)) if rng.random() < 0.3 else "",
                    rng.choice(_OWNERS) if rng.random() < 0.5 else "",
                    rng.choice(("zh", "zh", "en", "en-GB", "de")),
                    "vip" if rng.random() < 0.05 else "",
                    rng.choice(("", "", "new", "active", "lapsed")),
                    ";".join(rng.sample(_TAGS, rng.randint(0, 2))),
                    balance,
                    "CNY" if balance else "",
                    stamp.astimezone(_ZONES[i % 3]).isoformat() if rng.random() < 0.9 else "",
                )
            )
    return ExportFacts(
        rows=count,
        companies=companies,
        contacts=contacts,
        bad=bad,
        early_contacts=early,
        phones=numbers,
        size=path.stat().st_size,
    )


def _company(rng: random.Random) -> str:
    root = rng.choice(_SURNAMES) + rng.choice(_GIVEN) if rng.random() < 0.6 else rng.choice(_LAST)
    return rng.choice(_FIRMS).format(root)


class ProgressLine:
    """``import (empty store): 412,500/1,000,000 (41%) 8,211 rows/s`` on one line of
    ``stream``, redrawn at each whole percent."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self.started = time.perf_counter()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent == self.shown:
            return
        self.shown = percent
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.stream.write(f"\r{self.label}: {done:,}/{total:,} ({percent}%) {rate:,.0f} rows/s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


async def measure_import(
    url: str,
    path: Path,
    facts: ExportFacts,
    *,
    progress: bool = True,
    parallel_from: int = PARALLEL_FROM,
) -> list[ImportFigure]:
    """Import ``path`` (written with ``facts``) into the migrated, empty store at ``url``,
    then again; both figures. Raises RuntimeError if an import did not do what the file
    asks: every good row stored once with its numbers, every bad one refused, and nothing
    changed the second time."""
    engine = create_engine(url)
    phones = PhoneNormalizer("CN")
    figures = []
    try:
        for name in ("import (empty store)", "re-import (unchanged)"):
            report = await import_csv(
                engine,
                path,
                phones=phones,
                now=NOW,
                progress=ProgressLine(name) if progress else None,
                parallel_from=parallel_from,
            )
            figures.append(ImportFigure(name, report))
        async with AsyncSession(engine) as session:
            customers = await session.scalar(select(func.count()).select_from(Customer))
            numbers = await session.scalar(select(func.count()).select_from(Phone))
    finally:
        await engine.dispose()
    good = facts.rows - facts.bad
    first, again = (figure.report for figure in figures)
    seen = (first.inserted, len(first.rejected), again.unchanged, len(again.rejected))
    if seen != (good, facts.bad, good, facts.bad) or (customers, numbers) != (good, facts.phones):
        raise RuntimeError(
            f"the import did not do what the file asks: {seen} (inserted, rejected, "
            f"unchanged, rejected again), {customers} customers and {numbers} numbers stored; "
            f"expected {good} good rows, {facts.bad} bad, {facts.phones} numbers"
        )
    return figures


@contextlib.contextmanager
def scratch_database(pg_url: str) -> Iterator[str]:
    """A new, migrated database on the server of ``pg_url``, dropped after."""
    base = make_url(pg_url)
    name = f"cti_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run_import(count: int, pg_url: str) -> list[ImportFigure]:
    """Generate an export of ``count`` customers, import it twice into a scratch PostgreSQL
    database; print and return the figures."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "customers.csv"
        started = time.perf_counter()
        facts = write_customers_csv(path, count)
        print(
            f"export: {facts.rows:,} customers ({facts.companies:,} companies, "
            f"{facts.contacts:,} contacts, {facts.early_contacts:,} of them before their "
            f"company, {facts.bad:,} bad rows), {facts.phones:,} numbers, "
            f"{facts.size / 1e6:.0f} MB, written in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        with scratch_database(pg_url) as url:
            figures = asyncio.run(measure_import(url, path, facts))
    for figure in figures:
        print(figure.line())
    return figures
