"""The live push over a real WebSocket: snapshot, resume after a drop, one card per tab,
slow browsers cut off and resumed, pings, and sockets that end with the session.

No customer store here (the push does not need one): these run once, fast.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from cti.events import AgentRinging
from screenpop.hub import BUFFER, SUBSCRIBER_QUEUE
from screenpop.keys import EPOCH, SESSIONS
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    PBX,
    Calls,
    build_app,
    client_for,
    eventually,
    login,
    new_pop,
)

Client = TestClient[web.Request, web.Application]
Socket = aiohttp.ClientWebSocketResponse


@dataclass
class Push:
    client: Client
    app: web.Application
    pop: PopService
    calls: Calls

    @property
    def epoch(self) -> str:
        return self.app[EPOCH]


@pytest.fixture
async def push() -> AsyncIterator[Push]:
    pop = new_pop(None)
    app = build_app(pop, None, ping_interval=0.2)
    async with client_for(app) as client:
        await login(client, "alice")
        yield Push(client, app, pop, Calls(pop))


async def receive(socket: Socket, within: float = 2.0) -> dict[str, Any]:
    """The next message that is not a ping."""
    while True:
        message: dict[str, Any] = await socket.receive_json(timeout=within)
        if message["type"] != "ping":
            return message


async def nothing_more(socket: Socket) -> None:
    """Only pings arrive for a while (the 0.2 s ping proves the link is still alive)."""
    for _ in range(2):
        assert (await socket.receive_json(timeout=1.0))["type"] == "ping"


async def test_first_connect_gets_a_snapshot_then_live_cards(push: Push) -> None:
    push.calls.ring("c1", "Alice", "+8613800138000")
    push.calls.ring("b1", "Bob", "+8613800138001")  # not Alice's
    socket = await push.client.ws_connect("/ws")
    snapshot = await receive(socket)
    assert snapshot["type"] == "snapshot" and snapshot["epoch"] == push.epoch
    assert snapshot["seq"] == push.pop.hub.last_seq("Alice") == 1
    assert [(c["call_id"], c["state"]) for c in snapshot["cards"]] == [("c1", "ringing")]
    assert snapshot["cards"][0]["display_number"] == "+8613800138000"  # no store, no format
    push.calls.answer("c1", "Alice")
    live = await receive(socket)
    assert (live["type"], live["seq"], live["card"]["state"]) == ("card", 2, "answered")
    assert live["card"]["version"] == snapshot["cards"][0]["version"] + 1
    await socket.close()


async def test_reconnect_gets_exactly_what_it_missed_in_order(push: Push) -> None:
    socket = await push.client.ws_connect("/ws")
    push.calls.ring("c1", "Alice", "+8613800138000")
    first = await receive(socket)
    seen = (await receive(socket))["seq"]  # snapshot, then c1
    assert first["type"] == "snapshot" and seen == 1
    await socket.close()
    push.calls.answer("c1", "Alice")  # while the page is away
    push.calls.ring("c2", "Alice", "+8613800138002")
    again = await push.client.ws_connect(f"/ws?since={seen}&epoch={push.epoch}")
    missed = [await receive(again), await receive(again)]
    assert [(m["type"], m["seq"], m["card"]["call_id"], m["card"]["state"]) for m in missed] == [
        ("card", 2, "c1", "answered"),
        ("card", 3, "c2", "ringing"),
    ]
    push.calls.answer("c2", "Alice")
    assert (await receive(again))["seq"] == 4  # then live again, no gap, no repeat
    await again.close()


@pytest.mark.parametrize("query", ["since=1&epoch=old-run", "since=99&epoch={epoch}", "since=x"])
async def test_resume_that_cannot_be_trusted_gets_a_snapshot(push: Push, query: str) -> None:
    push.calls.ring("c1", "Alice", "+8613800138000")
    push.calls.ring("c2", "Alice", "+8613800138002")
    socket = await push.client.ws_connect("/ws?" + query.format(epoch=push.epoch))
    snapshot = await receive(socket)
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == 2
    assert sorted(c["call_id"] for c in snapshot["cards"]) == ["c1", "c2"]
    await socket.close()


async def test_resume_from_beyond_the_buffer_gets_a_snapshot(push: Push) -> None:
    for i in range(BUFFER + 10):
        push.calls.ring(f"c{i}", "Alice", "+8613800138000")
    push.calls.answer("c0", "Alice")
    socket = await push.client.ws_connect(f"/ws?since=3&epoch={push.epoch}")
    snapshot = await receive(socket)
    assert snapshot["type"] == "snapshot"
    assert len(snapshot["cards"]) == BUFFER + 10
    await socket.close()


async def test_two_tabs_get_the_same_single_card_and_duplicates_never_pop(push: Push) -> None:
    tabs = [await push.client.ws_connect("/ws") for _ in range(2)]
    for tab in tabs:
        assert (await receive(tab))["type"] == "snapshot"
    push.calls.ring("c1", "Alice", "+8613800138000")
    ring = AgentRinging(PBX, "c1", 1.0, "Alice", "Alice", "Local/Alice", "support", "+86", "")
    push.calls.feed(ring, ring)  # a replayed ring attempt: one new version, once
    got = [[await receive(tab), await receive(tab)] for tab in tabs]
    assert got[0] == got[1]
    assert [m["card"]["id"] for m in got[0]] == [f"{PBX}/c1/Alice"] * 2
    for tab in tabs:
        await nothing_more(tab)
        await tab.close()


async def test_a_browser_that_cannot_keep_up_is_cut_off_and_resumes(push: Push) -> None:
    socket = await push.client.ws_connect("/ws")
    assert (await receive(socket))["seq"] == 0
    total = SUBSCRIBER_QUEUE + 50
    for i in range(total):  # all at once: more than its queue holds
        push.calls.ring(f"c{i}", "Alice", "+8613800138000")
    seqs = []
    while (message := await socket.receive(timeout=2)).type == WSMsgType.TEXT:
        seqs.append(json.loads(message.data)["seq"])  # what was on its way already
    assert (message.type, message.data) == (WSMsgType.CLOSE, 4000)
    assert len(seqs) < total
    last = seqs[-1] if seqs else 0
    resumed = await push.client.ws_connect(f"/ws?since={last}&epoch={push.epoch}")
    seqs += [(await receive(resumed))["seq"] for _ in range(total - len(seqs))]
    assert seqs == list(range(1, total + 1))  # all of them, once, in order
    await resumed.close()


async def test_pings_carry_the_latest_seq_and_the_server_time(push: Push) -> None:
    push.calls.ring("c1", "Alice", "+8613800138000")
    socket = await push.client.ws_connect("/ws")
    await receive(socket)
    ping = await socket.receive_json(timeout=1)
    assert ping["type"] == "ping" and ping["seq"] == 1 and ping["now"] > 1.7e9
    await socket.close()


async def test_sockets_end_with_their_session(push: Push) -> None:
    tab = await push.client.ws_connect("/ws")
    await receive(tab)
    (session,) = [s for s in push.app[SESSIONS]._sessions.values()]
    push.app[SESSIONS].drop(session.token)  # expired, as far as the server is concerned
    closed = await tab.receive(timeout=2)
    assert (closed.type, closed.data) == (WSMsgType.CLOSE, 4401)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await push.client.ws_connect("/ws")
    assert refused.value.status == 401


async def test_logout_closes_the_sessions_sockets_at_once() -> None:
    app = build_app(new_pop(None), None)  # pings every 15 s: the close is not a ping's doing
    async with client_for(app) as client:
        csrf = await login(client, "alice")
        socket = await client.ws_connect("/ws")
        await receive(socket)
        await client.post("/logout", data={"csrf_token": csrf})
        closed = await socket.receive(timeout=2)
        assert (closed.type, closed.data) == (WSMsgType.CLOSE, 4401)


async def test_sockets_from_other_sites_and_without_an_agent_are_refused(push: Push) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
        await push.client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert foreign.value.status == 403
    own = await push.client.ws_connect("/ws", origin=str(push.client.make_url("")).rstrip("/"))
    assert (await receive(own))["type"] == "snapshot"
    await own.close()
    push.client.session.cookie_jar.clear()
    await login(push.client, "sue")  # a supervisor with no agent line
    with pytest.raises(aiohttp.WSServerHandshakeError) as supervisor:
        await push.client.ws_connect("/ws")
    assert supervisor.value.status == 403


async def test_shutdown_tells_browsers_to_come_back() -> None:
    app = build_app(new_pop(None), None)
    async with client_for(app) as client:
        await login(client, "alice")
        socket = await client.ws_connect("/ws")
        await receive(socket)
        closing = asyncio.create_task(socket.receive(timeout=5))
        await client.server.close()
        closed = await closing
        assert (closed.type, closed.data) == (WSMsgType.CLOSE, 1001)


async def test_a_stalled_browser_is_dropped_and_does_not_hold_up_the_others(
    push: Push, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("screenpop.ws.SEND_TIMEOUT", 0.3)
    cookie = push.client.session.cookie_jar.filter_cookies(push.client.make_url("/"))
    reader, writer = await asyncio.open_connection(push.client.host, push.client.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + f"Cookie: cti_session={cookie['cti_session'].value}\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    # from here on the stalled browser reads nothing
    healthy = await push.client.ws_connect("/ws")
    await receive(healthy)
    big = {"id": "x", "caller_number": "9" * 1_000_000, "lookup": None}
    for _ in range(40):  # far more than the socket buffers hold
        push.pop.hub.publish("Alice", {"type": "card", "card": big})
    for _ in range(40):
        assert (await receive(healthy, within=5))["type"] == "card"
    await eventually(lambda: push.pop.hub.connected("Alice") == 1)  # the stalled one is gone
    assert "agent Alice: browser stalled; dropping it" in caplog.text
    writer.close()
    await writer.wait_closed()
    await healthy.close()
