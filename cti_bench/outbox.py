"""Outbox throughput (``cti bench``): outcomes committed durably on PostgreSQL at a set rate,
each relayed to a webhook receiver in another process; how many per second were written, how
long a commit took, and how long after its commit each one arrived.

The writers save through :class:`OutcomeWriter`, the agent page's own write path (each
outcome committed with its outbox row before its save returns; concurrent ones
group-committed). The relay is the service's own, with its defaults but for ``batch``. The
receiver is the reference receiver (signature checked, keys applied once) in a child
process, so that its CPU is not taken from the writers and the relay.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import ClientSession, web
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker

from crm_sync.db import create_engine
from crm_sync.group_commit import OutcomeWriter
from crm_sync.migrate import upgrade
from crm_sync.outbox import Outbox
from crm_sync.receiver import Receiver
from crm_sync.relay import Relay, RelayPolicy
from crm_sync.timeline import OutcomeIn
from cti.children import die_with_parent
from cti_bench.data import load_postgres

SECRET = "bench-secret"
CUSTOMERS = 10_000
POOL = 20  # database connections of the writing instance
BATCH = 50  # changes per webhook request ([crm] batch)


@dataclass(frozen=True, slots=True)
class OutboxFigure:
    offered: float  # outcomes/s asked for
    written: int
    write_rate: float  # outcomes/s committed
    commit_p50: float  # ms
    commit_p99: float
    delivered: int
    delivery_p50: float  # ms from commit to arrival
    delivery_p99: float
    drained: float  # s after the last commit until the last arrival

    def lines(self) -> list[str]:
        return [
            f"outbox PostgreSQL: offered {self.offered:,.0f}/s, committed {self.written:,} at "
            f"{self.write_rate:,.0f} outcomes/s; commit p50 {self.commit_p50:.1f} ms, "
            f"p99 {self.commit_p99:.1f} ms",
            f"outbox delivery: {self.delivered:,} arrived; commit to arrival p50 "
            f"{self.delivery_p50:.0f} ms, p99 {self.delivery_p99:.0f} ms; drained "
            f"{self.drained:.2f} s after the last commit",
        ]


def _receive(port: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The child process: the reference receiver plus a /stats route with arrival times."""
    die_with_parent()  # a killed benchmark leaves no receiver behind
    receiver = Receiver(SECRET)

    async def stats(_request: web.Request) -> web.Response:
        arrived = {key: a.received for key, a in receiver.applied.items()}
        return web.json_response({"arrived": arrived, "duplicates": receiver.duplicates})

    async def main() -> None:
        app = receiver.app()
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def _write(url: str, rate: float, seconds: float) -> tuple[list[float], dict[str, float]]:
    """Outcomes arriving at ``rate``/s for ``seconds``, each saved as its own request would
    be (open loop: many agents, each saving now and then, not a few saving in a loop); their
    commit times (ms) and when each was committed (time.time(), by key)."""
    engine = create_engine(url, pool_size=POOL, max_overflow=0)
    outcomes = OutcomeWriter(async_sessionmaker(engine, expire_on_commit=False))
    took: list[float] = []
    committed: dict[str, float] = {}
    run = uuid.uuid4().hex[:8]

    async def save(n: int) -> None:
        item = OutcomeIn(
            key=f"{run}-{n}",
            pbx="bench",
            call_id=f"call-{n}",
            agent=f"agent{n % 2000}",
            disposition="resolved",
            notes="Customer asked about the invoice; explained the charges.",
            customer_id=n % CUSTOMERS + 1,
            new_customer_name=None,
            caller_e164=None,
        )
        start = time.perf_counter()
        await outcomes.save(item, now=datetime.now(UTC))
        took.append((time.perf_counter() - start) * 1000)
        committed[f"outcome:{item.key}"] = time.time()

    saves = []
    began = time.perf_counter()
    for n in range(int(rate * seconds)):  # paced: the offered load, whatever the store does
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        saves.append(asyncio.create_task(save(n)))
    for failed in [r for r in await asyncio.gather(*saves, return_exceptions=True) if r]:
        raise RuntimeError(f"an outcome was not saved: {failed!r}")
    await outcomes.close()
    await engine.dispose()
    return took, committed


async def _measure(url: str, hook: str, rate: float, seconds: float) -> OutboxFigure:
    engine = create_engine(url)
    relay = Relay(
        Outbox(async_sessionmaker(engine, expire_on_commit=False)),
        RelayPolicy(hook, SECRET, batch=BATCH),
    )
    relaying = asyncio.create_task(relay.run())
    began = time.perf_counter()
    took, committed = await _write(url, rate, seconds)
    wrote = time.perf_counter() - began
    last_commit = max(committed.values())
    async with ClientSession() as http:
        deadline = time.time() + 60
        while True:
            async with http.get(hook.replace("/hook", "/stats")) as answer:
                stats = json.loads(await answer.read())
            if len(stats["arrived"]) >= len(committed) or time.time() > deadline:
                break
            await asyncio.sleep(0.1)
    relaying.cancel()
    await asyncio.gather(relaying, return_exceptions=True)
    await engine.dispose()
    arrived: dict[str, float] = stats["arrived"]
    lags = sorted((arrived[k] - t) * 1000 for k, t in committed.items() if k in arrived)
    took.sort()
    return OutboxFigure(
        offered=rate,
        written=len(committed),
        write_rate=len(committed) / wrote,
        commit_p50=statistics.median(took),
        commit_p99=took[int(len(took) * 0.99)],
        delivered=len(lags),
        delivery_p50=statistics.median(lags) if lags else float("nan"),
        delivery_p99=lags[int(len(lags) * 0.99)] if lags else float("nan"),
        drained=max(arrived.values(), default=last_commit) - last_commit,
    )


def run_outbox(pg_url: str, rate: float = 2000.0, seconds: float = 10.0) -> OutboxFigure:
    """The figure on a fresh PostgreSQL database made from ``pg_url`` (dropped after)."""
    from cti_bench.run import _admin

    base = make_url(pg_url)
    name = f"cti_bench_outbox_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    spawn = multiprocessing.get_context("spawn")
    ports = spawn.Queue()
    child = spawn.Process(target=_receive, args=(ports,), daemon=True)
    try:
        upgrade(url)
        asyncio.run(load_postgres(url, CUSTOMERS))
        child.start()
        hook = f"http://127.0.0.1:{ports.get(timeout=30)}/hook"
        figure = asyncio.run(_measure(url, hook, rate, seconds))
    finally:
        child.kill()
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    for line in figure.lines():
        print(line)
    return figure
