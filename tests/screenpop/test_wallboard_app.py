"""The wallboard's web edge over HTTP and real WebSockets, with a fake board: who may see it,
what the snapshot carries (the customer of each current call, hostile text intact), how often
it is pushed, and that a browser that stops reading is dropped without holding up the others.

The board here is a stand-in (:class:`FakeBoard`) with a fixed snapshot built to the schema;
``tests/test_browser_wallboard.py`` uses it too.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from screenpop.keys import SESSIONS
from screenpop.pipeline import PopService
from screenpop.wallboard import FEED, WallboardFeed
from tests.support.screenpop import (
    HOSTILE,
    HOSTILE_PHONE,
    PBX,
    TWINS,
    WEI,
    Calls,
    build_app,
    client_for,
    eventually,
    login,
    new_pop,
    new_store,
    seed,
)

Client = TestClient[web.Request, web.Application]
Socket = aiohttp.ClientWebSocketResponse
HOSTILE_NAME = f"{HOSTILE} 🙂‍↔️ 王"


def figures(**changes: Any) -> dict[str, Any]:
    """One window's figures (``F`` of the schema)."""
    base: dict[str, Any] = {
        "offered": 40,
        "answered": 35,
        "answered_in_sl": 30,
        "abandoned": 3,
        "short_abandoned": 1,
        "other_exits": 1,
        "service_level": 76.9,
        "sl_threshold": 20.0,
        "abandon_rate": 7.7,
        "asa": 14.2,
        "aht": 245.0,
        "handled": 34,
        "gaps": [],
    }
    return {**base, **changes}


def queue(name: str, at: float, **changes: Any) -> dict[str, Any]:
    """A queue with callers waiting and a complete hour of trend."""
    base: dict[str, Any] = {
        "pbx": PBX,
        "name": name,
        "waiting": 3,
        "longest_wait": 95.0,
        "agents": {
            "logged_in": 6,
            "available": 2,
            "on_call": 2,
            "ringing": 0,
            "wrap_up": 1,
            "paused": 1,
        },
        "paused_reasons": {"lunch": 1},
        "callbacks": 2,
        "figures": {"15m": figures(), "1h": figures(offered=150), "today": figures(offered=900)},
        "trend": [
            {"at": at - 3600 + 60 * i, "waiting": i % 5, "service_level": 70.0 + i % 20}
            for i in range(1, 61)
        ],
        "level": "ok",
        "alerts": [],
    }
    return {**base, **changes}


def agent(agent_id: str, name: str, at: float, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": agent_id,
        "name": name,
        "pbx": PBX,
        "state": "available",
        "since": at - 70,
        "reason": None,
        "wrapup_paused": False,
        "queues": ["support"],
        "call": None,
        "handled_today": 12,
        "aht_today": 230.0,
        "fcr": 0.83,
        "csat": 4.4,
        "supervisor_rating": 4.0,
        "score": 81.5,
    }
    return {**base, **changes}


def call(call_id: str, at: float, **changes: Any) -> dict[str, Any]:
    base = {
        "pbx": PBX,
        "call_id": call_id,
        "queue": "support",
        "caller": "+8613800138000",
        "since": at - 125,
    }
    return {**base, **changes}


def snapshot(at: float, **changes: Any) -> dict[str, Any]:
    """A whole board: two queues, their total, three agents (one on a call), one PBX feed."""
    total = queue("all queues", at, pbx="", trend=[], waiting=5, callbacks=3)
    base: dict[str, Any] = {
        "at": at,
        "windows": [
            {"key": "15m", "label": "last 15 min", "since": at - 900},
            {"key": "1h", "label": "last hour", "since": at - 3600},
            {"key": "today", "label": "today", "since": at - 8 * 3600},
        ],
        "queues": [queue("support", at), queue("sales", at, waiting=2, longest_wait=31.0)],
        "total": total,
        "agents": [
            agent("Alice", "Alice Agent", at, state="on_call", call=call("c1", at)),
            agent("Bob", "Bob Agent", at, state="paused", reason="lunch"),
            agent("Carol", "Carol Agent", at),
        ],
        "alerts": [],
        "feed": [{"pbx": PBX, "connected": True, "since": at - 7200}],
        "settings": {
            "short_abandon": 5.0,
            "weights": {
                "availability": 0.25,
                "customer_rating": 0.25,
                "supervisor_rating": 0.25,
                "resolution": 0.25,
            },
        },
    }
    return {**base, **changes}


