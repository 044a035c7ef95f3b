"""No agent is paused for good by the service: a wrap-up hold ends at the longest wrap-up."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cti.board import Board
from cti.events import AgentRinging, CallAnswered, CallEnded, CallRecord, MemberUpdated
from cti.settings import AgentSettings, SettingsError, load
from cti.wrapup import QueuePauseWrapup
from screenpop.cards import PopBook
from screenpop.hub import Hub
from screenpop.pipeline import PopService
from tests.cti.test_wrapup import Recorder
from tests.support.screenpop import PBX, ivr_findings, pause_state, simulated_pbx

ALICE = AgentSettings("alice", members=("Alice", "Local/1001@agents/n"))


def now() -> datetime:
    return datetime.now(UTC)


def talk(pop: PopService, call_id: str) -> None:
    record = CallRecord(
        call_id=call_id, pbx="p", caller_number="1", caller_name="", dialed="s", queues=("q",),
        agents_rung=("alice",), answered_by="alice", handled_by=("alice",), transfers=(),
        outcome="answered", started_at=1.0, queued_at=1.0, answered_at=2.0, ended_at=9.0,
        hold_seconds=1.0, talk_seconds=7.0, flags=(),
    )  # fmt: skip
    pop.publish(AgentRinging("p", call_id, 1.0, "alice", "Alice", "x", "q", "1", ""))
    pop.publish(CallAnswered("p", call_id, 2.0, "alice", "q", 1.0, 1.0))
    pop.publish(CallEnded("p", call_id, 9.0, record))


async def test_the_longest_wrapup_releases_the_agent_in_asterisk(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with simulated_pbx() as (_, ami):
        holder = QueuePauseWrapup({PBX: ami}, [ALICE], max_seconds=0.2)
        with caplog.at_level(logging.WARNING, logger="cti.wrapup"):
            holder.hold(PBX, "alice")
            await asyncio.sleep(0.05)
            assert await pause_state(ami) == ("1", "wrap-up")
            assert holder.holds(PBX, "alice")
            await asyncio.sleep(0.3)
            await holder.close()
        assert await pause_state(ami) == ("0", "")
        assert not holder.holds(PBX, "alice")
        assert [r.getMessage() for r in caplog.records] == [
            "wrap-up of alice on PBX lab released after 0.2 s: outcome still missing"
        ]


async def test_a_release_before_the_limit_ends_it() -> None:
    released: list[tuple[str, str]] = []
    async with simulated_pbx() as (_, ami):
        holder = QueuePauseWrapup(
            {PBX: ami}, [ALICE], max_seconds=0.1, expired=lambda *a: released.append(a)
        )
        holder.hold(PBX, "alice")
        holder.release(PBX, "alice")
        await asyncio.sleep(0.2)
        await holder.close()
    assert released == []


def test_an_expired_wrapup_keeps_the_card_and_the_outcome_owed() -> None:
    """Released at the limit, the agent is not held again by that card; its outcome is still
    taken; and a later call's hold ends with its own outcome."""
    hub, recorder = Hub(), Recorder()
    pop = PopService(PopBook(), hub, None, clock=now, wrapup=recorder)
    hub.subscribe("alice")
    talk(pop, "c1")
    pop.wrapup_expired("p", "alice")
    assert recorder.calls == [("hold", "p", "alice"), ("release", "p", "alice")]
    [card] = pop.book.cards_for("alice")
    assert (card.state, card.away) == ("wrapup", False)  # the outcome form stays
    changed = pop.book.learned("p", "c1", ivr_findings())
    assert [u.card.state for u in changed] == ["wrapup"]
    pop.send(changed)  # the card changes: no new hold
    assert len(recorder.calls) == 2
    talk(pop, "c2")
    pop.outcome_saved("p", "c2", "alice")
    assert recorder.calls[2:] == [("hold", "p", "alice"), ("release", "p", "alice")]
    pop.outcome_saved("p", "c1", "alice")  # saved late: taken, nothing more to release
    assert pop.book.cards_for("alice") == []
    assert len(recorder.calls) == 4


def test_the_longest_wrapup_is_a_setting(tmp_path: Path) -> None:
    config = tmp_path / "cti.toml"
    assert load(None, env={}).wrapup.max_seconds == 600.0
    config.write_text("[wrapup]\nmax_seconds = 90\n", encoding="utf-8")
    assert load(config, env={}).wrapup.max_seconds == 90.0
    config.write_text("[wrapup]\nmax_seconds = 0\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="max_seconds"):
        load(config, env={})


class Missing:
    def __init__(self) -> None:
        self.told: list[tuple[str, str, int]] = []

    def set_outcomes_missing(self, pbx: str, agent: str, count: int) -> None:
        self.told.append((pbx, agent, count))


def test_outcomes_missing_past_the_limit_are_told_to_the_wallboard() -> None:
    """Issue 21: released at the longest wrap-up, the missing outcome stays visible on the
    wallboard too, until it is saved."""
    hub, missing = Hub(), Missing()
    pop = PopService(PopBook(), hub, None, clock=now, wrapup=Recorder())
    pop.missing = missing
    hub.subscribe("alice")
    talk(pop, "c1")
    talk(pop, "c2")
    pop.wrapup_expired("p", "alice")
    assert missing.told == [("p", "alice", 2)]
    pop.outcome_saved("p", "c1", "alice")
    assert missing.told[-1] == ("p", "alice", 1)
    pop.outcome_saved("p", "c2", "alice")
    assert missing.told[-1] == ("p", "alice", 0)
    talk(pop, "c3")  # a new wrap-up held as usual: nothing missing to tell
    pop.outcome_saved("p", "c3", "alice")
    assert len(missing.told) == 3


def test_the_board_shows_an_agents_outcomes_missing() -> None:
    board = Board(agents=[ALICE])
    board.observe(
        MemberUpdated(PBX, 1.0, "support", "alice", "Alice", "Local/1001@agents/n",
                      1, False, "", False, 0.0)
    )  # fmt: skip
    board.set_outcomes_missing(PBX, "alice", 2)
    (row,) = [a for a in board.snapshot(2.0)["agents"] if a["id"] == "alice"]
    assert row["outcomes_missing"] == 2
    board.set_outcomes_missing(PBX, "alice", 0)
    (row,) = [a for a in board.snapshot(3.0)["agents"] if a["id"] == "alice"]
    assert row["outcomes_missing"] == 0
