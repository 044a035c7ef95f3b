"""``cti bench --saturation``: the offered call rate stepped up until the pop's p99 passes
100 ms (the saturation point), then what happens past it.

The pop benchmark's two processes (:mod:`cti_bench.pop`): the product as ``cti serve`` of its
own, a SQLite store of customers; the harness holds the simulated PBX (N agents in one
``rrmemory`` queue) and N agents' clients. **One product process** takes every step: the
agents log in once, then calls of the ``answered`` scenario come at each offered rate for a
short window (``step_seconds``), one step after the other.

A step's calls are built before it starts and merged into one timeline of events, emitted by
one task (no task per call), so the harness's own work is the emitting, the simulator's
writers and the clients' sockets. Per step:

* **offered** calls/s (the plan) and **achieved** pops/s: ringing cards of the step's calls
  that arrived, over the time from the step's first ``AgentCalled`` due to its last card
  arriving (at least the window), so achieved <= offered;
* pop p50/p99/max, AgentCalled emitted by the simulator -> ringing card at the agent's
  client (as in the pop figures), and how late the harness emitted the AgentCalled frames
  (p99 of emitted - due: a starved harness shows here, not as product latency);
* cards missing, AMI reconnects (the simulator's logins after the first), lookups skipped
  (``cti_lookups_skipped_total`` on the product's ``/metrics``, the step's share) and the
  largest ``cti_ami_lag_seconds`` seen (``/metrics`` polled every 0.25 s);
* the product's CPU (``utime + stime`` of ``/proc/<pid>/stat`` over the step) and the
  harness's own (``time.process_time()`` over the step), in % of one core.

The **saturation point** is the first offered rate at which p99 passes 100 ms (or at which a
card is lost or the AMI link is dropped). Then the **overload run**: twice that rate for
``burst_seconds`` (30), then a normal rate (the first step's) for ``calm_seconds`` (60); the
report gives the cards lost, AMI reconnects, lookups skipped, p99 per 5 s window of calls, and
how long after the burst the calls' p99 is back under 100 ms for good.

The simulator drops a reader whose socket does not drain within 100 ms (like Asterisk's
``writetimeout``); a CPU-starved harness can hit that itself (its loop wakes late), which is
why the harness's CPU and lateness are shown apart: a step whose AgentCalled frames left
the harness more than 50 ms late at p99 is marked ``HARNESS LATE`` (its figures are the
machine's, not the product's alone), the harness's longest loop stall is given per step, and
each time the simulator dropped the product the report gives its reason with the harness's
longest stall just before it (a stall of 100 ms or more can cause the drop by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from cti_bench.harness import harness_without_collections, raise_fd_limit, spread, until
from cti_bench.pop import (
    QUEUE,
    TIMINGS,
    Key,
    _AgentClient,
    _agents,
    _caller,
    _ring,
    _Run,
    _settings_file,
    _StampingServer,
    connect_all,
)
from cti_bench.soak import _metrics, _product
from pbxsim import AmiServer
from pbxsim.scenarios import QueueSpec, TimedEvent, answered

SATURATION_AGENTS = 500
SATURATION_RATES = (25.0, 50.0, 100.0, 150.0, 200.0, 300.0)
STEP_SECONDS = 10.0
WARMUP = 3.0  # seconds of calls at the first rate before the steps, not reported
BURST_SECONDS = 30.0
CALM_SECONDS = 60.0
WINDOW = 5.0  # seconds of calls per p99 window of the overload run
LIMIT_MS = 100.0  # the p99 that marks saturation
CUSTOMERS = 10_000
GRACE = 15.0  # seconds to wait for a step's last cards
_NOTEWORTHY = ("WARNING", "ERROR", "CRITICAL", "Traceback", "behind", "caught up")
POLL = 0.25  # seconds between scrapes of /metrics during a step


class DropLog(logging.Handler):
    """The simulator's reasons for dropping a client (``AMI sim: dropping client: ...``, a
    debug line of :mod:`pbxsim.server`), kept while attached: whether a lost AMI link was the
    simulator's write timeout (a reader that did not drain within 100 ms) or else."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: list[str] = []
        self.times: list[float] = []  # time.monotonic() of each drop
        self._logger = logging.getLogger("pbxsim.server")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "dropping client" in message:
            self.times.append(time.monotonic())
            self.reasons.append(message.split("dropping client: ", 1)[-1])

    def __enter__(self) -> DropLog:
        self._logger.addHandler(self)
        self._logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