class FakeBoard:
    """Returns the same snapshot object every time (a real board may cache it), counts how
    often it was asked; ``change`` edits it and bumps the version as an event would."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.version = 0
        self.data = data if data is not None else snapshot(time.time())
        self.snapshots = 0

    def snapshot(self, now: float) -> dict[str, Any]:
        self.snapshots += 1
        return {**self.data, "at": now}  # all but "at" is the board's own (cached) objects

    def change(self, **changes: Any) -> None:
        self.data = {**self.data, **changes}
        self.version += 1


@dataclass
class Wall:
    client: Client
    app: web.Application
    board: FakeBoard


@asynccontextmanager
async def serving(
    board: FakeBoard, pop: PopService | None = None, **feed: Any
) -> AsyncIterator[Wall]:
    """The app with ``board``; ``feed`` options (interval, idle, send_timeout) replace the
    defaults before it starts."""
    pop = pop or new_pop(None)
    app = build_app(pop, pop.store, board=board)
    if feed:
        app[FEED] = WallboardFeed(board, pop, **feed)
    try:
        async with client_for(app) as client:
            yield Wall(client, app, board)
    finally:
        await pop.close()


@pytest.fixture
async def wall() -> AsyncIterator[Wall]:
    async with serving(FakeBoard()) as wall:
        await login(wall.client, "sue")
        yield wall


_seen: dict[int, dict[str, Any]] = {}  # per socket: the board its messages add up to


async def board_message(socket: Socket, within: float = 2.0) -> dict[str, Any]:
    """The board as a page holds it after the next message: the whole board first, then that
    board with each delta merged in (as wallboard.js merges them)."""
    message: dict[str, Any] = await socket.receive_json(timeout=within)
    if message["type"] == "board":
        board: dict[str, Any] = message["board"]
    else:
        assert message["type"] == "delta" and id(socket) in _seen
        board = merged(_seen[id(socket)], message["delta"])
    _seen[id(socket)] = board
    return board


def merged(old: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    board = {**old, **{k: v for k, v in delta.items() if k != "gone"}}
    for part, name in (("queues", "name"), ("agents", "id")):
        gone = {tuple(key) for key in delta["gone"][part]}
        items = {(i["pbx"], i[name]): i for i in old[part] if (i["pbx"], i[name]) not in gone}
        items.update({(i["pbx"], i[name]): i for i in delta[part]})
        order = sorted(items) if part == "queues" else sorted(items, key=lambda k: (k[1], k[0]))
        board[part] = [items[key] for key in order]
    return board


def as_sent(data: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """``data`` as the web edge sends it (but for "at"): each current call gets its
    customer's name (``names`` by call id; None for the others)."""
    sent = copy.deepcopy(data)
    del sent["at"]
    for item in sent["agents"]:
        if item["call"] is not None:
            item["call"]["customer"] = names.get(item["call"]["call_id"])
    return sent


def but_at(sent: dict[str, Any]) -> dict[str, Any]:
    assert abs(sent["at"] - time.time()) < 5
    return {k: v for k, v in sent.items() if k != "at"}


# ---------------------------------------------------------------------- who may see it


async def test_a_supervisor_gets_the_page_the_snapshot_and_the_push(wall: Wall) -> None:
    page = await wall.client.get("/wallboard")
    assert page.status == 200
    html = await page.text()
    assert '<script src="/static/wallboard.js" defer></script>' in html
    assert "Mean wait of answered calls." in html  # the figures are defined on the page
    response = await wall.client.get("/api/wallboard")
    assert response.status == 200
    body = await response.json()
    assert but_at(body) == as_sent(wall.board.data, {})
    socket = await wall.client.ws_connect("/ws/wallboard")
    assert but_at(await board_message(socket)) == as_sent(wall.board.data, {})
    await socket.close()
    assert "customer" not in wall.board.data["agents"][0]["call"], "the board's dict is untouched"
    agent_page = await (await wall.client.get("/")).text()
    assert '<a class="brand" href="/wallboard">Wallboard</a>' in agent_page


