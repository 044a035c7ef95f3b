"""``cti bench --soak``: the pop benchmark's set-up held for minutes, watching the product's
memory and file descriptors, and counting what went wrong.

The same two processes as :mod:`cti_bench.pop` (the product as ``cti serve`` of its own; the
simulated PBX and N agents' clients in the harness), calls at a fixed rate for ``seconds``.
Every ``sample_every`` seconds the harness reads the product's resident memory
(``VmRSS`` in ``/proc/<pid>/status``) and counts its open descriptors (``/proc/<pid>/fd``).
The report gives RSS at the start (the first sample after ``warmup``), its maximum and its
value at the end, the drift from start to end and to the maximum in per cent, the descriptor
counts, pop p50/p99 per minute of calls (AgentCalled emitted → ringing card at the agent's
client, as in the pop figures), and the errors: cards that never arrived, AMI reconnects (the
simulator's logins after the first, and the product's own ``cti_ami_reconnects`` from
``/metrics``) and the lines the product logged at ERROR or above.

The soak's agents work as agents do: each wrap-up card gets its outcome a few seconds after
the call ended (``POST /api/calls/…/outcome``, as the page's form), so the product holds what
a day of work holds, not every call of the run waiting for an outcome that never comes.

:func:`drive` is the load itself, also used by the fault tests (a browser that stops reading):
it can add agents of its own queues that it does not connect (``extra``) and run something
beside the calls (``during``), e.g. a stalled socket and calls ringing its agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from crm_sync.migrate import upgrade
from cti.settings import AgentSettings
from cti_bench.data import load_sqlite
from cti_bench.harness import (
    end_product,
    free_port,
    harness_without_collections,
    raise_fd_limit,
    spread,
    start_product,
    until,
)
from cti_bench.pop import (
    _CSRF,
    CUSTOMERS,
    GRACE,
    QUEUE,
    Key,
    _AgentClient,
    _agents,
    _caller,
    _play,
    _ring,
    _Run,
    _settings_file,
    _StampingServer,
    connect_all,
    paced_calls,
)
from pbxsim import AmiServer
from pbxsim.scenarios import Agent, QueueSpec, TimedEvent, answered

SOAK_AGENTS = 1000
SOAK_RATE = 50.0  # calls per second
SOAK_MINUTES = 10.0
SOAK_WARMUP = 60.0  # seconds of calls before RSS is taken as the start (hub.REPLAY_SECONDS)
WRAPUP = (1.0, 4.0)  # seconds an agent takes to save a call's outcome, drawn uniformly
SAVE_TRIES = 5
SAMPLE_EVERY = 5.0  # seconds between samples of the product's RSS and descriptors
WINDOW = 60.0  # seconds of calls per pop figure
_METRIC = re.compile(r"^(cti_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$", re.MULTILINE)


def rss_kb(pid: int) -> int:
    """Resident memory of process ``pid`` in kB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the first call was due
    rss_kb: int
    fds: int


@dataclass
class Live:
    """The running set-up, as :func:`drive`'s ``during`` sees it."""

    pid: int
    url: str
    server: AmiServer
    rng: random.Random
    log: Path
    plays: set[asyncio.Task[None]] = field(default_factory=set)

    def play(self, events: Sequence[TimedEvent], start: float) -> None:
        """Emit a call's events at ``start`` (the loop's clock) plus their offsets."""
        task = asyncio.create_task(_play(self.server, events, start))
        self.plays.add(task)
        task.add_done_callback(self.plays.discard)


@dataclass
class Outcomes:
    """What the working agents' saves got: 200s, and every other answer by status."""

    saved: int = 0
    failed: dict[int, int] = field(default_factory=dict)  # status → count (after retries)
    retried: int = 0  # 503s tried again


