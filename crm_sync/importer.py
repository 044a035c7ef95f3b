"""Import customers, orders, tickets or notes from a CSV file: validated per row, idempotent,
in committed batches.

The file is UTF-8 (a byte-order mark, as spreadsheet programs write, is fine), comma
separated, with a header row naming the columns of its kind in any order (names are
case-insensitive; an unknown column is an error). A row is the whole record: an empty or
absent cell is an empty field. What the CRM owns and what this service owns is in
crm_sync.conflicts (docs/crm-inbound.md): an import writes only the former, the same way as
the CRM's REST API.

Customers (``--kind customers``, the default; ``external_id``, ``kind`` and ``name`` are
required):

=====================  ==================================================================
external_id            the source's id (≤ 64 characters, required); importing it again
                       updates the same customer
kind                   ``person`` or ``company``
name                   ≤ 200 characters, not empty
company_external_id    for a contact person: their company's external_id (in the file,
                       before or after, or already in the store)
email                  one address
phones                 numbers in any spelling, separated by ``;`` (national numbers are
                       read in the configured default region)
address                free text, line breaks allowed
owner                  the account manager's agent id
language               a language code: ``zh``, ``en``, ``en-GB``
tier                   ``vip``, ``regular`` (default) or ``low``: for a new customer only,
                       until the segments are computed here
lifecycle              ``prospect``, ``new``, ``active`` (default), ``lapsed``, ``lost`` or
                       ``won_back``: for a new customer only, as ``tier``
tags                   separated by ``;``
balance, currency      the account balance the IVR tells (``-12.50``) and its ISO 4217
                       code (``CNY``), both or neither
updated_at             the record's version in the CRM (ISO 8601 with zone); a row older
                       than the stored version is ignored. Without it the row counts as
                       current at the time of the import.
=====================  ==================================================================

Orders, tickets and notes (``--kind orders|tickets|notes``): ``external_id`` (the CRM's id
of the entry, ≤ 53 characters), ``customer_external_id``, ``occurred_at`` (ISO 8601 with
zone) and ``title`` are required, ``body`` is optional; orders add ``status`` (processing,
shipped, delivered, cancelled, returned) and ``amount``; tickets ``status`` (open, the
default, or closed), ``owner`` and ``due_at``; notes ``owner`` (who wrote it).

Example::

    external_id,kind,name,company_external_id,phones,tier
    C-1,company,ACME 有限公司,,+86 20 7946 0958,vip
    P-1,person,张伟,C-1,13800138000; +1 555 0100 001,

How it runs: a first pass reads the whole file (header, encoding, row count) so that a bad
file is refused before anything is written; then rows are validated and upserted, and
committed every ``batch_size`` accepted rows. A bad row is reported (line, reason) and
skipped, never fatal; a row that repeats an external id of the same file is refused. A
contact whose company comes later in the file is retried after the last row. Re-importing a
file changes nothing (the report counts those rows as unchanged). A row older than the
stored version, or naming a customer merged into another, is ignored and reported as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.customers import (
    Change,
    CustomerError,
    CustomerIn,
    InteractionIn,
    Saved,
    save_customers,
    validate,
)
from crm_sync.inbound import ENTRY_FIELDS, begin_write, save_entries, validate_entry
from crm_sync.phones import PhoneNormalizer

COLUMNS = (
    "external_id",
    "kind",
    "name",
    "company_external_id",
    "email",
    "phones",
    "address",
    "owner",
    "language",
    "tier",
    "lifecycle",
    "tags",
    "balance",
    "currency",
    "updated_at",
)
REQUIRED = ("external_id", "kind", "name")
ENTRY_REQUIRED = ("external_id", "customer_external_id", "occurred_at", "title")
# what ``--kind`` names: the columns of the file and those it must have
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "customers": (COLUMNS, REQUIRED),
    "orders": (ENTRY_FIELDS["order"], ENTRY_REQUIRED),
    "tickets": (ENTRY_FIELDS["ticket"], ENTRY_REQUIRED),
    "notes": (ENTRY_FIELDS["note"], ENTRY_REQUIRED),
}
_ENTRY_KIND = {"orders": "order", "tickets": "ticket", "notes": "note"}
_IGNORED: dict[Change, str] = {
    "stale": "ignored: older than the stored version (updated_at)",
    "merged": "ignored: names a customer merged into customer {id}",
}

_BLOCK = 1 << 20  # bytes of whole lines checked as UTF-8 at once
_YIELD_EVERY = 16  # rows validated between two turns of the batch being written meanwhile
_REMEMBERED = 4096  # recent phone spellings whose E.164 form is kept

Progress = Callable[[int, int], None]
Record = CustomerIn | InteractionIn


class ImportFileError(Exception):
    """The file cannot be imported at all (unreadable, not UTF-8, wrong header); nothing
    was written."""


@dataclass(frozen=True)
class Rejected:
    """A row that was not imported, or not applied: its first line in the file and why."""

    line: int
    external_id: str | None
    reason: str


@dataclass(frozen=True)
class ImportReport:
    rows: int
    inserted: int
    updated: int
    unchanged: int
    rejected: tuple[Rejected, ...]
    seconds: float
    ignored: tuple[Rejected, ...] = ()  # stale rows, rows for merged customers

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.unchanged


@dataclass(frozen=True)
class _Row:
    line: int
    cells: dict[str, str]
    problem: str | None = None  # a row of the wrong width


async def import_csv(
    engine: AsyncEngine,
    path: str | Path,
    *,
    phones: PhoneNormalizer,
    now: datetime,
    kind: str = "customers",
    progress: Progress | None = None,
    batch_size: int = 500,
) -> ImportReport:
    """Import the records of ``kind`` (a key of KINDS) in the CSV file at ``path`` (format
    in the module docstring). ``progress(done, total)`` is called as rows are processed.
    Raises ImportFileError for a file that cannot be imported, ValueError for an unknown
    kind; database errors propagate (committed batches stay)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    started = time.perf_counter()
    file = Path(path)
    total = _check_file(file, kind)
    tally = _Tally(kind, now, total, progress)
    seen: dict[str, int] = {}  # external_id → line, to refuse repeats within the file
    waiting: list[tuple[_Row, Record]] = []  # contacts whose company was not there yet
    batch: list[tuple[_Row, Record]] = []
    numbers = _RememberedPhones(phones)
    done = 0
    if progress is not None:
        progress(0, total)
    # one connection for every batch: none is checked out, pinged and reset per batch
    async with engine.connect() as connection, AsyncSession(bind=connection) as session:
        saving: asyncio.Task[None] | None = None  # the batch being written meanwhile
        try:
            for row in _rows(file, kind):
                done += 1
                record = _validated(row, kind, numbers, seen, tally.rejected)
                if record is not None:
                    batch.append((row, record))
                if len(batch) >= batch_size:
                    if saving is not None:
                        await saving
                    saving = asyncio.create_task(tally.commit(session, batch, waiting, done))
                    batch = []
                elif saving is not None and done % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # the batch in flight sends its next statement
            if saving is not None:
                await saving
        except BaseException:
            if saving is not None and not saving.done():
                saving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await saving
            raise
        await tally.commit(session, batch, waiting, done, last=True)
    return ImportReport(
        rows=total,
        inserted=tally.counts["inserted"],
        updated=tally.counts["updated"],
        unchanged=tally.counts["unchanged"],
        rejected=tuple(sorted(tally.rejected, key=lambda r: r.line)),
        seconds=round(time.perf_counter() - started, 3),
        ignored=tuple(sorted(tally.ignored, key=lambda r: r.line)),
    )


