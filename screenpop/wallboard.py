"""The supervisor wallboard: its page, its JSON snapshot and its live push.

Theory of operation
-------------------
The board (``cti.board``, seen here only through :class:`BoardView`) is a pure model that
bumps ``version`` whenever an event changed a figure, and computes a complete snapshot on
demand. A wall screen needs no history, only the latest picture, so the push is a poll of
that version rather than a stream of changes: one task (:class:`WallboardFeed`) looks at the
version every ``interval`` seconds and, when it moved (or ``idle`` seconds went by: windows
roll and waits grow without any event), takes one snapshot and hands the same encoded text
to every connected wallboard. However busy the center, a page gets at most one message per
``interval``.

A page gets the whole board once (``{"type": "board"}``), then deltas (``{"type":
"delta"}``): the small top-level parts whole, and only the queue views and agent rows the
board rebuilt since the last push (each carries a ``rev``), plus the keys of those gone. At
200 queues and 2,000 agents the whole board is about 1.5 MB; a push of a busy center's
delta about 150 kB (docs/benchmarks.md). The page counts waits and durations up itself
from the ``since`` times.

Each socket has a one-slot outbox and its own writer task: a new message replaces one not
yet sent, so a slow browser skips stale pictures instead of queueing them; having skipped a
delta, it gets the whole board next. Every send has a time limit (as in
:mod:`screenpop.ws`): a browser that stops reading is dropped, never waited for.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web

from screenpop.auth import Session
from screenpop.errors import ApiError
from screenpop.keys import CLOCK, POP, SESSION, SESSIONS
from screenpop.pipeline import PopService
from screenpop.views import SESSION_LOST
from screenpop.ws import HEARTBEAT, SEND_TIMEOUT

log = logging.getLogger(__name__)


class BoardView(Protocol):
    """What the web edge needs of the board (``cti.board.Board``)."""

    version: int  # bumps whenever an event changed something

    def snapshot(self, now: float) -> dict[str, Any]:
        """Every figure at ``now`` (epoch seconds), JSON-ready (schema in docs/api.md)."""
        ...


BOARD = web.AppKey[BoardView | None]("board")  # None: no PBX, no wallboard


class _Outbox:
    """One socket's latest unsent snapshot and the task writing it."""

    def __init__(
        self, socket: web.WebSocketResponse, request: web.Request, send_timeout: float
    ) -> None:
        self.socket = socket
        self.transport = request.transport
        self.sessions = request.app[SESSIONS]
        self.session = request[SESSION]
        self.send_timeout = send_timeout
        self.latest: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self.task = asyncio.create_task(self._write())

    def offer(self, text: str, whole: Callable[[], str] | None = None) -> None:
        """Replace whatever was not sent yet: only the newest picture matters. ``text`` is a
        delta when ``whole`` is given; replacing an unsent message, send ``whole()`` instead."""
        skipped = self.latest.full()
        if skipped:
            self.latest.get_nowait()
        self.latest.put_nowait(whole() if skipped and whole is not None else text)

    async def _write(self) -> None:
        try:
            while True:
                text = await self.latest.get()
                # the check also marks the session used: an open wallboard is a present supervisor
                if self.sessions.get(self.session.token) is not self.session:
                    await self.socket.close(code=SESSION_LOST, message=b"session ended")
                    return
                async with asyncio.timeout(self.send_timeout):
                    await self.socket.send_str(text)
        except TimeoutError:
            log.warning("wallboard browser stalled; dropping it")
            if self.transport is not None:
                self.transport.abort()  # a close frame would wait behind the stalled data
        except ConnectionError:
            pass  # the browser went away; the handler cleans up


