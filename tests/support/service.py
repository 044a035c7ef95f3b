"""The product as a real ``cti serve`` process, and agents talking to it over real HTTP.

For the fault tests of issue 21 (``tests/faults/``). What is shared:

* :func:`write_config`: a TOML configuration as a user writes it (``[store]`` SQLite or any
  URL, one ``[pbx.<name>]`` pointing at a :class:`pbxsim.AmiServer` in the test process,
  ``[[agents]]``, ``[wrapup]``, ``[web]`` with an accounts file where every account's password
  is :data:`PASSWORD`); :func:`migrated_sqlite` makes the store file;
* :class:`Product`: ``python -m cti serve --config …`` as a child process (it dies with the
  test run), started, SIGKILLed, SIGTERMed and started again on the same config and port;
* :class:`AgentClient`: one agent's browser: logs in through ``/login`` (CSRF double-submit),
  keeps ``/ws`` open and reconnects by itself with ``?since=&epoch=`` (as the page does),
  keeps every card version it received, posts outcomes and reads My day.

Waits are generous (two shared cores, a busy machine); use :func:`until` to poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from crm_sync.migrate import upgrade
from cti.hashing import hash_password
from cti.settings import AgentSettings
from cti_bench.harness import end_product, free_port, start_product
from pbxsim import AmiServer

ROOT = Path(__file__).resolve().parents[2]
DISPOSITIONS = ROOT / "config" / "dispositions.toml"  # require_outcome = true
PASSWORD = "fault-test-password"
WAIT = 30.0  # seconds: the deadline of every poll here
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, within: float = WAIT
) -> None:
    """Poll ``check`` (plain or async) every 50 ms until true; AssertionError after
    ``within`` seconds naming ``what``."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def migrated_sqlite(folder: Path) -> str:
    """A migrated, empty SQLite store ``<folder>/store.sqlite3``; its URL."""
    url = f"sqlite:///{folder / 'store.sqlite3'}"
    await asyncio.to_thread(upgrade, url)
    return url


def write_config(
    folder: Path,
    server: AmiServer,
    agents: Sequence[AgentSettings],
    *,
    database_url: str,
    port: int | None = None,
    pbx: str = "sim",
    wrapup_max_seconds: float = 600.0,
    extra: str = "",
) -> tuple[Path, int]:
    """Write ``<folder>/cti.toml`` and ``<folder>/accounts.toml`` (one agent account per
    ``agents``, login = agent id, password :data:`PASSWORD`); ``extra`` is appended as is
    (more sections). Returns the config's path and the web port (a free one unless given)."""
    port = free_port() if port is None else port
    shared = hash_password(PASSWORD, n=2**10)  # cheap: logging in is not under test
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
        'log_level = "INFO"\n\n'
        f'[store]\ndatabase_url = "{database_url}"\ndefault_region = "CN"\n\n'
        f'[pbx.{pbx}]\nhost = "127.0.0.1"\nport = {server.port}\n'
        f'username = "{server.username}"\nsecret = "{server.secret}"\n'
        "ping_interval = 60.0\nbackoff_initial = 0.1\nbackoff_max = 1.0\n\n"
        f"{members}"
        f"[wrapup]\nmax_seconds = {wrapup_max_seconds}\n\n"
        f'[web]\nhost = "127.0.0.1"\nport = {port}\naccounts_file = "{accounts}"\n'
        f'dispositions_file = "{DISPOSITIONS}"\n\n'
        f"{extra}",
        encoding="utf-8",
    )
    return config, port


@dataclass
class Product:
    """``cti serve --config config`` listening on 127.0.0.1:``port``; output appended to
    ``log`` when it ends (each run headed by a ``=== start n ===`` line)."""

    config: Path
    port: int
    log: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the runs wrote so far, the running one's included."""
        ended = self.log.read_text(errors="replace") if self.log.exists() else ""
        running = self._run_log()
        return ended + (running.read_text(errors="replace") if running.exists() else "")

    async def start(self) -> None:
        """Start a run and wait until it accepts connections (up to a minute)."""
        assert self.process is None or self.process.returncode is not None, "already running"
        self.starts += 1
        try:
            self.process = await start_product(self.config, self.port, self._run_log())
        except RuntimeError:
            self._collect()
            raise

    def _run_log(self) -> Path:
        return self.log.with_suffix(f".{self.starts}.log")

    def _collect(self) -> None:
        """Append the ended run's output to :attr:`log`."""
        run_log = self._run_log()
        if run_log.exists():
            with self.log.open("a", encoding="utf-8") as out:
                out.write(f"=== start {self.starts} ===\n")
                out.write(run_log.read_text(errors="replace"))
            run_log.unlink()

    async def kill(self) -> int:
        """SIGKILL the run and reap it; its exit status."""
        return await self._signal(signal.SIGKILL)

    async def terminate(self) -> int:
        """SIGTERM the run and wait (up to 30 s) for it to exit by itself; its exit status."""
        return await self._signal(signal.SIGTERM)

    async def _signal(self, signum: signal.Signals) -> int:
        process = self.process
        assert process is not None and process.returncode is None, "not running"
        os.kill(process.pid, signum)
        async with asyncio.timeout(WAIT):
            code = await process.wait()
        self._collect()
        return code

    async def stop(self) -> None:
        """End the run whatever its state (SIGTERM, then SIGKILL after 15 s)."""
        if self.process is not None:
            await end_product(self.process)
            self._collect()
            self.process = None


