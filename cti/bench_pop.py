"""``cti bench`` pop figures: AMI event leaving the simulator → card arriving at the agent.

Everything runs in **one process, on one event loop** (so on one core; SQLite reads run on
aiosqlite's thread), talking over real loopback sockets:

* the PBX: a :class:`~cti.simulator.AmiServer` with N agents (``agent0001`` … at extensions
  ``20001`` …), all static members of one ``rrmemory`` queue ``support``, so each call rings
  exactly one agent and consecutive calls go round the agents;
* the product as ``cti serve`` assembles it (:mod:`cti.stack`): :class:`~cti.service.CtiService`
  following the simulator over AMI, :class:`~screenpop.pipeline.PopService` with a SQLite
  :class:`~crm_sync.store.CustomerStore` (a migrated file with ``customers`` seeded customers;
  nine callers in ten are among them, so lookups and timeline writes run as in production),
  and the aiohttp agent page (:func:`~screenpop.app.create_app`) on a TCP port;
* N agents, each an ``aiohttp.ClientSession`` of its own (own cookies) that logs in through
  the real ``/login`` form (CSRF double-submit) and keeps the ``/ws`` push open.

Calls are the simulator's ``answered`` scenario (IVR 0.5 s, 0.5 s in the queue, 1 s ringing,
2 s talk), started at a fixed rate; each call's events are emitted at their offsets from the
call's planned start. A call's clock starts when the simulator emits the ``AgentCalled``
frame (``time.monotonic()`` on entry to :meth:`AmiServer.emit`, before it is encoded and
handed to the socket writer) and stops when the agent's client has the first ``card``
message of that call in state ``ringing`` (``time.monotonic()`` as soon as aiohttp's
``receive`` hands the frame over, before JSON decoding). Both ends read the same clock. In
between: simulator writer task, TCP, panoramisk and our decoder, the call model, the pop
book, the hub, the socket's writer task with its JSON encoding, TCP, aiohttp's client frame
parser. The simulator, the product and the N clients compete for the same core.

Because the simulator shares the event loop, a stall of the whole process (a full garbage
collection takes 0.1-0.4 s here at 1,000 agents) also holds back the simulator: events due
during the stall are emitted after it, so "from emit" only sees stalls that begin while a
card is under way. A real PBX keeps sending, and its events wait in the socket. So a second
latency is kept, **from schedule**: from the moment the ``AgentCalled`` was due by the call
plan (when a real PBX would have sent it) to the same arrival. Without stalls the two differ
by the timer's lateness (epoll waits in whole milliseconds: about 0.4 ms on the median).

The clients' objects share the process's heap with the product's, so full collections walk
both (the product alone, without simulator and store, was measured at about 175 ms per full
collection with 1,000 agents connected from another process, 75 ms with none).

Calls of the first ``warmup`` seconds are not counted. Accounts use a cheap scrypt cost
(n=2**10) so that logging in 1,000 agents takes seconds; login is not what is measured.
The service's tasks are started as :meth:`CtiService.run` starts them, but as tasks of our
own (see :func:`_follow`). A lost AMI session would show as ``ami reconnects``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import re
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from crm_sync.benchdata import load_sqlite, number
from crm_sync.db import create_engine
from crm_sync.migrate import upgrade
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore
from cti.bench import Figure
from cti.service import CtiService
from cti.settings import AgentSettings, PbxSettings, Settings
from cti.simulator import AmiServer
from cti.simulator.scenarios import Agent, QueueSpec, TimedEvent, Timings, answered
from screenpop.app import create_app
from screenpop.auth import Account, Accounts, hash_password
from screenpop.cards import PopBook
from screenpop.dispositions import Dispositions
from screenpop.hub import Hub
from screenpop.pipeline import PopService

POP_AGENTS = (100, 1000)
POP_SECONDS = 25.0  # measured seconds of calls per agent count
POP_RATE = 20.0  # calls per second
WARMUP = 2.0  # seconds of calls before the measured ones
CUSTOMERS = 10_000
PASSWORD = "bench-password"
TIMINGS = Timings(ivr=0.5, wait=0.5, ring=1.0, talk=2.0)
QUEUE = "support"
DISPOSITIONS = Path(__file__).resolve().parent.parent / "config" / "dispositions.toml"
CONNECT_CONCURRENCY = 32
GRACE = 8.0  # seconds to wait for the last cards after the last call started
Key = tuple[str, str]  # (call id = the caller channel's Linkedid, agent id)
Ring = tuple[Key, float]  # and the AgentCalled's offset from the call's start
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class PopFigure(Figure):
    """A pop latency figure: ``events`` cards measured over ``seconds`` of calls."""

    agents: int = 0
    max_ms: float | None = None
    # from the moment the AgentCalled was due (see the module's docstring)
    scheduled_p50_ms: float | None = None
    scheduled_p99_ms: float | None = None
    scheduled_max_ms: float | None = None
    missing: int = 0
    with_customer: int = 0
    setup_seconds: float = 0.0
    ami_reconnects: int = 0
    # from the first measured AgentCalled due to the last card
    gc_full: int = 0  # full (generation 2) collections in that time
    gc_max_ms: float = 0.0  # the longest collection of any generation in that time
    unit: str = "pops/s"

    def line(self) -> str:
        text = super().line()
        if self.max_ms is not None:
            text += f"  max {self.max_ms:.3f} ms"
        text += f"  missing {self.missing}"
        if self.ami_reconnects:
            text += f"  ami reconnects {self.ami_reconnects}"
        if self.scheduled_p99_ms is not None and self.scheduled_max_ms is not None:
            text += (
                f"\n{'':<26} from schedule: p50 {self.scheduled_p50_ms:.3f} ms  "
                f"p99 {self.scheduled_p99_ms:.3f} ms  max {self.scheduled_max_ms:.3f} ms"
            )
        return text


@dataclass
class _Run:
    """What both ends record: emit times at the simulator, arrival times at the clients,
    and when each ``AgentCalled`` was due by the call plan (all ``time.monotonic()``)."""

    sent: dict[Key, float] = field(default_factory=dict)
    due: dict[Key, float] = field(default_factory=dict)
    arrived: dict[Key, float] = field(default_factory=dict)
    with_customer: set[Key] = field(default_factory=set)
    messages: int = 0


class _GcWatch:
    """Collections of the garbage collector (they stop the whole process) and how long."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []  # (start, generation, seconds)
        self._started = 0.0

    def __enter__(self) -> _GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        else:
            took = time.monotonic() - self._started
            self.pauses.append((self._started, info["generation"], took))

    def since(self, moment: float) -> list[tuple[float, int, float]]:
        return [p for p in self.pauses if p[0] >= moment]