class WallboardFeed:
    """Pushes the board to every open wallboard, at most every ``interval`` seconds, when its
    version changed, and at least every ``idle`` seconds anyway."""

    def __init__(
        self,
        board: BoardView,
        pop: PopService,
        *,
        interval: float = 0.5,
        idle: float = 5.0,
        send_timeout: float = SEND_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.board = board
        self.pop = pop
        self.interval = interval
        self.idle = idle
        self.send_timeout = send_timeout
        self.clock = clock
        self._outboxes: set[_Outbox] = set()
        self._version = board.version  # sockets get a snapshot on connect: nothing to push yet
        self._sent: dict[str, dict[tuple[str, str], Any]] = {"queues": {}, "agents": {}}

    def view(self) -> dict[str, Any]:
        """The snapshot, with the customer of each agent's current call."""
        snapshot = self.board.snapshot(self.clock())
        # the board may cache its snapshot: copy what changes, never write into it
        agents = [self._with_customer(agent) for agent in snapshot["agents"]]
        return {**snapshot, "agents": agents}

    def message(self, view: dict[str, Any] | None = None) -> str:
        """The whole board (``view``, or a fresh one)."""
        whole = {"type": "board", "board": self.view() if view is None else view}
        return json.dumps(whole, separators=(",", ":"))

    def delta(self, view: dict[str, Any]) -> dict[str, Any]:
        """What changed in ``view`` since the last push: every part but the queues and agents
        whole, and of those only the ones rebuilt (a new ``rev``) or gone."""
        changes: dict[str, Any] = {k: v for k, v in view.items() if k not in self._sent}
        gone: dict[str, list[tuple[str, str]]] = {}
        for part, sent in self._sent.items():
            name = _KEYS[part]
            now = {(item["pbx"], item[name]): item for item in view[part]}
            changes[part] = [item for key, item in now.items() if sent.get(key) != _mark(item)]
            gone[part] = [key for key in sent if key not in now]
            self._sent[part] = {key: _mark(item) for key, item in now.items()}
        changes["gone"] = gone
        return changes

    def delta_message(self, view: dict[str, Any]) -> str:
        """The push of what changed in ``view`` since the last one (:meth:`delta`)."""
        return json.dumps({"type": "delta", "delta": self.delta(view)}, separators=(",", ":"))

    def attach(self, socket: web.WebSocketResponse, request: web.Request) -> _Outbox:
        """Start pushing to ``socket`` (opened by ``request``), with the whole board first."""
        opening = self.message()
        outbox = _Outbox(socket, request, self.send_timeout)
        outbox.offer(opening)
        self._outboxes.add(outbox)
        return outbox

    async def detach(self, outbox: _Outbox) -> None:
        self._outboxes.discard(outbox)
        outbox.task.cancel()
        await asyncio.wait([outbox.task])

    async def run(self) -> None:
        """Push until cancelled."""
        loop = asyncio.get_running_loop()
        pushed_at = loop.time()
        while True:
            await asyncio.sleep(self.interval)
            version, now = self.board.version, loop.time()
            if version == self._version and now - pushed_at < self.idle:
                continue
            # recorded even with nobody watching: a page that connects gets a fresh snapshot
            self._version, pushed_at = version, now
            if not self._outboxes:
                continue
            try:
                view = self.view()
                text = self.delta_message(view)
            except Exception:  # a board bug must not end the push; retried at the next change
                log.exception("wallboard snapshot failed")
                continue
            whole_board = functools.cache(functools.partial(self.message, view))  # if needed
            for outbox in self._outboxes:
                outbox.offer(text, whole_board)

    def _with_customer(self, agent: dict[str, Any]) -> dict[str, Any]:
        call = agent.get("call")
        if call is None:
            return agent
        lookup = self.pop.lookup_for(call["pbx"], call["call_id"])
        # several customers share the number: the agent picks one later, so name nobody yet
        name = lookup.cards[0].name if lookup is not None and len(lookup.cards) == 1 else None
        return {**agent, "call": {**call, "customer": name}}


_KEYS = {"queues": "name", "agents": "id"}  # with "pbx", what names a queue or an agent


def _mark(item: dict[str, Any]) -> Any:
    """What tells a queue view or agent row changed: its build number (the customer of the
    current call is looked up afterwards, so it counts too); without one, the item itself."""
    if "rev" not in item:
        return item
    call = item.get("call")
    return item["rev"], call.get("customer") if call else None


FEED = web.AppKey("wallboard_feed", WallboardFeed)


def add_routes(app: web.Application) -> None:
    """The wallboard's routes, and its feed when there is a board (``app[BOARD]``)."""
    app.router.add_get("/wallboard", page, name="wallboard")
    app.router.add_get("/api/wallboard", snapshot, name="api_wallboard")
    app.router.add_get("/ws/wallboard", websocket, name="ws_wallboard")
    board = app[BOARD]
    if board is not None:
        clock = app[CLOCK]
        app[FEED] = WallboardFeed(board, app[POP], clock=lambda: clock().timestamp())
        app.cleanup_ctx.append(_feed_running)


async def page(request: web.Request) -> web.StreamResponse:
    """A shell: the script renders the snapshots the socket brings."""
    session = _supervisor(request)
    feed = request.app.get(FEED)
    # listening in rings the supervisor's own phone (the account's device): none, no buttons
    phone = bool(session.account.device)
    config = {"csrf": session.csrf, "idle": feed.idle, "phone": phone} if feed is not None else None
    return aiohttp_jinja2.render_template(
        "wallboard.html",
        request,
        {"account": session.account, "csrf": session.csrf, "config": config},
    )


async def snapshot(request: web.Request) -> web.StreamResponse:
    _supervisor(request)
    return web.json_response(_feed(request).view())


async def websocket(request: web.Request) -> web.StreamResponse:
    session = _supervisor(request)
    origin = request.headers.get("Origin")
    # the same rule as the agent's socket (screenpop.ws): another site's page is refused
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise ApiError(403, "bad_origin", "WebSocket from another site refused.")
    feed = _feed(request)
    socket = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=4096)
    await socket.prepare(request)
    outbox = feed.attach(socket, request)
    session.sockets.add(socket)  # closed with the session, and at shutdown (app.py)
    try:
        async for _ in socket:
            pass  # the page sends nothing; reading keeps control frames and close flowing
    finally:
        session.sockets.discard(socket)
        await feed.detach(outbox)
    return socket


def _supervisor(request: web.Request) -> Session:
    session = request[SESSION]
    if session.account.role != "supervisor":
        raise ApiError(403, "supervisors_only", "The wallboard is for supervisors.")
    return session


def _feed(request: web.Request) -> WallboardFeed:
    feed = request.app.get(FEED)
    if feed is None:
        raise ApiError(404, "no_board", "No PBX is configured, so there is no wallboard.")
    return feed


async def _feed_running(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[FEED].run())
    yield
    task.cancel()
    await asyncio.wait([task])
