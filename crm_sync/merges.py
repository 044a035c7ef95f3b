"""Merges of duplicate customers: one folded into another in one transaction, and recorded.

What moves from the merged customer to the survivor: phones (a number the survivor already
has is dropped, not doubled), the whole timeline (calls, outcomes, follow-ups, orders, …),
survey scores, a company's contact persons, and earlier merges into the merged customer (so
their external ids now name the survivor). The survivor keeps its own fields and fills its
blanks from the merged one (crm_sync.conflicts.merge_fill), and its segments are marked
stale. The merged customer is then deleted; a ``customer_merges`` row keeps who merged,
when, from where (``source``), what moved, and the merged customer's id, external id and
name, so that later inbound data naming that external id lands on the survivor
(:func:`survivors`).

A merge made here (``source`` other than ``crm``) puts a ``customer.merged`` row in the
outbox, in the same transaction, for the CRM to fold its own records; one that came from
the CRM does not (no echo).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, Executable, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_sync.bulk import one_of
from crm_sync.conflicts import merge_fill, utc
from crm_sync.models import Base, CallScore, Customer, CustomerMerge, Interaction, OutboxRow, Phone
from crm_sync.outbox import enqueue

SOURCES = ("crm", "admin", "agent")  # crm: asked by the CRM; the others: asked here


class MergeError(ValueError):
    """A merge that cannot be done; ``reason`` says how a caller should answer it:
    ``unknown`` (no such customer), ``refused`` (the two cannot be merged) or ``conflict``
    (the merged customer was already merged into another one)."""

    def __init__(self, reason: Literal["unknown", "refused", "conflict"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MergeResult:
    merge_id: int
    at: datetime
    survivor_id: int
    merged_id: int
    merged_external_id: str | None
    merged_name: str
    moved: dict[str, Any]  # what the customer_merges row records as moved
    already: bool = False  # the same merge was done before; nothing was written now


async def survivors(session: AsyncSession, external_ids: Iterable[str]) -> dict[str, int]:
    """external_id → the id of the customer it was merged into, for those of
    ``external_ids`` that name a merged customer."""
    wanted = list(dict.fromkeys(external_ids))
    if not wanted:
        return {}
    query = (
        select(CustomerMerge.merged_external_id, CustomerMerge.survivor_id)
        .where(one_of(session, CustomerMerge.merged_external_id, wanted))
        .order_by(CustomerMerge.id)  # the latest merge of an id wins
    )
    return {key: id_ for key, id_ in await session.execute(query) if key}


async def merge_customers(
    session: AsyncSession,
    survivor_id: int,
    merged_id: int,
    *,
    source: str,
    by: str,
    now: datetime,
) -> MergeResult:
    """Fold customer ``merged_id`` into ``survivor_id`` in the session's transaction (the
    caller commits; on SQLite it began with crm_sync.inbound.begin_write). ``by`` is who
    asked (a login, a CRM user). Raises MergeError: unknown customer, the same customer
    twice, or a person and a company."""
    if source not in SOURCES:
        raise ValueError(f"merge source {source!r} is not one of {', '.join(SOURCES)}")
    if survivor_id == merged_id:
        raise MergeError("refused", f"customer {survivor_id} cannot be merged into itself")
    customers = Base.metadata.tables[Customer.__tablename__]
    query = (
        select(customers)
        .where(customers.c.id.in_([survivor_id, merged_id]))
        .order_by(customers.c.id)  # locks in one order: two merges never wait on each other
        .with_for_update()
    )
    rows = {row["id"]: row for row in (await session.execute(query)).mappings()}
    for wanted in (survivor_id, merged_id):
        if wanted not in rows:
            raise MergeError("unknown", f"there is no customer {wanted}")
    survivor, merged = rows[survivor_id], rows[merged_id]
    if survivor["kind"] != merged["kind"]:
        raise MergeError(
            "refused", f"a {merged['kind']} cannot be merged into a {survivor['kind']}"
        )
    moved = await _move(session, survivor_id, merged_id, merged["kind"])
    await session.execute(delete(customers).where(customers.c.id == merged_id))
    fill = merge_fill(dict(survivor), dict(merged))
    await session.execute(
        update(customers).where(customers.c.id == survivor_id).values(**fill, segment_stale=True)
    )
    moved["filled"] = sorted(fill)
    detail = {"by": by, "moved": moved}
    added = await session.execute(
        insert(CustomerMerge)
        .values(
            at=now,
            survivor_id=survivor_id,
            merged_id=merged_id,
            merged_external_id=merged["external_id"],
            merged_name=merged["name"],
            source=source,
            detail=detail,
        )
        .returning(CustomerMerge.id)
    )
    result = MergeResult(
        merge_id=added.scalar_one(),
        at=utc(now),
        survivor_id=survivor_id,
        merged_id=merged_id,
        merged_external_id=merged["external_id"],
        merged_name=merged["name"],
        moved=moved,
    )
    if source != "crm":
        enqueue(
            session,
            topic="customer.merged",
            key=f"customer.merged:{result.merge_id}",
            customer_id=survivor_id,
            data=_outbox_data(
                result, survivor["external_id"] or fill.get("external_id"), source, by
            ),
            now=now,
        )
    return result


async def merge_external(
    session: AsyncSession,
    survivor_external_id: str,
    merged_external_id: str,
    *,
    by: str,
    now: datetime,
) -> MergeResult:
    """A merge the CRM asks for, by its external ids (source ``crm``, no outbox row). An id
    that names an already merged customer means its survivor; asking again for a merge that
    was done answers it with ``already`` set. Raises MergeError."""
    survivor_id = await _resolve(session, survivor_external_id)
    if survivor_id is None:
        raise MergeError("unknown", f"there is no customer {survivor_external_id!r}")
    merged_id = await session.scalar(
        select(Customer.id).where(Customer.external_id == merged_external_id)
    )
    if merged_id is not None:
        return await merge_customers(session, survivor_id, merged_id, source="crm", by=by, now=now)
    earlier = await session.scalar(
        select(CustomerMerge)
        .where(CustomerMerge.merged_external_id == merged_external_id)
        .order_by(CustomerMerge.id.desc())
        .limit(1)
    )
    if earlier is None:
        raise MergeError("unknown", f"there is no customer {merged_external_id!r}")
    if earlier.survivor_id != survivor_id:
        raise MergeError(
            "conflict",
            f"{merged_external_id!r} was merged into customer {earlier.survivor_id} already",
        )
    return MergeResult(
        merge_id=earlier.id,
        at=utc(earlier.at),
        survivor_id=survivor_id,
        merged_id=earlier.merged_id,
        merged_external_id=earlier.merged_external_id,
        merged_name=earlier.merged_name,
        moved=dict(earlier.detail.get("moved", {})),
        already=True,
    )


async def _resolve(session: AsyncSession, external_id: str) -> int | None:
    found = await session.scalar(select(Customer.id).where(Customer.external_id == external_id))
    if found is not None:
        return found
    return (await survivors(session, [external_id])).get(external_id)


async def _move(
    session: AsyncSession, survivor_id: int, merged_id: int, kind: str
) -> dict[str, Any]:
    """Re-point everything of ``merged_id`` to ``survivor_id``; what moved, counted."""
    theirs = select(Phone.e164).where(Phone.customer_id == survivor_id)
    phones = await session.scalar(
        select(func.count()).select_from(Phone).where(Phone.customer_id == merged_id)
    )
    phones_moved = await _rows(
        session,
        update(Phone)
        .where(Phone.customer_id == merged_id, Phone.e164.not_in(theirs))
        .values(customer_id=survivor_id),
    )
    by_kind = await session.execute(
        select(Interaction.kind, func.count())
        .where(Interaction.customer_id == merged_id)
        .group_by(Interaction.kind)
        .order_by(Interaction.kind)
    )
    timeline = {kind: count for kind, count in by_kind}
    await _rows(
        session,
        update(Interaction)
        .where(Interaction.customer_id == merged_id)
        .values(customer_id=survivor_id),
    )
    scores = await _rows(
        session,
        update(CallScore).where(CallScore.customer_id == merged_id).values(customer_id=survivor_id),
    )
    contacts = 0
    if kind == "company":
        contacts = await _rows(
            session,
            update(Customer).where(Customer.company_id == merged_id).values(company_id=survivor_id),
        )
    await _rows(  # what the CRM has not heard yet is told of the survivor, in the same order
        session,
        update(OutboxRow)
        .where(OutboxRow.customer_id == merged_id, OutboxRow.state != "delivered")
        .values(customer_id=survivor_id),
    )
    earlier = await _rows(
        session,
        update(CustomerMerge)
        .where(CustomerMerge.survivor_id == merged_id)
        .values(survivor_id=survivor_id),
    )
    return {
        "phones": phones_moved,
        "phones_already_there": (phones or 0) - phones_moved,
        "interactions": timeline,
        "call_scores": scores,
        "contacts": contacts,
        "earlier_merges": earlier,
    }


async def _rows(session: AsyncSession, statement: Executable) -> int:
    """Run a bulk UPDATE (no ORM objects are loaded, none to synchronise); rows it changed."""
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return cast("CursorResult[Any]", result).rowcount


def _outbox_data(
    result: MergeResult, survivor_external_id: str | None, source: str, by: str
) -> dict[str, Any]:
    return {
        "merge_id": result.merge_id,
        "at": result.at.isoformat(),
        "source": source,
        "by": by,
        "survivor": {"id": result.survivor_id, "external_id": survivor_external_id},
        "merged": {
            "id": result.merged_id,
            "external_id": result.merged_external_id,
            "name": result.merged_name,
        },
        "moved": result.moved,
    }
