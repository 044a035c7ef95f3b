"""A finished call's write waits out a store that is down: retried, never silently dropped."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.call_writes import record_calls
from crm_sync.models import Interaction
from cti.events import CallEnded, CallRecord
from screenpop import call_writer, pipeline
from tests.support.screenpop import NOBODY, PBX, WEI, Calls, eventually, new_pop, new_store, seed


class FlakyWrite:
    """record_calls that fails as an unreachable database would, ``failures`` times;
    ``batches`` are the call ids of each attempt."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.batches: list[list[str]] = []

    async def __call__(self, sessions: Any, calls: Any, **kwargs: Any) -> list[bool]:
        self.attempts += 1
        self.batches.append([record.call_id for _, record in calls])
        if self.attempts <= self.failures:
            raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        return await record_calls(sessions, calls, **kwargs)


async def rows(engine: AsyncEngine) -> list[tuple[str | None, int | None, str | None]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(Interaction.call_id, Interaction.customer_id, Interaction.agent)
            .where(Interaction.kind == "call", Interaction.call_id.is_not(None))
            .order_by(Interaction.call_id)
        )
        return [tuple(row) for row in result]


async def test_a_call_that_ends_while_the_store_is_down_is_written_when_it_returns(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store(engine)
    seeded = await seed(store)
    flaky = FlakyWrite(failures=3)
    monkeypatch.setattr(pipeline, "record_calls", flaky)
    monkeypatch.setattr(call_writer, "RETRY_FIRST", 0.01)
    pop = new_pop(store)
    calls = Calls(pop)
    try:
        for call_id, number in (("known", WEI), ("unknown", NOBODY)):
            calls.ring(call_id, "Alice", number)
            await eventually(lambda c=call_id: pop.lookup_for(PBX, c) is not None)
            calls.answer(call_id, "Alice")
            calls.end(call_id, "Alice", number)
        await eventually(lambda: not pop.writes_pending, within=10)
    finally:
        await pop.close()
    assert await rows(engine) == [("known", seeded.wei, "Alice"), ("unknown", None, "Alice")]
    # three attempts refused, then written; "unknown", ended while the first waited to be
    # tried again, goes with it (one batch) or after it, never before it
    assert flaky.attempts in (4, 5) and flaky.batches[0] == ["known"]
    assert [c for batch in flaky.batches[3:] for c in batch] == ["known", "unknown"]
    retries = [r for r in caplog.records if "not written (retry in" in r.getMessage()]
    assert len(retries) == 3 and all(r.levelno == logging.WARNING for r in retries)


async def test_a_write_still_waiting_at_close_is_tried_once_more_then_logged(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_store(engine)
    await seed(store)
    flaky = FlakyWrite(failures=1_000)
    monkeypatch.setattr(pipeline, "record_calls", flaky)
    pop = new_pop(store)  # first retry in RETRY_FIRST (1 s): close comes before it
    calls = Calls(pop)
    calls.ring("c1", "Alice", WEI)
    await eventually(lambda: pop.lookup_for(PBX, "c1") is not None)
    calls.answer("c1", "Alice")
    calls.end("c1", "Alice", WEI)
    await eventually(lambda: flaky.attempts == 1)
    await pop.close()
    assert flaky.attempts == 2 and await rows(engine) == []
    (given_up,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "call c1 not written, the service is stopping" in given_up.getMessage()


async def test_nobody_answered_an_unknown_callers_call_so_nothing_is_kept(
    engine: AsyncEngine,
) -> None:
    store = new_store(engine)
    await seed(store)
    pop = new_pop(store)
    calls = Calls(pop)
    try:
        calls.ring("c1", "Alice", NOBODY)
        await eventually(lambda: pop.lookup_for(PBX, "c1") is not None)
        calls.feed(CallEnded(PBX, "c1", 30.0, _abandoned("c1")))  # nobody took it
        await eventually(lambda: not pop.writes_pending)
    finally:
        await pop.close()
    assert await rows(engine) == []


def _abandoned(call_id: str) -> CallRecord:
    return CallRecord(
        call_id, PBX, NOBODY, "", "800", ("support",), ("Alice",), None, (), (),
        "abandoned", 1.0, 2.0, None, 30.0, 28.0, None, (),
    )  # fmt: skip


async def test_behind_its_pbx_the_pop_skips_lookups_not_cards(engine: AsyncEngine) -> None:
    """Overload: the card goes out at once saying the caller was not looked up; once the
    service has caught up, the call's next event (the answer) brings the customer."""
    store = new_store(engine)
    seeded = await seed(store)
    pop = new_pop(store)
    behind = {PBX: True}
    pop.behind = lambda pbx: behind.get(pbx, False)
    calls = Calls(pop)
    try:
        calls.ring("c1", "Alice", WEI)
        lookup = pop.lookup_for(PBX, "c1")
        assert lookup is not None and lookup.status == "skipped" and lookup.e164 == WEI
        (card,) = pop.book.cards_for("Alice")
        assert card.state == "ringing" and card.lookup == lookup
        assert pop.lookups_skipped == 1
        behind[PBX] = False
        calls.answer("c1", "Alice")
        await eventually(lambda: _status(pop) == "found")
        assert [c.id for c in pop.book.cards_for("Alice")[0].lookup.cards] == [seeded.wei]
    finally:
        await pop.close()


def _status(pop: pipeline.PopService) -> str | None:
    lookup = pop.lookup_for(PBX, "c1")
    return lookup.status if lookup is not None else None
