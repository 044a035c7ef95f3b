"""AMI connection to one Asterisk: panoramisk's Manager with sound framing, keepalive and resync.

Theory of operation
-------------------
panoramisk 1.4 gives us the parts that work: ``Action`` objects with generated ActionIDs, the
correlation of responses (and of list items, which carry the same ActionID) to the action's
future, list responses collected up to ``…Complete``, event callbacks by glob
(``register_event``), and "awaiting actions" (an action left unanswered by a lost connection is
sent again once the next session reports ``FullyBooted``; never an ``Originate``, which may
have placed its call already: that one fails with AmiError instead).

What we replaced, and why:

* **Framing.** panoramisk decodes every TCP read on its own with ``errors='ignore'`` (a UTF-8
  character split across two reads is lost: ``José`` → ``Jos``) and strips lines (a trailing
  empty ``Value: `` header disappears). :class:`AmiClientProtocol` feeds the bytes to
  :class:`cti.codec.AmiDecoder`, which decodes whole frames only, and hands each message, as a
  panoramisk ``Message``, to ``handle_message``. What the decoder could not use (garbage, a
  1 MB line, Latin-1, a foreign banner) is logged once with context and skipped.
* **Dispatch.** An exception in an event callback escaped ``data_received``; asyncio then closed
  the connection and the rest of the read was lost. Every message and every callback is now
  guarded, and coroutine callbacks run as kept, watched tasks.
* **The reader only enqueues, and reads in a thread of its own.** Events go to an
  ``asyncio.Queue`` with ``put_nowait``; the consumer drains it in its own task, so a slow
  consumer never stops the socket being read (Asterisk drops a reader that does not accept a
  write within 100 ms). The socket itself is read by a thread (:mod:`cti.wire`), so nothing
  that holds the event loop holds the socket; the bytes are decoded in the loop, in order.
  The queue's bound is ``MAX_WAITING`` events: past it the thread stops reading (logged).
* **Connection life.** panoramisk reconnects forever at a fixed delay, retries wrong
  credentials every 2 s, never checks the Pong of its Ping and has no action timeout.
  :class:`AmiClient` owns the loop instead: connect (with a timeout), wait for the banner
  (credentials are never sent to a peer that is not Asterisk), log in, resync, ping with a pong
  timeout (a half-open connection is closed and replaced), exponential backoff with full jitter
  between attempts. A PBX's failure is that PBX's alone: refused credentials and a foreign
  peer are logged with the reason and retried (refused logins no sooner than
  ``refused_backoff``), never raised to the service. The backoff starts again from
  ``backoff_initial`` only after a link stayed up ``stable_after`` seconds: a peer that accepts
  the login and drops at once is retried with growing delays, not resynced several times a
  second.
* **Small fixes.** ``Action.multi`` read ``self['async']`` (KeyError inside ``data_received``
  for an Originate without ``Async``) and took the one-line QueueAdd answer for the start of a
  list; :class:`_Action` fixes both. ``save_stream`` and ``asyncio.get_event_loop()`` are not
  used; panoramisk's global ``utils.EOL`` is left alone.

After every login the queue receives :class:`ResyncBegin`, the live events of the session, the
items of ``CoreShowChannels`` and ``QueueStatus`` (as :class:`AmiEvent`), then
:class:`ResyncEnd`; :class:`Disconnected` when a logged-in session ends, :class:`AttemptFailed`
when an attempt ends before a login. :attr:`AmiClient.status` is the link as a page shows it.
Timers use the loop's monotonic clock; the times carried by queue items are ``time.time()`` for
display.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from panoramisk import actions
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

from cti.codec import AmiDecoder, header_problem
from cti.settings import PbxSettings
from cti.waits import wait_set
from cti.wire import open_threaded

log = logging.getLogger(__name__)

SNAPSHOT_ACTIONS = ("CoreShowChannels", "QueueStatus")
# events read and not yet applied at which the reader stops reading (cti.wire): about a
# minute of a very busy PBX, a few hundred MB; past it Asterisk may drop us, memory comes first
MAX_WAITING = 200_000
_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})  # Asterisk's ast_true()


class AmiError(Exception):
    """Base error of the AMI connection layer (also: not connected, connection lost)."""


class AmiAuthError(AmiError):
    """Asterisk refused the credentials: retried no sooner than ``refused_backoff``."""


class AmiProtocolError(AmiError):
    """The peer is not an Asterisk manager (its first line is not the AMI banner)."""


class AmiActionTimeout(AmiError):
    """No (complete) response to an action within its timeout."""


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """One AMI event (live, or an item of a resync snapshot) as the decoder produced it."""

    pbx: str
    message: dict[str, str]
    received_at: float


@dataclass(frozen=True, slots=True)
class ResyncBegin:
    """A session logged in: state from before may be stale; a snapshot follows."""

    pbx: str
    at: float


@dataclass(frozen=True, slots=True)
class ResyncEnd:
    """The snapshot is on the queue; ``complete`` is False if a snapshot action failed."""

    pbx: str
    at: float
    complete: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A logged-in session ended; events until the next ResyncBegin are lost."""

    pbx: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """An attempt to connect and log in failed before any session came up: the link is down
    (perhaps since start-up, when no Disconnected says so); the next try is in ``retry_in`` s."""

    pbx: str
    at: float
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """One PBX's AMI link as a page shows it: up or down since when, and why it is down.

    ``refused`` marks credentials Asterisk refused (a configuration to fix, not an outage);
    ``retry_at`` is the ``time.time()`` of the next attempt while one is scheduled.
    """

    up: bool
    since: float
    reason: str | None = None
    refused: bool = False
    retry_at: float | None = None


