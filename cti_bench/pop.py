"""``cti bench`` pop figures: AMI event leaving the simulator → card arriving at the agent.

Two processes, talking over real loopback sockets, as in production:

* **the product**: ``python -m cti serve`` with a TOML configuration written as a user
  would (one ``[pbx.bench]``, N ``[[agents]]``, ``[web]`` with an accounts file), its own
  SQLite store (a migrated file with ``customers`` seeded customers; nine callers in ten are
  among them, so lookups and timeline writes run as in production); it is not told it is
  being measured;
* **the harness** (this process, one event loop): the PBX, a
  :class:`~pbxsim.AmiServer` with N agents (``agent0001`` … at extensions ``20001``
  …), all static members of one ``rrmemory`` queue ``support``, so each call rings exactly one
  agent and consecutive calls go round the agents; and N agents, each an
  ``aiohttp.ClientSession`` of its own (own cookies) that logs in through the real ``/login``
  form (CSRF double-submit) and keeps the ``/ws`` push open.

Calls are the simulator's ``answered`` scenario (IVR 0.5 s, 0.5 s in the queue, 1 s ringing,
2 s talk), started at a fixed rate; each call's events are emitted at their offsets from the
call's planned start. A call's clock starts when the simulator emits the ``AgentCalled``
frame (``time.monotonic()`` on entry to :meth:`AmiServer.emit`, before it is encoded and
handed to the socket writer) and stops when the agent's client has the first ``card``
message of that call in state ``ringing`` (``time.monotonic()`` as soon as aiohttp's
``receive`` hands the frame over, before JSON decoding). Both ends are in the harness and
read the same clock. In between: simulator writer task, TCP, the product (panoramisk and our
decoder, the call model, the lookup, the pop book, the hub, the socket's writer), TCP,
aiohttp's client frame parser in the harness. The machine's two cores are shared by the two
processes.

A second latency is kept, **from schedule**: from the moment the ``AgentCalled`` was due by
the call plan (when a real PBX would have sent it) to the same arrival; it adds the harness's
timer lateness (epoll waits in whole milliseconds) and any stall of the harness.
The harness does not collect garbage while measuring (see
:func:`~cti_bench.harness.harness_without_collections`), so its stalls are not counted
against the product; the product collects as it always does.

Calls of the first ``warmup`` seconds are not counted. Accounts use a cheap scrypt cost
(n=2**10) so that logging in 1,000 agents takes seconds; login is not what is measured.
A lost AMI session would show as ``ami reconnects``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from cti.hashing import hash_password
from cti.settings import AgentSettings
from cti_bench.data import number
from cti_bench.harness import (
    harness_without_collections,
    raise_fd_limit,
    running_product,
    spread,
    until,
)
from cti_bench.run import Figure
from pbxsim import AmiServer
from pbxsim.scenarios import Agent, QueueSpec, TimedEvent, Timings, answered

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
LOGIN_TRIES = 5
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


def _agents(count: int) -> tuple[list[Agent], list[AgentSettings]]:
    sim = [Agent(str(20_000 + i), f"agent{i:04d}", (QUEUE,)) for i in range(1, count + 1)]
    settings = [AgentSettings(id=a.name, name=a.name, members=(a.name, a.interface)) for a in sim]
    return sim, settings


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
        self.refused = 0  # logins answered 503 and tried again
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.listener: asyncio.Task[None] | None = None

    async def connect(self, run: _Run) -> None:
        """Log in through the form, open ``/ws``, read the snapshot, then listen."""
        await self.log_in()
        self.socket = await self.http.ws_connect("/ws")
        first = await self.socket.receive_json(timeout=10.0)
        if first.get("type") != "snapshot":
            raise RuntimeError(f"{self.login}: first message was {first.get('type')!r}")
        self.listener = asyncio.create_task(self._listen(self.socket, run))

    def seen(self, card: dict[str, Any]) -> None:
        """Every card the agent's socket delivers; a subclass acts on them (nothing here)."""

    async def log_in(self) -> None:
        """Log in through the form (CSRF double-submit): the session cookie is in ``http``.
        A 503 (the store did not take the session in time, as under a storm of logins) or a
        429 (the login limiter's budget for one address) is tried again after its
        ``Retry-After``, as a person would, up to ``LOGIN_TRIES`` times; ``refused`` counts them."""
        for attempt in range(1, LOGIN_TRIES + 1):
            async with self.http.get("/login") as page:
                match = _CSRF.search(await page.text())
            if match is None:
                raise RuntimeError("no CSRF token on the login page")
            form = {"login": self.login, "password": PASSWORD, "csrf_token": match[1], "next": "/"}
            async with self.http.post("/login", data=form, allow_redirects=False) as reply:
                if reply.status == 303:
                    return
                if reply.status not in (429, 503) or attempt == LOGIN_TRIES:
                    raise RuntimeError(f"login {self.login}: HTTP {reply.status}")
                wait = float(reply.headers.get("Retry-After", 0.5 * attempt))
            self.refused += 1
            await asyncio.sleep(min(wait, 10.0))

    async def _listen(self, socket: aiohttp.ClientWebSocketResponse, run: _Run) -> None:
        async for message in socket:
            at = time.monotonic()
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            run.messages += 1
            data = json.loads(message.data)
            card = data.get("card") if data.get("type") == "card" else None
            if card is None:
                continue
            self.seen(card)
            if card.get("state") != "ringing":
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