def _check_file(path: Path, kind: str) -> int:
    """Read the whole file before anything is written: every line must be UTF-8 and the
    header right, the CSV well formed. Returns the number of data rows. The text is checked
    in blocks of whole lines, and line by line only in a block that fails, to name the
    line: a UTF-8 sequence never contains a newline byte."""
    try:
        with path.open("rb") as file:
            before = 0  # lines before the block
            while block := file.readlines(_BLOCK):
                try:
                    b"".join(block).decode("utf-8")
                except UnicodeDecodeError:
                    for number, line in enumerate(block, before + 1):
                        try:
                            line.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise ImportFileError(
                                f"{path}: line {number} is not UTF-8 text (save the file as UTF-8)"
                            ) from exc
                before += len(block)
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return sum(1 for _ in _records(path, kind))


def _rows(path: Path, kind: str) -> Iterator[_Row]:
    """The data rows with their first line number; blank lines are skipped."""
    header: list[str] = []
    for line, record in _records(path, kind, header):
        cells = dict(zip(header, record, strict=False))
        if len(record) == len(header):
            yield _Row(line, cells)
        else:
            yield _Row(line, cells, f"{len(record)} fields where the header has {len(header)}")


def _records(
    path: Path, kind: str, header: list[str] | None = None
) -> Iterator[tuple[int, list[str]]]:
    """The file's non-blank records after its header (checked, and put into ``header``),
    each with its first line number. Raises ImportFileError."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file, strict=True)
            try:
                names = _header(next(reader, None), kind)
                if header is not None:
                    header[:] = names
                line = reader.line_num + 1
                for record in reader:
                    if any(cell.strip() for cell in record):
                        yield line, record
                    line = reader.line_num + 1
            except csv.Error as exc:
                raise ImportFileError(
                    f"{path}: not valid CSV at line {reader.line_num}: {exc}"
                ) from exc
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _header(cells: list[str] | None, kind: str) -> list[str]:
    if cells is None:
        raise ImportFileError("the file is empty: expected a header row")
    columns, required = KINDS[kind]
    names = [c.strip().lower() for c in cells]
    unknown = [n for n in names if n not in columns]
    missing = [n for n in required if n not in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    problems = []
    if unknown:
        problems.append(f"unknown columns {unknown}")
    if missing:
        problems.append(f"missing columns {missing}")
    if repeated:
        problems.append(f"repeated columns {repeated}")
    if problems:
        raise ImportFileError(
            f"wrong header for {kind}: {'; '.join(problems)} "
            f"(expected some of: {', '.join(columns)})"
        )
    return names


def _validated(
    row: _Row, kind: str, phones: PhoneNormalizer, seen: dict[str, int], rejected: list[Rejected]
) -> Record | None:
    """The row as a validated record, or None after reporting why not."""
    external_id = row.cells.get("external_id", "").strip() or None
    if row.problem is not None or external_id is None:
        reason = row.problem or "external_id: must not be empty (re-imports match on it)"
        rejected.append(Rejected(row.line, external_id, reason))
        return None
    if external_id in seen:
        reason = f"external_id {external_id!r} already on line {seen[external_id]}"
        rejected.append(Rejected(row.line, external_id, reason))
        return None
    try:
        record: Record
        if kind == "customers":
            record = validate(_customer_in(row.cells), phones)
        else:
            record = validate_entry(_entry_in(_ENTRY_KIND[kind], row.cells))
    except CustomerError as exc:
        rejected.append(Rejected(row.line, external_id, str(exc)))
        return None
    seen[external_id] = row.line
    return record


def _customer_in(cells: dict[str, str]) -> CustomerIn:
    def cell(name: str) -> str | None:
        return cells.get(name) or None

    def listed(name: str) -> tuple[str, ...]:
        return tuple(part for part in cells.get(name, "").split(";") if part.strip())

    return CustomerIn(
        external_id=cell("external_id"),
        kind=cells.get("kind", ""),
        name=cells.get("name", ""),
        company_external_id=cell("company_external_id"),
        email=cell("email"),
        address=cell("address"),
        owner=cell("owner"),
        language=cell("language"),
        tier=cells.get("tier", ""),
        lifecycle=cells.get("lifecycle", ""),
        tags=listed("tags"),
        phones=listed("phones"),
        balance=_decimal(cells, "balance"),
        currency=cell("currency"),
        updated_at=_time(cells, "updated_at"),
    )


def _entry_in(kind: str, cells: dict[str, str]) -> InteractionIn:
    occurred_at = _time(cells, "occurred_at")
    if occurred_at is None:
        raise CustomerError("occurred_at", "must not be empty")
    return InteractionIn(
        customer_external_id=cells.get("customer_external_id") or None,
        kind=kind,
        occurred_at=occurred_at,
        title=cells.get("title", ""),
        body=cells.get("body") or None,
        status=cells.get("status") or None,
        due_at=_time(cells, "due_at"),
        owner=cells.get("owner") or None,
        amount=_decimal(cells, "amount"),
        external_id=cells.get("external_id") or None,
    )


def _time(cells: dict[str, str], name: str) -> datetime | None:
    text = cells.get(name, "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CustomerError(
            name, f"{text!r} is not an ISO 8601 time such as 2026-11-23T12:00:00+08:00"
        ) from None


def _decimal(cells: dict[str, str], name: str) -> Decimal | None:
    text = cells.get(name, "").strip()
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise CustomerError(name, f"{text!r} is not an amount such as -12.50") from None


class _RememberedPhones(PhoneNormalizer):
    """The import's normalizer, remembering its last few thousand spellings: a number given
    again (a company's switchboard on each of its contacts) is parsed once."""

    def __init__(self, phones: PhoneNormalizer) -> None:
        super().__init__(phones.default_region, phones.internal_max_digits)
        self._to_e164 = functools.lru_cache(maxsize=_REMEMBERED)(phones.to_e164)

    def to_e164(self, raw: str) -> str | None:
        return self._to_e164(raw)


class _Tally:
    """What became of the rows so far."""

    def __init__(self, kind: str, now: datetime, total: int, progress: Progress | None) -> None:
        self.kind = kind
        self.now = now
        self.total = total
        self.progress = progress
        self.counts: dict[Change, int] = {"inserted": 0, "updated": 0, "unchanged": 0}
        self.rejected: list[Rejected] = []
        self.ignored: list[Rejected] = []

    async def commit(
        self,
        session: AsyncSession,
        batch: list[tuple[_Row, Record]],
        waiting: list[tuple[_Row, Record]],
        done: int,
        *,
        last: bool = False,
    ) -> None:
        """Write the batch in a transaction of its own and commit; ``done`` rows of the file
        are then through. The ``last`` batch retries the contacts still ``waiting``: their
        companies are in by now, if the file has them."""
        await begin_write(session)
        await self.save(session, batch, waiting)
        if last:
            await self.save(session, waiting, None)
        await session.commit()
        if self.progress is not None:
            self.progress(done, self.total)

    async def save(
        self,
        session: AsyncSession,
        batch: list[tuple[_Row, Record]],
        waiting: list[tuple[_Row, Record]] | None,
    ) -> None:
        """Upsert the batch; a contact of an unknown company goes to ``waiting`` (when
        given: its company may come later in the file) or is rejected."""
        records = [record for _, record in batch]
        results: list[Saved | CustomerError]
        if self.kind == "customers":
            customers = [r for r in records if isinstance(r, CustomerIn)]
            results = await save_customers(session, customers, now=self.now)
        else:
            results = await save_entries(
                session, [r for r in records if not isinstance(r, CustomerIn)]
            )
        for (row, record), result in zip(batch, results, strict=True):
            if isinstance(result, Saved) and result.change in _IGNORED:
                reason = _IGNORED[result.change].format(id=result.id)
                self.ignored.append(Rejected(row.line, record.external_id, reason))
            elif isinstance(result, Saved):
                self.counts[result.change] += 1
            elif waiting is not None and result.field == "company_external_id":
                waiting.append((row, record))
            else:
                self.rejected.append(Rejected(row.line, record.external_id, str(result)))
