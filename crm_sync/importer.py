"""Import customers from a CSV file: validated per row, idempotent, in committed batches.

The file is UTF-8 (a byte-order mark, as spreadsheet programs write, is fine), comma
separated, with a header row naming these columns in any order (names are case-insensitive;
only ``external_id``, ``kind`` and ``name`` are required, an unknown column is an error):

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
tier                   ``vip``, ``regular`` (default) or ``low``
lifecycle              ``prospect``, ``active`` (default), ``lapsed`` or ``lost``
tags                   separated by ``;``
=====================  ==================================================================

Example::

    external_id,kind,name,company_external_id,phones,tier
    C-1,company,ACME 有限公司,,+86 20 7946 0958,vip
    P-1,person,张伟,C-1,13800138000; +1 555 0100 001,

How it runs: a first pass reads the whole file (header, encoding, row count) so that a bad
file is refused before anything is written; then rows are validated and upserted, and
committed every ``batch_size`` accepted rows. A bad row is reported (line, reason) and
skipped, never fatal; a row that repeats an external id of the same file is refused. A
contact whose company comes later in the file is retried after the last row. Re-importing a
file changes nothing (the report counts those rows as unchanged).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.customers import Change, CustomerError, CustomerIn, save_customers, validate
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
)
REQUIRED = ("external_id", "kind", "name")

Progress = Callable[[int, int], None]


class ImportFileError(Exception):
    """The file cannot be imported at all (unreadable, not UTF-8, wrong header); nothing
    was written."""


@dataclass(frozen=True)
class Rejected:
    """A row that was not imported: its first line in the file and why."""

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
    progress: Progress | None = None,
    batch_size: int = 500,
) -> ImportReport:
    """Import the customers of the CSV file at ``path`` (format in the module docstring).
    ``progress(done, total)`` is called as rows are processed. Raises ImportFileError for a
    file that cannot be imported; database errors propagate (committed batches stay)."""
    started = time.perf_counter()
    total = _check_file(Path(path))
    tally = _Tally()
    seen: dict[str, int] = {}  # external_id → line, to refuse repeats within the file
    waiting: list[tuple[_Row, CustomerIn]] = []  # contacts whose company was not there yet
    batch: list[tuple[_Row, CustomerIn]] = []
    done = 0
    if progress is not None:
        progress(0, total)
    async with AsyncSession(engine) as session:
        for row in _rows(Path(path)):
            done += 1
            customer = _validated(row, phones, seen, tally.rejected)
            if customer is not None:
                batch.append((row, customer))
            if len(batch) >= batch_size:
                await tally.save(session, batch, now, waiting)
                await session.commit()
                batch = []
                if progress is not None:
                    progress(done, total)
        await tally.save(session, batch, now, waiting)
        await tally.save(session, waiting, now, None)  # their companies are in by now, if any
        await session.commit()
    if progress is not None:
        progress(done, total)
    return ImportReport(
        rows=total,
        inserted=tally.counts["inserted"],
        updated=tally.counts["updated"],
        unchanged=tally.counts["unchanged"],
        rejected=tuple(sorted(tally.rejected, key=lambda r: r.line)),
        seconds=round(time.perf_counter() - started, 3),
    )


def _check_file(path: Path) -> int:
    """Read the whole file before anything is written: every line must be UTF-8 (checked
    line by line, to name the line: a UTF-8 sequence never contains a newline byte) and the
    header right. Returns the number of data rows."""
    try:
        with path.open("rb") as file:
            for number, line in enumerate(file, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ImportFileError(
                        f"{path}: line {number} is not UTF-8 text (save the file as UTF-8)"
                    ) from exc
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return sum(1 for _ in _rows(path))


def _rows(path: Path) -> Iterator[_Row]:
    """The data rows with their first line number; blank lines are skipped."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file, strict=True)
            try:
                header = _header(next(reader, None))
                line = reader.line_num + 1
                for record in reader:
                    if any(cell.strip() for cell in record):
                        yield _row(line, header, record)
                    line = reader.line_num + 1
            except csv.Error as exc:
                raise ImportFileError(
                    f"{path}: not valid CSV at line {reader.line_num}: {exc}"
                ) from exc
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _header(cells: list[str] | None) -> list[str]:
    if cells is None:
        raise ImportFileError("the file is empty: expected a header row")
    names = [c.strip().lower() for c in cells]
    unknown = [n for n in names if n not in COLUMNS]
    missing = [n for n in REQUIRED if n not in names]
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
            f"wrong header: {'; '.join(problems)} (expected some of: {', '.join(COLUMNS)})"
        )
    return names


def _row(line: int, header: list[str], record: list[str]) -> _Row:
    cells = dict(zip(header, record, strict=False))
    if len(record) == len(header):
        return _Row(line, cells)
    return _Row(line, cells, f"{len(record)} fields where the header has {len(header)}")


def _validated(
    row: _Row, phones: PhoneNormalizer, seen: dict[str, int], rejected: list[Rejected]
) -> CustomerIn | None:
    """The row as a validated customer, or None after reporting why not."""
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
        customer = validate(_customer_in(row.cells), phones)
    except CustomerError as exc:
        rejected.append(Rejected(row.line, external_id, str(exc)))
        return None
    seen[external_id] = row.line
    return customer


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
    )


class _Tally:
    """What became of the rows so far."""

    def __init__(self) -> None:
        self.counts: dict[Change, int] = {"inserted": 0, "updated": 0, "unchanged": 0}
        self.rejected: list[Rejected] = []

    async def save(
        self,
        session: AsyncSession,
        batch: list[tuple[_Row, CustomerIn]],
        now: datetime,
        waiting: list[tuple[_Row, CustomerIn]] | None,
    ) -> None:
        """Upsert the batch; a contact of an unknown company goes to ``waiting`` (when
        given: its company may come later in the file) or is rejected."""
        results = await save_customers(session, [c for _, c in batch], now=now)
        for (row, customer), result in zip(batch, results, strict=True):
            if not isinstance(result, CustomerError):
                self.counts[result.change] += 1
            elif waiting is not None and result.field == "company_external_id":
                waiting.append((row, customer))
            else:
                self.rejected.append(Rejected(row.line, customer.external_id, str(result)))
