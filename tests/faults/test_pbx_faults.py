"""PBX faults with real processes (issue 21, fault tests 2 and 3; F4, F7, F20, F21).

The product runs as ``python -m cti serve --config …`` in a process of its own, on a fresh
SQLite store; the PBX simulators (:class:`~pbxsim.server.AmiServer`) run in this process on
127.0.0.1, and agents are real HTTP + WebSocket clients that log in through ``/login``. What
is asserted is what users see: each call pops once per agent (no duplicated card), a call that
ended while the link was down ends on the agent's card (no phantom ringing or talking card),
the product recovers on its own, and one bad PBX is shown down with its reason while the
other PBX's agents keep getting pops.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crm_sync.migrate import upgrade
from cti.hashing import hash_password
from cti_bench.harness import end_product, free_port, start_product
from pbxsim.scenarios import Agent, QueueSpec, TimedEvent, Timings, answered
from pbxsim.server import AmiServer

ROOT = Path(__file__).resolve().parents[2]
DISPOSITIONS = ROOT / "config" / "dispositions.toml"
PASSWORD = "fault-password"
WAIT = 30.0  # seconds: generous, the machine is shared; assertions stay strict
QUEUE = "support"
ALICE = Agent("1001", "Alice", (QUEUE,))
BOB = Agent("1002", "Bob", (QUEUE,))
CAROL = Agent("1003", "Carol", (QUEUE,))
STAFF = (ALICE, BOB, CAROL)
LONG = Timings(ivr=0.5, wait=0.5, ring=1.0, talk=30.0)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# ------------------------------------------------------------------ the product and its users


def _sim(**options: Any) -> AmiServer:
    return AmiServer(
        auth_delay=0.0, agents=STAFF, queues=(QueueSpec(QUEUE, "rrmemory"),), **options
    )


def _pbx_table(name: str, port: int, secret: str, **backoff: float) -> str:
    knobs = {"backoff_initial": 0.05, "backoff_max": 0.5, "refused_backoff": 1.0, **backoff}
    lines = "".join(f"{key} = {value}\n" for key, value in knobs.items())
    return f'[pbx.{name}]\nhost = "127.0.0.1"\nport = {port}\nsecret = "{secret}"\n{lines}\n'


def _write_config(folder: Path, web_port: int, pbx_tables: Sequence[str]) -> Path:
    """A ``cti serve`` configuration as a user writes it: PBXs, agents, the agent page."""
    shared = hash_password(PASSWORD, n=2**10)
    logins = [(a.name.lower(), "agent") for a in STAFF] + [("boss", "supervisor")]
    accounts = folder / "accounts.toml"
    accounts.write_text(
        "".join(
            f'[[accounts]]\nlogin = "{login}"\nname = "{login}"\n'
            + (f'agent_id = "{login}"\n' if role == "agent" else "")
            + f'role = "{role}"\npassword_hash = "{shared}"\n\n'
            for login, role in logins
        ),
        encoding="utf-8",
    )
    agents = "".join(
        f'[[agents]]\nid = "{a.name.lower()}"\nname = "{a.name}"\n'
        f'members = ["{a.name}", "{a.interface}"]\n\n'
        for a in STAFF
    )
    config = folder / "cti.toml"
    config.write_text(
        'log_level = "INFO"\n\n'
        f'[store]\ndatabase_url = "sqlite:///{folder}/store.sqlite3"\n\n'
        + "".join(pbx_tables)
        + agents
        + f'[web]\nhost = "127.0.0.1"\nport = {web_port}\naccounts_file = "{accounts}"\n'
        f'dispositions_file = "{DISPOSITIONS}"\n',
        encoding="utf-8",
    )
    return config


@dataclass
class Product:
    base: str
    process: asyncio.subprocess.Process
    log: Path

    def said(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def alive(self) -> None:
        assert self.process.returncode is None, f"cti serve exited: {self.said()}"


@asynccontextmanager
async def product(folder: Path, pbx_tables: Sequence[str]) -> AsyncIterator[Product]:
    await asyncio.to_thread(upgrade, f"sqlite:///{folder}/store.sqlite3")
    port = free_port()
    config = _write_config(folder, port, pbx_tables)
    log = folder / "serve.log"
    process = await start_product(config, port, log)
    try:
        yield Product(f"http://127.0.0.1:{port}", process, log)
    finally:
        await end_product(process)


@dataclass
class Browser:
    """One user's browser: a session cookie and, for an agent, the page's WebSocket, keeping
    every card message it was pushed (in order)."""

    login: str
    http: aiohttp.ClientSession
    cards: list[dict[str, Any]] = field(default_factory=list)
    pbx_down: list[dict[str, Any]] = field(default_factory=list)  # as the page shows it now
    socket: aiohttp.ClientWebSocketResponse | None = None
    listener: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        self.socket = await self.http.ws_connect("/ws")
        first = await self.socket.receive_json(timeout=WAIT)
        assert first.get("type") == "snapshot", first
        self.cards.extend(first.get("cards", []))
        self.pbx_down = first.get("pbx_down", [])
        self.listener = asyncio.create_task(self._read(self.socket))

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for message in socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                if data.get("type") == "card":
                    self.cards.append(data["card"])
                elif data.get("type") == "pbx":
                    self.pbx_down = data["down"]

    def of(self, pbx: str, call_id: str) -> list[dict[str, Any]]:
        return [c for c in self.cards if c["pbx"] == pbx and c["call_id"] == call_id]

    def state(self, pbx: str, call_id: str) -> str | None:
        versions = self.of(pbx, call_id)
        return max(versions, key=lambda c: c["version"])["state"] if versions else None

    def pops(self, pbx: str, call_id: str) -> int:
        """How many times this call's card started ringing on this page."""
        count, before = 0, None
        for card in sorted(self.of(pbx, call_id), key=lambda c: c["version"]):
            if card["state"] == "ringing" and before != "ringing":
                count += 1
            before = card["state"]
        return count

    def card_ids(self, pbx: str, call_id: str) -> set[str]:
        return {c["id"] for c in self.of(pbx, call_id)}


