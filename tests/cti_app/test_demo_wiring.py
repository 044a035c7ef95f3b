"""How ``cti demo`` wires the simulator: a plausible load, callbacks at the demo's pace,
calls from the service's login on."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping

from cti.codec import encode
from cti_app.cli import build_parser
from cti_app.demo import DEMO_SECRET, DEMO_USER, _simulated_pbx
from cti_app.seed import seed_demo, simulated_callers

SPEED = 20.0


async def _login(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(encode({"Action": "Login", "Username": DEMO_USER, "Secret": DEMO_SECRET}))
    return reader, writer


async def test_a_callback_in_the_demo_rings_at_the_demo_speed() -> None:
    """The customer's phone rings 2-8 s before OriginateResponse: at 20x, 0.1 s at least
    (an AmiServer without the demo's speed answers at once)."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[float] = loop.create_future()

    def observe(event: Mapping[str, str]) -> None:
        if event.get("ActionID") == "cb-1" and event["Event"] == "OriginateResponse":
            answered.set_result(loop.time())

    async with _simulated_pbx(port=0, rate=0.01, seed=1, speed=SPEED) as server:
        server.observers.append(observe)
        _reader, writer = await _login(server.port)
        sent = loop.time()
        writer.write(
            encode(
                {
                    "Action": "Originate",
                    "ActionID": "cb-1",
                    "Channel": "Local/+8613800138000@callbacks",
                    "Application": "Dial",
                    "Data": "Local/1001@agents/n,20",
                    "CallerID": '"张伟" <+8613800138000>',
                    "Async": "true",
                }
            )
        )
        async with asyncio.timeout(5):
            at = await answered
        writer.close()
    assert at - sent >= 2.0 / SPEED


async def test_the_demo_places_its_first_call_once_its_service_logged_in() -> None:
    """The demo's service sees its first call from the first event (not joined_mid_call)."""
    emitted: list[str] = []
    called = asyncio.Event()

    def observe(event: Mapping[str, str]) -> None:
        emitted.append(event["Event"])
        if event["Event"] == "Newchannel":
            called.set()

    pbx = _simulated_pbx(port=0, rate=600.0, seed=1, speed=SPEED, after_login=True)
    async with pbx as server:
        server.observers.append(observe)
        await asyncio.sleep(0.3)  # the first call would be well under way
        assert emitted == []
        _reader, writer = await _login(server.port)
        async with asyncio.timeout(5):
            await called.wait()
        writer.close()
    assert emitted[0] == "SuccessfulAuth"
    assert emitted[1] in ("Newchannel", "OriginateResponse")  # the first call's first event


def test_the_demo_runs_four_calls_a_minute_by_default_and_seeds_for_them() -> None:
    """Five agents carry four calls a minute (about half a minute each of ring, talk and
    wrap-up) with green queues (tests/pbxsim/test_traffic_realism.py); seed-demo must seed
    the callers of that same rate for the demo's calls to find them."""
    parser = build_parser()
    rates = {cmd: parser.parse_args([cmd]).rate for cmd in ("demo", "simulate", "seed-demo")}
    assert rates == {"demo": 4.0, "simulate": 4.0, "seed-demo": 4.0}
    assert inspect.signature(seed_demo).parameters["simulator_rate"].default == 4.0
    assert inspect.signature(simulated_callers).parameters["rate_per_minute"].default == 4.0
