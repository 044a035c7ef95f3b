"""A callback Originate is a real call in the simulator: the customer's trunk leg rings and
answers (or not) before ``OriginateResponse``, then the agent's phone rings with the
customer's number, as Asterisk 22 plays ``Originate Local/<number>@callbacks`` +
``Application: Dial``. Timings are read on the scenario's own clock (its offsets) or, live,
from the simulator's Timestamps at a known speed."""

from __future__ import annotations

import asyncio
import random

import pytest

from cti.agents import AgentDirectory
from cti.ami import AmiClient, AmiEvent, Item
from cti.callbacks import CallbackDialer, DialOutcome
from cti.calls import CallTracker
from cti.events import AgentRinging, CallAnswered, DomainEvent
from cti.settings import AgentSettings, FollowupSettings, PbxSettings
from pbxsim import AmiServer
from pbxsim.scenarios import AGENTS, CallbackRequest, Pbx, callback
from tests.support.screenpop import eventually

NUMBER = "+8613800138000"
ALICE = AGENTS[0]
SPEED = 20.0


def request(timeout: float = 30.0) -> CallbackRequest:
    return CallbackRequest(
        channel=f"Local/{NUMBER}@callbacks",
        data=f"{ALICE.interface},20",
        number=NUMBER,
        name="张伟",
        channel_id="cti-cb-7-abc",
        action_id="a1",
        timeout=timeout,
        variables=(("CTI_FOLLOWUP", "7"),),
    )


def first(events: list[tuple[float, dict[str, str]]], name: str, **match: str) -> float:
    return next(
        t for t, e in events if e["Event"] == name and all(e.get(k) == v for k, v in match.items())
    )


@pytest.mark.parametrize("seed", range(20))
def test_the_customer_rings_then_answers_then_the_agent_rings(seed: int) -> None:
    events = callback(Pbx("sim"), random.Random(seed), start=0.0, request=request())
    names = [e["Event"] for _t, e in events]
    assert events[0][1]["Event"] == "Newchannel" and events[0][1]["Uniqueid"] == "cti-cb-7-abc"
    assert events[1][1]["Uniqueid"] == "cti-cb-7-abc;2"
    assert {e["Linkedid"] for _t, e in events if "Linkedid" in e} == {"cti-cb-7-abc"}
    trunk_dialled = first(
        events, "DialBegin", DestChannelState="0", Channel=events[1][1]["Channel"]
    )
    response = first(events, "OriginateResponse")
    assert 2.0 <= response - trunk_dialled <= 8.5  # the customer's phone rang
    [answered] = [e for _t, e in events if e["Event"] == "OriginateResponse"]
    assert (answered["Response"], answered["Reason"], answered["Uniqueid"]) == (
        "Success",
        "4",
        "cti-cb-7-abc",
    )
    assert "Context" not in answered and answered["Application"] == "Dial"
    agent_dial = next(
        (t, e)
        for t, e in events
        if e["Event"] == "DialBegin" and e.get("DialString") == "1001@agents/n"
    )
    assert agent_dial[0] > response  # the agent is rung only once the customer answered
    assert agent_dial[1]["Channel"].endswith(";1") and agent_dial[1]["CallerIDNum"] == NUMBER
    rang = first(events, "DialEnd", DestChannel=agent_dial[1]["DestChannel"], DialStatus="ANSWER")
    assert 2.0 <= rang - agent_dial[0] <= 8.5
    assert names.count("BridgeEnter") == 4
    hangups = {e["Channel"] for _t, e in events if e["Event"] == "Hangup"}
    created = {e["Channel"] for _t, e in events if e["Event"] == "Newchannel"}
    assert hangups == created and len(created) == 5  # Local pair, trunk, member's pair


