"""A backlog of AMI events (a burst, a resync) is drained in slices: the socket readers, the
browsers' writers and the lookups get their turns meanwhile, and a service behind its PBX
says so once and sheds lookups (issue 21, overload)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from cti.agents import AgentDirectory
from cti.ami import AmiEvent
from cti.service import BEHIND, CtiService, PbxFollower
from cti.settings import PbxSettings, Settings
from tests.cti.test_service import wait_for

EVENTS = 20_000


def calls(count: int, waited: float = 0.0) -> list[AmiEvent]:
    """``count`` channels coming and going, read ``waited`` seconds ago."""
    read_at = time.time() - waited
    out = []
    for n in range(count // 2):
        base = {"Uniqueid": f"p-{n}.1", "Linkedid": f"p-{n}.1", "Channel": f"PJSIP/a-{n:08x}"}
        out.append(AmiEvent("paris", {"Event": "Newchannel", **base}, read_at))
        out.append(AmiEvent("paris", {"Event": "Hangup", **base}, read_at))
    return out


async def test_a_backlog_is_drained_in_slices_with_turns_for_the_rest() -> None:
    follower = PbxFollower(PbxSettings(name="paris"), AgentDirectory(), [])
    for event in calls(EVENTS):
        follower.queue.put_nowait(event)
    turns: list[int] = []  # events applied each time another task got the loop

    async def other_work() -> None:
        while follower.events_in < EVENTS:
            turns.append(follower.events_in)
            await asyncio.sleep(0)

    consumer = asyncio.create_task(follower.consume())
    try:
        async with asyncio.timeout(60):
            await other_work()
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert follower.events_in == EVENTS
    progress = [n for n in turns if 0 < n < EVENTS]
    assert len(progress) >= 10, turns[:20]  # many turns while the backlog drained, not one


async def test_behind_its_pbx_the_service_says_so_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cti.service")
    service = CtiService(Settings(pbxs=(PbxSettings(name="paris"),)))
    (follower,) = service.followers
    consumer = asyncio.create_task(follower.consume())
    try:
        for event in calls(200, waited=BEHIND * 4):  # read a second ago, taken only now
            follower.queue.put_nowait(event)
        await wait_for(lambda: follower.events_in == 200)
        assert service.behind("paris") and follower.lag >= BEHIND
        assert not service.behind("lyon")  # another PBX's lag is its own
        for event in calls(20):  # fresh events: caught up
            follower.queue.put_nowait(event)
        await wait_for(lambda: follower.events_in == 220)
        assert not service.behind("paris")
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    said = [r.getMessage() for r in caplog.records if "behind its events" in r.getMessage()]
    assert len(said) == 1 and "customer lookups are skipped" in said[0]
    assert sum("caught up with its events" in r.getMessage() for r in caplog.records) == 1
