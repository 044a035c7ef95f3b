"""The rows of an import file (crm_sync.importer), read and checked: pure work on text, done
in this process or, for a big file, in a worker process beside the database writes.

Theory of operation. The file is read twice. The first pass (:func:`check_file`) refuses a
file that cannot be imported (not UTF-8, a wrong header, broken CSV) before anything is
written, and counts its rows. The second (:func:`checked_rows`) yields every row
:class:`Checked`: its record in stored form (crm_sync.customers.validate,
crm_sync.inbound.validate_entry) or why it was refused. That is most of an import's work,
phone numbers above all (phonenumbers takes some 20 µs a number), and it needs nothing but
the text, so from ``PARALLEL_FROM`` rows on it runs in a worker process, a chunk of rows at
a time and a few chunks ahead, while this process writes what came back: two cores work.
Records come back as tuples of their fields (a frozen dataclass unpickles ten times
slower). Which rows repeat an external id is for the importer to tell: it depends on the
order of the whole file, and a worker sees chunks.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import multiprocessing
import os
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from crm_sync.customers import CustomerError, CustomerIn, InteractionIn, validate
from crm_sync.inbound import ENTRY_FIELDS, validate_entry
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
PARALLEL_FROM = 20_000  # rows from which a file is checked in a worker process
_ENTRY_KIND = {"orders": "order", "tickets": "ticket", "notes": "note"}
_BLOCK = 1 << 20  # bytes of whole lines checked as UTF-8 at once
_YIELD_EVERY = 16  # rows checked here between two turns of the rest of the event loop
_CHUNK = 1000  # rows a worker checks at a time
_AHEAD = 8  # chunks given to the worker before the first is waited for
# the worker's niceness: it has time to spare (it checks rows faster than they are written),
# and the writes (this process and the database) are what an import waits for
_WORKER_NICE = 10
_REMEMBERED = 4096  # recent phone spellings whose E.164 form is kept

Record = CustomerIn | InteractionIn
_RECORD: dict[str, type[Record]] = {kind: InteractionIn for kind in _ENTRY_KIND}
_RECORD["customers"] = CustomerIn
_FIELDS = {kind: attrgetter(*(f.name for f in fields(record))) for kind, record in _RECORD.items()}
# what a worker sends back for a row: Checked, with the record as its fields in order
_Sent = tuple[int, str | None, tuple[Any, ...] | None, str | None, bool]


class ImportFileError(Exception):
    """The file cannot be imported at all (unreadable, not UTF-8, wrong header); nothing
    was written."""


class Checked(NamedTuple):
    """A row of the file as checked: its record in stored form, or why it was refused."""

    line: int  # its first line in the file
    external_id: str | None
    record: Record | None  # None: refused, for ``reason``
    reason: str | None = None
    unkeyed: bool = False  # refused before its external id counts (wrong width, none given)


def check_file(path: Path, kind: str) -> int:
    """Read the whole file before anything is written: every line must be UTF-8 and the
    header right, the CSV well formed. Returns the number of data rows. The text is checked
    in blocks of whole lines, and line by line only in a block that fails, to name the
    line: a UTF-8 sequence never contains a newline byte. Raises ImportFileError."""
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
    return sum(1 for _ in _records(path, kind, []))


def checked_rows(
    path: Path, kind: str, phones: PhoneNormalizer, *, in_worker: bool
) -> AsyncGenerator[Checked, None]:
    """Every non-blank row of the file (of ``kind``, checked by :func:`check_file`), checked,
    in file order; ``in_worker``: by a worker process, which closing the generator stops.
    Raises ImportFileError."""
    return _in_worker(path, kind, phones) if in_worker else _here(path, kind, phones)


async def _here(path: Path, kind: str, phones: PhoneNormalizer) -> AsyncGenerator[Checked, None]:
    numbers = _RememberedPhones(phones)
    header: list[str] = []
    for count, (line, record) in enumerate(_records(path, kind, header), 1):
        yield _check(line, header, record, kind, numbers)
        if count % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # the batch being written sends its next statement


async def _in_worker(
    path: Path, kind: str, phones: PhoneNormalizer
) -> AsyncGenerator[Checked, None]:
    loop = asyncio.get_running_loop()
    header: list[str] = []
    records = _records(path, kind, header)
    pending: deque[asyncio.Future[list[_Sent]]] = deque()
    # spawned, not forked: a fork would copy this process's event loop and connections
    pool = ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=os.nice,
        initargs=(_WORKER_NICE,),
    )
    try:
        while chunk := list(islice(records, _CHUNK)):
            pending.append(
                loop.run_in_executor(pool, _check_chunk, chunk, tuple(header), kind, phones)
            )
            if len(pending) >= _AHEAD:
                for sent in await pending.popleft():
                    yield _received(sent, kind)
        while pending:
            for sent in await pending.popleft():
                yield _received(sent, kind)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _check_chunk(
    chunk: list[tuple[int, list[str]]], header: tuple[str, ...], kind: str, phones: PhoneNormalizer
) -> list[_Sent]:
    """What the worker does with a chunk of records."""
    numbers = _RememberedPhones(phones)
    sent: list[_Sent] = []
    for line, record in chunk:
        row = _check(line, header, record, kind, numbers)
        values = None if row.record is None else _FIELDS[kind](row.record)
        sent.append((row.line, row.external_id, values, row.reason, row.unkeyed))
    return sent


def _received(sent: _Sent, kind: str) -> Checked:
    line, external_id, values, reason, unkeyed = sent
    record = None if values is None else _RECORD[kind](*values)
    return Checked(line, external_id, record, reason, unkeyed)


def _records(path: Path, kind: str, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    """The file's non-blank records after its header (checked, and put into ``header``),
    each with its first line number. Raises ImportFileError."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file, strict=True)
            try:
                header[:] = _header(next(reader, None), kind)
                line = reader.line_num + 1
                for record in reader:
                    # blank lines are skipped; most records show it by their first cell
                    if (record and record[0].strip()) or any(cell.strip() for cell in record):
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


