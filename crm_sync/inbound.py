"""Inbound writes from the external CRM: its timeline entries, the link of its ids to
customers first known here, and the transaction every inbound write runs in.

Customers are saved by crm_sync.customers.save_customers, entries (orders, tickets, notes)
by :func:`save_entries`: both upsert by the CRM's id, so the same record sent twice writes
once, and an order whose status changes or a ticket that closes updates its one row. Who
wins a conflict is decided in crm_sync.conflicts. Nothing here writes to the outbox: what
came from the CRM is never sent back to it.

Concurrency: :func:`write` runs a unit of work in a transaction that holds the write lock
from its first statement on SQLite (:func:`begin_write`) and locks the rows it reads on
PostgreSQL (``FOR UPDATE`` in the savers), so two requests for the same record run one
after the other; two inserts of the same new id race on the unique index, and the loser is
run again, finding the winner's row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.conflicts import CRM_KINDS, MAX_ENTRY_ID, RESEGMENT_KINDS, crm_key, utc
from crm_sync.customers import (
    CustomerError,
    InteractionIn,
    Saved,
    interaction_values,
    mark_segments_stale,
    validate_interaction,
)
from crm_sync.merges import survivors
from crm_sync.models import Base, Customer, Interaction

T = TypeVar("T")
ATTEMPTS = 3  # runs of a unit of work that lost an insert race before the error is given up

# the fields of each kind of entry the CRM sends (every other InteractionIn field is ours)
COMMON_FIELDS = ("external_id", "customer_external_id", "occurred_at", "title", "body")
ENTRY_FIELDS = {
    "order": (*COMMON_FIELDS, "status", "amount"),
    "ticket": (*COMMON_FIELDS, "status", "owner", "due_at"),
    "note": (*COMMON_FIELDS, "owner"),
}
_OPTIONAL = ("status", "due_at", "owner", "amount", "call_id", "agent", "customer_id")
_CHUNK = 500  # entries per statement
# what begin_write sets for the transaction on PostgreSQL
_BY_KEY = text(
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
    "set_config('enable_seqscan', 'off', true)"
)


async def begin_write(session: AsyncSession) -> None:
    """Begin the session's transaction holding SQLite's write lock (``BEGIN IMMEDIATE``), so
    that what it reads stays true until it commits; must be its first statement. On
    PostgreSQL the writers lock their rows instead. There every statement of the transaction
    finds rows by a key (lists of keys: ``= ANY``, crm_sync.bulk), and is made to use the
    index whatever the table's statistics say: a bulk import outruns autovacuum's ANALYZE
    (a table without statistics has its list lookups planned as scans of the whole table),
    and a connection's prepared statement keeps a generic plan made while the table was
    small; so each statement is planned for its values, without sequential scans."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))
    elif dialect == "postgresql":
        await session.execute(_BY_KEY)


async def write(
    sessions: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
) -> T:
    """Run ``work`` in its own transaction and commit; its result. Losing an insert race
    (IntegrityError) runs it again, up to ATTEMPTS times; other database errors propagate
    and nothing was written."""
    attempt = 1
    while True:
        try:
            async with sessions() as session, session.begin():
                await begin_write(session)
                return await work(session)
        except IntegrityError:
            if attempt >= ATTEMPTS:
                raise
            attempt += 1


def validate_entry(raw: InteractionIn) -> InteractionIn:
    """An order, ticket or note of the CRM in stored form (a ticket is ``open`` unless said);
    raises CustomerError naming the field. Its ``external_id`` is still the CRM's (the
    stored key adds the kind: conflicts.crm_key)."""
    if raw.kind not in CRM_KINDS:
        raise CustomerError("kind", f"{raw.kind!r} is not one of {', '.join(CRM_KINDS)}")
    allowed = ENTRY_FIELDS[raw.kind]
    for name in _OPTIONAL:
        if getattr(raw, name) is not None and name not in allowed:
            raise CustomerError(name, f"not a field of a {raw.kind}")
    external_id = (raw.external_id or "").strip()
    if not external_id:
        raise CustomerError("external_id", "must not be empty (updates match on it)")
    if len(external_id) > MAX_ENTRY_ID:
        raise CustomerError("external_id", f"longer than {MAX_ENTRY_ID} characters")
    if not (raw.customer_external_id or "").strip():
        raise CustomerError("customer_external_id", "must not be empty")
    entry = validate_interaction(raw)
    if entry.kind == "ticket" and entry.status is None:
        entry = replace(entry, status="open")
    return entry


async def save_entries(
    session: AsyncSession, entries: Sequence[InteractionIn]
) -> list[Saved | CustomerError]:
    """Upsert the CRM's entries (from :func:`validate_entry`) by their id, a few statements
    per few hundred. Each result, in input order, is the :class:`Saved` entry or the
    CustomerError that kept it out (unknown customer, an id given twice); the others are
    saved regardless. An entry naming a merged customer goes to the survivor. A new or
    changed order marks its customer's segments stale. The caller commits."""
    results: dict[int, Saved | CustomerError] = {}
    todo: list[tuple[int, InteractionIn, str]] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        key = crm_key(entry.kind, entry.external_id or "")
        if key in seen:
            results[index] = CustomerError("external_id", f"{entry.external_id!r} is given twice")
            continue
        seen.add(key)
        todo.append((index, entry, key))
    for start in range(0, len(todo), _CHUNK):
        results.update(await _save_chunk(session, todo[start : start + _CHUNK]))
    return [results[i] for i in range(len(entries))]


