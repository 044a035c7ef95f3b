"""After a restart the pop gives back the wrap-up cards the store says are owed, and owns
the agents' wrap-up pauses again (issue 21: open cards survive, pauses are owned)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cti.test_wrapup import Recorder
from tests.support.screenpop import NOBODY, PBX, WEI, Calls, eventually, new_pop, new_store, now
from tests.support.screenpop import seed as seed_store


async def test_owed_wrapups_come_back_held_and_an_outcome_releases(engine: AsyncEngine) -> None:
    store = new_store(engine)
    seeded = await seed_store(store)
    before = new_pop(store)
    calls = Calls(before)
    try:
        for call_id, number in (("c1", WEI), ("c2", NOBODY)):
            calls.ring(call_id, "Alice", number)
            await eventually(lambda c=call_id: before.lookup_for(PBX, c) is not None)
            calls.answer(call_id, "Alice")
            calls.end(call_id, "Alice", number)
        await eventually(lambda: not before.writes_pending)
    finally:
        await before.close()

    after = new_pop(store)  # the restarted service
    holds = Recorder()
    after.wrapup = holds
    try:
        assert await after.restore_wrapups(now() - timedelta(hours=1)) == 2
        cards = {c.call_id: c for c in after.book.cards_for("Alice")}
        assert {k: c.state for k, c in cards.items()} == {"c1": "wrapup", "c2": "wrapup"}
        assert [c.id for c in cards["c1"].lookup.cards] == [seeded.wei]  # type: ignore[union-attr]
        assert cards["c2"].lookup is None  # nobody known: the form asks who it was
        assert not cards["c1"].away  # held, not an away card to dismiss
        assert after.book.handled_by(PBX, "c1") == ("Alice",)
        assert holds.calls == [("adopt", PBX, "Alice"), ("adopt", PBX, "Alice")]
        assert await after.restore_wrapups(now() - timedelta(hours=1)) == 0  # once

        after.outcome_saved(PBX, "c1", "Alice")
        assert holds.calls[2:] == []  # c2 still owed: still held
        after.outcome_saved(PBX, "c2", "Alice")
        assert holds.calls[2:] == [("release", PBX, "Alice")]
        assert after.book.cards_for("Alice") == []
    finally:
        await after.close()