@pytest.mark.parametrize(("outcome", "reason"), [("busy", "5"), ("silent", "3")])
def test_a_customer_who_does_not_answer_fails_the_originate(outcome: str, reason: str) -> None:
    events = callback(
        Pbx("sim"),
        random.Random(1),
        start=0.0,
        request=request(12.0),
        outcome=outcome,  # type: ignore[arg-type]
    )
    at = first(events, "OriginateResponse")
    response = next(e for _t, e in events if e["Event"] == "OriginateResponse")
    assert (response["Response"], response["Reason"]) == ("Failure", reason)
    assert (response["Channel"], response["Uniqueid"]) == (
        f"Local/{NUMBER}@callbacks",
        "cti-cb-7-abc",
    )
    assert (at >= 12.0) == (outcome == "silent")
    assert not any(e.get("DialString") == "1001@agents/n" for _t, e in events)
    assert events[-1][1]["Event"] == "OriginateResponse"


async def dial_and_follow(server: AmiServer) -> tuple[DialOutcome, list[DomainEvent]]:
    """A real AmiClient and CallbackDialer against the simulator, the service's call model
    fed from the same connection; returns the dial's outcome and the model's events."""
    queue: asyncio.Queue[Item] = asyncio.Queue()
    ami = AmiClient(PbxSettings(name="sim", port=server.port, secret="cti-secret"), queue)
    runner = asyncio.create_task(ami.run())
    agents = [AgentSettings(id=a.name.lower(), members=(a.name, a.interface)) for a in AGENTS]
    tracker = CallTracker("sim", AgentDirectory(agents))
    seen: list[DomainEvent] = []

    async def follow() -> None:
        while True:
            item = await queue.get()
            if isinstance(item, AmiEvent):
                seen.extend(tracker.on_event(item.message, item.received_at))

    follower = asyncio.create_task(follow())
    try:
        await eventually(lambda: ami.connected)
        dialer = CallbackDialer({"sim": ami}, agents, FollowupSettings(ring_seconds=10.0))
        outcome = await dialer.place(
            "sim",
            number=NUMBER,
            device=ALICE.interface,
            call_id="cti-cb-9-xyz",
            caller_name="张伟",
            followup_id=9,
        )
        await eventually(lambda: any(isinstance(e, CallAnswered) for e in seen), 10.0)
        return outcome, seen
    finally:
        follower.cancel()
        await ami.close()
        runner.cancel()
        await asyncio.gather(follower, runner, return_exceptions=True)


async def test_an_agent_dialling_a_callback_gets_the_customer_ringing() -> None:
    server = AmiServer(auth_delay=0.05, speed=SPEED)
    await server.start()
    try:
        outcome, seen = await dial_and_follow(server)
    finally:
        await server.stop()
    assert outcome == DialOutcome("reached", "the customer answered")
    [ringing] = [e for e in seen if isinstance(e, AgentRinging)]
    assert (ringing.call_id, ringing.agent, ringing.caller_number) == (
        "cti-cb-9-xyz",
        "alice",
        NUMBER,
    )


@pytest.mark.parametrize(
    ("rule", "result"), [("busy_devices", "busy"), ("silent_devices", "no_answer")]
)
async def test_the_followup_result_follows_the_customer(rule: str, result: str) -> None:
    server = AmiServer(auth_delay=0.05, speed=SPEED)
    getattr(server, rule).add(f"Local/{NUMBER}@callbacks")
    await server.start()
    queue: asyncio.Queue[Item] = asyncio.Queue()
    ami = AmiClient(PbxSettings(name="sim", port=server.port, secret="cti-secret"), queue)
    runner = asyncio.create_task(ami.run())
    try:
        await eventually(lambda: ami.connected)
        agents = [AgentSettings(id="alice", members=("Alice", ALICE.interface))]
        dialer = CallbackDialer({"sim": ami}, agents, FollowupSettings(ring_seconds=10.0))
        outcome = await dialer.place(
            "sim",
            number=NUMBER,
            device=ALICE.interface,
            call_id="c",
            caller_name="x",
            followup_id=1,
        )
    finally:
        await ami.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await server.stop()
    assert outcome.result == result
    assert server.live.channels == {}  # every channel of the failed call is gone
