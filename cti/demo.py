"""``cti demo`` and ``cti simulate``: the built-in PBX simulator, with or without the service.

The demo runs the simulator and the service in one process, but they still talk real AMI over
a loopback socket: what the demo shows is what a real Asterisk would get.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cti.console import ConsoleSink
from cti.service import CtiService
from cti.settings import PbxSettings, Settings
from cti.simulator import AmiServer, run_traffic

DEMO_USER = "cti"
DEMO_SECRET = "cti-secret"  # the simulator's own account, on 127.0.0.1 only


async def _until(stop: asyncio.Event, duration: float | None) -> None:
    if duration is None:
        await stop.wait()
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)


@contextlib.asynccontextmanager
async def _simulated_pbx(
    *, port: int, rate: float, seed: int, speed: float
) -> AsyncIterator[AmiServer]:
    """A listening simulator with calls coming in; stopped (calls cut) on exit."""
    server = AmiServer(port=port, username=DEMO_USER, secret=DEMO_SECRET, system_name="sim")
    await server.start()
    stop = asyncio.Event()
    traffic = asyncio.create_task(
        run_traffic(server, rate_per_minute=rate, seed=seed, stop=stop, speed=speed)
    )
    try:
        yield server
    finally:
        stop.set()
        await traffic
        await server.stop()


async def simulate(
    *, port: int, rate: float, seed: int, speed: float = 1.0, duration: float | None = None
) -> None:
    """Serve simulated AMI traffic on 127.0.0.1:``port`` until cancelled (or ``duration``)."""
    async with _simulated_pbx(port=port, rate=rate, seed=seed, speed=speed) as server:
        print(
            f"PBX simulator: AMI on 127.0.0.1:{server.port} (user {DEMO_USER}, secret "
            f"{DEMO_SECRET}), about {rate:g} calls/minute",
            flush=True,
        )
        await _until(asyncio.Event(), duration)


async def demo(
    *, port: int, rate: float, seed: int, speed: float = 1.0, duration: float | None = None
) -> None:
    """Simulator + service, printing every call event, until cancelled (or ``duration``)."""
    async with _simulated_pbx(port=port, rate=rate, seed=seed, speed=speed) as server:
        pbx = PbxSettings(name="demo", port=server.port, username=DEMO_USER, secret=DEMO_SECRET)
        service = CtiService(Settings(pbxs=(pbx,)), [ConsoleSink()])
        print(
            f"cti demo: simulated Asterisk AMI on 127.0.0.1:{server.port} (user {DEMO_USER}, "
            f"secret {DEMO_SECRET}); about {rate:g} calls/minute.\n"
            "The service follows it over AMI and prints one line per call event. Ctrl-C stops.",
            flush=True,
        )
        runner = asyncio.create_task(service.run())
        try:
            await _until(asyncio.Event(), duration)
        finally:
            await service.close()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
