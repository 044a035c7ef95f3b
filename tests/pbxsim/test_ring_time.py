"""Live traffic decides who rings at the moment of ringing, as app_queue does: a member
paused, or on a call the plan did not know (a callback), after a call was planned is not
rung by it; the caller waits for a free member instead.

Seed 1's first call is planned for Alice (support, rrmemory), joins the queue about a
second after it starts and would wait minutes before hanging up. The simulator plays at
``SPEED`` times the virtual clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from pbxsim import AmiServer, run_traffic

SPEED = 20.0


def pause_all(server: AmiServer, paused: bool) -> None:
    """What QueuePause does to the members' state (without its events)."""
    for queue in server.live.queues.values():
        for member in queue.members.values():
            member["Paused"] = "1" if paused else "0"


class Watch:
    """The events the server emits, with a wake-up on the ones a test waits for."""

    def __init__(self, server: AmiServer) -> None:
        self.events: list[dict[str, str]] = []
        self.arrived = asyncio.Event()
        server.observers.append(self)

    def __call__(self, event: Mapping[str, str]) -> None:
        self.events.append(dict(event))
        self.arrived.set()

    async def first(self, name: str) -> dict[str, str]:
        async with asyncio.timeout(5):
            while True:
                found = [e for e in self.events if e["Event"] == name]
                if found:
                    return found[0]
                self.arrived.clear()
                await self.arrived.wait()


async def test_a_member_paused_after_the_call_was_planned_is_not_rung() -> None:
    server = AmiServer()
    watch = Watch(server)
    stop = asyncio.Event()
    traffic = asyncio.create_task(
        run_traffic(server, rate_per_minute=0.5, seed=1, stop=stop, speed=SPEED)
    )
    try:
        joined = await watch.first("QueueCallerJoin")
        pause_all(server, True)
        await asyncio.sleep(10 / SPEED)  # well past the planned ring
        assert [e for e in watch.events if e["Event"] == "AgentCalled"] == []
        pause_all(server, False)
        called = await watch.first("AgentCalled")
    finally:
        stop.set()
        await traffic
    assert called["Uniqueid"] == joined["Uniqueid"]  # the caller waited, then was rung


async def test_a_member_on_a_callback_is_not_rung() -> None:
    server = AmiServer()
    server.emit(
        {
            "Event": "Newchannel",
            "Privilege": "call,all",
            "Channel": "Local/1001@agents-000000ff;1",
            "ChannelState": "6",
            "Uniqueid": "cti-cb-7-abc",
            "Linkedid": "cti-cb-7-abc",
        }
    )
    watch = Watch(server)
    stop = asyncio.Event()
    traffic = asyncio.create_task(
        run_traffic(server, rate_per_minute=0.5, seed=1, stop=stop, speed=SPEED)
    )
    try:
        called = await watch.first("AgentCalled")
    finally:
        stop.set()
        await traffic
    assert (called["Queue"], called["MemberName"]) == ("support", "Bob")  # Alice is busy