class _WorkingAgent(_AgentClient):
    """An agent who saves each call's outcome after a wrap-up of ``wrapup`` seconds, as
    the page's form does: the CSRF token of the agent page, a key per draft, a 503 tried
    again with the same key."""

    def __init__(
        self,
        base_url: str,
        login: str,
        rng: random.Random,
        wrapup: tuple[float, float],
        outcomes: Outcomes,
    ) -> None:
        super().__init__(base_url, login)
        self.rng = rng
        self.wrapup = wrapup
        self.outcomes = outcomes
        self.csrf = ""
        self._owed: set[str] = set()  # card ids with a save under way
        self._saves: set[asyncio.Task[None]] = set()

    async def log_in(self) -> None:
        await super().log_in()
        async with self.http.get("/") as page:
            match = _CSRF.search(await page.text())
        if match is None:
            raise RuntimeError(f"{self.login}: no CSRF token on the agent page")
        self.csrf = match[1]

    def seen(self, card: dict[str, Any]) -> None:
        if card.get("state") != "wrapup" or card["id"] in self._owed:
            return
        self._owed.add(card["id"])
        task = asyncio.create_task(self._save(card, self.rng.uniform(*self.wrapup)))
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    async def _save(self, card: dict[str, Any], after: float) -> None:
        await asyncio.sleep(after)
        matches = (card.get("lookup") or {}).get("cards") or []
        body: dict[str, Any] = {"key": uuid.uuid4().hex, "disposition": "wrong_number"}
        if len(matches) == 1:
            body = {**body, "disposition": "resolved", "customer_id": matches[0]["id"]}
        path = f"/api/calls/{card['pbx']}/{card['call_id']}/outcome"
        for attempt in range(1, SAVE_TRIES + 1):
            async with self.http.post(path, json=body, headers={"X-CSRF-Token": self.csrf}) as r:
                status = r.status
            if status != 503 or attempt == SAVE_TRIES:
                break
            self.outcomes.retried += 1
            await asyncio.sleep(0.5 * attempt)
        self._owed.discard(card["id"])
        if status == 200:
            self.outcomes.saved += 1
        else:
            self.outcomes.failed[status] = self.outcomes.failed.get(status, 0) + 1

    async def close(self) -> None:
        for task in list(self._saves):
            task.cancel()
        await asyncio.gather(*self._saves, return_exceptions=True)
        await super().close()