async def test_an_agent_gets_403_everywhere() -> None:
    async with serving(FakeBoard()) as wall:
        await login(wall.client, "alice")
        page = await wall.client.get("/wallboard")
        assert page.status == 403
        assert page.content_type == "text/html"
        assert "The wallboard is for supervisors." in await page.text()
        response = await wall.client.get("/api/wallboard")
        assert response.status == 403
        assert (await response.json())["error_id"] == "supervisors_only"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await wall.client.ws_connect("/ws/wallboard")
        assert refused.value.status == 403
        agent_page = await (await wall.client.get("/")).text()
        assert "/wallboard" not in agent_page  # no link for agents


async def test_without_a_session_pages_redirect_and_the_api_says_401() -> None:
    async with serving(FakeBoard()) as wall:
        client = wall.client
        page = await client.get("/wallboard", allow_redirects=False)
        assert page.status == 303
        location = URL(page.headers["Location"])
        assert (location.path, location.query["next"]) == ("/login", "/wallboard")
        response = await client.get("/api/wallboard")
        assert response.status == 401
        assert (await response.json())["error_id"] == "unauthenticated"
        handshake = await client.get("/ws/wallboard", allow_redirects=False)
        assert handshake.status == 303
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect("/ws/wallboard")
        assert wall.board.snapshots == 0


async def test_sockets_from_other_sites_are_refused(wall: Wall) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
        await wall.client.ws_connect("/ws/wallboard", headers={"Origin": "http://evil.example"})
    assert foreign.value.status == 403
    own = await wall.client.ws_connect(
        "/ws/wallboard", origin=str(wall.client.make_url("")).rstrip("/")
    )
    await board_message(own)
    await own.close()


async def test_without_a_pbx_the_page_says_so() -> None:
    pop = new_pop(None)
    async with client_for(build_app(pop, None)) as client:
        await login(client, "sue")
        page = await client.get("/wallboard")
        assert page.status == 200
        html = await page.text()
        assert "No PBX is configured" in html and "wallboard.js" not in html
        response = await client.get("/api/wallboard")
        assert response.status == 404
        assert (await response.json())["error_id"] == "no_board"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/ws/wallboard")
        assert refused.value.status == 404


# ---------------------------------------------------------------------- what it carries


async def test_hostile_names_reach_the_json_intact() -> None:
    at = time.time()
    hostile_queue = queue(HOSTILE_NAME, at, paused_reasons={HOSTILE: 1})
    data = snapshot(
        at,
        queues=[hostile_queue],
        agents=[
            agent(
                "x'\"<b>",
                HOSTILE_NAME,
                at,
                state="paused",
                reason=HOSTILE,
                queues=[HOSTILE_NAME],
                call=call("h1", at, caller=HOSTILE, queue=HOSTILE_NAME),
            )
        ],
        alerts=[{"pbx": PBX, "queue": HOSTILE_NAME, "kind": "wait", "text": HOSTILE, "since": at}],
    )
    async with serving(FakeBoard(data)) as wall:
        await login(wall.client, "sue")
        body = await (await wall.client.get("/api/wallboard")).json()
        socket = await wall.client.ws_connect("/ws/wallboard")
        pushed = await board_message(socket)
        await socket.close()
    for sent in (body, pushed):
        assert but_at(sent) == as_sent(data, {})
        assert sent["agents"][0]["name"] == HOSTILE_NAME
        assert sent["queues"][0]["paused_reasons"] == {HOSTILE: 1}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the store is not under test