class LoopStalls:
    """How late this process's event loop woke a 10 ms timer, while entered (``async
    with``): a harness stall longer than the simulator's 100 ms write timeout can drop a
    reader that was keeping up. ``stalls`` holds (when it ended, how long) of each stall
    over 20 ms, on the loop's clock (``time.monotonic()``)."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def worst(self) -> float:
        return max((length for _, length in self.stalls), default=0.0)

    def worst_between(self, start: float, end: float) -> float:
        """The longest stall that ended in [start, end], in seconds."""
        return max((n for at, n in self.stalls if start <= at <= end), default=0.0)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            now = loop.time()
            if now - due > 0.02:
                self.stalls.append((now, now - due))

    async def __aenter__(self) -> LoopStalls:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def explain(self, drops: DropLog, first: int = 0) -> list[str]:
        """The simulator's drops from ``first`` on, each with the harness's longest stall
        that ended in the 0.3 s before it (or just after, the same loop turn)."""
        return [
            f"{reason} (harness loop stalled {self.worst_between(at - 0.3, at + 0.05) * 1000:.0f}"
            " ms just before)"
            for at, reason in list(zip(drops.times, drops.reasons, strict=True))[first:]
        ]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used, in seconds (``/proc/<pid>/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


Call = tuple[float, list[TimedEvent]]  # (start: loop time, the call's timed events)


def build_calls(
    server: AmiServer,
    rng: random.Random,
    *,
    count: int,
    rate: float,
    begin: float,
    customers: int,
    ids: Mapping[str, str],
    due: dict[Key, float],
    first_serial: int = 0,
) -> Iterator[Call]:
    """``count`` answered calls of the ``support`` queue starting ``1/rate`` s apart from
    ``begin`` (loop time), built as they are taken (so a long run holds only the calls under
    way); each call's AgentCalled due time goes into ``due`` by (call id, agent id) as it is
    built. Nine callers in ten are among the ``customers`` seeded ones."""
    wall = time.time() - asyncio.get_running_loop().time()  # loop time -> epoch
    for n in range(count):
        serial = first_serial + n
        start = begin + n / rate
        events = answered(
            server.pbx,
            rng,
            start=wall + start,
            number=_caller(rng, customers, serial + 2),
            name=f"Caller {serial}",
            queue=QUEUE,
            timings=TIMINGS,
        )
        key, offset = _ring(events, ids)
        due[key] = start + offset
        yield start, events


async def play_calls(server: AmiServer, calls: Iterable[Call], lookahead: float = 1.0) -> None:
    """Emit the events of ``calls`` (in order of start) each when due (the loop's clock),
    from one task: each call is taken ``lookahead`` seconds before it starts and its events
    merged into one timeline."""
    loop = asyncio.get_running_loop()
    source = iter(calls)
    upcoming = next(source, None)
    timeline: list[tuple[float, int, Mapping[str, str]]] = []
    order = 0
    emitted = 0
    while timeline or upcoming is not None:
        now = loop.time()
        while upcoming is not None and upcoming[0] <= now + lookahead:
            start, events = upcoming
            for at, event in events:
                heapq.heappush(timeline, (start + at, order, event))
                order += 1
            upcoming = next(source, None)
        if timeline and timeline[0][0] <= now:
            server.emit(heapq.heappop(timeline)[2])
            emitted += 1
            if emitted % 200 == 0:
                await asyncio.sleep(0)  # behind: let the writers and the clients run
            continue
        wake = timeline[0][0] if timeline else float("inf")
        if upcoming is not None:
            wake = min(wake, upcoming[0] - lookahead)
        await asyncio.sleep(max(0.0, wake - loop.time()))


@dataclass
class Step:
    """One offered rate's figures (see the module's docstring)."""

    rate: float  # offered calls/s
    calls: int
    seconds: float  # the window
    arrived: int
    span: float  # first AgentCalled due -> last card, at least the window
    p50_ms: float
    p99_ms: float
    max_ms: float
    late_p99_ms: float  # the harness: AgentCalled emitted - due
    ami_reconnects: int
    lookups_skipped: int
    lag_max_s: float
    product_cpu_pct: float
    harness_cpu_pct: float
    harness_stall_ms: float = 0.0  # the harness's loop late, at worst
    sim_drops: list[str] = field(default_factory=list)  # the simulator's reasons

    @property
    def missing(self) -> int:
        return self.calls - self.arrived

    @property
    def achieved(self) -> float:
        return self.arrived / self.span

    @property
    def harness_late(self) -> bool:
        """Whether the harness emitted the AgentCalled frames too late for the step to be
        the product's figure alone (p99 of the lateness over half the 100 ms limit)."""
        return self.late_p99_ms > LIMIT_MS / 2

    @property
    def saturated(self) -> bool:
        return self.p99_ms > LIMIT_MS or self.missing > 0 or self.ami_reconnects > 0

    def line(self) -> str:
        return (
            f"  {self.rate:>6g}/s offered  {self.achieved:>7.1f} pops/s achieved  "
            f"p50 {self.p50_ms:>8.2f} ms  p99 {self.p99_ms:>8.2f} ms  max {self.max_ms:>8.1f} ms  "
            f"missing {self.missing}  reconnects {self.ami_reconnects}  "
            f"skipped {self.lookups_skipped}  lag max {self.lag_max_s:.2f} s  "
            f"CPU product {self.product_cpu_pct:.0f} %  harness {self.harness_cpu_pct:.0f} % "
            f"(late p99 {self.late_p99_ms:.1f} ms, loop stall max {self.harness_stall_ms:.0f} ms)"
            + ("  HARNESS LATE: not the product's figure alone" if self.harness_late else "")
            + (
                f"\n         simulator dropped the product: {_counted(self.sim_drops)}"
                if self.sim_drops
                else ""
            )
        )


