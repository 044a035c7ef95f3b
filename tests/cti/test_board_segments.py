"""The caller's segment on the wallboard: the pop's lookup tells the board each caller's tier
(screenpop.pipeline → cti.board.Board.set_caller); a queue counts its VIP callers waiting, the
agent row's current call shows the tier, and only what changed is rebuilt."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.board import Board
from cti.events import CallAnswered, CallEnded, CallQueued, CallRecord, CallStarted
from tests.support.screenpop import (
    PBX,
    TWINS,
    WEI,
    Calls,
    eventually,
    new_pop,
    new_store,
    seed,
)

T0 = 1_795_399_980.0


def queued(board: Board, call_id: str, queue: str = "support", at: float = T0) -> None:
    board.publish(CallStarted(PBX, call_id, at, f"+86138{call_id}", "", "800"))
    board.publish(CallQueued(PBX, call_id, at + 1, queue, 1, f"+86138{call_id}", ""))


def view(board: Board, name: str, at: float = T0 + 10) -> dict[str, Any]:
    snapshot = board.snapshot(at)
    if name == "total":
        return snapshot["total"]  # type: ignore[no-any-return]
    return next(q for q in snapshot["queues"] if q["name"] == name)


def agent_row(board: Board, agent: str, at: float = T0 + 10) -> dict[str, Any]:
    return next(a for a in board.snapshot(at)["agents"] if a["id"] == agent)


def test_a_queue_counts_its_vip_callers_waiting() -> None:
    board = Board()
    for call in ("c1", "c2", "c3"):
        queued(board, call)
    queued(board, "s1", "sales")
    first = view(board, "support")
    assert (first["waiting"], first["vip_waiting"]) == (3, 0)

    board.set_caller(PBX, "c1", "vip")
    board.set_caller(PBX, "s1", "vip")
    board.set_caller(PBX, "c2", "regular")
    support = view(board, "support")
    assert (support["waiting"], support["vip_waiting"]) == (3, 1)
    assert support["rev"] != first["rev"]  # a new view for the push
    assert view(board, "total")["vip_waiting"] == 2

    board.publish(CallAnswered(PBX, "c1", T0 + 12, "Alice", "support", 11.0, 1.0))
    assert view(board, "support", T0 + 13)["vip_waiting"] == 0
    assert view(board, "sales", T0 + 13)["vip_waiting"] == 1


def test_the_agent_row_shows_the_tier_of_the_call_it_is_on() -> None:
    board = Board()
    queued(board, "c1")
    board.publish(CallAnswered(PBX, "c1", T0 + 5, "Alice", "support", 4.0, 1.0))
    before = agent_row(board, "Alice")
    assert before["call"]["tier"] is None  # the lookup has not answered yet
    board.set_caller(PBX, "c1", "vip")
    after = agent_row(board, "Alice", T0 + 11)
    assert (after["call"]["call_id"], after["call"]["tier"]) == ("c1", "vip")
    assert after["rev"] != before["rev"]


def test_only_a_change_bumps_the_board_and_an_unknown_call_is_left_alone() -> None:
    board = Board()
    queued(board, "c1")
    support = view(board, "support")
    board.set_caller(PBX, "c1", None)  # as it was: nothing to push
    board.set_caller(PBX, "nope", "vip")  # a call the board never saw
    version = board.version
    assert view(board, "support", T0 + 11)["rev"] == support["rev"]
    board.set_caller(PBX, "c1", "vip")
    assert board.version == version + 1
    board.set_caller(PBX, "c1", "vip")
    assert board.version == version + 1
    board.set_caller(PBX, "c1", "regular")  # rebuilt, but it says what it said: the same rev
    assert view(board, "support", T0 + 12)["rev"] == support["rev"]

    record = CallRecord(
        "c1", PBX, "+86138c1", "", "800", ("support",), (), None, (), (),
        "abandoned", T0, T0 + 1, None, T0 + 20, 19.0, None, (),
    )  # fmt: skip
    board.publish(CallEnded(PBX, "c1", T0 + 20, record))
    version = board.version
    board.set_caller(PBX, "c1", "vip")  # a lookup that answers after the end
    assert board.version == version


class Tiers:
    """Stands for the board: what the pop tells it."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str, str | None]] = []

    def set_caller(self, pbx: str, call_id: str, tier: str | None) -> None:
        self.told.append((pbx, call_id, tier))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the store is not under test
async def test_the_pop_tells_the_board_each_callers_tier(engine: AsyncEngine) -> None:
    store = new_store(engine)
    await seed(store)  # 张伟 is VIP; two customers share TWINS
    pop = new_pop(store)
    tiers = Tiers()
    pop.callers = tiers
    calls = Calls(pop)
    try:
        calls.ring("c1", "Alice", WEI)
        calls.ring("c2", "Bob", TWINS)
        await eventually(lambda: len(tiers.told) == 2)
        assert sorted(tiers.told) == [(PBX, "c1", "vip"), (PBX, "c2", None)]
    finally:
        await pop.close()