def _check(
    line: int,
    header: list[str] | tuple[str, ...],
    record: list[str],
    kind: str,
    phones: PhoneNormalizer,
) -> Checked:
    cells = dict(zip(header, record, strict=False))
    external_id = cells.get("external_id", "").strip() or None
    if len(record) != len(header):
        reason = f"{len(record)} fields where the header has {len(header)}"
        return Checked(line, external_id, None, reason, unkeyed=True)
    if external_id is None:
        reason = "external_id: must not be empty (re-imports match on it)"
        return Checked(line, None, None, reason, unkeyed=True)
    try:
        checked: Record
        if kind == "customers":
            checked = validate(_customer_in(cells), phones)
        else:
            checked = validate_entry(_entry_in(_ENTRY_KIND[kind], cells))
    except CustomerError as exc:
        return Checked(line, external_id, None, str(exc))
    return Checked(line, external_id, checked)


def _customer_in(cells: dict[str, str]) -> CustomerIn:
    cell = cells.get
    return CustomerIn(
        external_id=cell("external_id") or None,
        kind=cell("kind", ""),
        name=cell("name", ""),
        company_external_id=cell("company_external_id") or None,
        email=cell("email") or None,
        address=cell("address") or None,
        owner=cell("owner") or None,
        language=cell("language") or None,
        tier=cell("tier", ""),
        lifecycle=cell("lifecycle", ""),
        tags=_listed(cell("tags", "")),
        phones=_listed(cell("phones", "")),
        balance=_decimal(cells, "balance"),
        currency=cell("currency") or None,
        updated_at=_time(cells, "updated_at"),
    )


def _listed(text: str) -> tuple[str, ...]:
    """The parts of a ``;``-separated cell, the empty ones left out."""
    if not text:
        return ()
    return tuple(part for part in text.split(";") if part.strip())


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
    """The normalizer given, remembering its last few thousand spellings: a number given
    again (a company's switchboard on each of its contacts) is parsed once."""

    def __init__(self, phones: PhoneNormalizer) -> None:
        super().__init__(phones.default_region, phones.internal_max_digits)
        self._phones = phones
        self._to_e164 = functools.lru_cache(maxsize=_REMEMBERED)(phones.to_e164)

    def is_internal(self, raw: str) -> bool:
        return self._phones.is_internal(raw)

    def to_e164(self, raw: str) -> str | None:
        return self._to_e164(raw)