class _StampingServer(AmiServer):
    """The simulator, noting when each ``AgentCalled`` leaves it (keyed by call and agent)."""

    def __init__(self, run: _Run, agent_ids: Mapping[str, str], **options: Any) -> None:
        super().__init__(**options)
        self.run = run
        self.agent_ids = agent_ids

    def emit(self, event: Mapping[str, str]) -> None:
        if event.get("Event") == "AgentCalled":
            agent = self.agent_ids.get(event.get("MemberName", ""), "")
            self.run.sent.setdefault((event.get("Linkedid", ""), agent), time.monotonic())
        super().emit(event)


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-file limit to ``needed`` if the hard limit allows; the new soft
    limit. Raises RuntimeError when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise RuntimeError(f"need {needed} open files, the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return soft


def _agents(count: int) -> tuple[list[Agent], list[AgentSettings]]:
    sim = [Agent(str(20_000 + i), f"agent{i:04d}", (QUEUE,)) for i in range(1, count + 1)]
    settings = [AgentSettings(id=a.name, name=a.name, members=(a.name, a.interface)) for a in sim]
    return sim, settings


def _accounts(agents: Sequence[AgentSettings]) -> Accounts:
    shared = hash_password(PASSWORD, n=2**10)
    return Accounts(Account(a.id, a.name, a.id, "agent", shared) for a in agents)


class _AgentClient:
    """One agent's browser, reduced to what the pop needs: a session cookie and the socket."""

    def __init__(self, base_url: str, login: str) -> None:
        self.login = login
        self.http = aiohttp.ClientSession(
            base_url,
            # no idle keep-alive connection lingers once the socket has its own
            connector=aiohttp.TCPConnector(force_close=True),
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies from 127.0.0.1
        )
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.listener: asyncio.Task[None] | None = None

    async def connect(self, run: _Run) -> None:
        """Log in through the form, open ``/ws``, read the snapshot, then listen."""
        async with self.http.get("/login") as page:
            match = _CSRF.search(await page.text())
        if match is None:
            raise RuntimeError("no CSRF token on the login page")
        form = {"login": self.login, "password": PASSWORD, "csrf_token": match[1], "next": "/"}
        async with self.http.post("/login", data=form, allow_redirects=False) as reply:
            if reply.status != 303:
                raise RuntimeError(f"login {self.login}: HTTP {reply.status}")
        self.socket = await self.http.ws_connect("/ws")
        first = await self.socket.receive_json(timeout=10.0)
        if first.get("type") != "snapshot":
            raise RuntimeError(f"{self.login}: first message was {first.get('type')!r}")
        self.listener = asyncio.create_task(self._listen(self.socket, run))

    @staticmethod
    async def _listen(socket: aiohttp.ClientWebSocketResponse, run: _Run) -> None:
        async for message in socket:
            at = time.monotonic()
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            run.messages += 1
            data = json.loads(message.data)
            card = data.get("card") if data.get("type") == "card" else None
            if card is None or card.get("state") != "ringing":
                continue
            key = (card["call_id"], card["agent"])
            if key not in run.arrived:
                run.arrived[key] = at
                if card.get("lookup") is not None:
                    run.with_customer.add(key)

    async def close(self) -> None:
        try:
            if self.socket is not None:
                await self.socket.close()
            if self.listener is not None:
                self.listener.cancel()
                await asyncio.gather(self.listener, return_exceptions=True)
        finally:
            await self.http.close()


def _caller(rng: random.Random, customers: int, serial: int) -> str:
    """Nine callers in ten are customers; national spelling, as Asterisk often shows it."""
    if serial % 10 == 0:
        return number(customers + serial)[3:]
    return number(rng.randint(1, customers))[3:]


def _ring(events: Sequence[TimedEvent], ids: Mapping[str, str]) -> Ring:
    """The (call, agent) the scenario rings, and the AgentCalled's offset in the call."""
    for offset, event in events:
        if event.get("Event") == "AgentCalled":
            key = (event.get("Linkedid", ""), ids.get(event.get("MemberName", ""), ""))
            return key, offset
    raise RuntimeError("the scenario rings nobody")


async def _play(server: AmiServer, events: Sequence[TimedEvent], start: float) -> None:
    """Emit a call's events at ``start`` (``time.monotonic()``, the loop's clock) plus their
    offsets: like :meth:`AmiServer.play`, but on the call plan's clock rather than from
    whenever this task first runs."""
    loop = asyncio.get_running_loop()
    for offset, event in events:
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        server.emit(event)


async def _until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _follow(service: CtiService) -> list[asyncio.Task[None]]:
    """What :meth:`CtiService.run` starts (per PBX: the AMI client and the model's consumer),
    as tasks of our own: on Python 3.11 ``PbxFollower.consume``'s ``asyncio.wait_for`` can
    swallow a cancellation that coincides with a queue item, and then ``run``'s TaskGroup
    never finishes; a task of our own can be cancelled again."""
    return [
        asyncio.create_task(coro)
        for follower in service.followers
        for coro in (follower.client.run(), follower.consume())
    ]


async def _stop(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel until done (see :func:`_follow`), then collect the results."""
    while pending := [t for t in tasks if not t.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.5)
    await asyncio.gather(*tasks, return_exceptions=True)


async def measure_pop(
    agents: int,
    *,
    seconds: float = POP_SECONDS,
    rate: float = POP_RATE,
    warmup: float = WARMUP,
    customers: int = CUSTOMERS,
    seed: int = 1,
    gc_freeze: bool = False,
) -> PopFigure:
    """One figure: ``agents`` logged-in clients, calls at ``rate``/s for ``warmup`` +
    ``seconds`` seconds; latencies of the calls started in the last ``seconds``.

    ``gc_freeze``: once everything is connected, move every object alive to the collector's
    permanent generation (``gc.freeze()``), as a service could at the end of its start-up;
    full collections then walk only what was made since. Not what the product does today."""
    if agents < 1 or rate <= 0 or seconds <= 0:
        raise ValueError("measure_pop needs at least one agent, a positive rate and duration")
    raise_fd_limit(4 * agents + 256)
    setup_started = time.perf_counter()
    loop = asyncio.get_running_loop()
    run = _Run()
    sim_agents, agent_settings = _agents(agents)
    ids = {a.name: s.id for a, s in zip(sim_agents, agent_settings, strict=True)}
    server = _StampingServer(
        run,
        ids,
        system_name="bench",
        agents=sim_agents,
        queues=(QueueSpec(QUEUE, "rrmemory"),),
    )
    plays: set[asyncio.Task[None]] = set()
    clients: list[_AgentClient] = []
    with tempfile.TemporaryDirectory(prefix="cti-bench-pop-") as folder:
        url = f"sqlite:///{folder}/pop.sqlite3"
        await asyncio.to_thread(upgrade, url)
        await asyncio.to_thread(load_sqlite, f"{folder}/pop.sqlite3", customers)
        engine = create_engine(url)
        store = CustomerStore(engine, PhoneNormalizer("CN"))
        pop = PopService(PopBook(), Hub(), store, clock=lambda: datetime.now(UTC))
        await server.start()
        pbx = PbxSettings(name="bench", port=server.port, secret=server.secret, ping_interval=60)
        service = CtiService(Settings(pbxs=(pbx,), agents=tuple(agent_settings)), [pop])
        app = create_app(
            pop=pop,
            accounts=_accounts(agent_settings),
            dispositions=Dispositions.load(DISPOSITIONS),
            store=store,
            now=lambda: datetime.now(UTC),
        )
        runner = web.AppRunner(app, access_log=None)
        following: list[asyncio.Task[None]] = []
        stack = contextlib.ExitStack()
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            following = _follow(service)
            clients = [_AgentClient(f"http://{host}:{port}", s.id) for s in agent_settings]
            gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

            async def connect(client: _AgentClient) -> None:
                async with gate:
                    await client.connect(run)

            async with asyncio.TaskGroup() as group:  # one failure cancels the others
                for client in clients:
                    group.create_task(connect(client))
            await _until(lambda: server.clients >= 1, 10.0, "the product to log in to the PBX")
            rng = random.Random(seed)
            # a probe call proves the whole path (and the AMI resync) is up before timing
            probe = answered(
                server.pbx, rng, start=time.time(), number=_caller(rng, customers, 1), name=None
            )
            probe_key, _ = _ring(probe, ids)
            plays.add(asyncio.create_task(_play(server, probe, loop.time())))
            await _until(lambda: probe_key in run.arrived, 10.0, "the first card")
            setup_seconds = time.perf_counter() - setup_started
            if gc_freeze:
                gc.collect()
                gc.freeze()
                stack.callback(gc.unfreeze)

            total = round((warmup + seconds) * rate)
            counted_from = round(warmup * rate)
            wanted: list[Key] = []
            watch = stack.enter_context(_GcWatch())
            begin = loop.time()
            for serial in range(total):
                await asyncio.sleep(max(0.0, begin + serial / rate - loop.time()))
                events = answered(
                    server.pbx,
                    rng,
                    start=time.time(),
                    number=_caller(rng, customers, serial + 2),
                    name=f"Caller {serial}",
                    queue=QUEUE,
                    timings=TIMINGS,
                )
                due = begin + serial / rate
                key, offset = _ring(events, ids)
                run.due[key] = due + offset
                if serial >= counted_from:
                    wanted.append(key)
                task = asyncio.create_task(_play(server, events, due))
                plays.add(task)
                task.add_done_callback(plays.discard)
            with contextlib.suppress(RuntimeError):
                await _until(lambda: all(k in run.arrived for k in wanted), GRACE, "the last cards")
            measured = (min((run.due[k] for k in wanted), default=0.0), time.monotonic())
            logins = server.logins
            stack.close()
        finally:
            for task in plays:
                task.cancel()
            await asyncio.gather(*plays, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            await service.close()
            await _stop(following)
            await runner.cleanup()
            await pop.close()
            await engine.dispose()
            await server.stop()
            stack.close()

    pauses = [p for p in watch.since(measured[0]) if p[0] <= measured[1]]
    done = [k for k in wanted if k in run.arrived and k in run.sent]
    if not done:
        raise RuntimeError("no card arrived in the measured window")
    p50, p99, worst = _spread([run.arrived[k] - run.sent[k] for k in done])
    s50, s99, s_worst = _spread([run.arrived[k] - run.due[k] for k in done])
    return PopFigure(
        f"pop {agents:,} agents" + (" gc.freeze" if gc_freeze else ""),
        len(done),
        seconds,
        p50,
        p99,
        agents=agents,
        max_ms=worst,
        scheduled_p50_ms=s50,
        scheduled_p99_ms=s99,
        scheduled_max_ms=s_worst,
        missing=len(wanted) - len(done),
        with_customer=sum(1 for k in wanted if k in run.with_customer),
        setup_seconds=setup_seconds,
        ami_reconnects=logins - 1,
        gc_full=sum(1 for p in pauses if p[1] == 2),
        gc_max_ms=max((p[2] for p in pauses), default=0.0) * 1000,
    )


def _spread(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 (as in :mod:`cti.bench`) and max, in milliseconds."""
    ms = sorted(x * 1000 for x in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1]


def run_pop(
    agent_counts: Sequence[int] = POP_AGENTS,
    seconds: float = POP_SECONDS,
    rate: float = POP_RATE,
    gc_freeze: bool = False,
) -> list[Figure]:
    """Pop latency with each number of connected agents; print and return the figures."""
    figures: list[Figure] = []
    print(
        f"pop: AgentCalled emitted by the simulator -> ringing card at the agent's WebSocket; "
        f"answered calls at {rate:g}/s for {seconds:g}s (after {WARMUP:g}s warm-up), one "
        f"rrmemory queue, SQLite store with {CUSTOMERS:,} customers; one process"
        + ("; gc.freeze() after start-up" if gc_freeze else "")
    )
    for count in agent_counts:
        figure = asyncio.run(measure_pop(count, seconds=seconds, rate=rate, gc_freeze=gc_freeze))
        print(
            f"  {count:,} agents logged in and connected in {figure.setup_seconds:.1f}s; "
            f"{figure.with_customer}/{figure.events + figure.missing} first cards already "
            f"carried the customer lookup; {figure.gc_full} full garbage collections while "
            f"measuring, longest collection {figure.gc_max_ms:.0f} ms"
        )
        print(figure.line())
        figures.append(figure)
    return figures
