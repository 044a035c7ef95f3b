"""The IVR benchmark's harness on a small scale: real steps come out, every call is routed.

A smoke test, not a timed one: it asserts the figures are measurements of calls that went
through the product's menus, never how fast they were.
"""

from __future__ import annotations

from cti_app.cli import build_parser
from cti_bench.ivr import measure_ivr


async def test_a_few_sessions_go_through_the_menus_and_steps_are_measured() -> None:
    figure = await measure_ivr(4, seconds=1.5, warmup=0.3, audio=0.05, customers=100)
    assert figure.failed == 0 and figure.calls >= 4
    assert figure.open_max <= 4 and figure.open_min >= 1
    assert figure.p50_ms is not None and figure.p99_ms is not None
    assert 0 < figure.p50_ms <= figure.p99_ms <= figure.max_ms
    assert figure.events >= figure.calls * 3  # a call is several steps
    assert "sessions open at once" in figure.line()


def test_ivr_bench_options() -> None:
    args = build_parser().parse_args(["bench"])
    assert (args.ivr_sessions, args.ivr_seconds) == (500, 30.0)
    skip = build_parser().parse_args(["bench", "--ivr-sessions", "0"])
    assert skip.ivr_sessions == 0