async def test_current_calls_carry_their_customer(engine: AsyncEngine) -> None:
    store = new_store(engine)
    await seed(store)
    pop = new_pop(store)
    calls = Calls(pop)
    calls.ring("c1", "Alice", WEI)  # one customer
    calls.ring("c2", "Bob", TWINS)  # two share the number: nobody is named yet
    calls.ring("c3", "Carol", HOSTILE_PHONE)
    for call_id in ("c1", "c2", "c3"):
        await eventually(lambda c=call_id: pop.lookup_for(PBX, c) is not None)
    at = time.time()
    data = snapshot(
        at,
        agents=[
            agent("Alice", "Alice Agent", at, state="on_call", call=call("c1", at)),
            agent("Bob", "Bob Agent", at, state="on_call", call=call("c2", at)),
            agent("Carol", "Carol Agent", at, state="on_call", call=call("c3", at)),
            agent("Dave", "Dave Agent", at, state="on_call", call=call("unknown", at)),
            agent("Eve", "Eve Agent", at),
        ],
    )
    async with serving(FakeBoard(data), pop) as wall:
        await login(wall.client, "sue")
        body = await (await wall.client.get("/api/wallboard")).json()
    assert but_at(body) == as_sent(data, {"c1": "张伟", "c3": HOSTILE})
    assert [a["call"] and a["call"]["customer"] for a in body["agents"]] == [
        "张伟",
        None,
        HOSTILE,
        None,
        None,
    ]


# ---------------------------------------------------------------------- how often it is pushed


async def test_after_the_whole_board_pushes_carry_only_what_changed() -> None:
    async with serving(FakeBoard(), interval=0.05, idle=60.0) as wall:
        await login(wall.client, "sue")
        socket = await wall.client.ws_connect("/ws/wallboard")
        first = await socket.receive_json(timeout=2)
        assert first["type"] == "board" and len(first["board"]["agents"]) == 3
        wall.board.change()  # the first push: what every page has from now on
        assert (await socket.receive_json(timeout=2))["type"] == "delta"
        at = wall.board.data["at"]
        alice, bob, _carol = wall.board.data["agents"]
        bob_back = {**bob, "state": "available", "reason": None}
        wall.board.change(agents=[alice, bob_back])  # Bob is back, Carol logged off
        message = await socket.receive_json(timeout=2)
        assert message["type"] == "delta"
        delta = message["delta"]
        assert [a["id"] for a in delta["agents"]] == ["Bob"] and delta["queues"] == []
        assert delta["gone"] == {"queues": [], "agents": [[PBX, "Carol"]]}
        assert delta["total"] == wall.board.data["total"]  # the small parts come whole
        new_queue = queue("vip", at, waiting=9)
        wall.board.change(queues=[*wall.board.data["queues"], new_queue])
        delta = (await socket.receive_json(timeout=2))["delta"]
        assert [q["name"] for q in delta["queues"]] == ["vip"] and delta["agents"] == []
        await socket.close()


async def test_pushes_follow_the_version_at_most_once_per_interval() -> None:
    interval = 0.1
    async with serving(FakeBoard(), interval=interval, idle=60.0) as wall:
        await login(wall.client, "sue")
        sockets = [await wall.client.ws_connect("/ws/wallboard") for _ in range(2)]
        for socket in sockets:
            await board_message(socket)
        assert wall.board.snapshots == 2  # one fresh snapshot per connect
        taken = []  # when each pushed snapshot was taken, by the server's clock
        for round_ in range(1, 4):
            for waiting in range(20):  # a burst of events between two looks at the version
                wall.board.change(total=queue("all queues", time.time(), waiting=waiting))
            pushed = [await board_message(socket) for socket in sockets]
            assert [board["total"]["waiting"] for board in pushed] == [19, 19]
            assert pushed[0]["at"] == pushed[1]["at"]  # the same push
            taken.append(pushed[0]["at"])
            assert wall.board.snapshots == 2 + round_  # one snapshot per push, for all sockets
        for socket in sockets:  # nothing changed: nothing more
            with pytest.raises(TimeoutError):
                await socket.receive_json(timeout=4 * interval)
        assert wall.board.snapshots == 5  # 3 bursts of 20 changes: exactly 3 pushes
        gaps = [later - earlier for earlier, later in itertools.pairwise(taken)]
        assert min(gaps) >= interval * 0.9

        # a busy center: a change every 10 ms for a second, still one push per interval
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            wall.board.change(total=queue("all queues", time.time(), waiting=7))
            await asyncio.sleep(0.01)
        assert 3 <= wall.board.snapshots - 5 <= 1.0 / interval + 1
        for socket in sockets:
            await socket.close()


