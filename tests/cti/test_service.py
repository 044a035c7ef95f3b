"""The whole CTI core over real loopback AMI: simulator → AmiClient → queue → model → sink.

Covers: calls flow and end with the right story; several PBXs each stamped with their name;
a reconnect rebuilds state (calls in progress appear, calls that ended while we were away are
closed and flagged, nothing invented); wrong credentials are that PBX's failure: `cti serve`
says why and keeps running.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cti.agents import AgentDirectory
from cti.ami import AmiEvent
from cti.children import preexec
from cti.events import CallEnded, CallQueued, CallStarted, DomainEvent
from cti.service import CtiService, PbxFollower
from cti.settings import PbxSettings, Settings
from pbxsim import SCENARIOS, AmiServer
from pbxsim.scenarios import TimedEvent


class Collector:
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def publish(self, event: DomainEvent) -> None:
        self.events.append(event)

    def ended(self) -> dict[str, CallEnded]:
        return {e.call_id: e for e in self.events if isinstance(e, CallEnded)}


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def pbx(name: str, server: AmiServer, secret: str = "cti-secret") -> PbxSettings:
    return PbxSettings(
        name=name,
        port=server.port,
        secret=secret,
        ping_interval=0.5,
        pong_timeout=0.5,
        backoff_initial=0.05,
        backoff_max=0.2,
    )


def scenario(server: AmiServer, name: str, number: str, seed: int = 1) -> list[TimedEvent]:
    return SCENARIOS[name](
        server.pbx, random.Random(seed), start=time.time(), number=number, name="José Núñez"
    )


@pytest.fixture
async def server() -> AsyncIterator[AmiServer]:
    srv = AmiServer(auth_delay=0.05)
    await srv.start()
    yield srv
    await srv.stop()


async def run_service(settings: Settings, sink: Collector) -> tuple[CtiService, asyncio.Task[None]]:
    service = CtiService(settings, [sink])
    task = asyncio.create_task(service.run())
    await wait_for(lambda: all(f.client.connected for f in service.followers))
    return service, task


async def stop_service(service: CtiService, task: asyncio.Task[None]) -> None:
    await service.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_calls_flow_end_to_end(server: AmiServer) -> None:
    sink = Collector()
    service, task = await run_service(Settings(pbxs=(pbx("paris", server),)), sink)
    try:
        await server.play(scenario(server, "ring_all", "+8613800138000"), speed=0)
        await server.play(scenario(server, "abandoned", "02079460958", seed=2), speed=0)
        await wait_for(lambda: len(sink.ended()) == 2)
    finally:
        await stop_service(service, task)
    records = sorted((e.record for e in sink.ended().values()), key=lambda r: r.started_at or 0)
    assert [(r.caller_number, r.outcome, r.pbx) for r in records] == [
        ("+8613800138000", "answered", "paris"),
        ("02079460958", "abandoned", "paris"),
    ]
    assert records[0].caller_name == "José Núñez"
    assert len(records[0].agents_rung) >= 2  # ring-all rang several members
    assert {e.pbx for e in sink.events} == {"paris"}


async def test_two_pbxs_each_carry_their_name(server: AmiServer) -> None:
    other = AmiServer(auth_delay=0.05, system_name="sim2")
    await other.start()
    sink = Collector()
    settings = Settings(pbxs=(pbx("paris", server), pbx("lyon", other)))
    service, task = await run_service(settings, sink)
    try:
        await server.play(scenario(server, "answered", "+33140000001"), speed=0)
        await other.play(scenario(other, "answered", "+33470000002"), speed=0)
        await wait_for(lambda: len(sink.ended()) == 2)
    finally:
        await stop_service(service, task)
        await other.stop()
    by_pbx = {e.record.pbx: e.record.caller_number for e in sink.ended().values()}
    assert by_pbx == {"paris": "+33140000001", "lyon": "+33470000002"}


def until(events: list[TimedEvent], name: str) -> tuple[list[TimedEvent], list[TimedEvent]]:
    """Split a scenario just after its first event called ``name``."""
    ordered = sorted(events, key=lambda pair: pair[0])
    cut = next(i for i, (_, e) in enumerate(ordered) if e["Event"] == name) + 1
    return ordered[:cut], ordered[cut:]


async def test_reconnect_rebuilds_state_from_asterisk(server: AmiServer) -> None:
    sink = Collector()
    service, task = await run_service(Settings(pbxs=(pbx("paris", server),)), sink)
    try:
        gone_head, gone_tail = until(scenario(server, "abandoned", "+4930111"), "QueueCallerJoin")
        await server.play(gone_head, speed=0)
        await wait_for(lambda: any(isinstance(e, CallQueued) for e in sink.events))
        gone_id = next(e.call_id for e in sink.events if isinstance(e, CallQueued))

        await server.stop()  # the link drops; Asterisk goes on without us
        await server.play(gone_tail, speed=0)  # the waiting caller hangs up meanwhile
        new_head, new_tail = until(scenario(server, "answered", "+4930222", 3), "QueueCallerJoin")
        await server.play(new_head, speed=0)  # a new caller starts waiting meanwhile
        await server.start()

        def new_call_queued() -> bool:
            return any(isinstance(e, CallQueued) and e.call_id != gone_id for e in sink.events)

        await wait_for(lambda: gone_id in sink.ended() and new_call_queued())
        await server.play(new_tail, speed=0)
        await wait_for(lambda: len(sink.ended()) == 2)
    finally:
        await stop_service(service, task)
    gone = sink.ended()[gone_id].record
    assert gone.flags == ("ended_while_disconnected",)
    assert (gone.outcome, gone.ended_at, gone.caller_number) == (None, None, "+4930111")
    (new,) = [e.record for e in sink.ended().values() if e.call_id != gone_id]
    assert (new.caller_number, new.outcome) == ("+4930222", "answered")
    assert "joined_mid_call" in new.flags and "state_from_resync" in new.flags
    starts = [e.call_id for e in sink.events if isinstance(e, CallStarted)]
    assert sorted(starts) == sorted({gone_id, new.call_id})  # nothing invented, no duplicate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_with_wrong_credentials_keeps_running_and_says_why(tmp_path: Path) -> None:
    """A refused login is that PBX's failure: `cti serve` logs it (PBX, user, never the
    secret), keeps running and retries; Ctrl-C still stops it cleanly."""
    port = free_port()
    simulator = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "cti", "simulate", "--port", str(port), "--rate", "1"),
        stdout=subprocess.PIPE,
        preexec_fn=preexec(),
    )
    serve: asyncio.subprocess.Process | None = None
    try:
        assert simulator.stdout is not None
        async with asyncio.timeout(20):
            assert b"PBX simulator: AMI on 127.0.0.1" in await simulator.stdout.readline()
        config = tmp_path / "cti.toml"
        config.write_text(f'[pbx.paris]\nport = {port}\nusername = "cti"\nsecret = "wrong-pw"\n')
        serve = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "cti", "serve", "--config", str(config)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,  # the default customer store lives in ./data
            preexec_fn=preexec(),
        )
        assert serve.stderr is not None
        seen: list[str] = []
        async with asyncio.timeout(30):
            while not any("login refused" in line for line in seen):
                line = (await serve.stderr.readline()).decode()
                assert line, f"cti serve ended: {seen}"
                seen.append(line)
        await asyncio.sleep(0.5)
        assert serve.returncode is None  # still serving
        serve.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            out, err = await serve.communicate()
    finally:
        for process in (serve, simulator):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    assert serve.returncode == 0
    (refused,) = [line for line in seen if "login refused" in line]
    assert "ERROR" in refused and "PBX paris" in refused and "user 'cti'" in refused
    assert "wrong-pw" not in "".join(seen) + err.decode() + out.decode()


async def test_consumer_survives_a_bad_message(caplog: pytest.LogCaptureFixture) -> None:
    """A junk Timestamp, or a model error on one message, costs that message only."""
    sink = Collector()
    follower = PbxFollower(PbxSettings(name="paris"), AgentDirectory(), [sink])
    original = follower.tracker.on_event

    def flaky(message: dict[str, str], received_at: float | None = None) -> list[DomainEvent]:
        if message.get("Event") == "Boom":
            raise RuntimeError("model bug")
        return original(message, received_at)

    follower.tracker.on_event = flaky  # type: ignore[method-assign]
    base = {"Uniqueid": "p-1.1", "Linkedid": "p-1.1", "Channel": "PJSIP/a-00000001"}
    for message in (
        {"Event": "Newchannel", "Timestamp": "junk", **base},
        {"Event": "Boom", **base},
        {"Event": "Hangup", "Timestamp": "1800000000.5", **base},
    ):
        follower.queue.put_nowait(AmiEvent("paris", message, time.time()))
    consumer = asyncio.create_task(follower.consume())
    try:
        await wait_for(lambda: len(sink.ended()) == 1)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert "could not apply Boom event" in caplog.text
