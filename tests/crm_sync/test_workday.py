"""An agent's day from the store (SQLite and PostgreSQL), written by the real writers: calls
by record_call and the callbacks, outcomes by save_outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.call_writes import record_call
from crm_sync.models import Customer, Interaction
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore
from crm_sync.timeline import OutcomeIn, save_outcome
from crm_sync.workday import agent_day, owed_calls
from cti.events import CallRecord

NOW = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
ZONE = timezone(timedelta(hours=2))  # the agent's browser: its day is 22:00 to 22:00 UTC
DAY_START = datetime(2026, 3, 29, tzinfo=ZONE)
DAY_END = DAY_START + timedelta(days=1)


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[CustomerStore]:
    store = CustomerStore(engine, PhoneNormalizer("CN"))
    async with store.sessions() as session, session.begin():
        for name in ("张伟", "<b>Bo</b>"):
            session.add(
                Customer(
                    kind="person",
                    name=name,
                    tier="regular",
                    lifecycle="active",
                    tags=[],
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    yield store
    await store.close()


def record(call_id: str, at: datetime, agent: str = "alice", talk: float = 95.0) -> CallRecord:
    start = at.timestamp()
    return CallRecord(
        call_id,
        "lab",
        "+8613800138000",
        "",
        "800",
        ("support",),
        (agent,),
        agent,
        (agent,),
        (),
        "answered",
        start,
        start + 1,
        start + 5,
        start + 5 + talk,
        4.0,
        talk,
        (),
    )


def _utc(at: datetime) -> datetime:
    """The app's clock is UTC (SQLite would keep another offset's wall time as UTC)."""
    return at.astimezone(UTC)


def outcome(key: str, call_id: str, **changes: object) -> OutcomeIn:
    fields: dict[str, object] = dict(
        key=key,
        pbx="lab",
        call_id=call_id,
        agent="alice",
        disposition="resolved",
        notes="<i>fixed</i>",
        customer_id=1,
        new_customer_name=None,
        caller_e164=None,
    )
    fields.update(changes)
    return OutcomeIn(**fields)  # type: ignore[arg-type]


async def test_the_days_calls_with_their_outcomes_newest_first(store: CustomerStore) -> None:
    s = store.sessions
    await record_call(s, 1, record("yesterday", DAY_START - timedelta(minutes=1)), now=NOW)
    await record_call(s, 1, record("morning", DAY_START + timedelta(hours=8)), now=NOW)
    await record_call(s, 2, record("noon", DAY_START + timedelta(hours=12), talk=40), now=NOW)
    await record_call(s, 1, record("bobs", DAY_START + timedelta(hours=9), "bob"), now=NOW)
    await record_call(s, 1, record("late", DAY_END, "alice"), now=NOW)  # tomorrow there
    await save_outcome(s, outcome("k-morning-1", "morning", disposition="callback"), now=NOW)
    await save_outcome(s, outcome("k-morning-2", "morning", notes=None), now=NOW)  # again

    day = await agent_day(s, "alice", start=DAY_START, end=DAY_END)

    assert [c.call_id for c in day] == ["noon", "morning"]
    noon, morning = day
    assert (noon.pbx, noon.customer_id, noon.customer_name) == ("lab", 2, "<b>Bo</b>")
    assert noon.outcome is None and noon.talk_seconds == 40.0
    assert noon.direction == "inbound"
    assert noon.at == DAY_START + timedelta(hours=12)
    assert morning.outcome is not None
    assert (morning.outcome.disposition, morning.outcome.notes) == ("resolved", None)  # latest
    assert morning.talk_seconds == 95.0


async def test_an_outcome_without_a_call_row_is_a_call_of_the_day(store: CustomerStore) -> None:
    """An unknown caller made a new customer (no call row: the caller was not known when the
    call ended), or a call transferred to the agent: its outcome is what the day shows."""
    saved_at = (DAY_START + timedelta(hours=10)).astimezone(UTC)  # the app's clock is UTC
    new = outcome("k-new-caller", "c-unknown", customer_id=None, new_customer_name="Neu")
    await save_outcome(store.sessions, new, now=saved_at)
    await save_outcome(
        store.sessions, outcome("k-old", "c-old"), now=_utc(DAY_START - timedelta(hours=1))
    )

    day = await agent_day(store.sessions, "alice", start=DAY_START, end=DAY_END)

    assert len(day) == 1
    call = day[0]
    assert (call.call_id, call.pbx, call.customer_name, call.at) == (
        "c-unknown",
        None,
        "Neu",
        saved_at,
    )
    assert call.outcome is not None and call.outcome.notes == "<i>fixed</i>"


async def test_an_outcome_saved_the_next_morning_finishes_yesterdays_call(
    store: CustomerStore,
) -> None:
    at = DAY_START + timedelta(hours=23, minutes=58)
    await record_call(store.sessions, 1, record("c1", at), now=NOW)
    await save_outcome(
        store.sessions, outcome("k-c1-late", "c1"), now=_utc(DAY_END + timedelta(hours=8))
    )

    (call,) = await agent_day(store.sessions, "alice", start=DAY_START, end=DAY_END)
    assert call.outcome is not None and call.outcome.disposition == "resolved"
    assert (
        await agent_day(store.sessions, "alice", start=DAY_END, end=DAY_END + timedelta(days=1))
        == []
    )


async def test_a_callback_is_outbound(store: CustomerStore) -> None:
    async with store.sessions() as session, session.begin():
        session.add(
            Interaction(
                customer_id=1,
                kind="call",
                direction="outbound",
                title="Callback",
                occurred_at=DAY_START + timedelta(hours=9),
                call_id="cb-1-ab12",
                agent="alice",
                external_id="call:lab:cb-1-ab12",
            )
        )
    (call,) = await agent_day(store.sessions, "alice", start=DAY_START, end=DAY_END)
    assert (call.direction, call.pbx, call.talk_seconds) == ("outbound", "lab", None)


async def test_the_query_uses_the_agent_time_index(store: CustomerStore, db_url: str) -> None:
    """On PostgreSQL the planner is asked (sequential scans off: the table is tiny here)."""
    if not db_url.startswith("postgresql"):
        sql = "EXPLAIN QUERY PLAN SELECT id FROM interactions WHERE agent = 'a' "
        sql += "AND occurred_at >= '2026-01-01' AND occurred_at < '2026-01-02'"
    else:
        sql = "EXPLAIN SELECT id FROM interactions WHERE agent = 'a' "
        sql += "AND occurred_at >= '2026-01-01' AND occurred_at < '2026-01-02'"
    async with store.sessions() as session:
        if db_url.startswith("postgresql"):
            await session.execute(text("SET enable_seqscan = off"))
        plan = " ".join(str(row) for row in await session.execute(text(sql)))
    assert "ix_interactions_agent_time" in plan


async def test_owed_calls_are_those_ended_since_without_their_agents_outcome(
    store: CustomerStore,
) -> None:
    """What a restarted service gives back as wrap-up cards (issue 21): the calls that ended
    within the window whose agent saved no outcome, known caller or not, oldest first."""
    s = store.sessions
    since = NOW - timedelta(minutes=10)
    # a call's end: its start + 1 + 4 (queue) + talk
    await record_call(s, 1, record("long-ago", since - timedelta(minutes=5)), now=NOW)
    await record_call(s, 1, record("owed", since + timedelta(minutes=1), talk=30), now=NOW)
    await record_call(
        s, None, record("unknown", since + timedelta(minutes=2), agent="bob"), now=NOW
    )
    await record_call(s, 2, record("saved", since + timedelta(minutes=3)), now=NOW)
    await record_call(s, 2, record("bobs-note", since + timedelta(minutes=4)), now=NOW)
    await save_outcome(s, outcome("k-saved", "saved", customer_id=2), now=NOW)
    # another agent's outcome of Alice's call does not settle what Alice owes
    await save_outcome(s, outcome("k-bob", "bobs-note", agent="bob", customer_id=2), now=NOW)

    owed = await owed_calls(s, since=since)

    assert [(o.call_id, o.agent, o.customer_id, o.pbx) for o in owed] == [
        ("owed", "alice", 1, "lab"),
        ("unknown", "bob", None, "lab"),
        ("bobs-note", "alice", 2, "lab"),
    ]
    first = owed[0]
    assert first.started_at == since + timedelta(minutes=1)
    assert first.ended_at == first.started_at + timedelta(seconds=35)
