"""The saturation benchmark on a tiny scale: its figures are real measurements and agree with
each other. A smoke test, not a timed one: nothing here asserts how fast the product is."""

from __future__ import annotations

import os

import pytest

from cti_app.cli import build_parser
from cti_bench.saturation import LIMIT_MS, cpu_seconds, measure_saturation

pytestmark = pytest.mark.timeout(240)


async def test_a_tiny_saturation_run_reports_real_consistent_figures() -> None:
    report = await measure_saturation(
        4,
        [4.0, 8.0],
        step_seconds=1.5,
        burst_seconds=1.0,
        calm_seconds=5.0,
        customers=200,
        warmup=0.5,
    )
    assert report.agents == 4
    assert [s.rate for s in report.steps] == [4.0, 8.0][: len(report.steps)]
    for step in report.steps:
        assert step.calls == round(step.rate * 1.5)
        assert step.arrived > 0 and step.missing >= 0
        assert 0 < step.achieved <= step.rate + 1e-9
        assert 0 < step.p50_ms <= step.p99_ms <= step.max_ms
        assert step.ami_reconnects >= 0 and step.lookups_skipped >= 0 and step.lag_max_s >= 0
        assert step.product_cpu_pct > 0 and step.harness_cpu_pct > 0
        assert "offered" in step.line() and "harness" in step.line()
        assert step.harness_stall_ms >= 0
    point = report.saturation_rate
    assert point is None or point in (4.0, 8.0)
    if point is None:
        assert all(s.p99_ms <= LIMIT_MS for s in report.steps)
    overload = report.overload
    assert overload is not None
    assert overload.burst_rate == 2 * (point or 8.0) and overload.calm_rate == 4.0
    assert overload.calls == round(overload.burst_rate * 1.0) + round(4.0 * 5.0)
    assert sum(w[1] + w[2] for w in overload.windows) == overload.calls
    assert sum(w[2] for w in overload.windows) == overload.missing
    assert [w[0] for w in overload.windows] == [0.0, 1.0]  # the burst's, then the calm's
    assert overload.product_cpu_pct > 0 and overload.harness_cpu_pct > 0
    text = "\n".join(report.lines())
    assert "saturation point" in text and "overload" in text


def test_cpu_seconds_of_this_process_grow() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    assert cpu_seconds(os.getpid()) >= before > 0


def test_saturation_options() -> None:
    parser = build_parser()
    defaults = parser.parse_args(["bench"])
    assert defaults.saturation is False
    assert (defaults.saturation_agents, defaults.saturation_step) == (500, 10.0)
    assert defaults.saturation_rates == "25,50,100,150,200,300"
    chosen = parser.parse_args(
        ["bench", "--saturation", "--saturation-agents", "20", "--saturation-rates", "5,10"]
    )
    assert chosen.saturation and chosen.saturation_agents == 20
    assert chosen.saturation_rates == "5,10"
