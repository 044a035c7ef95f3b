"""A TCP connection whose reads run in a thread of their own, for the AMI link.

Asterisk writes events to a manager session with a deadline (``writetimeout``, 100 ms by
default): a reader that does not take them in time is disconnected and the events are lost.
On an asyncio transport the socket is read only when the event loop gets round to it, so
anything that holds the loop (a burst of cards to push, a long garbage collection, a heavy
lookup) holds the socket too, and the kernel's buffers, a few hundred kilobytes, fill in a
fraction of a second at a busy PBX's rate. Here a thread does nothing but ``recv`` and hand
each chunk to the loop (``call_soon_threadsafe``), so the kernel's buffers are drained within
the interpreter's thread switch interval (5 ms) whatever the loop is doing. The bytes are
decoded in the loop, in order, as with any protocol: only the reading moved.

Memory has a bound: while ``paused()`` says the work behind the reader is too far behind
(events queued and not yet applied), the thread stops reading. Asterisk may then drop the
session; that is the service's last resort, logged, never the normal way of coping.

Writes (actions, small) go straight to the socket from the loop, with a send timeout so a
peer that stops reading cannot hold the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
SEND_TIMEOUT = 2.0  # seconds a write may wait for the peer's window before the link is dropped
PAUSE_CHECK = 0.05  # seconds between looks at a paused reader's backlog


class ThreadedTransport(asyncio.Transport):
    """The transport side of one connected socket; reads in a daemon thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.Protocol,
        *,
        name: str,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._paused = paused
        self._closing = False
        self._lost = False
        # time.time() when the chunk being delivered was read: what it waited for the loop
        # counts in the service's lag (cti.service), not only its wait in the event queue
        self.read_at = 0.0
        self._extra = {
            "socket": sock,
            "peername": sock.getpeername(),
            "sockname": sock.getsockname(),
        }
        self._thread = threading.Thread(target=self._read, name=f"ami-reader-{name}", daemon=True)

    def start(self) -> None:
        self._protocol.connection_made(self)
        self._thread.start()

    # --- the reader thread --------------------------------------------------------------------

    def _read(self) -> None:
        said_paused = False
        while True:
            if self._paused() and not self._closing:
                if not said_paused:
                    said_paused = True
                    self._loop.call_soon_threadsafe(
                        log.error,
                        "AMI reader of %s paused: the events read are not being applied "
                        "fast enough (memory bound reached)",
                        self._extra["peername"],
                    )
                time.sleep(PAUSE_CHECK)
                continue
            said_paused = False
            try:
                data = self._sock.recv(READ_SIZE)
            except OSError as exc:
                self._call(self._lose, exc)
                return
            if not data:
                self._call(self._lose, None)
                return
            self._call(self._deliver, data, time.time())

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(callback, *args)

    # --- in the loop --------------------------------------------------------------------------

    def _deliver(self, data: bytes, read_at: float) -> None:
        if not self._lost:
            self.read_at = read_at
            self._protocol.data_received(data)

    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._sock.close()
        self._protocol.connection_lost(exc if isinstance(exc, Exception) else None)

    # --- asyncio.Transport --------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        try:
            self._sock.sendall(data)
        except OSError as exc:  # the peer stopped reading (send timeout) or is gone
            log.warning("AMI write to %s failed: %s", self._extra["peername"], exc)
            self.abort()

    def get_write_buffer_size(self) -> int:
        return 0  # writes are done when write() returns

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop both ways; the reader thread sees the end and reports connection_lost.
        (A shutdown, not a close: only it wakes a thread blocked in recv.)"""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError):  # already gone: the reader has seen it or will
            self._sock.shutdown(socket.SHUT_RDWR)

    def abort(self) -> None:
        self.close()  # nothing is buffered on our side: closing is aborting

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_reading(self) -> bool:
        return not self._closing


async def open_threaded(
    host: str,
    port: int,
    protocol_factory: Callable[[], asyncio.Protocol],
    *,
    name: str,
    paused: Callable[[], bool] = lambda: False,
) -> tuple[ThreadedTransport, asyncio.Protocol]:
    """Connect to ``host``:``port`` (cancellable, e.g. by a timeout) and start reading in a
    thread. Raises OSError as ``loop.create_connection`` does."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        seconds = int(SEND_TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, 0))
        protocol = protocol_factory()
        transport = ThreadedTransport(loop, sock, protocol, name=name, paused=paused)
        transport.start()
        return transport, protocol
    raise last or OSError(f"cannot resolve {host}:{port}")
