"""A simulated Asterisk manager interface (AMI) on 127.0.0.1, for tests and the demo.

Theory of operation
-------------------
Each connection is a :class:`_Client` with two tasks. The reader task decodes actions with
:class:`~cti.codec.AmiDecoder` (so garbage and oversized frames are skipped, never fatal)
and answers them. Every byte for the peer - banner, responses, events, raw test bytes -
goes through the client's outgoing queue, emptied by the writer task, which waits for the
socket with a deadline like Asterisk's ``writetimeout``: Asterisk gives each write (one
event) ``writetimeout`` to find room in the socket, so the writer hands the socket
``WRITE_PIECE`` bytes at a time and drops a peer that does not take one piece within
``write_timeout``; its events are lost. A peer that keeps reading, however far behind, is
not dropped for being behind (Asterisk keeps a session's events queued for it); only the
simulator's own memory bound (``MAX_PENDING_BYTES``) ends it. So :meth:`AmiServer.emit`
never blocks and one slow peer never delays another.

:meth:`AmiServer.emit` is synchronous: it stamps the event (``Timestamp`` after
``Privilege``, then ``SystemName``), applies it to the live state that ``CoreShowChannels``
and ``QueueStatus`` answer from (channels with snapshot, bridge and application; callers
waiting per queue; members), then queues the encoded bytes to every logged-in client whose
event mask covers the event's classes.

:meth:`AmiServer.freeze` gates both tasks of every client without closing anything: to the
client it is a half-open TCP connection (requests unanswered, no events).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cti.codec import AmiDecoder, frame, unescape
from cti.waits import wait_set
from pbxsim.held import DEFAULT_RING, HeldCall, HeldCalls
from pbxsim.scenarios import (
    AGENTS,
    QUEUES,
    Agent,
    CallbackOutcome,
    CallbackRequest,
    Pbx,
    QueueSpec,
    Timings,
    callback,
    with_timestamp,
)

log = logging.getLogger(__name__)

Message = dict[str, str]

# manager.c's class bits, in order (strings_to_mask accepts a number too)
EVENT_CLASSES = (
    "system",
    "call",
    "log",
    "verbose",
    "command",
    "agent",
    "user",
    "config",
    "dtmf",
    "reporting",
    "cdr",
    "dialplan",
    "originate",
    "agi",
    "cc",
    "aoc",
    "test",
    "security",
    "message",
)
ALL_CLASSES = frozenset(EVENT_CLASSES)
SNAPSHOT_KEYS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)
MAX_PENDING_BYTES = 128 * 1024 * 1024  # the simulator's memory, not a limit of Asterisk's
WRITE_PIECE = 8 * 1024  # a few events: what Asterisk's few writes must fit in the socket


def parse_event_mask(value: str) -> frozenset[str] | None:
    """manager.c strings_to_mask: on/off, a number, or a class list; None if empty."""
    value = value.strip()
    if not value:
        return None
    lowered = value.lower()
    if lowered in ("on", "yes", "true", "y", "t", "1"):
        return ALL_CLASSES
    if lowered in ("off", "no", "false", "n", "f", "0"):
        return frozenset()
    if value.isdigit():
        bits = int(value)
        return frozenset(c for i, c in enumerate(EVENT_CLASSES) if bits & (1 << i))
    names = {part.strip().lower() for part in value.split(",")}
    return ALL_CLASSES if "all" in names else frozenset(names & ALL_CLASSES)


def _classes(event: Mapping[str, str]) -> frozenset[str]:
    return frozenset(event.get("Privilege", "").split(",")) - {"all", ""}


def _one_line(value: str) -> str:
    """A header value echoed back must stay one line (the decoder joins repeats with LF)."""
    return value.split("\n", 1)[0].replace("\r", "")


def _hms(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(slots=True)
class _Channel:
    snapshot: Message
    created: float
    bridge: str = ""
    app: str = ""
    data: str = ""


@dataclass(slots=True)
class _Waiting:
    uniqueid: str
    joined: float


@dataclass(slots=True)
class _QueueLive:
    spec: QueueSpec
    waiting: list[_Waiting] = field(default_factory=list)
    members: dict[str, Message] = field(default_factory=dict)
    completed: int = 0
    abandoned: int = 0
    in_sl: int = 0
    holdtime: int = 0
    talktime: int = 0


def _member_blob(
    agent_name: str, interface: str, queue: str, login_time: int, wrapuptime: int = 0
) -> Message:
    return {
        "Queue": queue,
        "MemberName": agent_name,
        "Interface": interface,
        "StateInterface": interface,
        "Membership": "static",
        "Penalty": "0",
        "CallsTaken": "0",
        "LastCall": "0",
        "LastPause": "0",
        "LoginTime": str(login_time),
        "InCall": "0",
        "Status": "1",
        "Paused": "0",
        "PausedReason": "",
        "Ringinuse": "0",
        "Wrapuptime": str(wrapuptime),
    }


class _Live:
    """What the simulated Asterisk knows right now, rebuilt only from events it emitted."""

    def __init__(self, agents: Sequence[Agent], queues: Sequence[QueueSpec], now: float) -> None:
        self.channels: dict[str, _Channel] = {}
        self.queues = {q.name: _QueueLive(q) for q in queues}
        for agent in agents:
            for queue in agent.queues:
                if queue in self.queues:
                    spec = self.queues[queue].spec
                    blob = _member_blob(
                        agent.name, agent.interface, queue, int(now), spec.wrapuptime
                    )
                    self.queues[queue].members[agent.interface] = blob

    def apply(self, event: Mapping[str, str], now: float) -> None:
        name = event.get("Event", "")
        uid = event.get("Uniqueid", "")
        if "ChannelState" in event and uid:
            self._snapshot(name, uid, event, now)
        queue = self.queues.get(event.get("Queue", ""))
        if name == "Hangup":
            self.channels.pop(uid, None)
            for q in self.queues.values():
                q.waiting = [w for w in q.waiting if w.uniqueid != uid]
        elif queue is None:
            return
        elif name == "QueueCallerJoin":
            queue.waiting = [w for w in queue.waiting if w.uniqueid != uid]
            queue.waiting.append(_Waiting(uid, now))
        elif name == "QueueCallerLeave":
            queue.waiting = [w for w in queue.waiting if w.uniqueid != uid]
        elif name == "QueueCallerAbandon":
            queue.abandoned += 1
        elif name == "AgentConnect":
            hold = int(event.get("HoldTime", "0") or 0)
            queue.holdtime = hold if queue.holdtime == 0 else (3 * queue.holdtime + hold) // 4
            queue.in_sl += hold <= queue.spec.servicelevel
        elif name == "AgentComplete":
            talk = int(event.get("TalkTime", "0") or 0)
            queue.completed += 1
            queue.talktime = talk if queue.talktime == 0 else (3 * queue.talktime + talk) // 4
        elif name in ("QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded"):
            interface = event.get("Interface", "")
            member = queue.members.setdefault(interface, {})
            member.update({k: v for k, v in event.items() if k in _MEMBER_KEYS})
        elif name == "QueueMemberRemoved":
            queue.members.pop(event.get("Interface", ""), None)

    def _snapshot(self, name: str, uid: str, event: Mapping[str, str], now: float) -> None:
        chan = self.channels.get(uid)
        if chan is None:
            if name != "Newchannel":
                return  # an event about a channel this Asterisk never created
            chan = self.channels[uid] = _Channel({}, now)
        chan.snapshot = {k: event.get(k, "") for k in SNAPSHOT_KEYS}
        if name == "Newexten":
            chan.app, chan.data = event.get("Application", ""), event.get("AppData", "")
        elif name == "BridgeEnter":
            chan.bridge = event.get("BridgeUniqueid", "")
        elif name == "BridgeLeave":
            chan.bridge = ""


_MEMBER_KEYS = frozenset(_member_blob("", "", "", 0))


class _Client:
    """One AMI session: a reader task answering actions, a writer task with a deadline."""

    def __init__(
        self, server: AmiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.logged_in = False
        self.mask: frozenset[str] = ALL_CLASSES
        self.challenge = ""
        self.closed = False
        self.ending = False
        self._out: deque[bytes | None] = deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self._dead = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        # no buffering in the transport: each drain waits until the kernel took the piece
        writer.transport.set_write_buffer_limits(high=0)

    async def until_thawed(self) -> bool:
        """Wait out a freeze; False when this client was closed meanwhile."""
        if not self.server.thawed.is_set() and not self.closed:
            waiters = {
                asyncio.ensure_future(self.server.thawed.wait()),
                asyncio.ensure_future(self._dead.wait()),
            }
            _done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
        return not self.closed

    def close(self) -> None:
        """FIN now, dropping whatever is still queued."""
        if not self.closed:
            self.closed = True
            self._out.clear()
            self.writer.close()
        self._dead.set()
        self._wake.set()

    # -- outgoing --------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self._out.append(data)
        self._pending += len(data)
        self._wake.set()
        if self._pending > MAX_PENDING_BYTES:
            self.abort("too much unsent data")

    def send_message(self, message: Mapping[str, str]) -> None:
        self.send(frame(message))

    def finish(self) -> None:
        """Close once everything queued so far is written (Logoff, failed login, shutdown)."""
        if not self.closed and not self.ending:
            self.ending = True
            self._out.append(None)
            self._wake.set()

    def abort(self, why: str, *, reset: bool = False) -> None:
        if self.closed:
            return
        log.debug("AMI sim: dropping client: %s", why)
        self.closed = True
        self._out.clear()
        transport = self.writer.transport
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        self._dead.set()
        self._wake.set()

    async def write_loop(self) -> None:
        try:
            while not self.closed:
                await self._wake.wait()
                self._wake.clear()
                while self._out and await self.until_thawed():
                    batch = bytearray()
                    while self._out:
                        head = self._out[0]
                        if head is None:
                            break
                        batch += head
                        self._out.popleft()
                    if not batch:  # the close marker left by finish()
                        self.close()
                        return
                    self._pending -= len(batch)
                    await self._write(memoryview(batch))
        finally:
            self.server._forget(self)

    async def _write(self, data: memoryview) -> None:
        """``data`` piece by piece, each given ``write_timeout`` to find room (a stalled
        reader is dropped, a slow one that keeps taking pieces is not)."""
        timeout = self.server.write_timeout
        for start in range(0, len(data), WRITE_PIECE):
            if self.closed:
                return
            self.writer.write(data[start : start + WRITE_PIECE])
            try:
                async with asyncio.timeout(timeout):
                    await self.writer.drain()
            except TimeoutError:
                self.abort(f"write timeout ({timeout} s)")
            except (ConnectionError, OSError):
                self.abort("connection lost while writing")

    # -- incoming --------------------------------------------------------------------------
    async def read_loop(self) -> None:
        decoder = AmiDecoder(expect_banner=False)
        transport = self.writer.transport
        try:
            while not self.closed and not self.ending:
                if not self.server.thawed.is_set():
                    if isinstance(transport, asyncio.ReadTransport):
                        transport.pause_reading()  # let the peer's sends back up, too
                    if not await self.until_thawed():
                        return
                    if isinstance(transport, asyncio.ReadTransport):
                        transport.resume_reading()
                data = await self.reader.read(65536)
                if not data:
                    break
                if not await self.until_thawed():
                    return
                for action in decoder.feed(data):
                    await self.handle(action)
                    if self.closed or self.ending:
                        return  # like Asterisk: nothing after Logoff or a failed Login
                for problem in decoder.take_problems():
                    log.debug("AMI sim: bad input from client: %s", problem)
        except (ConnectionError, OSError):
            self.abort("connection error while reading")
        except Exception:  # bad input must never take the server down
            log.exception("AMI sim: client handler failed")
            self.abort("handler failed")
        else:
            self.finish()  # the peer closed: flush what it asked for, then close

    def respond(self, action: Mapping[str, str], response: str, **fields: str) -> None:
        message = {"Response": response}
        if "actionid" in action:
            message["ActionID"] = _one_line(action["actionid"])
        message.update(fields)
        self.send_message(message)

    async def handle(self, raw: Mapping[str, str]) -> None:
        action = {k.lower(): v for k, v in raw.items()}
        name = _one_line(action.get("action", "")).strip()
        key = name.lower()
        if not name:
            self.respond(action, "Error", Message="Missing action in request")
            return
        if not self.logged_in and key not in ("login", "logoff", "challenge"):
            self.respond(action, "Error", Message="Permission denied")
            return
        handler = self.server.actions.get(key)
        if handler is None:
            message = (
                f"Invalid/unknown command: {name}. "
                "Use Action: ListCommands to show available commands."
            )
            self.respond(action, "Error", Message=message)
            return
        await handler(self, action)


class AmiServer:
    """A fake Asterisk 22 manager interface: real sockets, real AMI framing and semantics.

    ``agents``/``queues`` describe the PBX (the lab's by default); ``pbx`` is the
    :class:`~pbxsim.scenarios.Pbx` that scenarios played here should be built with.

    Fault knobs (off by default): ``drop_after_login`` closes every session right after a
    successful Login (its answer, ``FullyBooted`` and ``SuccessfulAuth`` are sent first), so
    the peer accepts and drops forever (F21); ``banner`` replaces Asterisk's banner line
    (``Asterisk Call Manager/<version>``) with another, e.g. ``"SSH-2.0-OpenSSH_9.6"``, so the
    peer is not an Asterisk (F20). :meth:`drop_clients` cuts every connection mid-stream.
    ``connections`` counts the connections accepted.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        username: str = "cti",
        secret: str = "cti-secret",
        system_name: str = "sim",
        version: str = "11.0.0",
        auth_delay: float = 1.0,
        write_timeout: float = 0.1,
        agents: Sequence[Agent] = AGENTS,
        queues: Sequence[QueueSpec] = QUEUES,
        speed: float = 0.0,
        drop_after_login: bool = False,
        banner: str | None = None,
    ) -> None:
        self.username = username
        self.drop_after_login = drop_after_login
        self.banner = banner
        self.connections = 0
        # divides the durations of the calls the server plays itself (callback Originates);
        # 0 plays them without waiting
        self.speed = speed
        self.rng = random.Random()
        self._plays: set[asyncio.Task[None]] = set()
        self.secret = secret
        self.system_name = system_name
        self.version = version
        self.auth_delay = auth_delay
        self.write_timeout = write_timeout
        self.logins = 0
        self.failed_logins = 0
        # set at the first successful Login and left set: the demo starts its calls then, so
        # that its service sees every call from the start
        self.logged_in = asyncio.Event()
        self.thawed = asyncio.Event()
        self.thawed.set()
        # told of every event emitted, as Asterisk's other modules are (the demo's res_agi)
        self.observers: list[Callable[[Mapping[str, str]], None]] = []
        self._agents = tuple(agents)
        self._queues = tuple(queues)
        self._port = port
        self._server: asyncio.Server | None = None
        self._clients: set[_Client] = set()
        self._booted = time.time()
        self._restarted = asyncio.Event()  # replaced at every restart, set to end plays
        self.pbx = self._new_pbx()
        self.live = _Live(self._agents, self._queues, self._booted)
        self.actions = {
            "login": _login,
            "challenge": _challenge,
            "logoff": _logoff,
            "ping": _ping,
            "events": _events,
            "coreshowchannels": _core_show_channels,
            "queuestatus": _queue_status,
            "queuepause": _queue_pause,
            "queueadd": _queue_add,
            "queueremove": _queue_remove,
            "originate": _originate,
            "blindtransfer": _blind_transfer,
            "hangup": _hangup,
        }
        # answered calls that wait for an action (hold_call), by their channels
        self.held = HeldCalls(self)
        # Originate channels that never answer (OriginateResponse Failure, Reason 3) or are
        # busy (Reason 5, callbacks only)
        self.silent_devices: set[str] = set()
        self.busy_devices: set[str] = set()

    def _new_pbx(self) -> Pbx:
        return Pbx(
            self.system_name,
            agents=self._agents,
            queues=self._queues,
            login_time=int(self._booted),
            run=f"{random.getrandbits(32):08x}",
        )

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def clients(self) -> int:
        """Connected, logged-in sessions."""
        return sum(1 for c in self._clients if c.logged_in and not c.closed)

    async def start(self) -> None:
        """Listen on 127.0.0.1 (the same port again after a stop, once one was picked)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every client (no Shutdown event: a crash, not a restart)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for play in list(self._plays):
            play.cancel()
        await asyncio.gather(*self._plays, return_exceptions=True)
        await self.drop_clients(abort=True)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(self, reader, writer)
        self._clients.add(client)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        banner = f"Asterisk Call Manager/{self.version}" if self.banner is None else self.banner
        client.send(f"{banner}\r\n".encode())
        client.tasks = [
            asyncio.create_task(client.write_loop()),
            asyncio.create_task(client.read_loop()),
        ]
        await asyncio.gather(*client.tasks, return_exceptions=True)

    def _forget(self, client: _Client) -> None:
        self._clients.discard(client)

    # -- events ----------------------------------------------------------------------------
    def emit(self, event: Mapping[str, str]) -> None:
        """Broadcast one event to the logged-in clients subscribed to its classes."""
        now = time.time()
        stamped = with_timestamp(event, now, self.system_name)
        if stamped.get("Event") in ("QueueMemberStatus", "QueueMemberPause"):
            self._own_pause_state(stamped)
        self.live.apply(stamped, now)
        classes = _classes(stamped)
        data = frame(stamped)
        for client in list(self._clients):
            if client.logged_in and client.mask and classes <= client.mask:
                client.send(data)
        for observe in self.observers:
            observe(stamped)

    def _own_pause_state(self, event: Message) -> None:
        """Pause state is the server's (QueuePause), whatever the scenario assumed."""
        queue = self.live.queues.get(event.get("Queue", ""))
        member = queue.members.get(event.get("Interface", "")) if queue else None
        if member is not None:
            for key in ("Paused", "PausedReason", "LastPause"):
                event[key] = member.get(key, event.get(key, ""))

    def member_paused(self, queue: str, agent: Agent) -> bool:
        """Whether ``agent`` is paused in ``queue`` now (QueuePause, by anyone): Asterisk
        offers such a member no call, and neither does the traffic."""
        live = self.live.queues.get(queue)
        member = live.members.get(agent.interface) if live is not None else None
        return member is not None and member.get("Paused") == "1"

    async def play(
        self, offset_events: Iterable[tuple[float, Mapping[str, str]]], speed: float = 1.0
    ) -> None:
        """Emit a scenario's events at their offsets divided by ``speed`` (0: no sleeping).

        A restart (:meth:`shutdown`, :meth:`reset_state`) ends the calls being played.
        """
        loop = asyncio.get_running_loop()
        begin, restarted = loop.time(), self._restarted
        for count, (offset, event) in enumerate(offset_events, 1):
            if speed > 0:
                delay = begin + offset / speed - loop.time()
                if delay > 0:
                    await wait_set(restarted, delay)
            elif count % 200 == 0:
                await asyncio.sleep(0)  # let the writers run
            if restarted.is_set():
                return
            self.emit(event)

    def play_later(self, events: Iterable[tuple[float, Mapping[str, str]]]) -> None:
        """Play a call the server started itself, at :attr:`speed`; cut by :meth:`stop`."""
        task = asyncio.create_task(self.play(events, self.speed))
        self._plays.add(task)
        task.add_done_callback(self._plays.discard)

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are, to every logged-in client (garbage and split-UTF-8 tests)."""
        for client in list(self._clients):
            if client.logged_in:
                client.send(data)

    # -- faults ----------------------------------------------------------------------------
    def freeze(self) -> None:
        """Half-open: stop reading requests and writing anything; sockets stay open."""
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    async def drop_clients(self, abort: bool = False) -> None:
        """Close every connection: FIN, or RST with ``abort=True``."""
        clients = list(self._clients)
        for client in clients:
            if abort:
                client.abort("dropped (drop_clients or stop)", reset=True)
            else:
                client.close()
        await self._settle(clients)

    async def shutdown(self, restart: bool = True) -> None:
        """``Event: Shutdown`` then close everything, then forget all calls (a restart)."""
        self.emit(
            {
                "Event": "Shutdown",
                "Privilege": "system,all",
                "Shutdown": "Cleanly",
                "Restart": "True" if restart else "False",
            }
        )
        clients = list(self._clients)
        for client in clients:
            client.finish()
        await self._settle(clients, within=max(1.0, 10 * self.write_timeout))
        for client in clients:
            client.abort("shutdown")
        self.reset_state()

    async def _settle(self, clients: Iterable[_Client], within: float = 2.0) -> None:
        tasks = [t for c in clients for t in c.tasks if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=within)

    def reset_state(self) -> None:
        """Forget every channel, caller and statistic; counters restart (as after a restart)."""
        self._restarted.set()
        self._restarted = asyncio.Event()
        self._booted = time.time()
        self.pbx = self._new_pbx()
        self.live = _Live(self._agents, self._queues, self._booted)
        self.held.clear()

    def hold_call(
        self,
        *,
        number: str | None,
        name: str | None,
        queue: str = "support",
        agent: str | None = None,
        ring: float = DEFAULT_RING,
        timings: Timings | None = None,
        talk: float | None = None,
    ) -> HeldCall:
        """Start a queue call that is answered by ``agent`` (a member's name; by default the
        queue's next member) after ``ring`` seconds and then stays up until an AMI action
        (``BlindTransfer``, ``Hangup``) moves or ends it, or the caller hangs up after
        ``talk`` seconds with each member (None: never). Its events are played at
        :attr:`speed` from now; ``await held.wait_held()`` until the answer went out,
        ``await held.wait_ended()`` until the call's last event did. Needs a running loop;
        raises ValueError for an unknown queue or an agent who is not one of its members.
        See :mod:`pbxsim.held`."""
        live = self.live.queues.get(queue)
        return self.held.start(
            number=number,
            name=name,
            queue=queue,
            agent=agent,
            ring=ring,
            timings=timings,
            position=1 + (len(live.waiting) if live is not None else 0),
            talk=talk,
        )


# -- actions ---------------------------------------------------------------------------------
async def _login(client: _Client, action: Message) -> None:
    server = client.server
    if client.logged_in:
        client.respond(action, "Success", Message="Already authenticated")
        return
    user = action.get("username", "")
    if action.get("authtype", "").lower() == "md5":
        expected = hashlib.md5((client.challenge + server.secret).encode()).hexdigest()
        ok = bool(client.challenge) and action.get("key", "").lower() == expected
    else:
        ok = action.get("secret", "") == server.secret
    if not ok or user != server.username:
        server.failed_logins += 1
        await asyncio.sleep(server.auth_delay)
        client.respond(action, "Error", Message="Authentication failed")
        client.finish()
        return
    mask = parse_event_mask(action.get("events", ""))
    client.mask = ALL_CLASSES if mask is None else mask  # absent: the user's read= (all)
    client.logged_in = True
    server.logins += 1
    client.respond(action, "Success", Message="Authentication accepted")
    if "system" in client.mask:
        uptime = str(int(time.time() - server._booted))
        client.send_message(
            {
                "Event": "FullyBooted",
                "Privilege": "system,all",
                "Uptime": uptime,
                "LastReload": uptime,
                "Status": "Fully Booted",
            }
        )
    server.emit(_successful_auth(client, action))
    server.logged_in.set()
    if server.drop_after_login:
        client.finish()  # accepted, then gone: what was queued goes out first


def _successful_auth(client: _Client, action: Message) -> Message:
    """The security-class event every login causes (seen in every capture)."""
    now = time.time()
    tv = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}+0000"
    local = client.writer.get_extra_info("sockname") or ("127.0.0.1", 0)
    remote = client.writer.get_extra_info("peername") or ("127.0.0.1", 0)
    return {
        "Event": "SuccessfulAuth",
        "Privilege": "security,all",
        "EventTV": tv,
        "Severity": "Informational",
        "Service": "AMI",
        "EventVersion": "1",
        "AccountID": _one_line(action.get("username", "")),
        "SessionID": f"0x{id(client):x}",
        "LocalAddress": f"IPV4/TCP/{local[0]}/{local[1]}",
        "RemoteAddress": f"IPV4/TCP/{remote[0]}/{remote[1]}",
        "UsingPassword": "0",
        "SessionTV": tv,
    }


async def _challenge(client: _Client, action: Message) -> None:
    if action.get("authtype", "").lower() != "md5":
        client.respond(action, "Error", Message="Must specify AuthType")
        return
    client.challenge = str(random.randrange(10**8, 10**9))
    client.respond(action, "Success", Challenge=client.challenge)


async def _logoff(client: _Client, action: Message) -> None:
    client.respond(action, "Goodbye", Message="Thanks for all the fish.")
    client.finish()


async def _ping(client: _Client, action: Message) -> None:
    client.respond(action, "Success", Ping="Pong", Timestamp=f"{time.time():.6f}")


async def _events(client: _Client, action: Message) -> None:
    mask = parse_event_mask(action.get("eventmask", ""))
    if mask is None:
        client.respond(action, "Error", Message="Invalid event mask")
        return
    client.mask = mask
    client.respond(action, "Success", Events="On" if mask else "Off")


def _list(client: _Client, action: Message, what: str, complete: str, items: list[Message]) -> None:
    """A list action: ack, items carrying the ActionID, then ``<X>Complete``."""
    client.respond(action, "Success", EventList="start", Message=f"{what} will follow")
    for item in items:
        client.send_message(item)
    end = {"Event": complete}
    if "actionid" in action:
        end["ActionID"] = _one_line(action["actionid"])
    end.update({"EventList": "Complete", "ListItems": str(len(items))})
    client.send_message(end)


def _action_id(action: Message) -> Message:
    return {"ActionID": _one_line(action["actionid"])} if "actionid" in action else {}


async def _core_show_channels(client: _Client, action: Message) -> None:
    now = time.time()
    items = []
    for chan in client.server.live.channels.values():
        item: Message = {"Event": "CoreShowChannel", **_action_id(action), **chan.snapshot}
        item.update(
            {
                "Application": chan.app,
                "ApplicationData": chan.data,
                "Duration": _hms(now - chan.created),
                "BridgeId": chan.bridge,
            }
        )
        items.append(item)
    _list(client, action, "Channels", "CoreShowChannelsComplete", items)


def _unknown_lower(value: str) -> str:
    """QueueEntry shows raw (unescaped) caller data and ``unknown`` for missing values."""
    return "unknown" if value in ("", "<unknown>") else unescape(value)


async def _queue_status(client: _Client, action: Message) -> None:
    live, now = client.server.live, time.time()
    want_queue, want_member = action.get("queue", ""), action.get("member", "")
    items: list[Message] = []
    aid = _action_id(action)
    for name, queue in live.queues.items():
        if want_queue and want_queue != name:
            continue
        spec = queue.spec
        perf = 100.0 * queue.in_sl / queue.completed if queue.completed else 0.0
        items.append(
            {
                "Event": "QueueParams",
                "Queue": name,
                "Max": str(spec.maxlen),
                "Strategy": spec.strategy,
                "Calls": str(len(queue.waiting)),
                "Holdtime": str(queue.holdtime),
                "TalkTime": str(queue.talktime),
                "Completed": str(queue.completed),
                "Abandoned": str(queue.abandoned),
                "ServiceLevel": str(spec.servicelevel),
                "ServicelevelPerf": f"{perf:.1f}",
                "ServicelevelPerf2": f"{perf:.1f}",
                "Weight": str(spec.weight),
                **aid,
            }
        )
        for m in queue.members.values():
            if want_member and want_member not in (m.get("MemberName"), m.get("Interface")):
                continue
            items.append(
                {
                    "Event": "QueueMember",
                    "Queue": name,
                    "Name": m.get("MemberName", ""),
                    "Location": m.get("Interface", ""),
                    "StateInterface": m.get("StateInterface", ""),
                    "Membership": m.get("Membership", "static"),
                    **{k: m.get(k, "0") for k in _QUEUE_MEMBER_NUMBERS},
                    "PausedReason": m.get("PausedReason", ""),
                    "Wrapuptime": m.get("Wrapuptime", "0"),
                    **aid,
                }
            )
        for position, waiting in enumerate(queue.waiting, 1):
            chan = live.channels.get(waiting.uniqueid)
            snap = chan.snapshot if chan else {}
            items.append(
                {
                    "Event": "QueueEntry",
                    "Queue": name,
                    "Position": str(position),
                    "Channel": snap.get("Channel", ""),
                    "Uniqueid": waiting.uniqueid,
                    "CallerIDNum": _unknown_lower(snap.get("CallerIDNum", "")),
                    "CallerIDName": _unknown_lower(snap.get("CallerIDName", "")),
                    "ConnectedLineNum": _unknown_lower(snap.get("ConnectedLineNum", "")),
                    "ConnectedLineName": _unknown_lower(snap.get("ConnectedLineName", "")),
                    "Wait": str(int(now - waiting.joined)),
                    "Priority": "0",
                    **aid,
                }
            )
    _list(client, action, "Queue status", "QueueStatusComplete", items)


_QUEUE_MEMBER_NUMBERS = (
    "Penalty",
    "CallsTaken",
    "LastCall",
    "LastPause",
    "LoginTime",
    "InCall",
    "Status",
    "Paused",
)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "yes", "true", "y", "t", "on")


async def _queue_pause(client: _Client, action: Message) -> None:
    server = client.server
    interface, queue_name = action.get("interface", ""), action.get("queue", "")
    paused = _truthy(action.get("paused", ""))
    reason = _one_line(action.get("reason", ""))
    found = [
        (name, q.members[interface])
        for name, q in server.live.queues.items()
        if interface in q.members and (not queue_name or queue_name == name)
    ]
    if not interface or not found:
        client.respond(action, "Error", Message="Interface not found")
        return
    for _name, member in found:
        member["Paused"] = "1" if paused else "0"
        member["PausedReason"] = reason if paused else ""
        if paused:
            member["LastPause"] = str(int(time.time()))
    verb = "paused" if paused else "unpaused"
    client.respond(action, "Success", Message=f"Interface {verb} successfully")
    for _name, member in found:
        server.emit({"Event": "QueueMemberPause", "Privilege": "agent,all", **member})


async def _queue_add(client: _Client, action: Message) -> None:
    server = client.server
    queue = server.live.queues.get(action.get("queue", ""))
    interface = _one_line(action.get("interface", ""))
    if queue is None or not interface:
        client.respond(action, "Error", Message="Unable to add interface to queue: No such queue")
        return
    if interface in queue.members:
        client.respond(action, "Error", Message="Unable to add interface: Already there")
        return
    member = _member_blob(
        _one_line(action.get("membername", "")) or interface,
        interface,
        queue.spec.name,
        int(time.time()),
        queue.spec.wrapuptime,
    )
    penalty = action.get("penalty", "").strip()
    member.update(
        {
            "StateInterface": _one_line(action.get("stateinterface", "")) or interface,
            "Membership": "dynamic",
            "Penalty": penalty if penalty.isdigit() else "0",
            "Paused": "1" if _truthy(action.get("paused", "")) else "0",
        }
    )
    client.respond(action, "Success", Message="Added interface to queue")
    server.emit({"Event": "QueueMemberAdded", "Privilege": "agent,all", **member})


async def _queue_remove(client: _Client, action: Message) -> None:
    server = client.server
    queue = server.live.queues.get(action.get("queue", ""))
    interface = action.get("interface", "")
    if queue is None:
        message = "Unable to remove interface from queue: No such queue"
        client.respond(action, "Error", Message=message)
        return
    member = queue.members.get(interface)
    if member is None:
        client.respond(action, "Error", Message="Unable to remove interface: Not there")
        return
    client.respond(action, "Success", Message="Removed interface from queue")
    server.emit({"Event": "QueueMemberRemoved", "Privilege": "agent,all", **member})


_CALLER_ID = re.compile(r'\s*"?([^"<]*?)"?\s*<([^>]*)>\s*')  # "Name" <number>


async def _originate(client: _Client, action: Message) -> None:
    """manager.c action_originate: checked, then (Async) "successfully queued" and, once the
    channel answered or the dial ended, ``OriginateResponse``; without Async only the final
    answer. A callback (a Local channel running ``Dial`` of a member's interface) is played
    as a whole call (:func:`~pbxsim.scenarios.callback`), unless ``silent_devices`` or
    ``busy_devices`` has its channel; any other phone answers at once unless it is silent.
    A ``ChannelId`` is the answered channel's Uniqueid, as Asterisk assigns it."""
    server = client.server
    channel = _one_line(action.get("channel", ""))
    timeout = action.get("timeout", "").strip()
    app, exten = _one_line(action.get("application", "")), _one_line(action.get("exten", ""))
    if not channel:
        client.respond(action, "Error", Message="Channel not specified")
        return
    if timeout and not timeout.isdigit():
        client.respond(action, "Error", Message="Invalid timeout")
        return
    if "/" not in channel:
        client.respond(action, "Error", Message="Invalid channel")
        return
    if not app and not (exten and action.get("context") and action.get("priority")):
        message = "Originate with 'Exten' requires 'Context' and 'Priority'"
        client.respond(action, "Error", Message=message)
        return
    answered = channel not in server.silent_devices
    if not _truthy(action.get("async", "")):
        if answered:
            client.respond(action, "Success", Message="Originate successfully queued")
        else:
            client.respond(action, "Error", Message="Originate failed")
        return
    client.respond(action, "Success", Message="Originate successfully queued")
    caller = _CALLER_ID.fullmatch(action.get("callerid", ""))
    now = time.time()
    if channel.lower().startswith("local/") and app.lower() == "dial":
        request = CallbackRequest(
            channel=channel,
            data=_one_line(action.get("data", "")),
            number=_one_line(caller.group(2)) or None if caller else None,
            name=_one_line(caller.group(1)) or None if caller else None,
            channel_id=_one_line(action.get("channelid", "")),
            action_id=_one_line(action["actionid"]) if "actionid" in action else None,
            timeout=int(timeout or 30000) / 1000,  # manager.c's default: 30 s
            variables=tuple(
                (name, value)
                for line in action.get("variable", "").split("\n")
                for name, sep, value in [_one_line(line).partition("=")]
                if sep and name
            ),
        )
        outcome: CallbackOutcome = (
            "silent" if not answered else "busy" if channel in server.busy_devices else "answer"
        )
        try:
            events = callback(server.pbx, server.rng, start=now, request=request, outcome=outcome)
        except ValueError:
            pass  # not a member's phone: answered at once below
        else:
            server.play_later(events)
            return
    local = channel.lower().startswith("local/")
    seq = f"{server.pbx.local_seq()};1" if local else server.pbx.pjsip_seq()
    form = (
        {"Application": app, "Data": _one_line(action.get("data", ""))}
        if app
        else {"Context": _one_line(action.get("context", "")), "Exten": exten}
    )
    server.emit(
        {
            "Event": "OriginateResponse",
            "Privilege": "call,all",
            **_action_id(action),
            "Response": "Success" if answered else "Failure",
            "Channel": f"{channel}-{seq}" if answered else channel,
            **form,
            "Reason": "4" if answered else "3",  # AST_CONTROL_ANSWER / AST_CONTROL_RINGING
            "Uniqueid": (_one_line(action.get("channelid", "")) or server.pbx.uniqueid(now)[0])
            if answered
            else _one_line(action.get("channelid", "")) or "<unknown>",
            "CallerIDNum": _one_line(caller.group(2)) if caller else "<unknown>",
            "CallerIDName": _one_line(caller.group(1)) if caller else "<unknown>",
        }
    )


def _live_channel(server: AmiServer, name: str) -> _Channel | None:
    """A channel Asterisk has now, by name (any case) or Uniqueid (ast_channel_get_by_name)."""
    key = name.lower()
    for uid, chan in server.live.channels.items():
        if key in (uid.lower(), chan.snapshot.get("Channel", "").lower()):
            return chan
    return None


async def _blind_transfer(client: _Client, action: Message) -> None:
    """manager.c action_blind_transfer. Only a held call's member ``;1`` (in its two-party
    bridge) can transfer (:mod:`pbxsim.held`); any other channel that exists (a scripted
    call's, a held call's other channels, a call being moved) answers "Transfer invalid"."""
    server = client.server
    channel = _one_line(action.get("channel", "")).strip()
    exten = _one_line(action.get("exten", "")).strip()
    context = _one_line(action.get("context", "")).strip()
    if not channel:
        client.respond(action, "Error", Message="No channel specified")
        return
    if not exten:
        client.respond(action, "Error", Message="No extension specified")
        return
    live = _live_channel(server, channel)
    if live is None:
        client.respond(action, "Error", Message="Channel specified does not exist")
        return
    context = context or live.snapshot.get("Context", "")
    held = server.held.find(channel)
    if held is None or not live.bridge or not server.held.can_transfer(held, channel):
        client.respond(action, "Error", Message="Transfer invalid")
        return
    client.respond(action, "Success", Message="Transfer succeeded")
    server.held.blind_transfer(held, exten, context)


async def _hangup(client: _Client, action: Message) -> None:
    """manager.c ast_manager_hangup_helper, for a held call's channels (:mod:`pbxsim.held`).
    Not simulated: the ``/regex/`` form, and hanging up a scripted call's channel (both
    answer "No such channel", as for a channel that is gone)."""
    server = client.server
    channel = _one_line(action.get("channel", "")).strip()
    cause_header = action.get("cause", "").strip()
    if not channel:
        client.respond(action, "Error", Message="No channel specified")
        return
    # an invalid Cause is logged and ignored: the channel is hung up without one
    cause = int(cause_header) if cause_header.isdigit() and int(cause_header) <= 127 else 0
    held = server.held.find(channel)
    if held is None or _live_channel(server, channel) is None:
        client.respond(action, "Error", Message="No such channel")
        return
    client.respond(action, "Success", Message="Channel Hungup")
    server.held.hangup(held, channel, cause)