async def _save_chunk(
    session: AsyncSession, chunk: list[tuple[int, InteractionIn, str]]
) -> dict[int, Saved | CustomerError]:
    table = Base.metadata.tables[Interaction.__tablename__]
    results: dict[int, Saved | CustomerError] = {}
    owners = await _customer_ids(session, {e.customer_external_id or "" for _, e, _ in chunk})
    found = await session.execute(
        select(table)
        .where(table.c.external_id.in_([key for *_, key in chunk]))
        .order_by(table.c.id)
        .with_for_update()
    )
    existing = {row["external_id"]: row for row in found.mappings()}
    new: list[tuple[int, dict[str, Any]]] = []
    changed: list[dict[str, Any]] = []
    resegment: set[int] = set()
    for index, entry, key in chunk:
        owner = owners.get(entry.customer_external_id or "")
        if owner is None:
            results[index] = CustomerError(
                "customer_external_id", f"unknown customer {entry.customer_external_id!r}"
            )
            continue
        values = interaction_values(owner, replace(entry, external_id=key))
        row = existing.get(key)
        if row is None:
            new.append((index, values))
        elif any(not _same(row[name], value) for name, value in values.items()):
            changed.append({"_id": row["id"], **values})
            results[index] = Saved(row["id"], "updated")
            resegment.add(row["customer_id"])  # the order may have moved to another customer
        else:
            results[index] = Saved(row["id"], "unchanged")
            continue
        if entry.kind in RESEGMENT_KINDS:
            resegment.add(owner)
    if new:
        await session.execute(insert(table), [values for _, values in new])
        keys = [values["external_id"] for _, values in new]
        query = select(table.c.external_id, table.c.id).where(table.c.external_id.in_(keys))
        ids = {key: id_ for key, id_ in await session.execute(query)}
        results.update(
            (index, Saved(ids[values["external_id"]], "inserted")) for index, values in new
        )
    if changed:
        await session.execute(update(table).where(table.c.id == bindparam("_id")), changed)
    await mark_segments_stale(session, sorted(resegment))
    return results


async def _customer_ids(session: AsyncSession, external_ids: set[str]) -> dict[str, int]:
    """external_id → customer id, through merges: an id of a merged customer names the
    survivor. Ids that name nobody are left out."""
    wanted = [key for key in external_ids if key]
    if not wanted:
        return {}
    query = select(Customer.external_id, Customer.id).where(Customer.external_id.in_(wanted))
    found = {key: id_ for key, id_ in await session.execute(query) if key}
    found.update(await survivors(session, [key for key in wanted if key not in found]))
    return found


async def link_external_id(
    session: AsyncSession, customer_id: int, external_id: str, *, version: datetime | None
) -> None:
    """Give customer ``customer_id``, first known here (a new caller an agent or the IVR
    added, announced in the outbox as ``customer.created``), the CRM's id for it, so that
    the CRM's record updates that customer instead of adding a twin. Its ``updated_at`` was
    our clock's, not a version of the CRM's: it becomes ``version``, the one of the record
    about to be saved, so that record applies. Doing it again is a no-op. Raises
    CustomerError (field ``customer_id``): no such customer, or one of the two already
    linked elsewhere."""
    current = await session.execute(
        select(Customer.external_id).where(Customer.id == customer_id).with_for_update()
    )
    row = current.one_or_none()
    if row is None:
        raise CustomerError("customer_id", f"there is no customer {customer_id}")
    if row.external_id == external_id:
        return
    if row.external_id is not None:
        raise CustomerError(
            "customer_id", f"customer {customer_id} is already the CRM's {row.external_id!r}"
        )
    holder = await session.scalar(select(Customer.id).where(Customer.external_id == external_id))
    if holder is not None:
        raise CustomerError(
            "customer_id", f"{external_id!r} is already customer {holder}, not {customer_id}"
        )
    linked: dict[str, Any] = {"external_id": external_id}
    if version is not None:
        linked["updated_at"] = version
    await session.execute(
        update(Customer)
        .where(Customer.id == customer_id)
        .values(**linked)
        .execution_options(synchronize_session=False)
    )


def _same(stored: Any, given: Any) -> bool:
    """Stored and given values alike, whatever the driver returned (SQLite: naive times)."""
    if isinstance(stored, datetime) and isinstance(given, datetime):
        return utc(stored) == utc(given)
    if isinstance(stored, Decimal | int) and isinstance(given, Decimal | int):
        return Decimal(stored) == Decimal(given)
    return bool(stored == given)
