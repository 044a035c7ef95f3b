"""The pop and what the IVR learned: the customer identified by account number and PIN is
the call's customer, whatever the caller's number matched; the call lands in their timeline.
The card reads the findings in words: step labels from the menu, what the caller did, the
figure they were told, survey answers against their scale (in the pop and the JSON API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.models import Interaction
from ivr.menus import load_menu, load_menus
from tests.support.screenpop import (
    HOSTILE,
    NOBODY,
    PBX,
    ROOT,
    TWINS,
    WEI,
    Calls,
    buffered,
    build_app,
    client_for,
    eventually,
    ivr_findings,
    login,
    new_pop,
    new_store,
    seed,
)

MENUS = load_menus(ROOT / "config" / "ivr")
BALANCE = {"figure": "balance", "kind": "amount", "value": "-12.50", "currency": "CNY"}


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


def main_findings(**changes: Any) -> dict[str, Any]:
    """The main menu's findings as the IVR reports them, with the menu's terms and the balance
    it told: identified by caller ID, pressed 2, heard the balance, pressed 0, put through."""
    path = (
        ("welcome", "skipped"),
        ("identify", "caller_id"),
        ("main", "2"),
        ("balance", "said"),
        ("main", "0"),
        ("agent", "routed"),
    )
    found = ivr_findings(identified_by="caller_id", customer_id=7, path=path, **changes)
    return {**found, "terms": MENUS["main"].terms(), "told": {"balance": BALANCE}}


def survey_findings(path: tuple[tuple[str, str], ...], scores: dict[str, int]) -> dict[str, Any]:
    found = ivr_findings(menu="survey", path=path, scores=scores, route=None)
    return {**found, "terms": MENUS["survey"].terms()}


def test_the_card_reads_each_step_by_its_label_and_what_the_caller_did() -> None:
    pop = new_pop(None)
    pop.ivr_learned(PBX, "c1", main_findings())
    Calls(pop).ring("c1", "Alice", WEI)
    ivr = buffered(pop.hub, "Alice")[-1]["card"]["ivr"]
    words = [(s["label"], s["text"]) for s in ivr["steps"]]
    assert words == [
        ("Welcome", "skipped it"),
        ("Identify", "identified by caller ID"),
        ("Main", "pressed 2: Balance"),
        ("Balance", "was told"),
        ("Main", "pressed 0: Agent"),
        ("Agent", "put through to an agent"),
    ]
    assert ivr["steps"][3]["told"] == BALANCE  # the figure, with its currency
    assert [s["told"] for i, s in enumerate(ivr["steps"]) if i != 3] == [None] * 5
    assert ivr["path"][2] == ["main", "2"]  # the raw path stays, for tools that read it
    assert "terms" not in ivr and "told" not in ivr  # used up


def test_survey_answers_carry_their_scale_and_join_the_main_menus() -> None:
    pop = new_pop(None)
    calls = Calls(pop)
    pop.ivr_learned(PBX, "c1", main_findings())
    calls.ring("c1", "Alice", WEI)
    calls.answer("c1", "Alice")
    calls.end("c1", "Alice", WEI)
    survey = (("attitude", "4"), ("solved", "yes"), ("thanks", "hangup"))
    pop.ivr_learned(PBX, "c1", survey_findings(survey, {"attitude": 4, "solved": 1}))
    ivr = buffered(pop.hub, "Alice")[-1]["card"]["ivr"]
    assert ivr["survey"] == [
        {"question": "attitude", "label": "Attitude", "score": 4, "min": 1, "max": 5,
         "text": "4 of 5"},
        {"question": "solved", "label": "Solved", "score": 1, "min": 1, "max": 2, "text": "yes"},
    ]  # fmt: skip
    assert ivr["steps"][1]["text"] == "identified by caller ID"  # the main menu's path stays
    assert ivr["scores"] == {"attitude": 4, "solved": 1}


def test_without_the_menus_terms_the_card_guesses_nothing() -> None:
    pop = new_pop(None)
    path = (("main", "2"), ("balance", "said"), ("last_order", "said"), ("rate_us", "7"))
    found = ivr_findings(path=path, scores={"rate_us": 7})
    pop.ivr_learned(PBX, "c1", found)
    Calls(pop).ring("c1", "Alice", WEI)
    ivr = buffered(pop.hub, "Alice")[-1]["card"]["ivr"]
    assert [(s["label"], s["text"], s["told"]) for s in ivr["steps"]] == [
        ("Main", "pressed 2", None),
        ("Balance", "was told a figure", None),
        ("Last order", "was told a figure", None),
        ("Rate us", "pressed 7", None),
    ]
    assert ivr["survey"] == [
        {"question": "rate_us", "label": "Rate us", "score": 7, "min": None, "max": None,
         "text": "7"},
    ]  # fmt: skip


def test_labels_and_outcomes_of_failed_steps_read_in_words(tmp_path: Path) -> None:
    menu = (ROOT / "config" / "ivr" / "main.toml").read_text(encoding="utf-8")
    hostile = json.dumps(HOSTILE)  # a TOML basic string too
    labelled = menu.replace('type = "identify"', f'type = "identify"\nlabel = {hostile}', 1)
    labelled = labelled.replace(
        'type = "say"\nfigure = "balance"', 'type = "say"\nlabel = "余额"\nfigure = "balance"'
    )
    (tmp_path / "main.toml").write_text(labelled, encoding="utf-8")
    terms = load_menu(tmp_path / "main.toml").terms()
    path = (
        ("identify", "caller-id-unknown"),
        ("identify", "pin-wrong"),
        ("identify", "pin-locked"),
        ("identify", "account"),
        ("main", "7"),
        ("main", "timeout"),
        ("balance", "said"),
        ("balance", "store-timeout"),
        ("agent", "hung-up"),
    )
    pop = new_pop(None)
    pop.ivr_learned(PBX, "c1", {**ivr_findings(path=path), "terms": terms})
    Calls(pop).ring("c1", "Alice", WEI)
    ivr = buffered(pop.hub, "Alice")[-1]["card"]["ivr"]
    assert [(s["label"], s["text"]) for s in ivr["steps"]] == [
        (HOSTILE, "caller ID not on record"),  # any text: the page shows it as text
        (HOSTILE, "typed a wrong PIN"),
        (HOSTILE, "PIN not asked: too many wrong PINs for this customer lately"),
        (HOSTILE, "identified by customer number and PIN"),
        ("Main", "pressed 7"),  # not an option
        ("Main", "pressed nothing in time"),
        ("余额", "was told the balance"),  # said, but the figure did not come with it
        ("余额", "the store was too slow to answer"),
        ("Agent", "hung up here"),
    ]


async def test_the_json_api_gets_the_same_words() -> None:
    pop = new_pop(None)
    async with client_for(build_app(pop, None)) as client:
        pop.ivr_learned(PBX, "c1", main_findings())
        Calls(pop).ring("c1", "Alice", WEI)
        await login(client, "alice")
        (card,) = (await (await client.get(f"/api/calls/{PBX}/c1")).json())["cards"]
    assert card["ivr"]["steps"][2]["text"] == "pressed 2: Balance"
    assert card["ivr"]["steps"][3]["told"] == BALANCE
    assert card["ivr"] == buffered(pop.hub, "Alice")[-1]["card"]["ivr"]