async def test_an_idle_board_is_pushed_anyway_every_idle_seconds() -> None:
    idle = 0.3
    async with serving(FakeBoard(), interval=0.05, idle=idle) as wall:
        await login(wall.client, "sue")
        socket = await wall.client.ws_connect("/ws/wallboard")
        times = [(await board_message(socket))["at"]]
        for _ in range(3):
            times.append((await board_message(socket, within=2 * idle))["at"])
        await socket.close()
    assert wall.board.version == 0
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[1:])]
    assert all(idle * 0.9 <= gap <= idle + 0.5 for gap in gaps), gaps


async def test_a_socket_that_never_reads_is_dropped_without_holding_up_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    at = time.time()
    crowd = [agent(f"A{i}", "x" * 10_000, at) for i in range(100)]  # about 1 MB a snapshot
    async with serving(
        FakeBoard(snapshot(at, agents=crowd)), interval=0.05, idle=60.0, send_timeout=2.0
    ) as wall:
        client = wall.client
        await login(client, "sue")
        cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))
        reader, writer = await asyncio.open_connection(client.host, client.port)
        try:
            writer.write(
                b"GET /ws/wallboard HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n"
                + f"Cookie: cti_session={cookie['cti_session'].value}\r\n\r\n".encode()
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            # from here on the stalled browser reads nothing
            healthy = await client.ws_connect("/ws/wallboard", max_msg_size=0)
            await board_message(healthy)
            sessions = wall.app[SESSIONS]
            assert len(sessions.sockets()) == 2
            # a few pushes fill the stalled socket's buffers; its send then hangs for 2 s,
            # while the healthy one gets every push at once
            for round_ in range(1, 200):
                alert = {"pbx": PBX, "queue": "q", "kind": "k", "text": str(round_), "since": at}
                # every agent row changes: each delta is as big as the board (about 1 MB)
                crowd = [agent(f"A{i}", f"{round_}" + "x" * 10_000, at) for i in range(100)]
                wall.board.change(alerts=[alert], agents=crowd)
                started = time.monotonic()
                assert (await board_message(healthy))["alerts"][0]["text"] == str(round_)
                assert time.monotonic() - started < 1.0
                if len(sessions.sockets()) == 1:
                    break  # the stalled one is gone
            assert len(sessions.sockets()) == 1
            assert round_ >= 10
            assert "wallboard browser stalled; dropping it" in caplog.text
            await healthy.close()
        finally:
            writer.close()
            await writer.wait_closed()


# ---------------------------------------------------------------------- how it ends


async def test_sockets_end_with_their_session(wall: Wall) -> None:
    wall.app[FEED].idle = 0.1  # pushes soon: each one checks the session first
    socket = await wall.client.ws_connect("/ws/wallboard")
    await board_message(socket)
    (session,) = list(wall.app[SESSIONS]._sessions.values())
    wall.app[SESSIONS].drop(session.token)  # expired, as far as the server is concerned
    closed = await socket.receive(timeout=2)
    assert (closed.type, closed.data) == (WSMsgType.CLOSE, 4401)


async def test_logout_and_shutdown_close_the_sockets() -> None:
    async with serving(FakeBoard()) as wall:
        csrf = await login(wall.client, "sue")
        socket = await wall.client.ws_connect("/ws/wallboard")
        await board_message(socket)
        await wall.client.post("/logout", data={"csrf_token": csrf})
        closed = await socket.receive(timeout=2)
        assert (closed.type, closed.data) == (WSMsgType.CLOSE, 4401)
        await login(wall.client, "sue")
        socket = await wall.client.ws_connect("/ws/wallboard")
        await board_message(socket)
        closing = asyncio.create_task(socket.receive(timeout=5))
        await wall.client.server.close()
        closed = await closing
        assert (closed.type, closed.data) == (WSMsgType.CLOSE, 1001)
