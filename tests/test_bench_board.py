"""The wallboard benchmark runs end to end on a small center and reports what it measured."""

from __future__ import annotations

from datetime import UTC, datetime

from cti.bench_board import filled_board, measure_board


def test_measure_board_small_center() -> None:
    figure = measure_board(queues=5, agents=20, calls=300, samples=5)
    assert figure.events == 5 and figure.seconds > 0
    assert figure.p50_ms is not None and figure.p99_ms is not None
    assert 0 < figure.p50_ms <= figure.p99_ms
    assert 0 < figure.json_ms <= figure.p99_ms and figure.size_kb > 0


def test_filled_board_is_the_day_it_says() -> None:
    now = datetime(2026, 12, 3, 20, tzinfo=UTC).timestamp()  # the day began 20 h ago (UTC board)
    snap = filled_board(now, queues=4, agents=40, calls=400).snapshot(now)
    assert len(snap["queues"]) == 4 and len(snap["agents"]) == 40
    offered = sum(q["figures"]["today"]["offered"] for q in snap["queues"])
    assert offered == 400 + 40  # the day's calls, and the live calls already answered
    states = [a["state"] for a in snap["agents"]]
    assert states.count("on_call") == 40  # fewer than 1,200 agents: every one is on a call
    assert all(q["waiting"] >= 1 for q in snap["queues"])
