"""Supervisors' ratings of agents (1..5, with a note): added, listed, and averaged for the
wallboard's score over the last ``WINDOW`` (ratings come seldom; one day would hold few).
The note is free text by crm_sync.text's rule, whichever handler passes it on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.models import AgentRating
from crm_sync.text import lines

WINDOW = timedelta(days=30)
SCORES = range(1, 6)
MAX_NOTE = 2000
MAX_LIMIT = 500


async def record(
    sessions: async_sessionmaker[AsyncSession],
    *,
    at: datetime,
    agent: str,
    rater: str,
    score: int,
    note: str,
) -> int:
    """Commit one rating; its id. Raises ValueError for a score out of range,
    crm_sync.text.FieldError (``note``) for a note too long or with characters refused."""
    if at.tzinfo is None:
        raise ValueError("a rating time needs its time zone")
    if score not in SCORES:
        raise ValueError("score 1..5")
    text = lines(note, "note", MAX_NOTE) or ""
    rating = AgentRating(
        at=at.astimezone(UTC), agent=agent[:64], rater=rater[:64], score=score, note=text
    )
    async with sessions() as session, session.begin():
        session.add(rating)
        await session.flush()
        return rating.id


async def recent(
    sessions: async_sessionmaker[AsyncSession], agent: str, limit: int = 50
) -> list[AgentRating]:
    """The agent's last ``limit`` ratings (at most MAX_LIMIT), newest first, ``at`` in UTC."""
    query = (
        select(AgentRating)
        .where(AgentRating.agent == agent)
        .order_by(AgentRating.at.desc(), AgentRating.id.desc())
        .limit(max(1, min(limit, MAX_LIMIT)))
    )
    async with sessions() as session:
        ratings = list((await session.scalars(query)).all())
    for rating in ratings:
        if rating.at.tzinfo is None:  # SQLite keeps no zone: what it holds is UTC
            rating.at = rating.at.replace(tzinfo=UTC)
    return ratings


async def means(sessions: async_sessionmaker[AsyncSession], now: datetime) -> dict[str, float]:
    """Mean rating per agent over the ``WINDOW`` before ``now`` (aware)."""
    query = (
        select(AgentRating.agent, func.avg(AgentRating.score))
        .where(AgentRating.at >= (now - WINDOW).astimezone(UTC))
        .group_by(AgentRating.agent)
    )
    async with sessions() as session:
        return {str(a): float(v) for a, v in (await session.execute(query)).all()}