Item = AmiEvent | ResyncBegin | ResyncEnd | Disconnected | AttemptFailed
FrameFilter = Callable[[bytes], bool]


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, initial * 2**n))``.

    Full jitter spreads the reconnects of many clients after an Asterisk restart.
    """

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self._rng = rng or random.Random()
        self._attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return float(min(self.cap, self.initial * 2.0 ** min(self._attempt, 60)))

    def next_delay(self) -> float:
        """Return the next delay and double the ceiling (up to ``cap``)."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from ``initial`` (after a link that stayed up long enough)."""
        self._attempt = 0


class _Action(actions.Action):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's Action with a ``multi`` that cannot raise inside ``data_received``."""

    @property
    def multi(self) -> bool:
        if self.as_list is not None:
            return bool(self.as_list)
        resp = self.responses[0]
        if resp.get("SubEvent") == "Start":
            return True
        if str(resp.get("EventList", "")).lower() == "start":
            return True
        msg = str(resp.get("Message", "")).lower()
        if "will follow" in msg:
            return True
        # An async Originate is answered "successfully queued" and later an OriginateResponse
        # with the same ActionID. panoramisk read self['async']: KeyError without the header.
        # Its "Added interface to queue" rule (QueueAdd, one message) is dropped on purpose.
        return msg.endswith("successfully queued") and (str(self.get("Async", "")).lower() in _TRUE)


class _Command(_Action, actions.Command):  # type: ignore[misc]
    """panoramisk's Command (ActionID + CommandID) with the safe ``multi``."""


class _Message(Message):  # type: ignore[misc]
    """A panoramisk Message that keeps the decoder's dict and the time it was received."""

    def __init__(self, fields: dict[str, str], received_at: float) -> None:
        # the decoder joins a repeated header with "\n"; panoramisk expects a list
        super().__init__({k: v.split("\n") if "\n" in v else v for k, v in fields.items()})
        self.fields = fields
        self.received_at = received_at


def _new_action(fields: Mapping[str, str]) -> Any:
    """Build a panoramisk action. Raises ValueError on a header that would break the frame
    (the same rule as :func:`cti.codec.encode`: every action sent goes through one of them)."""
    if not fields.get("Action"):
        raise ValueError("an AMI action needs an 'Action' header")
    for key, value in fields.items():
        if not isinstance(value, str):
            raise ValueError(f"AMI header {key!r} must be a str")
        problem = header_problem(key) or header_problem(value) or (":" in key and "a colon")
        if problem:
            raise ValueError(f"AMI header {key!r} holds {problem}")
    return (_Command if "Command" in fields else _Action)(dict(fields))


def _plain(result: Any) -> dict[str, str] | list[dict[str, str]]:
    """Turn panoramisk's result (one Message or a list) into the decoder's plain dicts."""
    if isinstance(result, list):
        return [_fields(m) for m in result]
    return _fields(result)


