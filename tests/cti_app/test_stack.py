"""The assembled product (:func:`cti_app.stack.run_stack`), in-process against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from cti.events import CallEnded, DomainEvent
from cti.settings import IvrSettings, PbxSettings, Settings, StoreSettings, WebSettings
from cti_app.stack import Ready, run_stack
from pbxsim import SCENARIOS, AmiServer
from tests.support.screenpop import ROOT, accounts


async def test_start_up_objects_are_frozen_out_of_the_collectors_reach(tmp_path: Path) -> None:
    server = AmiServer(auth_delay=0.0)
    await server.start()
    settings = Settings(
        pbxs=(PbxSettings(name="sim", port=server.port, secret=server.secret),),
        store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}"),
    )
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_stack(
            settings, accounts=None, on_ready=lambda at: ready.set_result(gc.get_freeze_count())
        )
    )
    try:
        assert await asyncio.wait_for(ready, 10) > 50_000  # modules, settings, the app
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()
        await server.stop()


class Collector:
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def publish(self, event: DomainEvent) -> None:
        self.events.append(event)


@contextlib.asynccontextmanager
async def foreign_peer() -> AsyncIterator[int]:
    """A TCP service that is not an Asterisk manager (its banner is SSH's); yields its port."""

    async def ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        with contextlib.suppress(ConnectionError):
            await reader.read(100)
        writer.close()

    server = await asyncio.start_server(ssh, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def quick(name: str, port: int, secret: str) -> PbxSettings:
    return PbxSettings(
        name=name,
        port=port,
        secret=secret,
        backoff_initial=0.05,
        backoff_max=0.2,
        refused_backoff=0.2,
    )


async def test_a_refusing_pbx_and_a_foreign_peer_stop_nothing_else(tmp_path: Path) -> None:
    """F20: one PBX refuses our login, another address is not an Asterisk at all; the good
    PBX's calls still reach the model, the agent page and FastAGI stay up, and both bad
    links keep being retried."""
    good = AmiServer(auth_delay=0.0)
    refusing = AmiServer(auth_delay=0.0, system_name="sim2")
    await good.start()
    await refusing.start()
    sink = Collector()
    async with foreign_peer() as foreign_port:
        settings = Settings(
            pbxs=(
                quick("good", good.port, good.secret),
                quick("refusing", refusing.port, "wrong-secret"),
                quick("foreign", foreign_port, "any"),
            ),
            store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}"),
            web=WebSettings(port=0, dispositions_file=str(ROOT / "config" / "dispositions.toml")),
            ivr=IvrSettings(port=0, menus_dir=str(ROOT / "config" / "ivr")),
        )
        ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        stack = asyncio.create_task(
            run_stack(settings, accounts=accounts(), sinks=[sink], on_ready=ready.set_result)
        )
        try:
            at = await asyncio.wait_for(ready, 10)
            async with asyncio.timeout(10):
                while refusing.failed_logins < 2 or not good.clients:
                    assert not stack.done(), stack
                    await asyncio.sleep(0.02)
            events = SCENARIOS["answered"](
                good.pbx, random.Random(1), start=time.time(), number="+33140000001", name="Ann"
            )
            await good.play(events, speed=0)
            async with asyncio.timeout(10):
                while not any(isinstance(e, CallEnded) for e in sink.events):
                    assert not stack.done(), stack
                    await asyncio.sleep(0.02)
            assert not stack.done()
            async with aiohttp.ClientSession() as http, http.get(f"{at.agent_page}login") as page:
                assert page.status == 200
            assert at.agi is not None
            _, writer = await asyncio.open_connection(*at.agi)  # FastAGI still listens
            writer.close()
        finally:
            stack.cancel()
            await asyncio.gather(stack, return_exceptions=True)
            gc.unfreeze()
            await good.stop()
            await refusing.stop()
    (ended,) = [e for e in sink.events if isinstance(e, CallEnded)]
    assert (ended.record.pbx, ended.record.caller_number) == ("good", "+33140000001")
    assert refusing.logins == 0
