"""The search figures' harness on a small store: realistic names with their terms loaded,
and every kind of query an agent types finds somebody (the harness refuses empty results)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crm_sync.migrate import upgrade
from cti_bench.data import load_sqlite
from cti_bench.search import QUERIES, measure_search


async def test_every_kind_of_query_finds_somebody_in_the_bench_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.sqlite3'}"
    await asyncio.to_thread(upgrade, url)
    load_sqlite(str(tmp_path / "bench.sqlite3"), 3000)
    figures = await measure_search(url, 3000, 25)
    assert [kind for kind, _, _ in figures] == list(QUERIES)
    assert all(0 < p50 <= p99 for _, p50, p99 in figures)