def _fields(message: Any) -> dict[str, str]:
    if isinstance(message, _Message):
        return message.fields
    return {k: "\n".join(v) if isinstance(v, list) else str(v) for k, v in message.items()}


NOT_REPEATED = ("originate",)  # actions that must not run twice (see _refuse_repeats)


class AmiManager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's Manager without its connection loop (AmiClient owns it) and with guarded
    dispatch: a failing callback is logged once with the event name and nothing else stops."""

    def __init__(self, pbx: str) -> None:
        # panoramisk never re-sends these after a reconnect; Originate is failed instead
        super().__init__(log=log, forgetable_actions=("ping", "login", *NOT_REPEATED))
        self.pbx = pbx
        self._tasks: set[asyncio.Task[Any]] = set()

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """Not used: :meth:`AmiClient.run` connects. Raises NotImplementedError."""
        raise NotImplementedError("AmiClient.run() owns the connection")

    def connection_lost(self, exc: Any) -> None:
        """panoramisk would schedule a fixed-delay reconnect here; AmiClient does it instead."""
        self._connected = False
        self.authenticated = False

    def ping(self) -> None:
        """panoramisk's ping never checks the Pong; AmiClient's keepalive does."""

    def dispatch(self, event: Any) -> list[str]:
        matches: list[str] = []
        event.manager = self
        name = event.get("Event", "")
        for pattern, regexp in self.patterns:
            if regexp.match(name) is None:
                continue
            matches.append(pattern)
            for callback in self.callbacks[pattern]:
                try:
                    ret = callback(self, event)
                except Exception:
                    log.exception(
                        "PBX %s: event callback %s failed on %s event",
                        self.pbx,
                        getattr(callback, "__qualname__", callback),
                        name,
                    )
                    continue
                if asyncio.iscoroutine(ret) or isinstance(ret, asyncio.Future):
                    task = asyncio.ensure_future(ret)
                    self._tasks.add(task)
                    task.add_done_callback(
                        functools.partial(self._task_done, callback=callback, event=name)
                    )
        return matches

    def _task_done(self, task: asyncio.Task[Any], callback: Any, event: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "PBX %s: event callback %s failed on %s event",
                self.pbx,
                getattr(callback, "__qualname__", callback),
                event,
                exc_info=task.exception(),
            )

    async def cancel_tasks(self) -> None:
        """Cancel and reap the callback tasks still running."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class AmiClientProtocol(AMIProtocol):  # type: ignore[misc]  # panoramisk is untyped
    """One TCP connection: whole-frame decoding underneath panoramisk's action correlation.

    The reader never waits: events are put on the client's queue (or held until the login
    response so that ResyncBegin comes first), callbacks are guarded.
    """

    def __init__(self, client: AmiClient) -> None:
        super().__init__()
        loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.closed = False
        self.responses: dict[str, Any] = {}
        self._client = client
        self._pbx = client.settings.name
        self._decoder = AmiDecoder(frame_filter=client.frame_filter)
        self.banner: asyncio.Future[str] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()
        self.fatal: AmiError | None = None
        self.live = False
        self._early: list[AmiEvent] = []
        self._reason: str | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.factory = self._client.manager
        self.log = log
        self.encoding = "utf-8"
        self.config = self.factory.config

    def data_received(self, data: bytes) -> None:
        received_at = getattr(self.transport, "read_at", None) or time.time()
        messages = self._decoder.feed(data)
        self._report_problems()
        if not self.banner.done() and (self._decoder.banner is not None or messages):
            self.banner.set_result(self._decoder.banner or "")
        for fields in messages:
            try:
                self._handle(fields, received_at)
            except Exception:
                # one bad message costs that message, never the connection or the rest of the read
                log.exception(
                    "PBX %s: failed to handle %s",
                    self._pbx,
                    fields.get("Event") or fields.get("Response") or "message",
                )

    def connection_lost(self, exc: Exception | None) -> None:
        self._decoder.eof()
        self._report_problems()
        if self._reason is None:
            self._reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        self._refuse_repeats()
        self.close()  # panoramisk: unanswered actions → manager.awaiting_actions
        self.live = False
        if not self.lost.done():
            self.lost.set_result(self._reason)

    def _refuse_repeats(self) -> None:
        """An action that places calls (Originate) and got no answer before the link went is
        failed, not sent again after the next login: Asterisk may have done it already, and
        a customer called twice is worse than a callback to retry by hand."""
        for act in list(self.responses.values()):
            name = str(act.get("Action", "")).lower()
            if name in NOT_REPEATED and not act.responses and not act.future.done():
                act.future.set_exception(
                    AmiError(
                        f"PBX {self._pbx}: the link went before Asterisk answered {act['Action']}"
                        "; it may or may not have been done, so it is not sent again"
                    )
                )

    # --- panoramisk hooks -------------------------------------------------------------------

    def send(self, data: Any, as_list: bool | None = None) -> asyncio.Future[Any]:
        """Write an action; return the future of its response. Raises AmiError when closed.

        Unlike panoramisk's, never logs the action (a Login carries the secret).
        """
        if self.closed or self.transport is None or self.transport.is_closing():
            raise AmiError(f"PBX {self._pbx}: not connected")
        action = data if isinstance(data, actions.Action) else _new_action(data)
        if as_list is not None:
            action.as_list = as_list
        self.responses[action.id] = action
        if action.action_id:
            self.responses[action.action_id] = action
        self.transport.write(str(action).encode("utf-8"))
        future: asyncio.Future[Any] = action.future
        return future

    def handle_message(self, message: Any) -> None:
        action = self.responses.get(message.id)
        if action is None and message.action_id:
            action = self.responses.get(message.action_id)
        if action is not None:
            self._add_to_action(action, message)
        elif "Event" in message:
            self._client._on_event(self, message)
            if message.get("Event") == "Shutdown":
                # Asterisk closes the socket next; panoramisk too treats this as the end
                self.drop(f"Asterisk shut down (Restart: {message.get('Restart', '?')})")
        else:
            log.debug("PBX %s: response to a forgotten action: %r", self._pbx, message)

    # --- ours ---------------------------------------------------------------------------------

    def forget(self, action: Any) -> None:
        """Stop routing responses to an action that was given up (timeout, cancel)."""
        self.responses.pop(action.id, None)
        if action.action_id:
            self.responses.pop(action.action_id, None)

    def go_live(self, begin: ResyncBegin) -> None:
        """Login succeeded: ResyncBegin, then the events held back since connect, then live."""
        queue = self._client.queue
        queue.put_nowait(begin)
        for event in self._early:
            queue.put_nowait(event)
        self._early.clear()
        self.live = True

    def hold_or_put(self, event: AmiEvent) -> None:
        if self.live:
            self._client.queue.put_nowait(event)
        else:
            self._early.append(event)

    def drop(self, reason: str, *, abort: bool = False) -> None:
        """Close the connection for ``reason``; ``abort`` does not wait to flush writes."""
        if self._reason is None:
            self._reason = reason
        if self.transport is None or (self.transport.is_closing() and not abort):
            return
        if abort or self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def _add_to_action(self, action: Any, message: Any) -> None:
        try:
            done = action.add_message(message)
        except Exception:
            log.exception(
                "PBX %s: cannot match %s to action %s",
                self._pbx,
                message.get("Event") or message.get("Response"),
                action.get("Action"),
            )
            if not action.future.done():
                action.future.set_exception(AmiError(f"bad response to {action.get('Action')}"))
            done = True
        if done or action.future.done():
            self.forget(action)

    def _handle(self, fields: dict[str, str], received_at: float) -> None:
        if "Event" not in fields and "Response" not in fields:
            log.warning(
                "PBX %s: skipped a message with neither Event nor Response: %.200r",
                self._pbx,
                fields,
            )
            return
        self.handle_message(_Message(fields, received_at))

    def _report_problems(self) -> None:
        s = self._client.settings
        for problem in self._decoder.take_problems():
            log.warning(
                "PBX %s (%s:%s): %s: %s: %r",
                s.name,
                s.host,
                s.port,
                problem.kind,
                problem.detail,
                problem.excerpt,
            )
            if problem.kind == "bad-banner" and self.fatal is None:
                self.fatal = AmiProtocolError(
                    f"{s.host}:{s.port} is not an Asterisk manager "
                    f"(it sent {problem.excerpt!r} instead of 'Asterisk Call Manager/…')"
                )
                self.drop("not an Asterisk manager", abort=True)


