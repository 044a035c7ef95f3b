"""Wrap-up pauses are the service's own: those an earlier run left in Asterisk are released."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path

import pytest

from cti.ami import AmiClient
from cti.events import FeedStatus
from cti.settings import AgentSettings, PbxSettings, Settings, StoreSettings
from cti.wrapup import QueuePauseWrapup
from cti_app.stack import run_stack
from tests.support.screenpop import PBX, eventually, simulated_pbx

AGENTS = tuple(
    AgentSettings(name.lower(), members=(name, f"Local/{ext}@agents/n"))
    for name, ext in [("Alice", 1001), ("Bob", 1002), ("Carol", 1003), ("Dave", 1004)]
)


async def pause(ami: AmiClient, ext: int, reason: str, queue: str | None = None) -> None:
    action = {"Action": "QueuePause", "Interface": f"Local/{ext}@agents/n", "Paused": "true"}
    action |= {"Reason": reason, **({"Queue": queue} if queue else {})}
    reply = await ami.send_action(action, timeout=5)
    assert isinstance(reply, dict) and reply["Response"] == "Success", reply


async def pauses(ami: AmiClient) -> dict[tuple[str, str], str | None]:
    """(member name, queue) -> pause reason, None when not paused, as Asterisk says now."""
    reply = await ami.send_action({"Action": "QueueStatus"}, timeout=5)
    assert isinstance(reply, list)
    return {
        (m["Name"], m["Queue"]): m["PausedReason"] if m["Paused"] == "1" else None
        for m in reply
        if m.get("Event") == "QueueMember"
    }


async def left_by_an_earlier_run(ami: AmiClient) -> None:
    """Alice and Bob held in wrap-up by a run that was killed; Carol too in support but at
    lunch in sales; Dave at lunch."""
    await pause(ami, 1001, "wrap-up")
    await pause(ami, 1002, "wrap-up")
    await pause(ami, 1003, "wrap-up", "support")
    await pause(ami, 1003, "lunch", "sales")
    await pause(ami, 1004, "lunch")


async def test_reconcile_releases_stale_wrapup_pauses_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with simulated_pbx() as (_, ami):
        await left_by_an_earlier_run(ami)
        holder = QueuePauseWrapup({PBX: ami}, AGENTS)
        holder.hold(PBX, "bob")  # this run holds Bob: he owes an outcome now
        await holder.close()
        with caplog.at_level(logging.INFO, logger="cti.wrapup"):
            holder.observe(FeedStatus(PBX, None, False))  # a link down: nothing to do
            holder.observe(FeedStatus(PBX, None, True))  # state rebuilt after a login
            await holder.close()
        assert await pauses(ami) == {
            ("Alice", "support"): None,
            ("Bob", "support"): "wrap-up",
            ("Carol", "support"): None,
            ("Carol", "sales"): "lunch",
            ("Dave", "support"): "lunch",
            ("Dave", "sales"): "lunch",
            ("Eve", "sales"): None,
        }
        assert [r.getMessage() for r in caplog.records] == [
            "wrap-up: released 2 agents paused by an earlier run: alice, carol"
        ]
        assert await holder.reconcile(PBX) == []  # nothing left to release


async def test_an_agent_held_while_the_link_was_down_is_paused_at_the_next_login(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hold (or a release) while the PBX is unreachable is not sent, nor logged per agent:
    the reconcile after the next login pauses whom the service holds and releases the rest."""
    async with simulated_pbx() as (server, ami):
        settings = PbxSettings(name=PBX, port=server.port, secret="cti-secret")
        away = AmiClient(settings, asyncio.Queue())  # never connected: the link is down
        holder = QueuePauseWrapup({PBX: away}, AGENTS)
        with caplog.at_level(logging.DEBUG, logger="cti.wrapup"):
            holder.hold(PBX, "alice")
            holder.hold(PBX, "bob")
            holder.release(PBX, "bob")
            await holder.close()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert await pauses(ami) == {
            ("Alice", "support"): None,
            ("Bob", "support"): None,
            ("Carol", "support"): None,
            ("Carol", "sales"): None,
            ("Dave", "support"): None,
            ("Dave", "sales"): None,
            ("Eve", "sales"): None,
        }
        link = asyncio.create_task(away.run())  # the link comes up
        try:
            await eventually(lambda: away.connected, within=10)
            assert await holder.reconcile(PBX) == []
            await holder.close()
        finally:
            await away.close()
            link.cancel()
            await asyncio.gather(link, return_exceptions=True)
        paused = await pauses(ami)
        assert paused[("Alice", "support")] == "wrap-up"
        assert paused[("Bob", "support")] is None  # released while away: nothing to undo


async def test_the_stack_releases_them_when_it_starts(tmp_path: Path) -> None:
    async with simulated_pbx() as (server, ami):
        await left_by_an_earlier_run(ami)
        settings = Settings(
            pbxs=(PbxSettings(name=PBX, port=server.port, secret=server.secret),),
            agents=AGENTS,
            store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}"),
        )
        stack = asyncio.create_task(run_stack(settings, accounts=None))
        try:
            deadline = time.monotonic() + 10
            while (state := await pauses(ami))[("Alice", "support")] is not None:
                assert time.monotonic() < deadline, "Alice is still paused"
                await asyncio.sleep(0.05)
            assert state[("Bob", "support")] is None
            assert state[("Carol", "sales")] == "lunch"
            assert state[("Dave", "support")] == "lunch"
        finally:
            stack.cancel()
            await asyncio.gather(stack, return_exceptions=True)
            gc.unfreeze()