@asynccontextmanager
async def browser(base: str, login: str, *, listen: bool = True) -> AsyncIterator[Browser]:
    http = aiohttp.ClientSession(
        base,
        connector=aiohttp.TCPConnector(force_close=True),
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies from 127.0.0.1
    )
    user = Browser(login, http)
    try:
        async with http.get("/login") as page:
            match = _CSRF.search(await page.text())
        assert match is not None, "no CSRF token on the login page"
        form = {"login": login, "password": PASSWORD, "csrf_token": match[1], "next": "/"}
        async with http.post("/login", data=form, allow_redirects=False) as reply:
            assert reply.status == 303, f"login {login}: HTTP {reply.status}"
        if listen:
            await user.listen()
        yield user
    finally:
        if user.socket is not None:
            await user.socket.close()
        if user.listener is not None:
            user.listener.cancel()
            await asyncio.gather(user.listener, return_exceptions=True)
        await http.close()


async def until(
    check: Callable[[], bool], what: str, proc: Product | None = None, within: float = WAIT
) -> None:
    deadline = time.monotonic() + within
    while not check():
        if proc is not None:
            proc.alive()
        assert time.monotonic() < deadline, f"timed out ({within:g} s) waiting for {what}"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ calls, played in parts


class Call:
    """One answered call of the simulator's ``answered`` scenario, emitted in parts."""

    def __init__(self, server: AmiServer, agent: Agent, number: str, seed: int) -> None:
        self.events: list[TimedEvent] = answered(
            server.pbx,
            random.Random(seed),
            start=time.time(),
            number=number,
            name=None,
            queue=QUEUE,
            agents=[agent],
            timings=LONG,
        )
        self.next = 0
        called = self._index("AgentCalled")
        self.id = self.events[called][1]["Linkedid"]

    def _index(self, name: str) -> int:
        return next(i for i, (_, e) in enumerate(self.events) if e.get("Event") == name)

    def play_to(self, server: AmiServer, name: str | None) -> None:
        """Emit the events up to and including the first ``name`` (None: to the end)."""
        stop = len(self.events) if name is None else self._index(name) + 1
        for _, event in self.events[self.next : stop]:
            server.emit(event)
        self.next = max(self.next, stop)


async def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as reply:
        return reply.status, await reply.json()


# ------------------------------------------------------------------ fault test 2


