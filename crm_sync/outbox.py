"""The transactional outbox: what the external CRM must hear, stored with the change itself.

A writer calls :func:`enqueue` inside the transaction that makes the change, so the row
exists exactly when the change does: a crash before COMMIT loses both, after COMMIT keeps
both. The relay (crm_sync.relay) delivers rows in id order per customer and marks them.
The row's ``key`` is the idempotency key the receiver sees; it is derived from the change's
own key, so a retried write adds no second row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.models import Customer, OutboxRow

_TABLE = cast(Table, OutboxRow.__table__)
WINDOWS = 4  # windows of due rows one claim looks through for customers' heads
TOPICS = (
    "outcome.saved",  # an agent's disposition and notes for a call (notes travel with it)
    "note.added",  # a note an agent wrote on a customer without a call
    "followup.created",
    "followup.closed",
    "followup.rescheduled",  # an agent put a follow-up off to a new due time
    "call.ended",  # a finished call of a known customer
    "call.placed",  # a call the center placed to a customer (a callback)
    "customer.created",  # a customer first known here (an agent's new caller)
    "customer.merged",  # two customers found to be one, merged here
    "contact.corrected",  # an agent corrected how to reach a customer (crm_sync.corrections)
)


def enqueue(
    session: AsyncSession,
    *,
    topic: str,
    key: str,
    customer_id: int | None,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """Add one row to the outbox in ``session``'s transaction (the caller commits).
    ``key`` must be unique per change; ``data`` is JSON-ready (str, numbers, lists, dicts)."""
    if topic not in TOPICS:
        raise ValueError(f"outbox topic {topic!r} is not one of {', '.join(TOPICS)}")
    session.add(
        OutboxRow(
            key=key[:160],
            topic=topic,
            customer_id=customer_id,
            payload=data,
            created_at=now,
            state="pending",
            attempts=0,
            next_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row taken for one delivery attempt (``attempt`` counts from 1)."""

    id: int
    key: str
    topic: str
    attempt: int
    envelope: dict[str, Any]  # the JSON body the receiver gets


@dataclass(frozen=True, slots=True)
class Counts:
    pending: int
    delivered: int
    dead: int
    oldest_pending: datetime | None


