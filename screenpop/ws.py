"""The live push: one WebSocket per open agent page, fed from the agent's hub mailbox.

Theory of operation
-------------------
On connect the browser says the last sequence number it saw (``?since=N&epoch=E``). The
handler subscribes to the agent's mailbox and, with no ``await`` in between (the event loop
is the lock, so nothing can be published in the gap), takes what the browser missed from the
hub's buffer; when that is unknown (first connect, another server run, too old) it takes a
snapshot of the agent's open cards instead. From then on every message published for the
agent is forwarded in order, each with its sequence number.

Each socket has its own writer task reading its own bounded queue, and every send has a
time limit: a stalled browser is disconnected, never waited for. A subscription that
overflowed (the browser could not keep up) is closed with ``RESUME``; the browser reconnects
and resumes from what it has. When nothing happens for ``ping_interval`` seconds the writer
sends a ``ping`` carrying the latest sequence number (the page uses pings to notice a dead
link, and a ``seq`` beyond its own to notice a gap), and checks the session is still alive.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from aiohttp import web

from screenpop.cards import card_view
from screenpop.errors import ApiError
from screenpop.hub import Subscription, encode
from screenpop.keys import CLOCK, EPOCH, PING_INTERVAL, POP, SESSION, SESSIONS, STORE
from screenpop.views import SESSION_LOST

log = logging.getLogger(__name__)

RESUME = 4000  # close code: reconnect at once and resume from the last sequence number
SEND_TIMEOUT = 5.0
HEARTBEAT = 30.0  # protocol-level ping/pong, below the application's own pings


async def websocket(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    agent = session.account.agent_id
    if not agent:
        raise ApiError(403, "not_an_agent", "This account has no agent line to push.")
    origin = request.headers.get("Origin")
    # a page of another site may open a socket with our cookie; browsers always send Origin.
    # Only the host is compared: a TLS-terminating proxy makes the scheme differ.
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise ApiError(403, "bad_origin", "WebSocket from another site refused.")
    app = request.app
    hub, book = app[POP].hub, app[POP].book
    store = app[STORE]
    socket = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=4096)
    await socket.prepare(request)
    push = _Push(socket, request, hub.subscribe(agent))
    # no await from subscribe to here: nothing can be published in between
    opening = _missed(request, push)
    if opening is None:
        phones = store.phones if store else None
        cards = [card_view(c, phones) for c in book.cards_for(agent)]
        snapshot = {
            "type": "snapshot",
            "epoch": app[EPOCH],
            "cards": cards,
            "pbx_down": app[POP].links.down(),
        }
        opening = [encode(hub.last_seq(agent), snapshot)]
    session.sockets.add(socket)
    writer = asyncio.create_task(push.write(opening))
    try:
        async for _ in socket:
            pass  # the page sends nothing; reading keeps control frames and close flowing
    finally:
        session.sockets.discard(socket)
        hub.unsubscribe(push.subscription)
        writer.cancel()
        await asyncio.wait([writer])
    return socket


def _missed(request: web.Request, push: _Push) -> list[str] | None:
    """What the browser missed since its last sequence number, or None for a snapshot."""
    hub, agent = request.app[POP].hub, push.subscription.agent
    try:
        since = int(request.query["since"])
    except (KeyError, ValueError):
        return None
    if request.query.get("epoch") != request.app[EPOCH] or not 0 <= since <= hub.last_seq(agent):
        return None
    missed = hub.since(agent, since)
    return None if missed is None else [text for _, text in missed]


class _Push:
    """One socket's writer side: sends with a time limit, pings, watches the session."""

    def __init__(
        self,
        socket: web.WebSocketResponse,
        request: web.Request,
        subscription: Subscription,
    ) -> None:
        self.socket = socket
        self.subscription = subscription
        self.transport = request.transport
        self.hub = request.app[POP].hub
        self.sessions = request.app[SESSIONS]
        self.session = request[SESSION]
        self.clock = request.app[CLOCK]
        self.interval = request.app[PING_INTERVAL]

    async def write(self, opening: list[str]) -> None:
        try:
            for text in opening:
                await self._send(text)
            while await self._next():
                pass
        except TimeoutError:
            log.warning("agent %s: browser stalled; dropping it", self.subscription.agent)
            if self.transport is not None:
                self.transport.abort()  # a close frame would wait behind the stalled data
        except ConnectionError:
            pass  # the browser went away; the handler cleans up

    async def _next(self) -> bool:
        """Forward one message (or ping); False once the socket is to be closed."""
        if self.subscription.overflowed:
            await self.socket.close(code=RESUME, message=b"too slow; resume")
            return False
        try:
            async with asyncio.timeout(self.interval):
                _, text = await self.subscription.queue.get()
        except TimeoutError:
            # the session check also marks it used: an open agent page is an active agent
            if self.sessions.get(self.session.token) is not self.session:
                await self.socket.close(code=SESSION_LOST, message=b"session ended")
                return False
            agent = self.subscription.agent
            ping = {"type": "ping", "now": self.clock().timestamp()}
            await self._send(encode(self.hub.last_seq(agent), ping))
            return True
        await self._send(text)
        return True

    async def _send(self, text: str) -> None:
        async with asyncio.timeout(SEND_TIMEOUT):
            await self.socket.send_str(text)