@dataclass
class AgentClient:
    """One agent's browser on ``base_url``: a session cookie, the ``/ws`` push and the API.

    :attr:`received` holds every card message received, in order, per card id (``pbx/
    call_id/agent``); :attr:`cards` the newest version of each (by ``version``, as the page
    applies them, snapshots included; a snapshot of another server run starts them again).
    After the socket closes it is opened again at once
    (then every 0.2 s) with ``?since=<last seq>&epoch=<epoch>``; :attr:`connects` counts the
    opened sockets, :attr:`snapshots` the snapshots received and :attr:`close_codes` how
    each socket ended (1001: the server said it was going away).
    """

    base_url: str
    login: str
    password: str = PASSWORD
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    connects: int = 0
    snapshots: int = 0
    refused: list[int] = field(default_factory=list)  # HTTP status of refused /ws handshakes
    close_codes: list[int | None] = field(default_factory=list)  # of each socket that ended
    seq: int | None = None
    epoch: Any = None
    csrf: str = ""
    http: aiohttp.ClientSession | None = None
    _socket: aiohttp.ClientWebSocketResponse | None = None
    _runner: asyncio.Task[None] | None = None

    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            self.http = aiohttp.ClientSession(
                self.base_url,
                connector=aiohttp.TCPConnector(force_close=True),
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies from 127.0.0.1
            )
        return self.http

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self._socket.closed

    async def log_in(self) -> None:
        """The login form (double-submit CSRF), then the agent page for the session's token.
        Raises AssertionError when the server does not log us in."""
        http = self.session()
        async with http.get("/login") as page:
            match = _CSRF.search(await page.text())
        assert match is not None, "no CSRF token on the login page"
        form = {"login": self.login, "password": self.password, "csrf_token": match[1]}
        async with http.post("/login", data={**form, "next": "/"}, allow_redirects=False) as r:
            assert r.status == 303, f"login {self.login}: HTTP {r.status}"
        await self.read_csrf()

    async def read_csrf(self) -> None:
        """Read the session's CSRF token from the agent page; AssertionError if the page
        is not served to this session (e.g. sent to the login page)."""
        async with self.session().get("/", allow_redirects=False) as page:
            assert page.status == 200, f"{self.login}: the agent page answered {page.status}"
            match = _CSRF.search(await page.text())
        assert match is not None, "no CSRF token on the agent page"
        self.csrf = match[1]

    def listen(self) -> None:
        """Keep ``/ws`` open from now on (reconnecting with resume) until :meth:`close`."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            params = {}
            if self.seq is not None and self.epoch is not None:
                params = {"since": str(self.seq), "epoch": str(self.epoch)}
            try:
                self._socket = await self.session().ws_connect("/ws", params=params, heartbeat=5)
            except aiohttp.WSServerHandshakeError as refused:
                self.refused.append(refused.status)
                await asyncio.sleep(0.2)
                continue
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.2)  # the server is down: try again soon
                continue
            self.connects += 1
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async for message in self._socket:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        self._take(json.loads(message.data))
            self.close_codes.append(self._socket.close_code)
            await asyncio.sleep(0.05)

    def _take(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "snapshot":
            self.snapshots += 1
            if data.get("epoch") != self.epoch:
                self.cards.clear()  # as the page: another server run, versions start again
            self.epoch = data.get("epoch")
            in_snapshot = {card["id"] for card in data.get("cards", [])}
            for card in data.get("cards", []):
                self._card(card)
            for gone in set(self.cards) - in_snapshot:  # as the page: a card not in it goes
                self.cards.pop(gone)
        elif kind == "card":
            self._card(data["card"])
        if isinstance(data.get("seq"), int) and kind != "ping":
            self.seq = data["seq"]

    def _card(self, card: dict[str, Any]) -> None:
        self.received.setdefault(card["id"], []).append(card)
        old = self.cards.get(card["id"])
        if old is None or card.get("version", 0) > old.get("version", 0):
            self.cards[card["id"]] = card

    def open_cards(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """The cards shown now (not closed), of one call if ``call_id`` is given."""
        return [
            c
            for c in self.cards.values()
            if c.get("state") != "closed" and (call_id is None or c.get("call_id") == call_id)
        ]

    async def api(
        self, method: str, path: str, body: dict[str, Any] | None = None, **params: str
    ) -> tuple[int, Any]:
        """An API request with the session's CSRF token; (status, decoded JSON or text)."""
        headers = {"X-CSRF-Token": self.csrf} if method != "GET" else {}
        async with self.session().request(
            method, path, json=body, params=params or None, headers=headers, allow_redirects=False
        ) as reply:
            text = await reply.text()
            try:
                return reply.status, json.loads(text)
            except ValueError:
                return reply.status, text

    async def post_outcome(
        self,
        pbx: str,
        call_id: str,
        key: str,
        disposition: str = "resolved",
        **fields: Any,
    ) -> tuple[int, Any]:
        """``POST /api/calls/{pbx}/{call_id}/outcome``; (status, answer)."""
        body = {"key": key, "disposition": disposition, **fields}
        return await self.api("POST", f"/api/calls/{pbx}/{call_id}/outcome", body)

    async def my_day(self) -> list[dict[str, Any]]:
        """My day's calls (a day from 24 h ago to 2 h ahead, in UTC); AssertionError unless 200."""
        at = datetime.now(UTC)
        status, answer = await self.api(
            "GET",
            "/api/agents/me/day",
            day_start=(at - timedelta(hours=24)).isoformat(),
            day_end=(at + timedelta(hours=2)).isoformat(),
        )
        assert status == 200, (status, answer)
        calls: list[dict[str, Any]] = answer["calls"]
        return calls

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
        if self.http is not None:
            await self.http.close()
