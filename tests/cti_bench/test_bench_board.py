"""The wallboard benchmark runs end to end on a small center and reports what it measured; its
center is the day it says, and goes on working between pushes."""

from __future__ import annotations

from typing import Any

from cti_bench.board import EVENTS, INTERVAL, NOW, _filled, filled_board, measure_board


def test_measure_board_small_center() -> None:
    figure = measure_board(queues=5, agents=20, calls=300, samples=130)
    assert figure.events == 130 and figure.seconds > 0
    assert figure.rolls == 1  # pushes 0.5 s apart: a minute rolls once in 120
    assert figure.events_per_push >= EVENTS
    assert figure.p50_ms is not None and figure.p99_ms is not None
    assert 0 < figure.p50_ms <= figure.p99_ms <= figure.max_ms
    # each push is its snapshot plus the feed's delta: both parts are in it, each smaller
    assert 0 < figure.snapshot_p50 <= figure.p50_ms and 0 < figure.delta_p50 <= figure.p50_ms
    assert figure.snapshot_p99 <= figure.max_ms and figure.delta_p99 <= figure.max_ms
    assert 0 < figure.p99_without_gc <= figure.p99_ms
    assert 0 < figure.delta_kb <= figure.delta_kb_max < figure.whole_kb and figure.whole_ms > 0


def test_filled_board_is_the_day_it_says() -> None:
    snap = filled_board(NOW, queues=4, agents=40, calls=400).snapshot(NOW)
    assert len(snap["queues"]) == 4 and len(snap["agents"]) == 40
    offered = sum(q["figures"]["today"]["offered"] for q in snap["queues"])
    assert offered == 400 + 40  # the day's calls, and the live calls already answered
    states = [a["state"] for a in snap["agents"]]
    assert states.count("on_call") == 40  # fewer than 1,200 agents: every one is on a call
    assert all(q["waiting"] >= 1 for q in snap["queues"])


def test_the_center_goes_on_working_between_pushes() -> None:
    center = _filled(NOW, queues=20, agents=2_000, calls=2_000, seed=1)
    board = center.board
    first = board.snapshot(NOW)
    pushes = 240  # two minutes
    for n in range(1, pushes + 1):
        assert center.step(NOW + n * INTERVAL, EVENTS) >= EVENTS
    snap = board.snapshot(NOW + pushes * INTERVAL)
    assert snap["at"] == NOW + pushes * INTERVAL  # nothing fed ran the board's clock ahead

    def today(view: dict[str, Any], figure: str) -> int:
        return sum(q["figures"]["today"][figure] for q in view["queues"])

    answered = today(snap, "answered") - today(first, "answered")
    assert 5 * 60 < answered < 13 * 120  # 6 calls a second, more or less; some hang up
    assert today(snap, "handled") > today(first, "handled")  # wrap-ups end
    states = {a["state"] for a in snap["agents"]}
    assert {"on_call", "ringing", "wrap_up", "available"} <= states
    assert sum(q["waiting"] for q in snap["queues"]) < 500  # callers are answered or hang up