@pytest.mark.timeout(180)
async def test_link_dropped_mid_call_then_down_while_a_call_ends(tmp_path: Path) -> None:
    """F4: the AMI link is cut (RST) while Alice talks and Bob's phone rings: after the
    reconnect both calls go on without a second pop. Then the link stays down while Alice's
    call ends: once it is back, her card is in wrap-up (not talking forever), Bob's call is
    still live and ends normally."""
    pbx = _sim()
    await pbx.start()
    try:
        async with (
            product(tmp_path, [_pbx_table("lab", pbx.port, pbx.secret)]) as proc,
            browser(proc.base, "alice") as alice,
            browser(proc.base, "bob") as bob,
        ):
            await until(lambda: pbx.clients >= 1, "the product to log in", proc)
            a = Call(pbx, ALICE, "+8613800000001", seed=1)
            b = Call(pbx, BOB, "+8613800000002", seed=2)
            a.play_to(pbx, "AgentConnect")
            await until(lambda: alice.state("lab", a.id) == "answered", "Alice talking", proc)
            b.play_to(pbx, "AgentCalled")
            await until(lambda: bob.state("lab", b.id) == "ringing", "Bob's pop", proc)

            await pbx.drop_clients(abort=True)  # RST mid-call
            await until(lambda: pbx.logins >= 2 and pbx.clients >= 1, "a new login", proc)
            b.play_to(pbx, "AgentConnect")
            await until(lambda: bob.state("lab", b.id) == "answered", "Bob talking", proc)

            await pbx.stop()  # the link is down; meanwhile Alice's call ends
            a.play_to(pbx, None)
            await pbx.start()
            await until(lambda: pbx.logins >= 3, "a login after the outage", proc)
            await until(
                lambda: alice.state("lab", a.id) == "wrapup",
                "Alice's card to leave 'answered' for the call that ended meanwhile",
                proc,
            )
            await asyncio.sleep(1.0)  # a phantom end of Bob's live call would show by now
            assert bob.state("lab", b.id) == "answered"
            b.play_to(pbx, None)
            await until(lambda: bob.state("lab", b.id) == "wrapup", "Bob's wrap-up", proc)
            proc.alive()
        for user, call in ((alice, a), (bob, b)):
            assert user.pops("lab", call.id) == 1, user.of("lab", call.id)
            assert len(user.card_ids("lab", call.id)) == 1
        assert not bob.of("lab", a.id) and not alice.of("lab", b.id)
    finally:
        await pbx.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["crash", "shutdown"])
async def test_simulator_restarted_mid_call_ends_the_cards_of_calls_gone(
    tmp_path: Path, how: str
) -> None:
    """F7: Asterisk restarts (a crash, or ``Shutdown`` first) while Alice talks and Bob's
    phone rings; the new Asterisk has no such calls. Alice's card goes to wrap-up and Bob's
    closes (no phantom card), and a call after the restart pops once."""
    old = _sim()
    await old.start()
    new = _sim(port=old.port)
    try:
        async with (
            product(tmp_path, [_pbx_table("lab", old.port, old.secret)]) as proc,
            browser(proc.base, "alice") as alice,
            browser(proc.base, "bob") as bob,
            browser(proc.base, "carol") as carol,
        ):
            await until(lambda: old.clients >= 1, "the product to log in", proc)
            a = Call(old, ALICE, "+8613800000011", seed=11)
            b = Call(old, BOB, "+8613800000012", seed=12)
            a.play_to(old, "AgentConnect")
            b.play_to(old, "AgentCalled")
            await until(lambda: alice.state("lab", a.id) == "answered", "Alice talking", proc)
            await until(lambda: bob.state("lab", b.id) == "ringing", "Bob's pop", proc)

            if how == "shutdown":
                await old.shutdown(restart=True)
            await old.stop()
            # Asterisk's Uniqueids are <system>-<epoch>.<counter>, the counter from 0 again
            # after a restart: a restart within the same second would reuse the old ids
            await asyncio.sleep(1.1)
            await new.start()
            await until(lambda: new.logins >= 1, "the product to log in again", proc)
            await until(
                lambda: alice.state("lab", a.id) == "wrapup" and bob.state("lab", b.id) == "closed",
                "the cards of the calls gone to end",
                proc,
            )
            c = Call(new, CAROL, "+8613800000013", seed=13)
            c.play_to(new, "AgentCalled")
            await until(lambda: carol.state("lab", c.id) == "ringing", "Carol's pop", proc)
            c.play_to(new, None)
            await until(lambda: carol.state("lab", c.id) == "wrapup", "Carol's wrap-up", proc)
            proc.alive()
        for user, call in ((alice, a), (bob, b), (carol, c)):
            assert user.pops("lab", call.id) == 1, user.of("lab", call.id)
            assert len(user.card_ids("lab", call.id)) == 1
        assert alice.state("lab", a.id) == "wrapup"  # and stayed so: nothing reopened it
        assert bob.state("lab", b.id) == "closed"
    finally:
        await old.stop()
        await new.stop()


