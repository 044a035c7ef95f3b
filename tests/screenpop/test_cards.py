"""Screen-pop cards from the real captures' domain events: one card per (call, agent)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from crm_sync.store import Lookup
from cti.events import (
    AgentRinging,
    CallAnswered,
    CallMerged,
    CallStarted,
    CallTransferred,
    Transfer,
)
from cti.replay import replay_file
from screenpop import cards
from screenpop.cards import CardUpdate, PopBook, ivr_view

FIXTURES = Path(__file__).parent.parent / "fixtures"


def run(book: PopBook, name: str) -> list[CardUpdate]:
    updates: list[CardUpdate] = []
    for event in replay_file(FIXTURES / f"{name}.txt").events:
        updates += book.apply(event)
    return updates


def states(updates: list[CardUpdate], call_id: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for u in updates:
        if u.card.call_id == call_id:
            out[u.agent].append(
                u.card.state if u.card.state != "closed" else f"closed:{u.card.closed_reason}"
            )
    return dict(out)


def test_ring_all_pops_everyone_then_closes_the_losers() -> None:
    book = PopBook()
    updates = run(book, "capture_extra")
    assert states(updates, "astlab-1795418978.95") == {
        "Carol": ["ringing", "closed:answered_elsewhere"],
        "Eve": ["ringing", "closed:answered_elsewhere"],
        "Dave": ["ringing", "answered", "wrapup"],
    }
    # Eve did not answer, was rung again, then Dave won: still one card for Eve
    assert states(updates, "astlab-1795418978.93") == {
        "Eve": ["ringing", "closed:ring_no_answer", "ringing", "closed:answered_elsewhere"],
        "Carol": ["ringing", "closed:answered_elsewhere"],
        "Dave": ["ringing", "answered", "wrapup"],
    }
    assert book.handled_by("astlab", "astlab-1795418978.93") == ("Dave",)


def test_one_card_id_per_call_and_agent_with_growing_versions() -> None:
    updates = run(PopBook(), "capture_extra")
    seen: dict[str, int] = {}
    for u in updates:
        assert u.card.id == f"{u.card.pbx}/{u.card.call_id}/{u.agent}"
        assert u.card.version > seen.get(u.card.id, 0)
        seen[u.card.id] = u.card.version


def test_abandoned_call_never_lands_on_a_screen_and_wrapup_is_listed() -> None:
    book = PopBook()
    updates = run(book, "capture_extra")
    assert states(updates, "astlab-1795418999.132") == {}  # Kim Moore hung up in the queue
    wrapups = {c.call_id for c in book.cards_for("Dave")}
    assert wrapups == {"astlab-1795418978.95", "astlab-1795418978.93"}
    card = next(c for c in book.cards_for("Dave") if c.call_id == "astlab-1795418978.93")
    assert (card.caller_number, card.caller_name, card.queue) == (
        "+15555311816",
        "Quinn Clark",
        "sales",
    )
    texts = [text for _, text in card.history]
    assert texts[:2] == ["call started", "queued in sales"]
    assert "Eve did not answer (ring_no_answer)" in texts and texts[-1] == "ended (answered)"


def test_duplicate_events_never_re_pop() -> None:
    book = PopBook()
    events = replay_file(FIXTURES / "capture_10calls.txt").events
    once = [u for e in events for u in book.apply(e)]
    again = PopBook()
    twice = [u for e in events for _ in range(2) for u in again.apply(e)]
    assert [(u.agent, u.card.version, u.card.state) for u in twice] == [
        (u.agent, u.card.version, u.card.state) for u in once
    ]


def test_enrich_updates_open_cards_and_outcome_closes_wrapup() -> None:
    book = PopBook()
    book.apply(CallStarted("p", "c1", 1.0, "", "", "s"))
    (ring,) = book.apply(
        AgentRinging("p", "c1", 2.0, "alice", "Alice", "PJSIP/1001", "q", "+86138", "张伟")
    )
    (enriched,) = book.enrich("p", "c1", Lookup("+86138", "+86138", "none"))
    assert enriched.card.version == ring.card.version + 1
    assert enriched.card.lookup is not None and enriched.card.lookup.status == "none"
    assert book.outcome_saved("p", "c1", "alice")[0].card.state == "closed"
    assert book.cards_for("alice") == []


def _open_cards_by_walking(book: PopBook, agent: str) -> set[str]:
    return {
        card.id
        for call in book._calls.values()
        if (card := call.cards.get(agent)) is not None and card.state != "closed"
    }


@pytest.mark.parametrize("limit", [20_000, 3])
def test_an_agents_open_cards_are_indexed_through_every_change(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cards_for reads an index kept by every change (rings, answers, wrap-ups, outcomes,
    merges, calls forgotten past MAX_CALLS): after each event it says what a walk would."""
    monkeypatch.setattr(cards, "MAX_CALLS", limit)
    book = PopBook()
    agents: set[str] = set()
    for name in ("capture_10calls", "capture_extra", "capture_agi_down"):
        for event in replay_file(FIXTURES / f"{name}.txt").events:
            updates = book.apply(event)
            agents |= {u.agent for u in updates}
            for u in updates:
                if u.card.state == "wrapup" and u.card.call_id.endswith("3"):
                    book.outcome_saved(u.card.pbx, u.card.call_id, u.agent)
            for agent in agents:
                assert {c.id for c in book.cards_for(agent)} == _open_cards_by_walking(book, agent)
    assert agents and any(book.cards_for(a) for a in agents)  # wrap-ups left open


