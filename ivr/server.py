"""The asyncio edge of FastAGI: an :class:`AgiServer` routing each call to a handler that
drives an :class:`AgiSession`.

Theory of operation
-------------------
Asterisk connects once per ``AGI()`` call. The server reads the header block under
``header_timeout`` with :class:`~ivr.agi.HeaderDecoder`; a peer that closes early or stays
silent (a TCP health check, a crashed PBX) is logged and dropped: it never blocks the loop,
unlike panoramisk, whose header loop spins on EOF. The request is routed on its script path
(the query string is the handler's business); the handler gets a session and, when it returns,
the connection is closed and the dialplan goes on after ``AGI()``.

A session sends one command at a time and reads replies through
:class:`~ivr.agi.ReplyDecoder`. An unsolicited ``HANGUP`` marks the session ``hung_up`` and is
skipped, so the next reply read is always the command's own. Hang-up is reported as
:class:`~ivr.agi.ChannelHungUp`: on a 511, on EOF, and on a ``result=-1`` to a command that
needs the channel once the hang-up is known. Because res_agi writes ``HANGUP`` just *after*
the interrupted command's ``-1``, a ``-1`` on a channel still thought alive waits up to
``hangup_grace`` for that line before it is taken as a plain failure (a missing prompt file).
That wait assumes the channel variable ``AGISIGHUP`` is not ``no`` (which suppresses the line).

Who may connect: a peer whose address is not on ``peers`` is closed before a byte is read,
and with a ``secret`` a request whose URL does not carry it (``?secret=...``) is closed after
the headers, without a reply (:mod:`ivr.guard`). Either is one WARNING line and a count in
:attr:`AgiServer.refused`, nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress

from ivr.agi import (
    AgiCommandError,
    AgiError,
    AgiProtocolError,
    AgiRequest,
    ChannelHungUp,
    Hangup,
    HeaderDecoder,
    Reply,
    ReplyDecoder,
    ReplyItem,
    format_command,
)
from ivr.guard import SECRET_PARAM, PeerAllowList, secret_matches

log = logging.getLogger(__name__)

DEFAULT_PORT = 4573
_READ_SIZE = 64 * 1024
_CHANNEL_VERBS = frozenset({"ANSWER", "STREAM FILE", "GET DATA", "WAIT FOR DIGIT"})

Handler = Callable[["AgiSession"], Awaitable[None]]


def _needs_channel(verb: str) -> bool:
    """Commands whose ``result=-1`` means the caller went away (res_agi: "-1 on hangup")."""
    verb = verb.upper()
    return verb in _CHANNEL_VERBS or verb.startswith("SAY ")


class AgiSession:
    """One call inside the AGI: send commands, get their replies, never out of step."""

    def __init__(
        self,
        request: AgiRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        reply_timeout: float = 60.0,
        hangup_grace: float = 0.5,
        pending: bytes = b"",
    ) -> None:
        """``pending``: bytes read past the header block, replies already on their way."""
        self.request = request
        self.reply_timeout = reply_timeout
        self.hangup_grace = hangup_grace
        self.hung_up = False
        self._reader = reader
        self._writer = writer
        self._decoder = ReplyDecoder()
        self._items: deque[ReplyItem] = deque(self._decoder.feed(pending))
        self._lock = asyncio.Lock()

    async def command(
        self, verb: str, *args: str | int | float, reply_timeout: float | None = None
    ) -> Reply:
        """Send one command and return its own reply, whatever came unsolicited before it.

        510, 520 and 503 replies are returned for the caller to judge. Raises AgiLocalError
        for an argument that cannot be sent (nothing is written then); ChannelHungUp on a 511,
        on EOF or a lost connection, and on a ``-1`` to a channel command after a hang-up;
        AgiProtocolError when no reply comes within ``reply_timeout`` (default: the session's)
        or the reply is garbage.
        """
        line = format_command(verb, *args)
        limit = self.reply_timeout if reply_timeout is None else reply_timeout
        async with self._lock:
            try:
                self._writer.write(line)
                await self._writer.drain()
            except ConnectionError as exc:
                self.hung_up = True
                raise ChannelHungUp(f"{verb}: connection to Asterisk lost") from exc
            try:
                async with asyncio.timeout(limit):
                    reply = await self._next_reply()
            except TimeoutError:
                raise AgiProtocolError(f"no reply to {verb} within {limit:g} s") from None
            if reply.code == 511:
                self.hung_up = True
                raise ChannelHungUp(f"{verb}: the channel is dead (511)")
            if reply.code == 200 and reply.result == "-1" and _needs_channel(verb):
                if not self.hung_up:
                    await self._await_hangup()
                if self.hung_up:
                    raise ChannelHungUp(f"{verb}: the caller hung up")
            return reply

    async def _next_reply(self) -> Reply:
        while True:
            while self._items:
                item = self._items.popleft()
                if isinstance(item, Hangup):
                    self.hung_up = True
                elif item.code != 100:  # "Trying..." precedes Gosub's real reply
                    return item
            await self._fill()

    async def _await_hangup(self) -> None:
        """Give res_agi ``hangup_grace`` to write the HANGUP that follows a hang-up's -1."""
        with suppress(TimeoutError):
            async with asyncio.timeout(self.hangup_grace):
                while not self._items:
                    await self._fill()
        if self._items and isinstance(self._items[0], Hangup):
            self._items.popleft()
            self.hung_up = True

    async def _fill(self) -> None:
        try:
            data = await self._reader.read(_READ_SIZE)
        except ConnectionError as exc:
            self.hung_up = True
            raise ChannelHungUp("connection to Asterisk lost") from exc
        if not data:
            self.hung_up = True
            raise ChannelHungUp("Asterisk closed the connection")
        self._items.extend(self._decoder.feed(data))

    async def _ok(
        self, verb: str, *args: str | int | float, reply_timeout: float | None = None
    ) -> Reply:
        """``command`` for the helpers: anything but a 200 with a result other than -1 is an
        AgiCommandError."""
        reply = await self.command(verb, *args, reply_timeout=reply_timeout)
        if reply.code != 200 or reply.result == "-1":
            raise AgiCommandError(verb, reply)
        return reply

    async def answer(self) -> None:
        """Answer the channel. Raises ChannelHungUp, AgiCommandError."""
        await self._ok("ANSWER")

    async def stream_file(self, name: str, escape_digits: str = "") -> str:
        """Play a prompt; return the escape digit that stopped it, or "".

        Raises ChannelHungUp; AgiCommandError when the file cannot be played.
        """
        return _digit(await self._ok("STREAM FILE", name, escape_digits))

    async def get_data(self, prompt: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play a prompt and collect up to ``max_digits`` (``#`` ends early).

        Returns (digits, timed_out). The reply may take the prompt's length plus
        ``timeout_ms`` per digit, so the wait is ``reply_timeout`` plus that much.
        Raises ChannelHungUp, AgiCommandError.
        """
        wait = self.reply_timeout + max(timeout_ms, 0) / 1000 * max(max_digits, 1)
        reply = await self._ok("GET DATA", prompt, timeout_ms, max_digits, reply_timeout=wait)
        return reply.result, reply.data == "timeout"

    async def wait_for_digit(self, timeout_ms: int) -> str:
        """Wait for one key press; return it, or "" on timeout (-1 waits forever).

        Raises ChannelHungUp, AgiCommandError.
        """
        wait = self.reply_timeout + max(timeout_ms, 0) / 1000
        return _digit(await self._ok("WAIT FOR DIGIT", timeout_ms, reply_timeout=wait))

    async def say_number(self, number: int, escape_digits: str = "") -> str:
        """Say a number; return the escape digit that stopped it, or "".

        Raises ChannelHungUp, AgiCommandError.
        """
        return _digit(await self._ok("SAY NUMBER", number, escape_digits))

    async def say_digits(self, digits: str, escape_digits: str = "") -> str:
        """Say digits one by one; return the escape digit that stopped it, or "".

        Raises ChannelHungUp, AgiCommandError (Asterisk wants digits only).
        """
        return _digit(await self._ok("SAY DIGITS", digits, escape_digits))

    async def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable (works on a dead channel too).

        Raises AgiLocalError for CR/LF/NUL in the value, ChannelHungUp, AgiCommandError.
        """
        await self._ok("SET VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        """A channel variable or dialplan function (``CHANNEL(linkedid)``); None when unset.

        Raises ChannelHungUp, AgiCommandError.
        """
        reply = await self._ok("GET VARIABLE", name)
        return (reply.data or "") if reply.result == "1" else None

    async def verbose(self, text: str, level: int = 1) -> None:
        """Write to the Asterisk console at a verbosity level. Raises ChannelHungUp,
        AgiCommandError."""
        await self._ok("VERBOSE", text, level)

    async def exec_(self, app: str, *args: str) -> int:
        """Run a dialplan application; ``args`` are joined with "," as the dialplan does.

        Returns the application's result (-2: no such application; -1 is not raised here:
        an application returns it when it wants the dialplan to stop). Raises ChannelHungUp,
        AgiCommandError on 510/520.
        """
        reply = await self.command("EXEC", app, ",".join(args))
        if reply.code != 200:
            raise AgiCommandError("EXEC", reply)
        return _number("EXEC", reply)

    async def hangup(self) -> None:
        """Hang up the channel; nothing to do when it is already gone.

        Raises AgiCommandError when Asterisk refuses.
        """
        if self.hung_up:
            return
        await self._ok("HANGUP")
        self.hung_up = True


def _number(verb: str, reply: Reply) -> int:
    try:
        return int(reply.result)
    except ValueError:
        raise AgiProtocolError(f"{verb}: result is not a number: {reply.result!r}") from None


def _digit(reply: Reply) -> str:
    """STREAM FILE, WAIT FOR DIGIT and SAY report a key as its ASCII code, 0 for none."""
    code = _number("digit", reply)
    return chr(code) if 0 < code < 128 else ""


class AgiServer:
    """FastAGI listener: one task per connection, each routed on the request's script."""

    def __init__(
        self,
        routes: Mapping[str, Handler] | None = None,
        *,
        header_timeout: float = 5.0,
        reply_timeout: float = 60.0,
        hangup_grace: float = 0.5,
        peers: PeerAllowList | None = None,
        secret: str = "",
    ) -> None:
        """``peers``: the addresses allowed to connect (None: any, for tests and the demo);
        ``secret``: what the AGI URL's ``secret`` parameter must be ("" asks for none)."""
        self.header_timeout = header_timeout
        self.reply_timeout = reply_timeout
        self.hangup_grace = hangup_grace
        self.peers = peers
        self.secret = secret
        self.refused: Counter[str] = Counter()  # connections refused, by reason
        self._routes: dict[str, Handler] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        for path, handler in (routes or {}).items():
            self.add_route(path, handler)

    def add_route(self, path: str, handler: Handler) -> None:
        """Serve ``agi://host/<path>`` with ``handler(session)``.

        Any callable returning an awaitable will do: ``async def``, a ``functools.partial``
        of one, an object with ``async __call__``. Raises TypeError for a non-callable and
        ValueError for a path already routed. A handler that returns something not awaitable
        fails with TypeError when a call comes in (logged, the call goes on in the dialplan).
        """
        if not callable(handler):
            raise TypeError(f"FastAGI handler for {path!r} is not callable: {handler!r}")
        if path in self._routes:
            raise ValueError(f"FastAGI route {path!r} already exists")
        self._routes[path] = handler

    @property
    def sessions(self) -> int:
        """Connections being served now, headers still being read included."""
        return len(self._tasks)

    async def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> tuple[str, int]:
        """Listen; return the bound address (``port=0`` picks a free port)."""
        if self._server is not None:
            raise RuntimeError("the FastAGI server is already started")
        self._stopping = False
        self._server = await asyncio.start_server(self._connection, host, port)
        address = self._server.sockets[0].getsockname()
        log.info("FastAGI listening on %s:%s", address[0], address[1])
        return str(address[0]), int(address[1])

    async def stop(self) -> None:
        """Stop listening, cancel the sessions running and wait until they are gone."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._stopping or task is None:  # accepted while stop() ran: nobody would cancel us
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        if self.peers is not None and not self.peers.allows(_host(peer)):
            self._refuse(writer, peer, "address not in [ivr] allowed_peers")
            return
        self._tasks.add(task)
        try:
            await self._serve(reader, writer, peer)
        finally:
            self._tasks.discard(task)
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        try:
            async with asyncio.timeout(self.header_timeout):
                got = await _read_headers(reader, peer)
        except TimeoutError:
            log.info(
                "FastAGI peer %s sent no header block in %g s; closing", peer, self.header_timeout
            )
            return
        except AgiProtocolError as exc:
            log.warning("FastAGI peer %s sent malformed headers (%s); closing", peer, exc)
            return
        except ConnectionError as exc:
            log.info("FastAGI peer %s lost before the headers ended: %s", peer, exc)
            return
        if got is None:
            return
        request, pending = got
        if self.secret and not secret_matches(request.query.get(SECRET_PARAM, ""), self.secret):
            self._refuse(writer, peer, "wrong or missing secret in the AGI URL")
            return
        log.debug("FastAGI headers from %s: %r", peer, self._redacted(request.headers))
        try:
            session = AgiSession(
                request,
                reader,
                writer,
                reply_timeout=self.reply_timeout,
                hangup_grace=self.hangup_grace,
                pending=pending,
            )
        except AgiProtocolError as exc:  # what came right after the headers is no reply
            log.warning("FastAGI peer %s sent garbage after the headers (%s); closing", peer, exc)
            return
        script = request.script
        handler = self._routes.get(script)
        if handler is None:
            log.warning("FastAGI: unknown menu %r requested by %s", script, request.channel)
            printable = "".join(ch if ch.isprintable() else "?" for ch in script)
            with suppress(AgiError):
                await session.set_variable("IVR_ERROR", f"unknown menu {printable}")
            return
        log.info("FastAGI %r for %s", script, request.channel)
        try:
            await _run(handler, session)
        except ChannelHungUp as exc:
            log.info("FastAGI %r on %s ended: %s", script, request.channel, exc)
        except Exception:
            log.exception("FastAGI handler for %r failed on %s", script, request.channel)

    def _refuse(self, writer: asyncio.StreamWriter, peer: object, reason: str) -> None:
        """Close at once, say so once; the peer learns nothing (no reply, no variable)."""
        self.refused[reason] += 1
        log.warning("FastAGI peer %r refused: %s", peer, reason)
        writer.close()

    def _redacted(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers for the log: the URL carries the secret (agi_request, agi_network_script)."""
        if not self.secret:
            return dict(headers)
        return {key: value.replace(self.secret, "***") for key, value in headers.items()}


def _host(peer: object) -> str:
    """The address of a ``peername`` (host, port[, flow, scope]); "" when there is none."""
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


async def _read_headers(
    reader: asyncio.StreamReader, peer: object
) -> tuple[AgiRequest, bytes] | None:
    """The request and any bytes after it; None when the peer closed first."""
    decoder = HeaderDecoder()
    while True:
        data = await reader.read(_READ_SIZE)
        if not data:
            try:
                decoder.eof()
            except AgiProtocolError as exc:
                log.info("FastAGI peer %s: %s", peer, exc)
            return None
        request = decoder.feed(data)
        if request is not None:
            return request, decoder.rest


async def _run(handler: Handler, session: AgiSession) -> None:
    outcome = handler(session)
    if not inspect.isawaitable(outcome):
        raise TypeError(
            f"FastAGI handler {handler!r} returned {type(outcome).__name__}, not an awaitable: "
            "make it 'async def' (or return a coroutine)"
        )
    await outcome
