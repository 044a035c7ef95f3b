"""The AMI link is read whatever the event loop is doing (issue 21, overload).

Asterisk drops a manager session whose writes it cannot deliver within ``writetimeout``
(100 ms). Here the PBX simulator runs on an event loop of its own in another thread, as
Asterisk is a process of its own, with that deadline, and floods the link while the
service's loop is held for 1.5 s (as by a burst of work or a long collection). The reader
thread drains the socket meanwhile: the session survives and every event arrives, in order,
stamped with the time it was read.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cti.ami import AmiClient, AmiEvent, Item
from cti.settings import PbxSettings
from pbxsim import AmiServer
from tests.cti.test_service import wait_for

EVENTS = 20_000  # about 9 MB: far more than the kernel's socket buffers hold
HELD = 1.5


@contextmanager
def pbx_in_a_thread() -> Iterator[tuple[AmiServer, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    server = AmiServer(auth_delay=0.0, write_timeout=0.1)
    listening = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        listening.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert listening.wait(10)
    try:
        yield server, loop
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def hold_the_loop(seconds: float) -> None:
    """What a burst of work does to the service's loop: nothing of it runs meanwhile."""
    time.sleep(seconds)


def flood(server: AmiServer) -> None:
    padding = "x" * 300
    for n in range(EVENTS):
        server.emit({"Event": "UserEvent", "UserEvent": "flood", "Serial": str(n), "Pad": padding})


async def test_the_link_survives_a_held_loop_and_loses_nothing() -> None:
    with pbx_in_a_thread() as (server, pbx_loop):
        queue: asyncio.Queue[Item] = asyncio.Queue()
        settings = PbxSettings(name="pbx", port=server.port, secret=server.secret, ping_interval=0)
        client = AmiClient(settings, queue)
        runner = asyncio.create_task(client.run())
        try:
            await wait_for(lambda: client.connected, within=10)
            pbx_loop.call_soon_threadsafe(flood, server)
            hold_the_loop(HELD)
            resumed = time.time()
            serials: list[int] = []
            read_at: list[float] = []

            def drained() -> bool:
                while not queue.empty():
                    item = queue.get_nowait()
                    if isinstance(item, AmiEvent) and item.message.get("UserEvent") == "flood":
                        serials.append(int(item.message["Serial"]))
                        read_at.append(item.received_at)
                return len(serials) == EVENTS

            await wait_for(drained, within=30)
        finally:
            await client.close()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        assert serials == list(range(EVENTS))  # every event, in order
        assert server.logins == 1 and client.reconnects == 0  # never dropped by the PBX
        # stamped when the thread read them, during the hold: the time they then waited for
        # the loop counts in the service's lag (what makes it shed lookups)
        assert read_at[0] < resumed - HELD / 2