class AmiClient:
    """Keeps one PBX connected and its events flowing onto ``queue``.

    ``frame_filter`` (raw frame bytes → keep?) drops frames before they are decoded, e.g.
    VarSet; it must keep ``Response`` frames and the snapshot items. ``ping_interval <= 0``
    turns the keepalive off. ``reconnects`` counts retries (each backoff pause),
    ``last_error`` keeps the reason of the last failed attempt or ended session, ``status``
    the link's state for pages.
    ``manager`` is the panoramisk Manager: ``client.manager.register_event(pattern, cb)``
    still works (callbacks run in the reader, so keep them short; failures are contained).
    """

    def __init__(
        self,
        settings: PbxSettings,
        queue: asyncio.Queue[Item],
        *,
        frame_filter: FrameFilter | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.frame_filter = frame_filter
        self.manager = AmiManager(settings.name)
        self.logins = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.status = LinkStatus(up=False, since=time.time())
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max, rng)
        self._up_at: float | None = None  # loop time of the current session's login
        self._protocol: AmiClientProtocol | None = None
        self._closing = False
        self._running = False
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._session_task: asyncio.Task[str] | None = None

    @property
    def connected(self) -> bool:
        """True while a logged-in session is up."""
        p = self._protocol
        return p is not None and p.live and not p.closed

    async def run(self) -> None:
        """Connect, log in, resync, keep alive and reconnect with backoff until :meth:`close`.

        Never raises for the PBX's sake: every failure (refused credentials, a foreign peer, a
        lost link, even a bug in a session, logged with its traceback) is recorded in
        ``last_error`` and ``status`` and retried, so one PBX's trouble stops nothing else.
        """
        if self._running:
            raise RuntimeError("AmiClient.run() is already running")
        self.manager.loop = asyncio.get_running_loop()
        self._running = True
        self._stopped.clear()
        s = self.settings
        loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                self._up_at = None
                session = asyncio.create_task(self._session())
                self._session_task = session
                try:
                    await asyncio.wait({session})
                finally:
                    if not session.done():  # run() itself was cancelled
                        session.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await session
                if session.cancelled():  # by close()
                    break
                exc = session.exception()
                self.last_error = str(exc) if exc is not None else session.result()
                if self._closing:
                    break
                if self._up_at is not None and loop.time() - self._up_at >= s.stable_after:
                    self._backoff.reset()  # that link was sound: this is a new outage
                delay = self._backoff.next_delay()
                refused = isinstance(exc, AmiAuthError)
                if refused:
                    delay = max(delay, s.refused_backoff)
                self.reconnects += 1
                self._went_down(self.last_error, refused, delay)
                if exc is not None and not isinstance(exc, OSError | AmiError):
                    log.error(
                        "PBX %s (%s:%s): session failed on a bug; reconnecting in %.2f s",
                        s.name,
                        s.host,
                        s.port,
                        delay,
                        exc_info=exc,
                    )
                else:
                    misconfigured = isinstance(exc, AmiAuthError | AmiProtocolError)
                    log.log(
                        logging.ERROR if misconfigured else logging.WARNING,
                        "PBX %s (%s:%s): %s; reconnecting in %.2f s",
                        s.name,
                        s.host,
                        s.port,
                        self.last_error,
                        delay,
                    )
                await self._pause(delay)
        finally:
            if self.status.up:
                self.status = LinkStatus(False, time.time(), "closed by client")
            self._session_task = None
            self._running = False
            self._stopped.set()

    def _went_down(self, reason: str, refused: bool, delay: float) -> None:
        """Record why the link is down and when it is tried again; tell the queue if no
        Disconnected did (an attempt that never logged in)."""
        now = time.time()
        was_up = self.status.up
        self.status = LinkStatus(
            False, now if was_up else self.status.since, reason, refused, now + delay
        )
        if not was_up:
            self.queue.put_nowait(AttemptFailed(self.settings.name, now, reason, delay))

    async def send_action(
        self,
        action: dict[str, str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109  (the agreed API; enforced with wait_for)
    ) -> dict[str, str] | list[dict[str, str]]:
        """Send an action; return its response, or the list ``[response, items…, …Complete]``.

        An action still unanswered when the connection drops is sent again after the next
        login (panoramisk's awaiting actions), within the same timeout; an Originate raises
        AmiError instead (it may have placed its call).
        Raises AmiError when not connected, AmiActionTimeout after ``timeout`` (default
        ``settings.action_timeout``), ValueError on a header with CR/LF.
        """
        act = _new_action(action)
        protocol = self._protocol
        if protocol is None or not self.connected:
            raise AmiError(f"PBX {self.settings.name}: not connected")
        limit = self.settings.action_timeout if timeout is None else timeout
        future = protocol.send(act)
        try:
            async with asyncio.timeout(limit):
                result = await future
        except TimeoutError:
            self._forget(act, protocol)
            raise AmiActionTimeout(
                f"PBX {self.settings.name}: no response to {action['Action']} within {limit:g} s"
            ) from None
        return _plain(result)

    async def close(self) -> None:
        """Disconnect and stop :meth:`run` (which then returns); idempotent."""
        self._closing = True
        self._wake.set()
        protocol = self.manager.protocol
        if isinstance(protocol, AmiClientProtocol):
            protocol.drop("closed by client")
        if self._session_task is not None:
            self._session_task.cancel()  # also stops a connect or login in progress
        if self._running:
            await self._stopped.wait()
        await self.manager.cancel_tasks()
        # what is left are the callers' own actions: fail them now rather than at their timeout
        pending = list(self.manager.awaiting_actions)
        if isinstance(protocol, AmiClientProtocol):
            pending += list(protocol.responses.values())
        self.manager.awaiting_actions.clear()
        for act in pending:
            if not act.future.done():
                act.future.set_exception(AmiError(f"PBX {self.settings.name}: client closed"))

    # --- one session --------------------------------------------------------------------------

    async def _session(self) -> str:
        """Run one connection until it ends; return why it ended."""
        s = self.settings
        loop = asyncio.get_running_loop()
        protocol: AmiClientProtocol
        try:
            async with asyncio.timeout(s.connect_timeout):
                _, opened = await open_threaded(
                    s.host, s.port, lambda: AmiClientProtocol(self), name=s.name,
                    paused=lambda: self.queue.qsize() >= MAX_WAITING,
                )  # fmt: skip
                assert isinstance(opened, AmiClientProtocol)
                protocol = opened
        except TimeoutError:
            raise AmiError(
                f"no connection to {s.host}:{s.port} within {s.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise AmiError(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        self.manager.protocol = protocol
        tasks: list[asyncio.Task[None]] = []
        reason = "session ended"
        try:
            await self._wait(protocol, protocol.banner, s.connect_timeout, "no AMI banner")
            log.info("PBX %s: %s:%s says %s", s.name, s.host, s.port, protocol.banner.result())
            await self._login(protocol)
            self.logins += 1
            self._up_at = loop.time()
            self.status = LinkStatus(up=True, since=time.time())
            self.manager.authenticated = True
            self._protocol = protocol
            protocol.go_live(ResyncBegin(s.name, time.time()))
            tasks.append(asyncio.create_task(self._resync(protocol)))
            if s.ping_interval > 0:
                tasks.append(asyncio.create_task(self._keepalive(protocol)))
            reason = await asyncio.shield(protocol.lost)
            return reason
        except asyncio.CancelledError:
            reason = "closed by client" if self._closing else "client task cancelled"
            raise
        finally:
            was_live = self._protocol is protocol
            self._protocol = None
            self.manager.authenticated = False
            for task in tasks:
                task.cancel()  # cancelled tasks put nothing more on the queue
            protocol.drop(reason, abort=True)
            if was_live:
                self.queue.put_nowait(Disconnected(s.name, time.time(), reason))
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("PBX %s: session task failed", s.name, exc_info=result)

    async def _login(self, protocol: AmiClientProtocol) -> None:
        s = self.settings
        fields = {
            "Action": "Login",
            "Username": s.username,
            "Secret": s.secret,
            "Events": s.events,
        }
        resp = await self._request(protocol, fields, s.action_timeout)
        if resp.success:
            log.info("PBX %s: logged in as %s", s.name, s.username)
            return
        text = str(resp.get("Message", "")) or "no reason given"
        if "shutting down" in text.lower():
            raise AmiError(f"login refused: {text}")
        raise AmiAuthError(
            f"login refused for user {s.username!r} at {s.host}:{s.port} ({text}); "
            "check the username and secret configured for this PBX"
        )

    async def _resync(self, protocol: AmiClientProtocol) -> None:
        """Put the snapshot lists on the queue, then ResyncEnd (complete=False on failure).

        ResyncEnd always follows ResyncBegin unless the session is torn down first (then
        Disconnected follows), so a consumer never waits for it forever.
        """
        complete = False
        try:
            complete = await self._snapshot(protocol)
        except AmiError as exc:
            log.warning("PBX %s: resync failed: %s", self.settings.name, exc)
        except Exception:
            log.exception("PBX %s: resync failed", self.settings.name)
        self.queue.put_nowait(ResyncEnd(self.settings.name, time.time(), complete))

    async def _snapshot(self, protocol: AmiClientProtocol) -> bool:
        """Send the snapshot actions together; queue their items; True if all succeeded."""
        s = self.settings
        results = await asyncio.gather(
            *(
                self._request(protocol, {"Action": name}, s.action_timeout)
                for name in SNAPSHOT_ACTIONS
            ),
            return_exceptions=True,
        )
        complete = True
        for name, result in zip(SNAPSHOT_ACTIONS, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # CancelledError: the session is ending
                log.warning("PBX %s: resync %s failed: %s", s.name, name, result)
                complete = False
                continue
            items = result if isinstance(result, list) else [result]
            if not items[0].success:
                log.warning(
                    "PBX %s: resync %s refused: %s", s.name, name, items[0].get("Message", "")
                )
                complete = False
                continue
            for item in items[1:]:
                event = str(item.get("Event", ""))
                if event and not event.endswith("Complete"):
                    self.queue.put_nowait(AmiEvent(s.name, _fields(item), item.received_at))
        return complete

    async def _keepalive(self, protocol: AmiClientProtocol) -> None:
        """Ping every ping_interval; no response within pong_timeout → the link is dead."""
        s = self.settings
        while True:
            await asyncio.sleep(s.ping_interval)
            try:
                await self._request(protocol, {"Action": "Ping"}, s.pong_timeout)
            except AmiActionTimeout:
                protocol.drop(f"no Pong within {s.pong_timeout:g} s (half-open?)", abort=True)
                return
            except AmiError:
                return  # connection gone: the session is ending anyway

    async def _request(
        self, protocol: AmiClientProtocol, fields: dict[str, str], limit: float
    ) -> Any:
        """Send an internal action; give up after ``limit`` s or when this connection is lost."""
        act = _new_action(fields)
        future = protocol.send(act)
        try:
            return await self._wait(protocol, future, limit, None, action=fields["Action"])
        finally:
            if not future.done():
                future.cancel()
            protocol.forget(act)

    async def _wait(
        self,
        protocol: AmiClientProtocol,
        future: asyncio.Future[Any],
        limit: float,
        what: str | None,
        *,
        action: str = "",
    ) -> Any:
        """Await ``future``; raise when the connection is lost or after ``limit`` s."""
        await asyncio.wait(
            {future, protocol.lost}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        if future.done():
            return future.result()
        if protocol.fatal is not None:
            raise protocol.fatal
        if protocol.lost.done():
            raise AmiError(protocol.lost.result())
        s = self.settings
        if what is not None:
            raise AmiError(f"{what} from {s.host}:{s.port} within {limit:g} s")
        raise AmiActionTimeout(f"PBX {s.name}: no response to {action} within {limit:g} s")

    def _on_event(self, protocol: AmiClientProtocol, message: Any) -> None:
        """Called by the protocol for each event that does not belong to an action."""
        protocol.hold_or_put(AmiEvent(self.settings.name, message.fields, message.received_at))
        self.manager.dispatch(message)

    def _forget(self, act: Any, protocol: AmiClientProtocol) -> None:
        protocol.forget(act)
        current = self.manager.protocol
        if current is not protocol and isinstance(current, AmiClientProtocol):
            current.forget(act)

    async def _pause(self, delay: float) -> None:
        await wait_set(self._wake, delay)
