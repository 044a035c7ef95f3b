"""The store's figures for the wallboard, on SQLite and PostgreSQL: callbacks per queue, CSAT,
first-call resolution and supervisors' rating per agent."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync import ratings
from crm_sync.models import CallScore, Customer, Interaction
from crm_sync.work_figures import AgentWork, WorkFigures
from cti.board import Board
from cti.events import MemberUpdated
from cti.settings import BoardRules
from cti_app.stack import refresh_work

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
    todo = await figures.followups(DAY)
    assert (todo.queues, todo.agents) == ({"support": (2, 0)}, {"alice": (1, 0)})
    work = await figures.agents(DAY, DAY + timedelta(hours=20))
    assert work["alice"] == AgentWork(fcr=0.5, csat=pytest.approx(3.5))
    assert work["bob"] == AgentWork(fcr=1.0, csat=None)


async def test_supervisor_ratings_mean_over_30_days(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = DAY + timedelta(hours=20)
    for days_ago, score_, note in [(31, 1, "too old"), (29, 5, ""), (0, 2, "<b>rude</b>\r\n")]:
        at = now - timedelta(days=days_ago)
        await ratings.record(sessions, at=at, agent="carol", rater="sue", score=score_, note=note)
    work = await WorkFigures(engine).agents(DAY, now)
    assert work["carol"] == AgentWork(fcr=None, csat=None, rating=pytest.approx(3.5))
    listed = await ratings.recent(sessions, "carol")
    # a note is stored by crm_sync.text's rule (line breaks around it trimmed), its markup as
    # written (escaped on display)
    assert [(r.score, r.note) for r in listed] == [(2, "<b>rude</b>"), (5, ""), (1, "too old")]
    assert listed[0].at == now and listed[0].rater == "sue"
    for bad in (0, 6):
        with pytest.raises(ValueError):
            await ratings.record(sessions, at=now, agent="carol", rater="sue", score=bad, note="")


async def test_the_refresher_takes_a_rating_in_when_woken(engine: AsyncEngine) -> None:
    """``cti_app.stack.refresh_work`` reads the store every 30 s, and at once when woken."""
    board = Board(BoardRules())
    now = DAY + timedelta(hours=20)
    board.observe(MemberUpdated("p", time.time(), "support", "carol", "carol", "PJSIP/1003",
                                1, False, "", False, 0.0))  # fmt: skip
    wake = asyncio.Event()
    figures = WorkFigures(engine)
    refresher = asyncio.create_task(refresh_work(board, figures, wake, lambda: now, every=3600))
    try:
        await asyncio.sleep(0.3)  # the first read: nothing rated yet
        [row] = board.snapshot(time.time())["agents"]
        assert row["supervisor_rating"] is None
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        await ratings.record(sessions, at=now, agent="carol", rater="sue", score=4, note="")
        wake.set()
        for _ in range(50):
            [row] = board.snapshot(time.time())["agents"]
            if row["supervisor_rating"] is not None:
                break
            await asyncio.sleep(0.05)
        assert row["supervisor_rating"] == 4.0
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
