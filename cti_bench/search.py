"""Customer search latency on a million customers (``cti bench``, after the lookup figures, on
the same databases): what an agent types between calls, from a common family name's first
letters (tens of thousands of matches, of which 21 are read) to a full name, a Chinese
family name's one character, and a number in its national spelling."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from crm_sync.db import create_engine
from crm_sync.models import Customer
from crm_sync.phones import PhoneNormalizer
from crm_sync.search import CustomerSearch
from cti_bench.data import number

# what agents type, by kind, from a stored customer (id, name): the queries find somebody
QUERIES: dict[str, Callable[[int, str], str]] = {
    "family prefix": lambda _i, name: name.split()[-1][:4],
    "given family": lambda _i, name: f"{name.split()[0]} {name.split()[-1]}",
    "zh family": lambda _i, name: name[0],
    "zh full name": lambda _i, name: name,
    "phone": lambda i, _name: number(i)[3:],  # as dialled at home
}
_ZH = ("zh family", "zh full name")


async def measure_search(url: str, count: int, samples: int) -> list[tuple[str, float, float]]:
    """(kind, p50 ms, p99 ms) of ``samples`` searches of each kind."""
    engine = create_engine(url)
    sessions = async_sessionmaker(engine)
    search = CustomerSearch(sessions, PhoneNormalizer("CN"))
    rng = random.Random(5)
    ids = [rng.randint(1, count) for _ in range(samples * 4)]
    async with sessions() as session:
        rows = await session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids)))
        stored = sorted((int(i), str(n)) for i, n in rows)
    chinese = [(i, n) for i, n in stored if " " not in n]
    latin = [(i, n) for i, n in stored if " " in n]
    figures = []
    try:
        for kind, make in QUERIES.items():
            pool = chinese if kind in _ZH else latin
            wanted = [make(*rng.choice(pool)) for _ in range(samples)]
            for query in wanted[:20]:  # warm the pool and the page cache
                await search.find(query)
            timings = []
            for query in wanted:
                started = time.perf_counter()
                results = await search.find(query)
                timings.append((time.perf_counter() - started) * 1000)
                if not results.found:
                    raise RuntimeError(f"search {query!r} found nobody")
            timings.sort()
            figures.append((kind, statistics.median(timings), timings[int(samples * 0.99)]))
    finally:
        await engine.dispose()
    return figures