async def connect_all(clients: Sequence[_AgentClient], run: _Run) -> None:
    """Log every client in and open its ``/ws``, CONNECT_CONCURRENCY at a time; one failure
    cancels the others."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(client: _AgentClient) -> None:
        async with gate:
            await client.connect(run)

    async with asyncio.TaskGroup() as group:
        for client in clients:
            group.create_task(connect(client))


async def paced_calls(
    server: AmiServer,
    rng: random.Random,
    customers: int,
    ids: Mapping[str, str],
    run: _Run,
    *,
    rate: float,
    total: int,
) -> AsyncIterator[tuple[int, Key, list[TimedEvent], float]]:
    """``total`` answered calls, one every 1/``rate`` s from now, each yielded when due:
    (serial, its ring's key, its events, the loop time it is due); the ring's due time is
    noted in ``run``. The first calls' numbers 1 and 2 are the probes'."""
    loop = asyncio.get_running_loop()
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
        yield serial, key, events, due


def _settings_file(
    folder: Path, server: AmiServer, agents: Sequence[AgentSettings], port: int
) -> Path:
    """The ``cti serve`` configuration of the product under test: TOML, as a user writes it."""
    shared = hash_password(PASSWORD, n=2**10)
    accounts = folder / "accounts.toml"
    accounts.write_text(
        "".join(
            f'[[accounts]]\nlogin = "{a.id}"\nname = "{a.name}"\nagent_id = "{a.id}"\n'
            f'role = "agent"\npassword_hash = "{shared}"\n\n'
            for a in agents
        ),
        encoding="utf-8",
    )
    members = "".join(
        f'[[agents]]\nid = "{a.id}"\nname = "{a.name}"\nmembers = {json.dumps(list(a.members))}\n\n'
        for a in agents
    )
    config = folder / "cti.toml"
    config.write_text(
        'log_level = "WARNING"\n\n'
        f'[store]\ndatabase_url = "sqlite:///{folder}/store.sqlite3"\ndefault_region = "CN"\n\n'
        f'[pbx.bench]\nhost = "127.0.0.1"\nport = {server.port}\n'
        f'secret = "{server.secret}"\nping_interval = 60.0\n\n'
        f"{members}"
        f'[web]\nhost = "127.0.0.1"\nport = {port}\naccounts_file = "{accounts}"\n'
        f'dispositions_file = "{DISPOSITIONS}"\n',
        encoding="utf-8",
    )
    return config


async def measure_pop(
    agents: int,
    *,
    seconds: float = POP_SECONDS,
    rate: float = POP_RATE,
    warmup: float = WARMUP,
    customers: int = CUSTOMERS,
    seed: int = 1,
) -> PopFigure:
    """One figure: ``agents`` logged-in clients, calls at ``rate``/s for ``warmup`` +
    ``seconds`` seconds; latencies of the calls started in the last ``seconds``."""
    if agents < 1 or rate <= 0 or seconds <= 0:
        raise ValueError("measure_pop needs at least one agent, a positive rate and duration")
    raise_fd_limit(2 * agents + 256)
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
    await server.start()
    try:
        async with running_product(
            "cti-bench-pop-",
            customers,
            lambda folder, port: _settings_file(folder, server, agent_settings, port),
        ) as port:
            stack = contextlib.ExitStack()
            try:
                url = f"http://127.0.0.1:{port}"
                clients = [_AgentClient(url, s.id) for s in agent_settings]
                await connect_all(clients, run)
                await until(lambda: server.clients >= 1, 10.0, "the product to log in to the PBX")
                rng = random.Random(seed)
                # a probe call proves the whole path (and the AMI resync) is up before timing
                probe = answered(
                    server.pbx, rng, start=time.time(), number=_caller(rng, customers, 1), name=None
                )
                probe_key, _ = _ring(probe, ids)
                plays.add(asyncio.create_task(_play(server, probe, loop.time())))
                await until(lambda: probe_key in run.arrived, 10.0, "the first card")
                setup_seconds = time.perf_counter() - setup_started
                stack.enter_context(harness_without_collections())

                total = round((warmup + seconds) * rate)
                counted_from = round(warmup * rate)
                wanted: list[Key] = []
                calls = paced_calls(server, rng, customers, ids, run, rate=rate, total=total)
                async for serial, key, events, due in calls:
                    if serial >= counted_from:
                        wanted.append(key)
                    task = asyncio.create_task(_play(server, events, due))
                    plays.add(task)
                    task.add_done_callback(plays.discard)
                with contextlib.suppress(RuntimeError):
                    await until(
                        lambda: all(k in run.arrived for k in wanted), GRACE, "the last cards"
                    )
                logins = server.logins
            finally:
                stack.close()
                for task in plays:
                    task.cancel()
                await asyncio.gather(*plays, return_exceptions=True)
                await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    finally:
        await server.stop()
    done = [k for k in wanted if k in run.arrived and k in run.sent]
    if not done:
        raise RuntimeError("no card arrived in the measured window")
    p50, p99, worst = spread([run.arrived[k] - run.sent[k] for k in done])
    s50, s99, s_worst = spread([run.arrived[k] - run.due[k] for k in done])
    return PopFigure(
        f"pop {agents:,} agents",
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
    )


def run_pop(
    agent_counts: Sequence[int] = POP_AGENTS,
    seconds: float = POP_SECONDS,
    rate: float = POP_RATE,
) -> list[Figure]:
    """Pop latency with each number of connected agents; print and return the figures."""
    figures: list[Figure] = []
    print(
        f"pop: AgentCalled emitted by the simulator -> ringing card at the agent's WebSocket; "
        f"answered calls at {rate:g}/s for {seconds:g}s (after {WARMUP:g}s warm-up), one "
        f"rrmemory queue, SQLite store with {CUSTOMERS:,} customers; the product runs as "
        f"`cti serve` in a process of its own"
    )
    for count in agent_counts:
        figure = asyncio.run(measure_pop(count, seconds=seconds, rate=rate))
        print(
            f"  {count:,} agents logged in and connected in {figure.setup_seconds:.1f}s; "
            f"{figure.with_customer}/{figure.events + figure.missing} first cards already "
            f"carried the customer lookup"
        )
        print(figure.line())
        figures.append(figure)
    return figures
