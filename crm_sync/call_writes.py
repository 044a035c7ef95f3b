"""Finished calls written to the timeline many to a transaction.

Each call alone costs a commit (an fsync on SQLite); at 50 calls a second, beside the agents'
outcomes and logins, those commits are what the store can do and no more, and the writes that
wait for a connection time out and are tried again, which is more load still. Written in
batches (one writer, :class:`screenpop.call_writer.CallWriter`, hands over everything that ended
while the last batch committed), a burst of calls costs a few commits.

A call already in the timeline (a replay, a restart) makes the batch fail on its unique key;
the batch is then written one call at a time, so the others still go in and that one is
reported as known (False), as :func:`record_call` reports one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.models import Interaction
from crm_sync.outbox import enqueue
from cti.events import CallRecord

Ended = tuple[int | None, CallRecord]  # (the customer, or None for a caller nobody knows; the call)


def call_row(customer_id: int | None, record: CallRecord) -> Interaction:
    """The timeline row of a finished call (kind ``call``, keyed ``call:<pbx>:<call id>``)."""
    when = datetime.fromtimestamp(record.started_at or record.ended_at or 0, UTC)
    who = ", ".join(record.handled_by) or "nobody"
    queues = ", ".join(record.queues) or "no queue"
    title = f"Call {record.outcome or 'unknown'} ({queues}; {who})"
    return Interaction(
        customer_id=customer_id,
        kind="call",
        occurred_at=when,
        title=title[:200],
        body=transfers_text(record),
        call_id=record.call_id,
        agent=record.answered_by,
        external_id=f"call:{record.pbx}:{record.call_id}",
        # when the agent's wrap-up began: a restarted service gives back the wrap-ups of
        # calls that ended within the longest wrap-up (crm_sync.workday.owed_calls)
        closed_at=datetime.fromtimestamp(record.ended_at, UTC) if record.ended_at else None,
    )


def transfers_text(record: CallRecord) -> str | None:
    """The call's hand-overs, one line each, for people reading the timeline: "Blind
    transfer from Dave to sales, 0:04 into the call" (the CRM hears them whole, with their
    times, in ``call.ended``). None without any."""
    lines = []
    for transfer in record.transfers:
        who = f" from {transfer.from_agent}" if transfer.from_agent else ""
        line = f"{transfer.type.capitalize()} transfer{who} to {transfer.to or 'an unknown target'}"
        if transfer.at is not None and record.started_at is not None:
            seconds = max(0, round(transfer.at - record.started_at))
            line += f", {seconds // 60}:{seconds % 60:02d} into the call"
        lines.append(line)
    return "\n".join(lines) or None


async def record_call(
    sessions: async_sessionmaker[AsyncSession],
    customer_id: int | None,
    record: CallRecord,
    *,
    now: datetime,
) -> bool:
    """Add one finished call to the customer's timeline; False if it was already there.

    ``customer_id`` None: a caller the store could not name (unknown, several matches, the
    lookup failed). The row is kept all the same, so a restarted service still knows who
    took the call and its outcome can be recorded; the CRM is told nothing (it has no
    customer to attach it to: the outcome, which may create one, tells it)."""
    (written,) = await record_calls(sessions, [(customer_id, record)], now=now)
    return written


async def record_calls(
    sessions: async_sessionmaker[AsyncSession], calls: Sequence[Ended], *, now: datetime
) -> list[bool]:
    """Add finished calls to their customers' timelines in one transaction; for each, False
    if it was there already. ``now`` stamps the outbox rows (``call.ended``, for known
    customers only: the CRM has nobody to attach an unknown caller's call to). Raises what
    the database raises when it cannot be reached: nothing of the batch is then written."""
    if not calls:
        return []
    try:
        async with sessions() as session, session.begin():
            await _add(session, calls, now)
        return [True] * len(calls)
    except IntegrityError:
        if len(calls) == 1:
            return [False]
    return [(await record_calls(sessions, [call], now=now))[0] for call in calls]


async def _add(session: AsyncSession, calls: Sequence[Ended], now: datetime) -> None:
    rows = [(call_row(customer_id, record), record) for customer_id, record in calls]
    session.add_all([row for row, _ in rows])
    await session.flush()
    for row, record in rows:
        if row.customer_id is not None:
            enqueue(
                session,
                topic="call.ended",
                key=row.external_id or f"call:{row.id}",
                customer_id=row.customer_id,
                data={"interaction_id": row.id, "call": record.to_json()},
                now=now,
            )