@pytest.mark.timeout(120)
async def test_accept_then_drop_peer_gets_growing_backoff(tmp_path: Path) -> None:
    """F21: a peer that accepts every login and drops at once. The product's logins grow
    apart (the backoff resets only after a link stayed up ``stable_after``), at most one resync
    per login, and the product stays up."""
    pbx = _sim(drop_after_login=True)
    logins: list[float] = []
    pbx.observers.append(
        lambda e: logins.append(time.monotonic()) if e.get("Event") == "SuccessfulAuth" else None
    )
    await pbx.start()
    window = 10.0
    try:
        table = _pbx_table("flaky", pbx.port, pbx.secret, backoff_max=3.0, stable_after=30.0)
        async with product(tmp_path, [table]) as proc:
            await until(lambda: bool(logins), "the first login", proc)
            await asyncio.sleep(window - (time.monotonic() - logins[0]))
            seen = [t - logins[0] for t in logins if t - logins[0] <= window]
            proc.alive()
            status, ready = await _readyz(proc.base)
            said = proc.log.read_text(errors="replace")
    finally:
        await pbx.stop()
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    # a storm (the backoff reset at every login) is one login per 0.05 s here: 100+
    assert 6 <= len(seen) <= 25, seen
    assert sum(gaps[-5:]) > sum(gaps[:4]), gaps  # they grow apart
    assert max(gaps) >= 1.0, gaps
    resyncs = said.count("PBX flaky: logged in, rebuilding state from Asterisk")
    assert 1 <= resyncs <= pbx.logins, (resyncs, pbx.logins)  # at most one per link
    if status == 503:  # between two logins: down, and why
        assert ready["pbx"]["flaky"]["ready"] is False and ready["pbx"]["flaky"]["reason"]


# ------------------------------------------------------------------ fault test 3


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["refused", "foreign"])
async def test_one_bad_pbx_the_others_agents_keep_getting_pops(tmp_path: Path, fault: str) -> None:
    """F20: of two PBXs one refuses our login (or answers with a banner that is not
    Asterisk's): the good PBX's agent gets every call's pop once, ``/readyz`` and the
    wallboard show the bad PBX down with a reason, and the bad one keeps being retried."""
    good = _sim(system_name="good")
    bad = _sim(system_name="bad", banner="SSH-2.0-OpenSSH_9.6" if fault == "foreign" else None)
    await good.start()
    await bad.start()
    # a foreign peer gets the right secret: a Login sent to it would show as a login
    bad_secret = "wrong-secret" if fault == "refused" else bad.secret
    tables = [
        _pbx_table("good", good.port, good.secret),
        _pbx_table("bad", bad.port, bad_secret),
    ]
    try:
        async with AsyncExitStack() as stack:
            proc = await stack.enter_async_context(product(tmp_path, tables))
            alice = await stack.enter_async_context(browser(proc.base, "alice"))
            boss = await stack.enter_async_context(browser(proc.base, "boss", listen=False))
            await until(lambda: good.clients >= 1, "the good PBX's login", proc)
            tried = (lambda: bad.failed_logins) if fault == "refused" else (lambda: bad.connections)
            await until(lambda: tried() >= 1, "a try at the bad PBX", proc)

            calls = []
            for n in range(3):
                call = Call(good, ALICE, f"+861380000002{n}", seed=20 + n)
                calls.append(call)
                call.play_to(good, "AgentCalled")
                await until(lambda c=call: alice.state("good", c.id) == "ringing", "a pop", proc)
                call.play_to(good, None)
                await until(lambda c=call: alice.state("good", c.id) == "wrapup", "wrap-up", proc)

            status, ready = await _readyz(proc.base)
            assert status == 503, ready
            assert ready["pbx"]["good"] == {"ready": True}
            assert ready["pbx"]["bad"]["ready"] is False and ready["pbx"]["bad"]["reason"], ready
            async with boss.http.get("/api/wallboard") as reply:
                assert reply.status == 200
                board = await reply.json()
            feed = {f["pbx"]: f for f in board["feed"]}
            assert feed["bad"]["connected"] is False and feed["bad"]["reason"], feed
            assert feed["good"]["connected"] is True, feed
            # and the agent's page says so, with why
            assert [d["name"] for d in alice.pbx_down] == ["bad"], alice.pbx_down
            assert alice.pbx_down[0]["reason"], alice.pbx_down

            before = tried()
            await until(lambda: tried() > before, "another try at the bad PBX", proc)
            proc.alive()
        for call in calls:
            assert alice.pops("good", call.id) == 1, alice.of("good", call.id)
            assert len(alice.card_ids("good", call.id)) == 1
        assert bad.logins == 0
    finally:
        await good.stop()
        await bad.stop()
