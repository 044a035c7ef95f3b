"""The pop and what the IVR learned: the customer identified by account number and PIN is
the call's customer, whatever the caller's number matched; the call lands in their timeline."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.models import Interaction
from tests.support.screenpop import (
    NOBODY,
    PBX,
    TWINS,
    WEI,
    Calls,
    buffered,
    eventually,
    new_pop,
    new_store,
    seed,
)


def findings(customer_id: int | None) -> dict[str, object]:
    how = "none" if customer_id is None else "account"
    return {"menu": "main", "customer_id": customer_id, "identified_by": how, "scores": {}}


@pytest.mark.parametrize("number", [NOBODY, TWINS])
async def test_a_caller_identified_in_the_ivr_pops_as_that_customer(
    engine: AsyncEngine, number: str
) -> None:
    store = new_store(engine)
    seeded = await seed(store)
    pop = new_pop(store)
    calls = Calls(pop)
    try:
        pop.ivr_learned(PBX, "c1", findings(seeded.wei))
        calls.ring("c1", "Alice", number)
        await eventually(lambda: buffered(pop.hub, "Alice")[-1]["card"]["lookup"] is not None)
        last = buffered(pop.hub, "Alice")[-1]["card"]
        assert [c["id"] for c in last["lookup"]["cards"]] == [seeded.wei]
        assert last["lookup"]["status"] == "found" and last["ivr"]["identified_by"] == "account"
        calls.answer("c1", "Alice")
        calls.end("c1", "Alice", number)
        await pop.close()  # lets the timeline write finish
        async with store.sessions() as session:
            owners = (
                await session.scalars(
                    select(Interaction.customer_id).where(Interaction.call_id == "c1")
                )
            ).all()
        assert owners == [seeded.wei]
    finally:
        await pop.close()


async def test_the_numbers_own_customer_stays_when_the_ivr_identified_nobody(
    engine: AsyncEngine,
) -> None:
    store = new_store(engine)
    seeded = await seed(store)
    pop = new_pop(store)
    calls = Calls(pop)
    try:
        calls.ring("c2", "Alice", WEI)
        pop.ivr_learned(PBX, "c2", findings(None))
        await eventually(lambda: pop.lookup_for(PBX, "c2") is not None)
        lookup = pop.lookup_for(PBX, "c2")
        assert lookup is not None and [c.id for c in lookup.cards] == [seeded.wei]
    finally:
        await pop.close()
