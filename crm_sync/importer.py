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
committed every ``batch_size`` accepted rows, each batch written while the rows after it are
checked (by a worker process for a big file: crm_sync.import_rows). A bad row is reported
(line, reason) and skipped, never fatal; a row that repeats an external id of the same file
is refused. A contact whose company comes later in the file is retried after the last row.
Re-importing a file changes nothing (the report counts those rows as unchanged). A row older
than the stored version, or naming a customer merged into another, is ignored and reported
as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.customers import Change, CustomerError, CustomerIn, Saved, save_customers
from crm_sync.import_rows import COLUMNS as COLUMNS
from crm_sync.import_rows import KINDS as KINDS
from crm_sync.import_rows import PARALLEL_FROM, Checked, Record, check_file, checked_rows
from crm_sync.import_rows import ImportFileError as ImportFileError
from crm_sync.inbound import begin_write, save_entries
from crm_sync.phones import PhoneNormalizer

_IGNORED: dict[Change, str] = {
    "stale": "ignored: older than the stored version (updated_at)",
    "merged": "ignored: names a customer merged into customer {id}",
}

Progress = Callable[[int, int], None]
Batch = list[tuple[int, Record]]  # records with their lines in the file


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


async def import_csv(
    engine: AsyncEngine,
    path: str | Path,
    *,
    phones: PhoneNormalizer,
    now: datetime,
    kind: str = "customers",
    progress: Progress | None = None,
    batch_size: int = 2000,
    parallel_from: int = PARALLEL_FROM,
) -> ImportReport:
    """Import the records of ``kind`` (a key of KINDS) in the CSV file at ``path`` (format
    in the module docstring). ``progress(done, total)`` is called as rows are processed.
    A file of ``parallel_from`` rows or more is checked in a worker process
    (crm_sync.import_rows). Raises ImportFileError for a file that cannot be imported,
    ValueError for an unknown kind; database errors propagate (committed batches stay)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    started = time.perf_counter()
    file = Path(path)
    total = check_file(file, kind)
    tally = _Tally(kind, now, total, progress)
    seen: dict[str, int] = {}  # external_id → line, to refuse repeats within the file
    waiting: Batch = []  # contacts whose company was not there yet
    batch: Batch = []
    done = 0
    if progress is not None:
        progress(0, total)
    rows = checked_rows(file, kind, phones, in_worker=total >= parallel_from)
    # one connection for every batch: none is checked out, pinged and reset per batch
    async with (
        contextlib.aclosing(rows),
        engine.connect() as connection,
        AsyncSession(bind=connection) as session,
    ):
        saving: asyncio.Task[None] | None = None  # the last batch, written meanwhile
        try:
            async for row in rows:
                done += 1
                record = _accepted(row, seen, tally.rejected)
                if record is not None:
                    batch.append((row.line, record))
                if len(batch) >= batch_size:
                    if saving is not None:
                        await saving
                    saving = asyncio.create_task(tally.commit(session, batch, waiting, done))
                    batch = []
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


def _accepted(row: Checked, seen: dict[str, int], rejected: list[Rejected]) -> Record | None:
    """The row's record, unless it was refused or repeats an external id of the file (then
    None, and why is in ``rejected``)."""
    if not row.unkeyed and row.external_id in seen:
        reason = f"external_id {row.external_id!r} already on line {seen[row.external_id]}"
    elif row.record is not None and row.external_id is not None:
        seen[row.external_id] = row.line
        return row.record
    else:
        reason = str(row.reason)
    rejected.append(Rejected(row.line, row.external_id, reason))
    return None


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
        batch: Batch,
        waiting: Batch,
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
        batch: Batch,
        waiting: Batch | None,
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
        for (line, record), result in zip(batch, results, strict=True):
            if isinstance(result, Saved) and result.change in _IGNORED:
                reason = _IGNORED[result.change].format(id=result.id)
                self.ignored.append(Rejected(line, record.external_id, reason))
            elif isinstance(result, Saved):
                self.counts[result.change] += 1
            elif waiting is not None and result.field == "company_external_id":
                waiting.append((line, record))
            else:
                self.rejected.append(Rejected(line, record.external_id, str(result)))
