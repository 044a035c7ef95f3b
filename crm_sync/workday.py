"""An agent's day as the store knows it: the calls they answered and the outcomes they saved.

The store holds the calls agents answered (kind ``call``, ``agent`` the one who answered;
no customer when the caller was not known) and each outcome (kind ``outcome``, same
``call_id``, ``agent`` the one who saved it). An outcome saved for a call with no call row
of this agent (a call transferred to them) is a call of their day too, at the outcome's
time; an outcome saved after midnight for yesterday's call is not.
The day's bounds come from the agent's browser: only it knows its time zone and DST.
Both reads go by ``ix_interactions_agent_time`` (agent, occurred_at).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from crm_sync.models import Customer, Interaction, OutboxRow

MAX_CALLS = 500  # of one day: far more than an agent takes, bounded all the same


@dataclass(frozen=True, slots=True)
class Outcome:
    disposition: str  # the code; the page shows its label
    notes: str | None
    saved_at: datetime


@dataclass(frozen=True, slots=True)
class DayCall:
    """One call of the agent's day; ``outcome`` None: none saved by this agent yet."""

    pbx: str | None  # None: known only from its outcome, whose row does not say
    call_id: str
    at: datetime  # UTC: the call's start, or the outcome's time when that is all there is
    customer_id: int | None  # None: an outcome that needed no customer (a wrong number)
    customer_name: str | None
    direction: str  # inbound | outbound
    talk_seconds: float | None
    outcome: Outcome | None


async def agent_day(
    sessions: async_sessionmaker[AsyncSession],
    agent: str,
    *,
    start: datetime,
    end: datetime,
) -> list[DayCall]:
    """The agent's calls from ``start`` to before ``end`` (aware datetimes), newest first."""
    start, end = _utc(start), _utc(end)
    async with sessions() as session:
        calls = (
            await session.execute(
                select(Interaction, Customer.name)
                .outerjoin(Customer, Customer.id == Interaction.customer_id)  # unknown callers
                .where(
                    Interaction.agent == agent,
                    Interaction.occurred_at >= start,
                    Interaction.occurred_at < end,
                    Interaction.kind == "call",
                    Interaction.call_id.is_not(None),
                )
                .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
                .limit(MAX_CALLS)
            )
        ).all()
        call_ids = [row.call_id for row, _ in calls if row.call_id]
        outcomes = await _outcomes(session, agent, call_ids, start, end)
        talk = await _talk_seconds(session, [row.external_id for row, _ in calls])
        elsewhere = await _own_calls(session, agent, [i for i in outcomes if i not in call_ids])
    day: dict[str, DayCall] = {}
    for row, name in calls:
        call_id = row.call_id or ""
        if call_id in day:
            continue  # one call on two pbxes' rows: the newest
        pbx = _pbx_of(row.external_id)
        found = outcomes.pop(call_id, None)
        who: tuple[int | None, str | None] = (row.customer_id, name)
        if row.customer_id is None and found is not None:
            who = found[1:]  # an unknown caller the outcome named (or made)
        day[call_id] = DayCall(
            pbx=pbx,
            call_id=call_id,
            at=_utc(row.occurred_at),
            customer_id=who[0],
            customer_name=who[1],
            # record_call writes the calls the pop saw (queue calls, inbound); callbacks are
            # written first by the follow-ups, outbound, and keep that row
            direction=row.direction or "inbound",
            talk_seconds=talk.get(row.external_id or ""),
            outcome=found[0] if found else None,
        )
    for call_id, (outcome, customer_id, customer_name) in outcomes.items():
        if call_id not in elsewhere and start <= outcome.saved_at < end:
            day[call_id] = DayCall(
                None,
                call_id,
                outcome.saved_at,
                customer_id,
                customer_name,
                "inbound",
                None,
                outcome,
            )
    return sorted(day.values(), key=lambda c: c.at, reverse=True)[:MAX_CALLS]


@dataclass(frozen=True, slots=True)
class OwedCall:
    """A call an agent took that ended at ``ended_at`` and has no outcome yet."""

    pbx: str
    call_id: str
    agent: str
    customer_id: int | None
    started_at: datetime
    ended_at: datetime