@dataclass
class Overload:
    """The overload run: ``burst_rate`` for ``burst_seconds``, then ``calm_rate``."""

    burst_rate: float
    burst_seconds: float
    calm_rate: float
    calm_seconds: float
    calls: int
    missing: int
    ami_reconnects: int
    lookups_skipped: int
    lag_max_s: float
    product_cpu_pct: float
    harness_cpu_pct: float
    windows: list[tuple[float, int, int, float]]  # (from s, cards, missing, p99 ms)
    harness_stall_ms: float = 0.0  # the harness's loop late, at worst
    sim_drops: list[str] = field(default_factory=list)  # the simulator's reasons
    log_lines: list[str] = field(default_factory=list)  # the product's WARNING+ lines

    @property
    def recovered_after(self) -> float | None:
        """Seconds after the burst's end from which every 5 s window of calls has p99 under
        100 ms and no card missing; None if never."""
        after = [w for w in self.windows if w[0] >= self.burst_seconds]
        recovered: float | None = None
        for start, cards, missing, p99 in after:
            if cards and not missing and p99 < LIMIT_MS:
                if recovered is None:
                    recovered = start - self.burst_seconds
            else:
                recovered = None
        return recovered

    def lines(self) -> list[str]:
        back = self.recovered_after
        out = [
            f"overload: {self.burst_rate:g} calls/s for {self.burst_seconds:g}s, then "
            f"{self.calm_rate:g} calls/s for {self.calm_seconds:g}s: {self.calls:,} calls, "
            f"cards lost {self.missing}, AMI reconnects {self.ami_reconnects}, lookups "
            f"skipped {self.lookups_skipped}, lag max {self.lag_max_s:.2f} s; CPU product "
            f"{self.product_cpu_pct:.0f} %  harness {self.harness_cpu_pct:.0f} % (its loop "
            f"stalled up to {self.harness_stall_ms:.0f} ms)",
            f"  simulator dropped the product: {_counted(self.sim_drops) or 'never'}",
            "  p99 back under 100 ms "
            + (
                f"for the calls from {back:g}s after the burst on"
                if back is not None
                else "never within the run"
            ),
        ]
        for start, cards, missing, p99 in self.windows:
            out.append(
                f"  calls from {start:>4g}s: {cards:>5,} cards  missing {missing:>4}  "
                f"p99 {p99:>9.2f} ms"
            )
        routine = ("behind its events", "caught up", "outbox not read")
        shed = sum(1 for line in self.log_lines if any(w in line for w in routine))
        other = [line for line in self.log_lines if not any(w in line for w in routine)]
        out.append(
            f"  product logged {shed} lines of falling behind / catching up (or its outbox "
            f"figure late), and {len(other)} other warnings or errors"
            + (", the first ones:" if other else "")
        )
        out.extend(f"  product logged: {line[:240]}" for line in other[:12])
        return out


