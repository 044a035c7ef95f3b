"""The pop benchmark's harness on a small scale: real numbers come out, nothing is lost.

A smoke test, not a timed one: it asserts that every measured call produced a ringing card
at its agent's WebSocket and that the latencies are real measurements, never how fast.
"""

from __future__ import annotations

import gc

from cti_app.cli import build_parser
from cti_bench.harness import harness_without_collections
from cti_bench.pop import measure_pop


async def test_five_agents_get_every_card_and_latencies_come_out() -> None:
    figure = await measure_pop(5, seconds=1.0, rate=8.0, warmup=0.25, customers=200)
    assert figure.agents == 5
    assert figure.missing == 0 and figure.ami_reconnects == 0
    assert figure.events == 8  # calls started in the measured second, one ring each
    assert figure.p50_ms is not None and figure.p99_ms is not None and figure.max_ms is not None
    assert 0 < figure.p50_ms <= figure.p99_ms <= figure.max_ms
    # from when the AgentCalled was due: never before it was emitted
    assert figure.scheduled_p50_ms is not None and figure.scheduled_max_ms is not None
    assert figure.scheduled_p50_ms >= figure.p50_ms - 0.001
    assert "from schedule" in figure.line()
    assert figure.with_customer <= figure.events
    assert figure.unit == "pops/s" and "5 agents" in figure.line()


def test_the_harness_does_not_collect_while_measuring_and_is_restored_afterwards() -> None:
    with harness_without_collections():
        assert not gc.isenabled() and gc.get_freeze_count() > 10_000
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_bench_options() -> None:
    parser = build_parser()
    defaults = parser.parse_args(["bench"])
    assert (defaults.agents, defaults.pop_seconds, defaults.pop_rate) == ("100,1000", 25.0, 20.0)
    chosen = parser.parse_args(["bench", "--agents", "5,50", "--pop-seconds", "0"])
    assert (chosen.agents, chosen.pop_seconds) == ("5,50", 0.0)