@dataclass
class LoadRun:
    """What one :func:`drive` measured. Times are ``time.monotonic()``; ``due`` of a key
    is when its AgentCalled was due by the plan, ``begin`` when the first call was;
    ``planned`` is each measured call's start in seconds after ``begin``."""

    agents: int
    rate: float
    seconds: float
    warmup: float
    begin: float
    wanted: list[Key]
    planned: dict[Key, float]
    run: _Run
    samples: list[Sample]
    sim_logins: int
    metrics: dict[str, float]
    log_errors: list[str]
    logins_refused: int = 0  # agents' logins answered 503 and tried again
    outcomes: Outcomes = field(default_factory=Outcomes)

    def latencies(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        """Seconds from emit to arrival of the measured cards of the calls started in
        [start, end) seconds after the first."""
        run = self.run
        return [
            run.arrived[k] - run.sent[k]
            for k in self.wanted
            if k in run.arrived and k in run.sent and start <= self.planned[k] < end
        ]

    @property
    def missing(self) -> int:
        return sum(1 for k in self.wanted if k not in self.run.arrived)


async def _metrics(http: aiohttp.ClientSession) -> dict[str, float]:
    """The product's ``/metrics``, summed over labels: ``{name: value}``."""
    async with http.get("/metrics") as reply:
        text = await reply.text()
    found: dict[str, float] = {}
    for name, _, value in _METRIC.findall(text):
        found[name] = found.get(name, 0.0) + float(value)
    return found


@contextlib.asynccontextmanager
async def _product(
    customers: int, configure: Callable[[Path, int], Path]
) -> AsyncIterator[tuple[int, int, Path]]:
    """``cti serve`` on a fresh SQLite store (as :func:`cti_bench.harness.running_product`),
    yielding its pid, port and log file."""
    with tempfile.TemporaryDirectory(prefix="cti-bench-soak-") as name:
        folder = Path(name)
        await asyncio.to_thread(upgrade, f"sqlite:///{folder}/store.sqlite3")
        await asyncio.to_thread(load_sqlite, str(folder / "store.sqlite3"), customers)
        port = free_port()
        log = folder / "serve.log"
        process = await start_product(configure(folder, port), port, log)
        try:
            yield process.pid, port, log
        finally:
            await end_product(process)


async def drive(
    agents: int,
    rate: float,
    seconds: float,
    *,
    warmup: float = 2.0,
    customers: int = CUSTOMERS,
    sample_every: float = SAMPLE_EVERY,
    seed: int = 1,
    extra: Sequence[Agent] = (),
    extra_queues: Sequence[QueueSpec] = (),
    during: Callable[[Live], AbstractAsyncContextManager[Any]] | None = None,
    wrapup: tuple[float, float] | None = None,
) -> LoadRun:
    """``agents`` logged-in clients in the ``support`` queue, answered calls at ``rate``/s
    for ``warmup`` + ``seconds``; cards of the calls due after ``warmup`` are measured.
    ``extra`` agents (of ``extra_queues``) are configured in the product and the simulator
    but not connected; ``during(live)`` is entered once the agents are connected and left
    after the last cards, around the calls. With ``wrapup``, the agents save each call's
    outcome that many seconds (drawn uniformly) after it ended; without, they never do."""
    if agents < 1 or rate <= 0 or seconds <= 0:
        raise ValueError("drive needs at least one agent, a positive rate and duration")
    raise_fd_limit(2 * (agents + len(extra)) + 256)
    loop = asyncio.get_running_loop()
    run = _Run()
    sim_agents, agent_settings = _agents(agents)
    extra_settings = [
        AgentSettings(id=a.name, name=a.name, members=(a.name, a.interface)) for a in extra
    ]
    every = [*sim_agents, *extra]
    ids = {a.name: a.name for a in every}
    server = _StampingServer(
        run,
        ids,
        system_name="bench",
        agents=every,
        queues=(QueueSpec(QUEUE, "rrmemory"), *extra_queues),
    )
    samples: list[Sample] = []
    clients: list[_AgentClient] = []
    wanted: list[Key] = []
    planned: dict[Key, float] = {}
    outcomes = Outcomes()
    await server.start()
    try:
        async with _product(
            customers,
            lambda folder, port: _settings_file(
                folder, server, [*agent_settings, *extra_settings], port
            ),
        ) as (pid, port, log):
            url = f"http://127.0.0.1:{port}"
            live = Live(pid, url, server, random.Random(seed), log)
            http = aiohttp.ClientSession(url)
            stack = contextlib.AsyncExitStack()
            sampler: asyncio.Task[None] | None = None
            try:
                clients = [
                    _AgentClient(url, s.id)
                    if wrapup is None
                    else _WorkingAgent(url, s.id, random.Random(f"{seed}/{s.id}"), wrapup, outcomes)
                    for s in agent_settings
                ]
                await connect_all(clients, run)
                await until(lambda: server.clients >= 1, 10.0, "the product to log in to the PBX")
                rng = live.rng
                probe = answered(
                    server.pbx, rng, start=time.time(), number=_caller(rng, customers, 1), name=None
                )
                probe_key, _ = _ring(probe, ids)
                live.play(probe, loop.time())
                await until(lambda: probe_key in run.arrived, 10.0, "the first card")
                if during is not None:
                    await stack.enter_async_context(during(live))
                stack.enter_context(harness_without_collections())
                begin = loop.time()

                async def sample() -> None:
                    while True:
                        at = loop.time() - begin
                        samples.append(Sample(at, rss_kb(pid), open_fds(pid)))
                        await asyncio.sleep(sample_every - (loop.time() - begin) % sample_every)

                sampler = asyncio.create_task(sample())
                total = round((warmup + seconds) * rate)
                counted_from = round(warmup * rate)
                calls = paced_calls(server, rng, customers, ids, run, rate=rate, total=total)
                async for serial, key, events, due in calls:
                    if serial >= counted_from:
                        wanted.append(key)
                        planned[key] = serial / rate
                    live.play(events, due)
                with contextlib.suppress(RuntimeError):
                    await until(
                        lambda: all(k in run.arrived for k in wanted), GRACE, "the last cards"
                    )
                sampler.cancel()
                samples.append(Sample(loop.time() - begin, rss_kb(pid), open_fds(pid)))
                await stack.aclose()
                metrics = await _metrics(http)
            finally:
                if sampler is not None:
                    sampler.cancel()
                await stack.aclose()
                for task in list(live.plays):
                    task.cancel()
                await asyncio.gather(*live.plays, return_exceptions=True)
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
                await http.close()
            said = await asyncio.to_thread(log.read_text, errors="replace")
    finally:
        await server.stop()
    errors = [
        line
        for line in said.splitlines()
        if any(word in line for word in ("ERROR", "CRITICAL", "Traceback"))
    ]
    refused = sum(c.refused for c in clients)
    return LoadRun(
        agents,
        rate,
        seconds,
        warmup,
        begin,
        wanted,
        planned,
        run,
        samples,
        server.logins,
        metrics,
        errors,
        refused,
        outcomes,
    )


@dataclass
class SoakReport:
    agents: int
    rate: float
    seconds: float
    cards: int
    missing: int
    minutes: list[tuple[float, int, float, float, float]]  # (from s, cards, p50, p99, max ms)
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_start_kb: int
    rss_max_kb: int
    rss_end_kb: int
    fds_start: int
    fds_max: int
    fds_end: int
    samples: int
    ami_reconnects: int  # the simulator's logins after the first
    product_reconnects: float  # cti_ami_reconnects on /metrics
    log_errors: list[str]
    logins_refused: int = 0
    outcomes: Outcomes = field(default_factory=Outcomes)
    wrapups_held: float = 0.0  # cti_wrapups_held on /metrics at the end

    @property
    def drift_pct(self) -> float:
        return 100.0 * (self.rss_end_kb - self.rss_start_kb) / self.rss_start_kb

    @property
    def max_drift_pct(self) -> float:
        return 100.0 * (self.rss_max_kb - self.rss_start_kb) / self.rss_start_kb

    @property
    def errors(self) -> int:
        reconnects = self.ami_reconnects + int(self.product_reconnects)
        return self.missing + reconnects + len(self.log_errors) + sum(self.outcomes.failed.values())

    def lines(self) -> list[str]:
        out = [
            f"soak {self.agents:,} agents, {self.rate:g} calls/s, {self.seconds:g}s: "
            f"{self.cards:,} cards, missing {self.missing}, p50 {self.p50_ms:.2f} ms  "
            f"p99 {self.p99_ms:.2f} ms  max {self.max_ms:.1f} ms",
            f"  product RSS: start {self.rss_start_kb / 1024:.1f} MB (after warm-up), "
            f"max {self.rss_max_kb / 1024:.1f} MB, end {self.rss_end_kb / 1024:.1f} MB; "
            f"drift {self.drift_pct:+.1f} % (to max {self.max_drift_pct:+.1f} %), "
            f"{self.samples} samples",
            f"  open fds: start {self.fds_start}, max {self.fds_max}, end {self.fds_end}",
            f"  errors: cards lost {self.missing}, AMI reconnects {self.ami_reconnects} "
            f"(product's counter {self.product_reconnects:g}), "
            f"logged errors {len(self.log_errors)}; agents' logins refused (429/503) and "
            f"tried again {self.logins_refused}",
            f"  outcomes: saved {self.outcomes.saved:,}, refused "
            f"{sum(self.outcomes.failed.values())} {dict(sorted(self.outcomes.failed.items()))}, "
            f"503 tried again {self.outcomes.retried}; wrap-ups held at the end "
            f"{self.wrapups_held:g}",
        ]
        for start, cards, p50, p99, worst in self.minutes:
            out.append(
                f"  calls from {start:>5.0f}s: {cards:>6,} cards  p50 {p50:.2f} ms  "
                f"p99 {p99:.2f} ms  max {worst:.1f} ms"
            )
        out.extend(f"  logged: {line[:200]}" for line in self.log_errors[:10])
        return out


def report(load: LoadRun, window: float = WINDOW) -> SoakReport:
    """The soak's figures from one :func:`drive`."""
    after = [s for s in load.samples if s.at >= load.warmup] or load.samples[-1:]
    if not after:
        raise RuntimeError("no sample of the product was taken")
    minutes = []
    first = min(load.planned.values(), default=load.warmup)
    start = first
    while start < first + load.seconds:
        got = load.latencies(start, start + window)
        if got:
            minutes.append((start, len(got), *spread(got)))
        start += window
    every = load.latencies()
    if not every:
        raise RuntimeError("no card arrived in the measured window")
    p50, p99, worst = spread(every)
    return SoakReport(
        agents=load.agents,
        rate=load.rate,
        seconds=load.seconds,
        cards=len(every),
        missing=load.missing,
        minutes=minutes,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=worst,
        rss_start_kb=after[0].rss_kb,
        rss_max_kb=max(s.rss_kb for s in after),
        rss_end_kb=after[-1].rss_kb,
        fds_start=after[0].fds,
        fds_max=max(s.fds for s in after),
        fds_end=after[-1].fds,
        samples=len(after),
        ami_reconnects=load.sim_logins - 1,
        product_reconnects=load.metrics.get("cti_ami_reconnects_total", 0.0),
        log_errors=load.log_errors,
        logins_refused=load.logins_refused,
        outcomes=load.outcomes,
        wrapups_held=load.metrics.get("cti_wrapups_held", 0.0),
    )


async def measure_soak(
    agents: int = SOAK_AGENTS,
    rate: float = SOAK_RATE,
    seconds: float = SOAK_MINUTES * 60,
    *,
    warmup: float = SOAK_WARMUP,
    sample_every: float = SAMPLE_EVERY,
    customers: int = CUSTOMERS,
    window: float = WINDOW,
) -> SoakReport:
    load = await drive(
        agents,
        rate,
        seconds,
        warmup=warmup,
        customers=customers,
        sample_every=sample_every,
        wrapup=WRAPUP,
    )
    return report(load, window)


def run_soak(
    agents: int = SOAK_AGENTS, rate: float = SOAK_RATE, minutes: float = SOAK_MINUTES
) -> SoakReport:
    """The soak; print and return its report."""
    print(
        f"soak: {agents:,} agents, answered calls at {rate:g}/s for {minutes:g} min after "
        f"{SOAK_WARMUP:g}s warm-up; the product (`cti serve`, SQLite store of {CUSTOMERS:,} "
        f"customers) sampled every {SAMPLE_EVERY:g}s"
    )
    figure = asyncio.run(measure_soak(agents, rate, minutes * 60))
    for line in figure.lines():
        print(line)
    return figure