@dataclass
class SaturationReport:
    agents: int
    steps: list[Step]
    overload: Overload | None = None

    @property
    def saturation_rate(self) -> float | None:
        """The first offered rate at which p99 passed 100 ms (or a card or the link was
        lost); None if no step did."""
        return next((s.rate for s in self.steps if s.saturated), None)

    def lines(self) -> list[str]:
        point = self.saturation_rate
        out = [f"saturation, {self.agents:,} agents:", *(s.line() for s in self.steps)]
        late = any(s.harness_late and s.rate == point for s in self.steps)
        out.append(
            f"  saturation point: {point:g} calls/s (p99 > {LIMIT_MS:g} ms)"
            + (
                " -- the harness was late at that step: the machine, not only the product"
                if late
                else ""
            )
            if point is not None
            else f"  saturation point: not reached (p99 <= {LIMIT_MS:g} ms at every rate)"
        )
        if self.overload is not None:
            out.extend(self.overload.lines())
        return out


@dataclass
class _Rig:
    """The running set-up: the simulator, the product (pid, /metrics) and what arrived."""

    server: _StampingServer
    run: _Run
    ids: Mapping[str, str]
    pid: int
    http: aiohttp.ClientSession
    log: Path
    rng: random.Random
    customers: int
    drops: DropLog
    stalls: LoopStalls
    serial: int = 0

    async def scrape(self) -> dict[str, float]:
        return await _metrics(self.http)


@contextlib.asynccontextmanager
async def _rigged(agents: int, customers: int, seed: int) -> AsyncIterator[_Rig]:
    """The product with ``agents`` agents logged in and listening, proven by a probe call."""
    raise_fd_limit(2 * agents + 256)
    loop = asyncio.get_running_loop()
    run = _Run()
    sim_agents, agent_settings = _agents(agents)
    ids = {a.name: a.name for a in sim_agents}
    server = _StampingServer(
        run, ids, system_name="bench", agents=sim_agents, queues=(QueueSpec(QUEUE, "rrmemory"),)
    )
    clients: list[_AgentClient] = []
    drops = DropLog()
    await server.start()
    try:
        async with _product(
            customers, lambda folder, port: _settings_file(folder, server, agent_settings, port)
        ) as (pid, port, log):
            url = f"http://127.0.0.1:{port}"
            http = aiohttp.ClientSession(url)
            try:
                clients = [_AgentClient(url, s.id) for s in agent_settings]
                await connect_all(clients, run)
                await until(lambda: server.clients >= 1, 10.0, "the product to log in to the PBX")
                stalls = LoopStalls()
                rig = _Rig(
                    server, run, ids, pid, http, log, random.Random(seed), customers, drops, stalls
                )
                due: dict[Key, float] = {}
                probe = build_calls(
                    server, rig.rng, count=1, rate=1.0, begin=loop.time(), customers=customers,
                    ids=ids, due=due, first_serial=-1,
                )  # fmt: skip
                player = asyncio.create_task(play_calls(server, probe))
                await until(lambda: all(k in run.arrived for k in due), 10.0, "the first card")
                await player
                with harness_without_collections(), drops:
                    async with stalls:
                        yield rig
            finally:
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
                await http.close()
    finally:
        await server.stop()


