"""The outbox figure of ``cti bench`` at a small load: every outcome committed and arrived."""

from __future__ import annotations

import asyncio

from cti_bench.outbox import run_outbox
from tests.conftest import PG_URL, _admin


async def _postgres_answers() -> None:
    await (await _admin()).close()  # skips (or fails under CI) without PostgreSQL


def test_outbox_figure_counts_what_was_written_and_what_arrived() -> None:
    asyncio.run(_postgres_answers())
    figure = run_outbox(PG_URL, rate=200.0, seconds=1.0)
    assert (figure.written, figure.delivered) == (200, 200)
    assert 0 < figure.commit_p50 <= figure.commit_p99
    assert 0 < figure.delivery_p50 <= figure.delivery_p99 < 5000
    assert figure.write_rate > 100
    assert any("outcomes/s" in line for line in figure.lines())
