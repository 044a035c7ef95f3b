"""Segments in the store: recompute the customers new data made stale, and find those whom
time alone moved.

Theory of operation
-------------------
Whoever stores an order or a survey answer marks the customer stale in the same transaction
(:func:`crm_sync.customers.mark_segments_stale`); a new customer is stale from the start.
:func:`recompute_stale` takes the stale customers a batch at a time. Each batch is one
transaction that first claims the batch (PostgreSQL locks those rows and skips rows locked
by someone else; SQLite takes its write lock), then reads the batch's orders and answers with
one query each, computes (:func:`crm_sync.segments.segment`) and writes every result, with
the mark cleared, in one executemany. A writer that marks a claimed customer while the batch
runs waits for it, then marks again; a customer a writer is changing (its row locked by the
mark, or by the new order's foreign key) is skipped until the next batch. So a mark is never
lost, and several service instances share the work instead of repeating it.

Time alone moves segments too (an active customer lapses with no new data), so
:func:`mark_moved` reads every customer that is not stale, in id order, a batch at a time,
computes what the rules say now and marks those whose stored segments differ;
:func:`recompute_stale` then rewrites them. It writes only marks, never results, so it
cannot put back an older result over one a concurrent recompute just wrote. The reasons
speak in coarse units ("3 months ago"), so a daily pass marks few customers.

Customer rows keep their ``updated_at`` (the CRM's version, crm_sync.conflicts): a recompute
writes only the segment columns and ``segmented_at``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, select, text, true, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.customers import mark_segments_stale
from crm_sync.models import Base, CallScore, Customer, Interaction
from crm_sync.segments import Answer, Facts, Order, Rules, Segment, segment

log = logging.getLogger(__name__)
BATCH = 500  # customers per transaction: within every driver's bind-parameter limit
BACKGROUND_BATCH = 200  # in the service: a batch's computing holds the event loop ~3 ms
STALE_EVERY = 5.0  # seconds between two looks for stale customers in the service
FULL_EVERY = 24 * 3600.0  # seconds between two passes over every customer

_CUSTOMERS = Base.metadata.tables[Customer.__tablename__]


@dataclass(frozen=True)
class PassReport:
    """What :func:`recompute_all` did."""

    checked: int  # customers compared with what the rules say now
    moved: int  # of those, the ones whose segments had moved (marked stale)
    recomputed: int  # stale customers computed and written (new data, moved, new customers)
    seconds: float


async def recompute_stale(
    sessions: async_sessionmaker[AsyncSession],
    rules: Rules,
    *,
    now: datetime,
    batch: int = BATCH,
) -> int:
    """Compute and store the segments of the stale customers, a batch per transaction, in
    one sweep up the ids; how many were computed. Those marked behind the sweep while it
    runs (or held by a writer) are left for the next call. Database errors propagate (the
    batches committed stay, the others keep their marks)."""
    now = _utc(now)
    done = after = 0
    while True:
        async with sessions() as session, session.begin():
            claimed = await _claim(session, batch, after)
            if claimed:
                results = _compute(await _facts(session, claimed, rules, now), rules, now)
                await _store(session, results, now)
        done += len(claimed)
        if len(claimed) < batch:
            return done
        after = claimed[-1].id


async def mark_moved(
    sessions: async_sessionmaker[AsyncSession],
    rules: Rules,
    *,
    now: datetime,
    batch: int = BATCH,
) -> tuple[int, int]:
    """Compare the stored segments of every customer not already stale with what ``rules``
    say at ``now``; mark stale those that differ. Returns (checked, marked)."""
    now = _utc(now)
    checked = marked = 0
    after = 0
    c = _CUSTOMERS.c
    columns = (c.id, c.created_at, c.currency, c.tier, c.lifecycle, c.quadrant, c.segment_why)
    while True:
        # the stale ones are skipped here, not in SQL: a filter on the flag may lead the
        # planner off the primary key (its statistics can say "all stale" after a big
        # import), which makes every batch a scan of the table
        query = select(*columns, c.segment_stale).where(c.id > after).order_by(c.id).limit(batch)
        async with sessions() as session, session.begin():
            read = (await session.execute(query)).all()
            if not read:
                return checked, marked
            rows = [row for row in read if not row.segment_stale]
            results = _compute(await _facts(session, rows, rules, now), rules, now)
            stored = {
                row.id: (row.tier, row.lifecycle, row.quadrant, row.segment_why) for row in rows
            }
            moved = [
                customer_id
                for customer_id, s in results.items()
                if stored[customer_id] != (s.tier, s.lifecycle, s.quadrant, s.why_json())
            ]
            await mark_segments_stale(session, moved)
        checked += len(rows)
        marked += len(moved)
        after = read[-1].id


async def recompute_all(
    sessions: async_sessionmaker[AsyncSession],
    rules: Rules,
    *,
    now: datetime,
    batch: int = BATCH,
) -> PassReport:
    """A full pass: :func:`mark_moved`, then :func:`recompute_stale`."""
    started = time.perf_counter()
    checked, moved = await mark_moved(sessions, rules, now=now, batch=batch)
    recomputed = await recompute_stale(sessions, rules, now=now, batch=batch)
    return PassReport(checked, moved, recomputed, round(time.perf_counter() - started, 3))


async def keep_segments(
    sessions: async_sessionmaker[AsyncSession],
    rules: Rules,
    *,
    clock: Callable[[], datetime],
    every: float = STALE_EVERY,
    full_every: float = FULL_EVERY,
    batch: int = BACKGROUND_BATCH,
) -> None:
    """The service's task, until cancelled: a full pass at start and every ``full_every``
    seconds, the stale customers every ``every`` seconds. A store that does not answer is
    tried again at the next turn; the marks wait meanwhile."""
    loop = asyncio.get_running_loop()
    full_at = loop.time()
    while True:
        try:
            if loop.time() >= full_at:
                report = await recompute_all(sessions, rules, now=clock(), batch=batch)
                full_at = loop.time() + full_every
                log.info(
                    "segments: %d customers checked, %d moved, %d recomputed in %.1f s",
                    report.checked,
                    report.moved,
                    report.recomputed,
                    report.seconds,
                )
            else:
                await recompute_stale(sessions, rules, now=clock(), batch=batch)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("segments: not recomputed, trying again later: %s", exc)
        await asyncio.sleep(every)


async def _claim(session: AsyncSession, batch: int, after: int) -> Sequence[Any]:
    """Lock up to ``batch`` stale customers with ids above ``after`` for this transaction;
    their id, created_at and currency, by id. Must come first in the transaction: on SQLite
    it takes the database's write lock (BEGIN IMMEDIATE), so no writer commits before the
    results do; PostgreSQL locks the rows, skipping those a writer (or another instance)
    holds. (Without ``after``, a sweep over many stale customers would read all those it
    already did again at every batch.)"""
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))
    c = _CUSTOMERS.c
    pick = (
        select(c.id, c.created_at, c.currency)
        .where(c.segment_stale == true(), c.id > after)
        .order_by(c.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    return (await session.execute(pick)).all()


async def _facts(
    session: AsyncSession, customers: Sequence[Any], rules: Rules, now: datetime
) -> dict[int, Facts]:
    """The facts of these customers (rows with id, created_at, currency): one query for
    their orders, one for their recent survey answers."""
    ids = [row.id for row in customers]
    if not ids:
        return {}
    orders: dict[int, list[Order]] = {customer_id: [] for customer_id in ids}
    order_rows = select(
        Interaction.customer_id, Interaction.occurred_at, Interaction.amount, Interaction.status
    ).where(Interaction.kind == "order", _among(Interaction.customer_id, ids))
    for customer_id, at, amount, status in await session.execute(order_rows):
        if customer_id is not None and (found := orders.get(customer_id)) is not None:
            found.append(Order(_utc(at), amount, status))
    answers: dict[int, list[Answer]] = {customer_id: [] for customer_id in ids}
    since = now - timedelta(days=rules.quadrant.survey_days)
    answer_rows = select(
        CallScore.customer_id, CallScore.question, CallScore.score, CallScore.created_at
    ).where(
        _among(CallScore.customer_id, ids),
        CallScore.question.in_(rules.quadrant.questions),
        CallScore.created_at >= since,
    )
    for owner, question, score, at in await session.execute(answer_rows):
        if owner is not None and (given := answers.get(owner)) is not None:
            given.append(Answer(question, score, _utc(at)))
    return {
        row.id: Facts(
            created_at=_utc(row.created_at),
            orders=tuple(orders[row.id]),
            answers=tuple(answers[row.id]),
            currency=row.currency,
        )
        for row in customers
    }


def _among(column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """``column`` is one of ``ids``: as a range when they are nearly contiguous (what a pass
    in id order mostly gives: two bind parameters where IN renders hundreds, the costliest
    part of a batch), else as IN. A range may bring rows of others: the caller skips them."""
    low, high = min(ids), max(ids)
    if high - low < 2 * len(ids):
        return column.between(low, high)  # type: ignore[no-any-return]
    return column.in_(ids)  # type: ignore[no-any-return]


def _compute(facts: dict[int, Facts], rules: Rules, now: datetime) -> dict[int, Segment]:
    return {customer_id: segment(f, now, rules) for customer_id, f in facts.items()}


async def _store(session: AsyncSession, results: dict[int, Segment], now: datetime) -> None:
    by_id = update(_CUSTOMERS).where(_CUSTOMERS.c.id == bindparam("_id"))
    await session.execute(
        by_id,
        [
            {
                "_id": customer_id,
                "tier": s.tier,
                "lifecycle": s.lifecycle,
                "quadrant": s.quadrant,
                "segment_why": s.why_json(),
                "segmented_at": now,
                "segment_stale": False,  # the mark ends with the result: one write per row
            }
            for customer_id, s in results.items()
        ],
    )


def _utc(value: datetime) -> datetime:
    """Aware UTC (SQLite gives naive UTC back)."""
    if value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