async def _offer(
    rig: _Rig, phases: Sequence[tuple[float, float]]
) -> tuple[dict[Key, float], dict[Key, float], dict[str, float], float, float, float, float]:
    """Calls at each (rate, seconds) of ``phases`` one after the other; waits for their cards
    (up to GRACE after the last call's ring), then for the calls' ends. Returns each call's
    due AgentCalled (loop time) and planned start (s after the first call's), the /metrics
    deltas, the largest lag seen, and the product's and the harness's CPU over the calls
    until their last card, in % of one core."""
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.2
    due: dict[Key, float] = {}
    planned: dict[Key, float] = {}
    total = sum(max(1, round(rate * seconds)) for rate, seconds in phases)

    def calls() -> Iterator[Call]:
        at = begin
        for rate, seconds in phases:
            count = max(1, round(rate * seconds))
            for start, events in build_calls(
                rig.server, rig.rng, count=count, rate=rate, begin=at, customers=rig.customers,
                ids=rig.ids, due=due, first_serial=rig.serial,
            ):  # fmt: skip
                key, _ = _ring(events, rig.ids)
                planned[key] = start - begin
                rig.run.due[key] = due[key]
                yield start, events
            rig.serial += count
            at += count / rate

    before = await rig.scrape()
    cpu_product, cpu_harness, wall = cpu_seconds(rig.pid), time.process_time(), loop.time()
    lag_max = 0.0

    async def watch() -> None:
        nonlocal lag_max
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                lag_max = max(lag_max, (await rig.scrape()).get("cti_ami_lag_seconds", 0.0))
            await asyncio.sleep(POLL)

    watcher = asyncio.create_task(watch())
    player = asyncio.create_task(play_calls(rig.server, calls()))
    started = loop.time()
    try:
        arrived = rig.run.arrived
        while True:
            await asyncio.sleep(0.05)
            if len(due) == total and all(k in arrived for k in due):
                break
            if (len(due) == total or player.done()) and loop.time() > max(
                due.values(), default=begin
            ) + GRACE:
                break
        cpu_product = cpu_seconds(rig.pid) - cpu_product
        cpu_harness = time.process_time() - cpu_harness
        wall = loop.time() - wall
        await player  # the calls' ends, before the next step
    finally:
        watcher.cancel()
        player.cancel()
        await asyncio.gather(watcher, player, return_exceptions=True)
    after = await rig.scrape()
    lag_max = max(lag_max, after.get("cti_ami_lag_seconds", 0.0))
    deltas = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    return (
        due,
        planned,
        deltas,
        lag_max,
        100.0 * cpu_product / wall,
        100.0 * cpu_harness / wall,
        rig.stalls.worst_between(started, loop.time()) * 1000,
    )


async def _step(rig: _Rig, rate: float, seconds: float) -> Step:
    logins, drops = rig.server.logins, len(rig.drops.reasons)
    offered = await _offer(rig, [(rate, seconds)])
    due, _, deltas, lag_max, cpu_product, cpu_harness, stall_ms = offered
    run = rig.run
    done = [k for k in due if k in run.arrived and k in run.sent]
    latencies = [run.arrived[k] - run.sent[k] for k in done] or [0.0]
    late = [run.sent[k] - due[k] for k in due if k in run.sent] or [0.0]
    p50, p99, worst = spread(latencies)
    first = min(due.values())
    last = max((run.arrived[k] for k in done), default=first)
    return Step(
        rate=rate,
        calls=len(due),
        seconds=seconds,
        arrived=len(done),
        span=max(seconds, last - first),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=worst,
        late_p99_ms=spread(late)[1],
        ami_reconnects=rig.server.logins - logins,
        lookups_skipped=round(deltas.get("cti_lookups_skipped_total", 0.0)),
        lag_max_s=lag_max,
        product_cpu_pct=cpu_product,
        harness_cpu_pct=cpu_harness,
        harness_stall_ms=stall_ms,
        sim_drops=rig.stalls.explain(rig.drops, drops),
    )


def _counted(reasons: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n}x {reason}" for reason, n in counts.items())


def _range(start: float, end: float) -> list[float]:
    """Window starts from ``start`` every WINDOW seconds before ``end``."""
    count = max(1, int((end - start) / WINDOW + 0.999))
    return [start + n * WINDOW for n in range(count)]


