"""The store's figures for the wallboard, on SQLite and PostgreSQL: callbacks per queue, CSAT
and first-call resolution per agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.models import CallScore, Customer, Interaction
from crm_sync.work_figures import AgentWork, WorkFigures

DAY = datetime(2026, 12, 3, tzinfo=UTC)


def outcome(customer: int, agent: str, code: str, hours: float, call: str) -> Interaction:
    return Interaction(
        customer_id=customer, kind="outcome", occurred_at=DAY + timedelta(hours=hours),
        title=code, agent=agent, call_id=call,
    )  # fmt: skip


def followup(customer: int, owner: str, status: str) -> Interaction:
    return Interaction(
        customer_id=customer, kind="followup", occurred_at=DAY, title="call back",
        status=status, owner=owner,
    )  # fmt: skip


def score(call: str, question: str, value: int, hours: float) -> CallScore:
    return CallScore(
        pbx="p", call_id=call, agent="alice", question=question, score=value,
        created_at=DAY + timedelta(hours=hours),
    )  # fmt: skip


async def test_callbacks_csat_and_fcr(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine)
    async with sessions() as session, session.begin():
        people = [
            Customer(kind="person", name=f"c{n}", created_at=DAY, updated_at=DAY) for n in range(3)
        ]
        session.add_all(people)
        await session.flush()
        a, b, c = (p.id for p in people)
        session.add_all(
            [
                # alice: a's problem came back 3 h later (same code, another call): not resolved
                outcome(a, "alice", "billing", 1, "call-1"),
                outcome(a, "bob", "billing", 4, "call-2"),
                # alice: b called again but about something else: resolved
                outcome(b, "alice", "billing", 2, "call-3"),
                outcome(b, "bob", "delivery", 3, "call-4"),
                # yesterday's outcome is not today's work
                outcome(c, "alice", "billing", -5, "call-0"),
                followup(a, "queue:support", "open"),
                followup(b, "queue:support", "open"),
                followup(c, "queue:support", "closed"),
                followup(c, "alice", "open"),  # an agent's own follow-up is no queue callback
                score("call-1", "attitude", 5, 1),
                score("call-3", "attitude", 2, 2),
                score("call-3", "solved", 1, 2),  # not the CSAT question
            ]
        )
    figures = WorkFigures(engine)
    assert await figures.callbacks() == {"support": 2}
    work = await figures.agents(DAY)
    assert work["alice"] == AgentWork(fcr=0.5, csat=pytest.approx(3.5))
    assert work["bob"] == AgentWork(fcr=1.0, csat=None)
