"""What the store knows of the center's work, for the wallboard: follow-ups to do per queue
(callbacks) and per agent, and per agent today the survey score and first-call resolution,
and the supervisors' mean rating over the last 30 days (crm_sync/ratings.py).

Four grouped queries, run by the wallboard's refresher every half minute (never per event):

* follow-ups: open or being dialled, per owner (``queue:<name>`` or an agent), and how many
  are overdue (crm_sync/followups.py);
* CSAT: mean of the survey's ``attitude`` scores (1..5) of calls the agent handled;
* rating: mean of the supervisors' ratings (1..5) of the agent;
* FCR: of the agent's outcomes today, the share whose customer has no later outcome with the
  same disposition within 24 hours on another call. An outcome younger than 24 hours counts as
  resolved so far (the figure is provisional until the day is a day old).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync import ratings
from crm_sync.followups import WorkCounts, work_counts
from crm_sync.models import CallScore, Interaction

CSAT_QUESTION = "attitude"
REPEAT_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class AgentWork:
    fcr: float | None  # 0..1
    csat: float | None  # 1..5
    rating: float | None = None  # 1..5


class WorkFigures:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def followups(self, now: datetime) -> WorkCounts:
        """Follow-ups to do (and overdue at ``now``) per queue and per agent."""
        return await work_counts(self._sessions, now=now)

    async def agents(self, since: datetime, now: datetime) -> dict[str, AgentWork]:
        """Per agent, from ``since`` (aware; the start of the center's day) to ``now``."""
        outcomes = select(
            Interaction.agent,
            Interaction.customer_id,
            Interaction.title,
            Interaction.occurred_at,
            Interaction.call_id,
        ).where(
            Interaction.kind == "outcome",
            Interaction.occurred_at >= since,
            Interaction.customer_id.is_not(None),  # a wrong number resolves nobody's matter
        )
        csat = (
            select(CallScore.agent, func.avg(CallScore.score))
            .where(
                CallScore.question == CSAT_QUESTION,
                CallScore.agent.is_not(None),
                CallScore.created_at >= since,
            )
            .group_by(CallScore.agent)
        )
        async with self._sessions() as session:
            rows = (await session.execute(outcomes)).all()
            scores = {str(a): float(v) for a, v in (await session.execute(csat)).all()}
        rated = await ratings.means(self._sessions, now)
        resolution = _resolution([(a, c, t, at, call) for a, c, t, at, call in rows if c])
        return {
            agent: AgentWork(resolution.get(agent), scores.get(agent), rated.get(agent))
            for agent in resolution.keys() | scores.keys() | rated.keys()
        }


Outcome = tuple[str | None, int, str, datetime, str | None]  # agent, customer, code, at, call


def _resolution(outcomes: list[Outcome]) -> dict[str, float]:
    """Share per agent of outcomes not followed within 24 h by another call's outcome of the
    same customer and disposition (plain Python: date arithmetic differs across databases)."""
    later: dict[tuple[int, str], list[tuple[datetime, str | None]]] = {}
    for _, customer, code, at, call in outcomes:
        later.setdefault((customer, code), []).append((at, call))
    done: dict[str, list[bool]] = {}
    for agent, customer, code, at, call in outcomes:
        if agent is None:
            continue
        again = any(
            at < then <= at + REPEAT_WINDOW and other != call
            for then, other in later[(customer, code)]
        )
        done.setdefault(agent, []).append(not again)
    return {agent: sum(marks) / len(marks) for agent, marks in done.items()}
