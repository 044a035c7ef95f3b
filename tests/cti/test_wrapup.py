"""An agent owing an outcome is held (QueuePause in Asterisk) until the outcome is saved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cti.ami import AmiClient, Item
from cti.events import AgentRinging, CallAnswered, CallEnded, CallRecord
from cti.settings import AgentSettings, PbxSettings
from cti.wrapup import QueuePauseWrapup
from pbxsim import AmiServer
from screenpop.cards import PopBook
from screenpop.hub import Hub
from screenpop.pipeline import PopService


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def hold(self, pbx: str, agent: str) -> None:
        self.calls.append(("hold", pbx, agent))

    def release(self, pbx: str, agent: str) -> None:
        self.calls.append(("release", pbx, agent))

    def adopt(self, pbx: str, agent: str) -> None:
        self.calls.append(("adopt", pbx, agent))


def now() -> datetime:
    return datetime.now(UTC)


def record(call_id: str) -> CallRecord:
    return CallRecord(
        call_id=call_id, pbx="p", caller_number="1", caller_name="", dialed="s", queues=("q",),
        agents_rung=("alice",), answered_by="alice", handled_by=("alice",), transfers=(),
        outcome="answered", started_at=1.0, queued_at=1.0, answered_at=2.0, ended_at=9.0,
        hold_seconds=1.0, talk_seconds=7.0, flags=(),
    )  # fmt: skip


def talk(pop: PopService, call_id: str) -> None:
    pop.publish(AgentRinging("p", call_id, 1.0, "alice", "Alice", "x", "q", "1", ""))
    pop.publish(CallAnswered("p", call_id, 2.0, "alice", "q", 1.0, 1.0))
    pop.publish(CallEnded("p", call_id, 9.0, record(call_id)))


def test_held_at_every_wrapup_until_the_last_outcome() -> None:
    """Each card entering wrap-up holds again (the agent may have unpaused in between);
    the hold ends with the last outcome owed."""
    hub, recorder = Hub(), Recorder()
    pop = PopService(PopBook(), hub, None, clock=now, wrapup=recorder)
    hub.subscribe("alice")  # the page is open
    talk(pop, "c1")
    talk(pop, "c2")
    held = [("hold", "p", "alice"), ("hold", "p", "alice")]
    assert recorder.calls == held
    pop.send(pop.book.outcome_saved("p", "c1", "alice"))
    assert recorder.calls == held
    pop.send(pop.book.outcome_saved("p", "c2", "alice"))
    assert recorder.calls == [*held, ("release", "p", "alice")]


def test_an_agent_without_the_page_open_is_not_held() -> None:
    recorder = Recorder()
    pop = PopService(PopBook(), Hub(), None, clock=now, wrapup=recorder)
    talk(pop, "c1")
    assert recorder.calls == []
    [card] = pop.book.cards_for("alice")  # the card says so, and may be dismissed
    assert (card.state, card.away) == ("wrapup", True)
    assert pop.dismiss("p", "c1", "alice") is True
    assert pop.book.cards_for("alice") == []
    assert pop.dismiss("p", "c1", "alice") is False


@pytest.fixture
async def client() -> AsyncIterator[tuple[AmiServer, AmiClient]]:
    server = AmiServer(auth_delay=0.05)
    await server.start()
    queue: asyncio.Queue[Item] = asyncio.Queue()
    ami = AmiClient(PbxSettings(name="p", port=server.port, secret="cti-secret"), queue)
    runner = asyncio.create_task(ami.run())
    for _ in range(500):
        if ami.connected:
            break
        await asyncio.sleep(0.01)
    yield server, ami
    await ami.close()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await server.stop()


async def paused(ami: AmiClient, interface: str) -> set[tuple[str, str]]:
    reply = await ami.send_action({"Action": "QueueStatus"}, timeout=5)
    items = reply if isinstance(reply, list) else [reply]
    return {
        (m.get("Paused", ""), m.get("PausedReason", ""))
        for m in items
        if m.get("Event") == "QueueMember" and m.get("Location") == interface
    }


async def test_queue_pause_reaches_asterisk(client: tuple[AmiServer, AmiClient]) -> None:
    _, ami = client
    interface = "Local/1001@agents/n"  # Alice in the simulator's queues
    wrapup = QueuePauseWrapup({"p": ami}, [AgentSettings("alice", members=("Alice", interface))])
    wrapup.hold("p", "alice")
    await wrapup.close()
    assert await paused(ami, interface) == {("1", "wrap-up")}
    wrapup.release("p", "alice")
    await wrapup.close()
    assert await paused(ami, interface) == {("0", "")}
    wrapup.hold("p", "nobody")  # no interface configured: nothing sent, nothing raised
    await wrapup.close()