class Outbox:
    """The relay's and the admin's side of the outbox table.

    Claiming leases a row: ``next_at`` moves to the lease's end, so neither this relay nor
    another instance takes it again until then. A relay killed mid-delivery leaves the row
    pending; it is delivered again once the lease ends, under the same idempotency key.
    Per customer, only the oldest pending row is ever claimable, so a customer's changes
    reach the receiver in the order they were made.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def claim(self, now: datetime, limit: int, lease: float) -> list[Claimed]:
        """Lease up to ``limit`` due rows, each the oldest pending row of its customer."""
        async with self.sessions() as session, session.begin():
            ids = await _heads(session, now, limit)
            if not ids:
                return []
            taken = await session.execute(
                update(_TABLE)
                .where(_TABLE.c.id.in_(ids), _TABLE.c.state == "pending", _TABLE.c.next_at <= now)
                .values(next_at=now + timedelta(seconds=lease), attempts=_TABLE.c.attempts + 1)
                .returning(
                    _TABLE.c.id,
                    _TABLE.c.key,
                    _TABLE.c.topic,
                    _TABLE.c.attempts,
                    _TABLE.c.customer_id,
                    _TABLE.c.payload,
                    _TABLE.c.created_at,
                )
            )
            rows = sorted(taken.all(), key=lambda r: r.id)
            external = await _external_ids(session, {r.customer_id for r in rows})
        return [
            Claimed(
                r.id,
                r.key,
                r.topic,
                r.attempts,
                {
                    "id": r.key,
                    "topic": r.topic,
                    "sequence": r.id,
                    "occurred_at": _utc(r.created_at).isoformat(),
                    "customer": None
                    if r.customer_id is None
                    else {"id": r.customer_id, "external_id": external.get(r.customer_id)},
                    "data": r.payload,
                },
            )
            for r in rows
        ]

    async def delivered(self, ids: Sequence[int], now: datetime) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(_TABLE)
                .where(_TABLE.c.id.in_(ids))
                .values(state="delivered", delivered_at=now, last_error=None)
            )

    async def failed(self, row_id: int, error: str, retry_at: datetime | None) -> None:
        """Record a failed attempt: try again at ``retry_at``, or (None) give the row up."""
        values: dict[str, Any] = {"last_error": error[:300]}
        values.update(state="dead") if retry_at is None else values.update(next_at=retry_at)
        async with self.sessions() as session, session.begin():
            await session.execute(update(_TABLE).where(_TABLE.c.id == row_id).values(values))

    async def release(self, ids: Sequence[int], now: datetime) -> None:
        """Give back leases of rows whose delivery was stopped (the relay is shutting down):
        due again at once, the attempt not counted."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(_TABLE)
                .where(_TABLE.c.id.in_(ids), _TABLE.c.state == "pending")
                .values(next_at=now, attempts=_TABLE.c.attempts - 1)
            )

    async def counts(self) -> Counts:
        async with self.sessions() as session:
            grouped = select(_TABLE.c.state, func.count()).group_by(_TABLE.c.state)
            by_state: dict[str, int] = dict((await session.execute(grouped)).all())
            oldest = await session.scalar(
                select(func.min(_TABLE.c.created_at)).where(_TABLE.c.state == "pending")
            )
        return Counts(
            by_state.get("pending", 0),
            by_state.get("delivered", 0),
            by_state.get("dead", 0),
            None if oldest is None else _utc(oldest),
        )

    async def rows(self, state: str, limit: int) -> list[OutboxRow]:
        """The newest rows in ``state`` (for the admin's listing)."""
        async with self.sessions() as session:
            found = await session.scalars(
                select(OutboxRow)
                .where(OutboxRow.state == state)
                .order_by(OutboxRow.id.desc())
                .limit(limit)
            )
            return list(found)

    async def retry(self, ids: Sequence[int] | None, now: datetime) -> int:
        """Send dead rows again (``ids``, or every dead row for None), from a fresh count of
        attempts. Returns how many were revived."""
        where = [_TABLE.c.state == "dead"]
        if ids is not None:
            where.append(_TABLE.c.id.in_(ids))
        async with self.sessions() as session, session.begin():
            done = await session.execute(
                update(_TABLE).where(*where).values(state="pending", attempts=0, next_at=now)
            )
        return int(done.rowcount)  # type: ignore[attr-defined]


async def _heads(session: AsyncSession, now: datetime, limit: int) -> list[int]:
    """Due rows that are their customer's oldest pending row, oldest first.

    Two index range scans per window of pending rows, never a join over the whole backlog:
    the due rows in id order (``ix_outbox_due``), then, for their customers, each one's
    oldest pending id (``ix_outbox_customer``). A window of rows all held up behind one
    customer's head moves on to the next window, a few times at most per claim."""
    heads: list[int] = []
    after = 0
    for _window in range(WINDOWS):
        due = (
            await session.execute(
                select(_TABLE.c.id, _TABLE.c.customer_id)
                .where(_TABLE.c.state == "pending", _TABLE.c.id > after, _TABLE.c.next_at <= now)
                .order_by(_TABLE.c.id)
                .limit(limit * 4)
            )
        ).all()
        if not due:
            break
        after = due[-1].id
        customers = {r.customer_id for r in due if r.customer_id is not None}
        oldest: dict[int, int] = {}
        if customers:
            found = await session.execute(
                select(_TABLE.c.customer_id, func.min(_TABLE.c.id))
                .where(_TABLE.c.customer_id.in_(customers), _TABLE.c.state == "pending")
                .group_by(_TABLE.c.customer_id)
            )
            oldest = {customer: first for customer, first in found.all()}
        heads.extend(
            r.id for r in due if r.customer_id is None or oldest.get(r.customer_id) == r.id
        )
        if len(heads) >= limit or len(due) < limit * 4:
            break
    return heads[:limit]


async def _external_ids(session: AsyncSession, ids: set[int | None]) -> dict[int, str | None]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    found = await session.execute(
        select(Customer.id, Customer.external_id).where(Customer.id.in_(wanted))
    )
    return {i: e for i, e in found.all()}


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
