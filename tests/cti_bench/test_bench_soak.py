"""The soak on a small scale: its figures are real measurements of the product's process.

A smoke test, not a timed one: twenty agents, 5 calls/s, 20 s. It checks that the samples of
the product's memory and descriptors are taken and consistent, that the per-window pop
figures add up to the whole, that the agents' outcomes are saved and release their wrap-ups,
and that nothing is counted as an error when nothing went wrong.
"""

from __future__ import annotations

import pytest

from cti_app.cli import build_parser
from cti_bench.soak import measure_soak


async def test_a_small_soak_reports_real_figures() -> None:
    report = await measure_soak(
        20, 5.0, 20.0, warmup=3.0, sample_every=1.0, customers=500, window=10.0
    )
    assert report.cards == 100 and report.missing == 0  # every call of the 20 s measured
    assert report.ami_reconnects == 0 and report.product_reconnects == 0
    assert report.log_errors == [] and report.errors == 0
    # the agents work: 115 calls, each over some 4 s after it starts, its outcome 1-4 s later;
    # the saves of the calls of the last few seconds may still be under way at the end
    assert report.outcomes.failed == {}
    assert 55 <= report.outcomes.saved <= 115
    assert report.wrapups_held <= 115 - report.outcomes.saved
    # the product's own process: a Python service with a store holds tens of MB, and its
    # listening socket, the AMI link and 20 WebSockets are open descriptors
    assert 20 * 1024 < report.rss_start_kb <= report.rss_max_kb
    assert report.rss_end_kb <= report.rss_max_kb
    assert report.fds_start > 20 and report.fds_start <= report.fds_max
    assert report.samples >= 15  # one a second over the 20 s after warm-up
    assert report.drift_pct == pytest.approx(100.0 * (report.rss_end_kb / report.rss_start_kb - 1))
    assert [start for start, *_ in report.minutes] == [3.0, 13.0]
    assert sum(cards for _, cards, *_ in report.minutes) == report.cards
    for _, _, p50, p99, worst in report.minutes:
        assert 0 < p50 <= p99 <= worst <= report.max_ms
    assert 0 < report.p50_ms <= report.p99_ms <= report.max_ms
    text = "\n".join(report.lines())
    assert "20 agents" in text and "drift" in text and "open fds" in text


def test_soak_options() -> None:
    parser = build_parser()
    defaults = parser.parse_args(["bench"])
    assert not defaults.soak  # `make bench` does not run it
    assert (defaults.soak_agents, defaults.soak_rate, defaults.soak_minutes) == (1000, 50.0, 10.0)
    chosen = parser.parse_args(["bench", "--soak", "--soak-minutes", "1", "--soak-agents", "20"])
    assert chosen.soak and (chosen.soak_minutes, chosen.soak_agents) == (1.0, 20)