def test_one_agents_card_of_one_call_is_found_without_walking_the_book() -> None:
    book = PopBook()
    for n in range(3):
        book.apply(AgentRinging("p", f"c{n}", 2.0, "alice", "Alice", "x", "q", "+86138", ""))
    (answered,) = book.apply(CallAnswered("p", "c1", 3.0, "alice", "q", 1.0, 1.0))
    assert book.card("p", "c1", "alice") == answered.card
    assert book.card("p", "c1", "bob") is None  # never offered to bob
    assert book.card("p", "c9", "alice") is None and book.card("q", "c1", "alice") is None


def test_an_outcome_saved_during_the_call_keeps_the_card_until_it_ends() -> None:
    book = PopBook()
    book.apply(AgentRinging("p", "c1", 2.0, "alice", "Alice", "x", "q", "+86138", "张伟"))
    book.apply(CallAnswered("p", "c1", 3.0, "alice", "q", 1.0, 1.0))
    (saved,) = book.outcome_saved("p", "c1", "alice")
    assert (saved.card.state, saved.card.outcome_saved) == ("answered", True)
    moved = book.apply(CallTransferred("p", "c1", 9.0, Transfer("blind", "alice", "1002", 9.0)))
    assert [(u.card.state, u.card.closed_reason) for u in moved] == [("closed", "outcome saved")]


def test_transfer_moves_the_card_with_the_history() -> None:
    book = PopBook()
    book.apply(CallStarted("p", "c1", 1.0, "", "", "s"))
    book.apply(AgentRinging("p", "c1", 2.0, "alice", "Alice", "x", "q", "+86138", "张伟"))
    book.apply(CallAnswered("p", "c1", 3.0, "alice", "q", 1.0, 1.0))
    moved = book.apply(CallTransferred("p", "c1", 9.0, Transfer("blind", "alice", "1002", 9.0)))
    assert [(u.agent, u.card.state, u.card.closed_reason) for u in moved] == [
        ("alice", "wrapup", "transferred")
    ]
    (bob,) = book.apply(AgentRinging("p", "c1", 10.0, "bob", "Bob", "y", None, "+86138", "张伟"))
    texts = [text for _, text in bob.card.history]
    assert texts == [
        "call started",
        "ringing alice from q",
        "answered by alice",
        "blind transfer from alice to 1002",
        "ringing bob",
    ]
    assert book.handled_by("p", "c1") == ("alice",)


def test_merge_closes_the_consultation_cards() -> None:
    book = PopBook()
    book.apply(CallStarted("p", "consult", 1.0, "", "", "1002"))
    book.apply(AgentRinging("p", "consult", 2.0, "bob", "Bob", "y", None, "1001", "Alice"))
    book.apply(CallStarted("p", "main", 0.5, "", "", "s"))
    closed = book.apply(CallMerged("p", "main", 5.0, "consult"))
    assert [(u.agent, u.card.call_id, u.card.state) for u in closed] == [
        ("bob", "consult", "closed")
    ]
    assert book.cards_for("bob") == []


def test_what_the_ivr_learned_shows_on_cards_before_and_after_the_ring() -> None:
    book = PopBook()
    findings = {"menu": "main", "identified_by": "account", "path": [["main", "2"]], "scores": {}}
    assert book.learned("p", "c1", findings) == []  # nobody rings yet: nothing to show
    (ring,) = book.apply(
        AgentRinging("p", "c1", 2.0, "alice", "Alice", "PJSIP/1001", "q", "+86138", "张伟")
    )
    assert ring.card.ivr == ivr_view(findings)
    later = {**findings, "path": [["main", "2"], ["balance", "said"]]}
    (update,) = book.learned("p", "c1", later)
    assert update.card.ivr == ivr_view(later) and update.card.version == ring.card.version + 1
    assert update.card.to_json()["ivr"]["path"] == [["main", "2"], ["balance", "said"]]
    assert book.learned("p", "other", later) == []
    survey = {"menu": "survey", "identified_by": "none", "path": [], "scores": {"attitude": 4}}
    (scored,) = book.learned("p", "c1", survey)
    # the main menu's, scored
    assert scored.card.ivr == {**ivr_view(later), **ivr_view({**later, "scores": {"attitude": 4}})}


def test_settled_calls_are_let_go_and_never_come_back() -> None:
    book = PopBook()
    events = replay_file(FIXTURES / "capture_10calls.txt").events
    updates = [u for e in events for u in book.apply(e)]
    last = {(u.card.call_id, u.agent): u.card for u in updates}
    wrapup = {key for key, card in last.items() if card.state == "wrapup"}
    assert wrapup, "the capture has answered calls"
    calls = {u.card.call_id for u in updates}
    owing = {call for call, _ in wrapup}
    assert {c for c in calls if book.knows("astlab", c)} == owing  # the rest is let go
    for call, agent in wrapup:
        handled = book.handled_by("astlab", call)
        book.outcome_saved("astlab", call, agent)
    assert not any(book.knows("astlab", c) for c in calls)
    # who handled it and the number stay, for an outcome saved again
    assert book.handled_by("astlab", call) == handled and book.caller_number("astlab", call)
    assert [u for e in events for u in book.apply(e)] == []  # a replay pops nothing
    assert book.learned("astlab", call, {"menu": "survey", "scores": {"solved": 1}}) == []


def test_ivr_findings_that_come_before_the_call_wait_for_it() -> None:
    book = PopBook()
    assert book.learned("p", "early", {"menu": "main", "path": [], "scores": {}}) == []
    book.apply(CallStarted("p", "early", 1.0, "+86138", "", "s"))
    (ring,) = book.apply(
        AgentRinging("p", "early", 2.0, "alice", "Alice", "PJSIP/1001", "q", "+86138", "")
    )
    assert ring.card.ivr == ivr_view({"menu": "main", "path": [], "scores": {}})