async def _overload(
    rig: _Rig, burst_rate: float, burst_seconds: float, calm_rate: float, calm_seconds: float
) -> Overload:
    logins, drops = rig.server.logins, len(rig.drops.reasons)
    said_before = len(rig.log.read_text(errors="replace").splitlines())
    due, planned, deltas, lag_max, cpu_product, cpu_harness, stall_ms = await _offer(
        rig, [(burst_rate, burst_seconds), (calm_rate, calm_seconds)]
    )
    run = rig.run
    windows = []
    starts = [*_range(0.0, burst_seconds), *_range(burst_seconds, burst_seconds + calm_seconds)]
    ends = [*starts[1:], burst_seconds + calm_seconds]
    for start, end in zip(starts, ends, strict=True):
        keys = [k for k, p in planned.items() if start <= p < end]
        got = [run.arrived[k] - run.sent[k] for k in keys if k in run.arrived and k in run.sent]
        p99 = spread(got)[1] if got else float("inf")
        windows.append((start, len(got), len(keys) - len(got), p99))
    said = rig.log.read_text(errors="replace").splitlines()[said_before:]
    return Overload(
        burst_rate=burst_rate,
        burst_seconds=burst_seconds,
        calm_rate=calm_rate,
        calm_seconds=calm_seconds,
        calls=len(due),
        missing=sum(1 for k in due if k not in run.arrived),
        ami_reconnects=rig.server.logins - logins,
        lookups_skipped=round(deltas.get("cti_lookups_skipped_total", 0.0)),
        lag_max_s=lag_max,
        product_cpu_pct=cpu_product,
        harness_cpu_pct=cpu_harness,
        windows=windows,
        harness_stall_ms=stall_ms,
        sim_drops=rig.stalls.explain(rig.drops, drops),
        log_lines=[line for line in said if any(word in line for word in _NOTEWORTHY)],
    )


async def measure_saturation(
    agents: int = SATURATION_AGENTS,
    rates: Sequence[float] = SATURATION_RATES,
    *,
    step_seconds: float = STEP_SECONDS,
    burst_seconds: float = BURST_SECONDS,
    calm_seconds: float = CALM_SECONDS,
    customers: int = CUSTOMERS,
    seed: int = 1,
    warmup: float = WARMUP,
    overload: bool = True,
    printer: object = None,
) -> SaturationReport:
    """Step through ``rates`` (calls/s, ``step_seconds`` each) on one product; stop after
    the first saturated step (after ``warmup`` seconds at the first rate, not reported: the
    product and the harness have just logged every agent in). Then, if ``overload``, twice
    the saturation rate (or the highest rate's, if none saturated) for ``burst_seconds`` and
    the first rate for ``calm_seconds``."""
    if agents < 1 or not rates or any(r <= 0 for r in rates) or step_seconds <= 0:
        raise ValueError("measure_saturation needs agents, positive rates and a step length")
    report = SaturationReport(agents, [])
    async with _rigged(agents, customers, seed) as rig:
        if warmup > 0:
            await _offer(rig, [(min(rates), warmup)])
        for rate in rates:
            step = await _step(rig, rate, step_seconds)
            report.steps.append(step)
            if callable(printer):
                printer(step.line())
            if step.saturated:
                break
        if overload:
            point = report.saturation_rate or max(rates)
            report.overload = await _overload(
                rig, 2 * point, burst_seconds, min(rates), calm_seconds
            )
    return report


def run_saturation(
    agents: int = SATURATION_AGENTS,
    rates: Sequence[float] = SATURATION_RATES,
    step_seconds: float = STEP_SECONDS,
) -> SaturationReport:
    """The saturation steps and the overload run; print and return the report."""
    print(
        f"saturation: {agents:,} agents, answered calls at {', '.join(f'{r:g}' for r in rates)}"
        f"/s for {step_seconds:g}s each on one `cti serve` (SQLite store of {CUSTOMERS:,} "
        f"customers), until p99 (AgentCalled emitted -> ringing card) passes {LIMIT_MS:g} ms; "
        f"then twice that rate for {BURST_SECONDS:g}s and {min(rates):g}/s for "
        f"{CALM_SECONDS:g}s. CPU in % of one core (2 cores shared by product and harness)"
    )
    report = asyncio.run(
        measure_saturation(agents, rates, step_seconds=step_seconds, printer=print)
    )
    for line in report.lines()[len(report.steps) + 1 :]:
        print(line)
    return report