async def owed_calls(
    sessions: async_sessionmaker[AsyncSession], *, since: datetime, limit: int = MAX_CALLS
) -> list[OwedCall]:
    """Calls that ended at ``since`` or later whose agent has saved no outcome: the wrap-ups
    a restarted service gives back to the agents' pages (oldest first, at most ``limit``)."""
    call = aliased(Interaction)
    saved = (
        select(Interaction.id)
        .where(
            Interaction.kind == "outcome",
            Interaction.call_id == call.call_id,
            Interaction.agent == call.agent,
        )
        .exists()
    )
    async with sessions() as session:
        rows = await session.scalars(
            select(call)
            .where(
                call.kind == "call",
                call.closed_at >= _utc(since),
                call.agent.is_not(None),
                call.call_id.is_not(None),
                ~saved,
            )
            .order_by(call.closed_at)
            .limit(limit)
        )
        return [
            OwedCall(
                pbx,
                row.call_id or "",
                row.agent or "",
                row.customer_id,
                _utc(row.occurred_at),
                _utc(row.closed_at or row.occurred_at),
            )
            for row in rows
            if (pbx := _pbx_of(row.external_id)) is not None
        ]


async def _outcomes(
    session: AsyncSession, agent: str, call_ids: list[str], start: datetime, end: datetime
) -> dict[str, tuple[Outcome, int | None, str | None]]:
    """The agent's latest outcome of each of these calls, and of every call they saved one
    for in the day: call id -> (outcome, customer id, customer name)."""
    in_day = (Interaction.occurred_at >= start) & (Interaction.occurred_at < end)
    rows = await session.execute(
        select(Interaction, Customer.name)
        .outerjoin(Customer, Customer.id == Interaction.customer_id)
        .where(
            Interaction.agent == agent,
            Interaction.kind == "outcome",
            Interaction.call_id.is_not(None),
            or_(in_day, Interaction.call_id.in_(call_ids)) if call_ids else in_day,
        )
        .order_by(Interaction.occurred_at, Interaction.id)
    )
    found: dict[str, tuple[Outcome, int | None, str | None]] = {}
    for row, name in rows:
        outcome = Outcome(row.title, row.body, _utc(row.occurred_at))
        found[row.call_id or ""] = (outcome, row.customer_id, name)  # a later one wins
    return found


async def _own_calls(session: AsyncSession, agent: str, call_ids: list[str]) -> set[str]:
    """Which of these calls the agent has a call row of (on another day: an outcome saved
    after midnight finishes yesterday's call, it is not a call of today)."""
    if not call_ids:
        return set()
    rows = await session.scalars(
        select(Interaction.call_id).where(
            Interaction.call_id.in_(call_ids),
            Interaction.kind == "call",
            Interaction.agent == agent,
        )
    )
    return {c for c in rows if c}


async def _talk_seconds(session: AsyncSession, keys: list[str | None]) -> dict[str, float]:
    """How long each call talked, from its record as the CRM was told it (``call.ended``,
    keyed by the call row's ``external_id``): the timeline row itself has no duration."""
    wanted = [k for k in keys if k]
    if not wanted:
        return {}
    rows = await session.execute(
        select(OutboxRow.key, OutboxRow.payload).where(
            OutboxRow.key.in_(wanted), OutboxRow.topic == "call.ended"
        )
    )
    talk: dict[str, float] = {}
    for key, payload in rows:
        seconds = _talk(payload)
        if seconds is not None:
            talk[key] = seconds
    return talk


def _talk(payload: Any) -> float | None:
    call = payload.get("call") if isinstance(payload, dict) else None
    seconds = call.get("talk_seconds") if isinstance(call, dict) else None
    return float(seconds) if isinstance(seconds, int | float) else None


def _pbx_of(external_id: str | None) -> str | None:
    """``call:<pbx>:<call id>``, the key record_call and the callbacks give a call row."""
    parts = (external_id or "").split(":", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "call" and parts[1] else None


def _utc(value: datetime) -> datetime:
    """SQLite keeps no time zone: what it holds is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
