"""Outcomes and calls into the timeline (SQLite and PostgreSQL), and the pop pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.call_writes import record_call
from crm_sync.models import Customer, Interaction, OutboxRow, Phone
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore
from crm_sync.timeline import OutcomeError, OutcomeIn, save_outcome
from cti.events import (
    AgentRinging,
    CallAnswered,
    CallEnded,
    CallerIdentified,
    CallRecord,
    CallStarted,
)
from screenpop.cards import PopBook
from screenpop.hub import Hub
from screenpop.pipeline import PopService
from tests.support.screenpop import buffered

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[CustomerStore]:
    store = CustomerStore(engine, PhoneNormalizer("CN"))
    async with store.sessions() as session, session.begin():
        wei = Customer(
            kind="person",
            name="张伟",
            tier="vip",
            lifecycle="active",
            tags=[],
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(wei)
        await session.flush()
        session.add(Phone(customer_id=wei.id, e164="+8613800138000"))
    yield store
    await store.close()


def outcome(key: str, **changes: object) -> OutcomeIn:
    fields: dict[str, object] = dict(
        key=key,
        pbx="p",
        call_id="c1",
        agent="alice",
        disposition="resolved",
        notes='<b>fixed</b> "it"',
        customer_id=1,
        new_customer_name=None,
        caller_e164="+8613800138000",
    )
    fields.update(changes)
    return OutcomeIn(**fields)  # type: ignore[arg-type]


async def count(store: CustomerStore, kind: str) -> int:
    async with store.sessions() as session:
        total = await session.scalar(
            select(func.count()).select_from(Interaction).where(Interaction.kind == kind)
        )
        return int(total or 0)


async def test_outcome_with_followup_is_committed_once(store: CustomerStore) -> None:
    due = NOW + timedelta(days=2)
    first = await save_outcome(store.sessions, outcome("k1", followup_due=due), now=NOW)
    again = await save_outcome(store.sessions, outcome("k1", followup_due=due), now=NOW)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (again.interaction_id, again.followup_id) == (first.interaction_id, first.followup_id)
    assert (await count(store, "outcome"), await count(store, "followup")) == (1, 1)
    (card,) = (await store.lookup("13800138000", now=NOW)).cards
    assert [e.title for e in card.open_items] == ["Follow up: resolved"]
    assert card.recent[0].kind in ("outcome", "followup")


async def test_double_click_writes_one_outcome(store: CustomerStore) -> None:
    results = await asyncio.gather(
        *(save_outcome(store.sessions, outcome("same"), now=NOW) for _ in range(3))
    )
    assert sorted(r.duplicate for r in results) == [False, True, True]
    assert len({r.interaction_id for r in results}) == 1
    assert await count(store, "outcome") == 1


async def test_outcome_for_an_unknown_caller_creates_a_prospect(store: CustomerStore) -> None:
    saved = await save_outcome(
        store.sessions,
        outcome(
            "k2", customer_id=None, new_customer_name="Émilie Dubois", caller_e164="+33612345678"
        ),
        now=NOW,
    )
    found = await store.lookup("+33 6 12 34 56 78", now=NOW)
    (card,) = found.cards
    assert (card.id, card.name, card.lifecycle) == (saved.customer_id, "Émilie Dubois", "prospect")


async def test_a_wrong_number_from_an_unknown_caller_makes_no_customer(
    store: CustomerStore,
) -> None:
    async with store.sessions() as session:
        before = await session.scalar(select(func.count()).select_from(Customer))
    wrong = outcome(
        "k-wrong", customer_id=None, disposition="wrong_number", notes="asked for a pizza place",
        needs_customer=False,
    )  # fmt: skip
    saved = await save_outcome(store.sessions, wrong, now=NOW)
    assert saved.customer_id is None and saved.followup_id is None
    async with store.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == before
        row = await session.get(Interaction, saved.interaction_id)
        assert row is not None
        assert (row.customer_id, row.kind, row.title, row.body, row.agent) == (
            None, "outcome", "wrong_number", "asked for a pizza place", "alice",
        )  # fmt: skip
        told = await session.scalar(select(OutboxRow).where(OutboxRow.topic == "outcome.saved"))
        assert told is not None and told.customer_id is None
    # the same key again: the first answer
    assert (await save_outcome(store.sessions, wrong, now=NOW)).duplicate
    # a disposition that needs a customer still asks for one; a follow-up always does
    with pytest.raises(OutcomeError, match="new customer's name"):
        await save_outcome(store.sessions, outcome("k-2", customer_id=None), now=NOW)
    later = outcome(
        "k-3", customer_id=None, needs_customer=False, followup_due=NOW + timedelta(days=1)
    )
    with pytest.raises(OutcomeError, match="a follow-up needs a customer"):
        await save_outcome(store.sessions, later, now=NOW)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"disposition": " "}, "disposition"),
        ({"customer_id": 999}, "no customer 999"),
        ({"customer_id": None}, "new customer's name"),
        ({"followup_due": datetime(2026, 12, 1)}, "time zone"),
    ],
)
async def test_bad_outcomes_write_nothing(
    store: CustomerStore, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(OutcomeError, match=message):
        await save_outcome(store.sessions, outcome("bad", **changes), now=NOW)
    assert await count(store, "outcome") == 0


def record(call_id: str = "c1") -> CallRecord:
    return CallRecord(
        call_id=call_id,
        pbx="p",
        caller_number="13800138000",
        caller_name="张伟",
        dialed="s",
        queues=("support",),
        agents_rung=("alice",),
        answered_by="alice",
        handled_by=("alice",),
        transfers=(),
        outcome="answered",
        started_at=NOW.timestamp() - 60,
        queued_at=None,
        answered_at=None,
        ended_at=NOW.timestamp(),
        hold_seconds=3.0,
        talk_seconds=50.0,
        flags=(),
    )


async def test_record_call_is_idempotent(store: CustomerStore) -> None:
    assert await record_call(store.sessions, 1, record(), now=NOW) is True
    assert await record_call(store.sessions, 1, record(), now=NOW) is False
    assert await count(store, "call") == 1
    (card,) = (await store.lookup("13800138000", now=NOW)).cards
    assert card.repeat_caller is True
    assert card.recent[0].title == "Call answered (support; alice)"


async def test_pipeline_pops_first_then_enriches_then_logs_the_call(store: CustomerStore) -> None:
    hub = Hub()
    pop = PopService(PopBook(), hub, store, clock=lambda: NOW)
    pop.publish(CallStarted("p", "c1", 1.0, "", "", "s"))
    pop.publish(CallerIdentified("p", "c1", 1.1, "13800138000", "张伟"))
    pop.publish(
        AgentRinging("p", "c1", 2.0, "alice", "Alice", "x", "support", "13800138000", "张伟")
    )
    first = buffered(hub, "alice")
    assert first[0]["card"]["state"] == "ringing"
    for _ in range(200):
        if any(
            (m["card"]["lookup"] or {}).get("status") == "found" for m in buffered(hub, "alice")
        ):
            break
        await asyncio.sleep(0.01)
    enriched = [m["card"] for m in buffered(hub, "alice") if m["card"]["lookup"]]
    assert enriched[-1]["lookup"]["cards"][0]["name"] == "张伟"
    assert enriched[-1]["lookup"]["cards"][0]["tier"] == "vip"
    pop.publish(CallAnswered("p", "c1", 3.0, "alice", "support", 1.0, 1.0))
    pop.publish(CallEnded("p", "c1", 60.0, record()))
    await pop.close()
    assert await count(store, "call") == 1


async def test_retry_after_the_card_closed_gets_the_first_result(store: CustomerStore) -> None:
    first = await save_outcome(store.sessions, outcome("k9"), now=NOW)
    retry = await save_outcome(store.sessions, outcome("k9", customer_id=None), now=NOW)
    assert (retry.duplicate, retry.interaction_id) == (True, first.interaction_id)


async def test_followup_due_is_stored_in_utc(store: CustomerStore) -> None:
    beijing = datetime(2026, 11, 25, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    await save_outcome(store.sessions, outcome("tz", followup_due=beijing), now=NOW)
    (card,) = (await store.lookup("13800138000", now=NOW)).cards
    (item,) = card.open_items
    assert item.due_at == beijing


async def test_lookup_finishing_after_the_end_still_reaches_the_wrapup_card(
    store: CustomerStore,
) -> None:
    hub = Hub()
    pop = PopService(PopBook(), hub, store, clock=lambda: NOW)
    pop.publish(AgentRinging("p", "c2", 2.0, "alice", "Alice", "x", "q", "13800138000", "张伟"))
    pop.publish(CallAnswered("p", "c2", 3.0, "alice", "q", 1.0, 1.0))
    pop.publish(CallEnded("p", "c2", 9.0, record("c2")))  # before the lookup came back
    for _ in range(200):
        if pop.lookup_for("p", "c2") is not None:
            break
        await asyncio.sleep(0.01)
    (card,) = pop.book.cards_for("alice")
    assert card.state == "wrapup"
    assert card.lookup is not None and card.lookup.cards[0].name == "张伟"
    await pop.close()
