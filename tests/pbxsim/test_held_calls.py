"""Held calls of the simulator (pbxsim.held): answered queue calls that wait for the agent's
call controls, and the AMI BlindTransfer/Hangup actions that move or end them, read back
through our real call model and compared with the Asterisk 22.10 transfer recording."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest

from cti.calls import CallTracker, frame_filter
from cti.codec import AmiDecoder, encode, frame
from cti.events import CallEnded, CallRecord, Transfer
from pbxsim import scenarios as sc
from pbxsim.held import QUEUE_CONTEXT, HeldCall
from pbxsim.server import AmiServer

RECORDING = Path("/work/shared/captures/asterisk-22.10/transfer_blind_to_queue.txt")
# dialplan and bookkeeping events, and what only the PBX's other channels do
NOISE = {
    "VarSet",
    "Newexten",
    "Cdr",
    "DeviceStateChange",
    "QueueMemberStatus",
    "Unhold",
    "NewCallerid",
    "NewConnectedLine",
    "Newstate",
    "AGIExecStart",
    "AGIExecEnd",
}

Events = list[dict[str, str]]


class Peer:
    """A raw AMI client: writes actions, reads whole messages with our decoder."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = AmiDecoder()
        self.pending: Events = []

    @classmethod
    async def open(cls, port: int) -> Peer:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, **fields: str) -> None:
        self.writer.write(encode(fields))

    async def until(
        self, pred: Callable[[dict[str, str]], bool], within: float = 2.0
    ) -> dict[str, str]:
        async with asyncio.timeout(within):
            while True:
                while not self.pending:
                    data = await self.reader.read(65536)
                    if not data:
                        raise EOFError
                    self.pending += self.decoder.feed(data)
                msg = self.pending.pop(0)
                if pred(msg):
                    return msg

    async def action(self, name: str, aid: str, **fields: str) -> dict[str, str]:
        """Send an action; its response (the one carrying ``aid``)."""
        self.send(Action=name, ActionID=aid, **fields)
        return await self.until(lambda m: "Response" in m and m.get("ActionID") == aid)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server() -> AsyncIterator[AmiServer]:
    srv = AmiServer(auth_delay=0.05, system_name="sim")
    srv.rng = random.Random(5)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
def emitted(server: AmiServer) -> Events:
    events: Events = []
    server.observers.append(lambda e: events.append(dict(e)))
    return events


@pytest.fixture
async def peer(server: AmiServer) -> AsyncIterator[Peer]:
    p = await Peer.open(server.port)
    p.send(Action="Login", Username="cti", Secret="cti-secret", Events="off", ActionID="l1")
    login = await p.until(lambda m: "Response" in m)
    assert login["Message"] == "Authentication accepted"
    yield p
    p.close()


def model(events: Iterable[dict[str, str]]) -> list[CallRecord]:
    """The events as the service reads them: wire bytes, our decoder, the call model."""
    decoder = AmiDecoder(expect_banner=False, frame_filter=frame_filter)
    tracker = CallTracker("sim")
    out = []
    for message in decoder.feed(b"".join(frame(e) for e in events)):
        out += tracker.on_event(message, None)
    out += tracker.flush()
    return [e.record for e in out if isinstance(e, CallEnded)]


def caller_sequence(events: Events, caller: str) -> list[str]:
    """The caller channel's event names from BlindTransfer to the next AgentConnect."""
    seq: list[str] = []
    for e in events:
        if caller not in (e.get("Channel"), e.get("TransfereeChannel")):
            continue
        if e["Event"] == "BlindTransfer" or seq:
            if e["Event"] not in NOISE:
                seq.append(e["Event"])
            if e["Event"] == "AgentConnect":
                break
    return seq


def first_seen(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def recorded_transfer() -> tuple[list[str], dict[str, str]]:
    msgs = AmiDecoder(expect_banner=False).feed(RECORDING.read_bytes())
    transfer = next(m for m in msgs if m.get("Event") == "BlindTransfer")
    return caller_sequence(msgs, transfer["TransfereeChannel"]), transfer


async def held_call(server: AmiServer, agent: str | None = None) -> HeldCall:
    held = server.hold_call(number="+15550200001", name="Hannah Blind-One", agent=agent)
    await held.wait_held()
    assert held.state == "held"
    return held


def without_time(transfers: Iterable[Transfer]) -> tuple[Transfer, ...]:
    return tuple(dataclasses.replace(t, at=None) for t in transfers)


# -- a held call ------------------------------------------------------------------------------
async def test_held_call_is_answered_and_waits(server: AmiServer, emitted: Events) -> None:
    held = await held_call(server, agent="Bob")
    assert held.agent == "Bob" and held.queue == "support"
    assert held.agent_channel.startswith("Local/1002@agents-") and held.agent_channel.endswith(";1")
    assert held.caller_channel.endswith(";2") and "@incoming-" in held.caller_channel
    connect = next(e for e in emitted if e["Event"] == "AgentConnect")
    assert connect["DestChannel"] == held.agent_channel
    assert connect["Channel"] == held.caller_channel and connect["Linkedid"] == held.call_id
    bridged = {e["Channel"] for e in emitted if e["Event"] == "BridgeEnter"}
    assert bridged == {held.agent_channel, held.caller_channel}
    assert not any(e["Event"] == "Hangup" for e in emitted)
    assert not held.ended.is_set()
    assert server.held.find(held.agent_channel) is held
    assert server.held.find(held.agent_channel.upper()) is held  # names match in any case
    assert model(emitted) == []  # nothing ended


async def test_blind_transfer_to_queue_as_recorded(
    server: AmiServer, peer: Peer, emitted: Events
) -> None:
    held = await held_call(server, agent="Alice")
    first, first_channel, caller = held.agent, held.agent_channel, held.caller_channel
    reply = await peer.action(
        "BlindTransfer", "bt-1", Channel=first_channel, Exten="sales", Context=QUEUE_CONTEXT
    )
    assert reply == {"Response": "Success", "ActionID": "bt-1", "Message": "Transfer succeeded"}
    await held.wait_held()
    second = held.agent
    assert held.state == "held" and held.queue == "sales" and held.queues == ["support", "sales"]
    assert second != first and held.agent_channel != first_channel
    assert held.caller_channel == caller
    assert server.held.find(first_channel) is None and server.held.find(held.agent_channel) is held

    xfer = next(e for e in emitted if e["Event"] == "BlindTransfer")
    assert xfer["Result"] == "Success" and xfer["IsExternal"] == "Yes"
    assert (xfer["TransfererChannel"], xfer["TransfereeChannel"]) == (first_channel, caller)
    assert (xfer["Context"], xfer["Extension"]) == ("incoming", "sales")
    at = emitted.index(xfer)
    assert emitted[at + 1]["Event"] == "AgentComplete"
    assert emitted[at + 1]["Reason"] == "transfer"
    gone = [e for e in emitted[at:] if e["Event"] == "Hangup"]
    assert {e["Channel"] for e in gone} == {first_channel, first_channel[:-1] + "2"}
    joins = [e for e in emitted if e["Event"] == "QueueCallerJoin"]
    assert [(j["Queue"], j["Channel"]) for j in joins] == [("support", caller), ("sales", caller)]

    # the caller channel's events around the transfer, against the real recording: the lab's
    # sales queue (ringall) rang three members at once, the sim rings the one who answers
    recorded, rec_xfer = recorded_transfer()
    simulated = caller_sequence(emitted, caller)
    assert (
        simulated[:4]
        == recorded[:4]
        == [
            "BlindTransfer",
            "AgentComplete",
            "BridgeLeave",
            "QueueCallerJoin",
        ]
    )
    assert first_seen(simulated) == first_seen(recorded)
    assert simulated == first_seen(recorded)  # the sim's own: each step once
    assert (rec_xfer["Context"], rec_xfer["Extension"]) == (xfer["Context"], xfer["Extension"])
    assert rec_xfer["IsExternal"] == xfer["IsExternal"]

    reply = await peer.action("Hangup", "h-1", Channel=held.agent_channel)
    assert reply["Message"] == "Channel Hungup"
    await asyncio.wait_for(held.wait_ended(), 2)
    (record,) = model(emitted)
    assert record.call_id == held.call_id
    assert without_time(record.transfers) == (Transfer("blind", first, "sales"),)
    assert record.queues == ("support", "sales")
    assert record.handled_by[-1] == second and record.answered_by == first
    assert record.outcome == "answered" and record.ended_at is not None


async def test_two_transfers_keep_one_call(server: AmiServer, peer: Peer, emitted: Events) -> None:
    held = await held_call(server, agent="Carol")
    for aid, queue in (("a", "sales"), ("b", "support")):
        reply = await peer.action(
            "BlindTransfer", aid, Channel=held.agent_channel, Exten=queue, Context="incoming"
        )
        assert reply["Message"] == "Transfer succeeded"
        await held.wait_held()
    reply = await peer.action("Hangup", "h", Channel=held.caller_channel)
    assert reply["Message"] == "Channel Hungup"
    await asyncio.wait_for(held.wait_ended(), 2)
    (record,) = model(emitted)
    assert record.queues == ("support", "sales", "support")
    assert [t.to for t in record.transfers] == ["sales", "support"]
    assert record.outcome == "answered"


async def test_transfer_to_an_extension_that_does_not_exist(
    server: AmiServer, peer: Peer, emitted: Events
) -> None:
    held = await held_call(server)
    channel = held.agent_channel
    # no Context: the channel's own (agents), where the sim has no extensions
    reply = await peer.action("BlindTransfer", "x", Channel=channel, Exten="sales")
    assert reply["Message"] == "Transfer succeeded"
    await asyncio.wait_for(held.wait_ended(), 2)
    xfer = next(e for e in emitted if e["Event"] == "BlindTransfer")
    assert (xfer["Context"], xfer["Extension"]) == ("agents", "sales")
    after = emitted[emitted.index(xfer) :]
    caller_hangup = next(
        e for e in after if e["Event"] == "Hangup" and e["Channel"] == held.caller_channel
    )
    assert caller_hangup["Cause"] == "1"
    assert caller_hangup["Cause-txt"] == "Unallocated (unassigned) number"
    assert not any(e["Event"] == "QueueCallerJoin" for e in after)
    assert server.held.calls() == [] and not server.live.channels
    (record,) = model(emitted)
    assert record.outcome == "answered" and record.ended_at is not None
    reply = await peer.action("BlindTransfer", "y", Channel=channel, Exten="1", Context="x")
    assert reply["Message"] == "Channel specified does not exist"


@pytest.mark.parametrize("context", ["incoming", "transfer", "agents"])
async def test_only_the_queue_context_reaches_a_queue(
    server: AmiServer, peer: Peer, emitted: Events, context: str
) -> None:
    held = await held_call(server)
    reply = await peer.action(
        "BlindTransfer", "x", Channel=held.agent_channel, Exten="nobody", Context=context
    )
    assert reply["Response"] == "Success"
    await asyncio.wait_for(held.wait_ended(), 2)
    assert [e["Queue"] for e in emitted if e["Event"] == "QueueCallerJoin"] == ["support"]


# -- hangups ----------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["agent", "agent;2", "caller", "customer"])
async def test_hangup_ends_the_call(
    server: AmiServer, peer: Peer, emitted: Events, side: str
) -> None:
    held = await held_call(server, agent="Dave")
    channel = {
        "agent": held.agent_channel,
        "agent;2": held.agent_channel[:-1] + "2",
        "caller": held.caller_channel,
        "customer": held.customer_channel,
    }[side]
    reply = await peer.action("Hangup", "h-9", Channel=channel)
    assert reply == {"Response": "Success", "ActionID": "h-9", "Message": "Channel Hungup"}
    await asyncio.wait_for(held.wait_ended(), 2)
    assert held.state == "ended" and server.held.calls() == []
    assert not server.live.channels  # every channel of the call is gone
    (record,) = model(emitted)
    assert record.call_id == held.call_id
    assert record.outcome == "answered" and record.ended_at is not None
    assert record.handled_by == ("Dave",) and record.transfers == ()
    reasons = [e["Reason"] for e in emitted if e["Event"] == "AgentComplete"]
    assert reasons == ["agent" if side.startswith("agent") else "caller"]
    again = await peer.action("Hangup", "h-10", Channel=channel)
    assert again["Message"] == "No such channel"


async def test_hangup_cause_goes_on_the_channels_hangup(
    server: AmiServer, peer: Peer, emitted: Events
) -> None:
    held = await held_call(server)
    reply = await peer.action("Hangup", "h", Channel=held.caller_channel, Cause="17")
    assert reply["Message"] == "Channel Hungup"
    await asyncio.wait_for(held.wait_ended(), 2)
    (hangup,) = [
        e for e in emitted if e["Event"] == "Hangup" and e["Channel"] == held.caller_channel
    ]
    assert (hangup["Cause"], hangup["Cause-txt"]) == ("17", "User busy")


# -- error answers ----------------------------------------------------------------------------
async def test_error_answers(server: AmiServer, peer: Peer) -> None:
    held = await held_call(server)
    cases: list[tuple[str, dict[str, str], str]] = [
        ("BlindTransfer", {"Exten": "sales"}, "No channel specified"),
        ("BlindTransfer", {"Channel": held.agent_channel}, "No extension specified"),
        ("BlindTransfer", {"Channel": held.agent_channel, "Exten": ""}, "No extension specified"),
        (
            "BlindTransfer",
            {"Channel": "Local/1009@agents-000000ff;1", "Exten": "sales"},
            "Channel specified does not exist",
        ),
        # in the bridge, but the sim only lets the member's side transfer
        ("BlindTransfer", {"Channel": held.caller_channel, "Exten": "sales"}, "Transfer invalid"),
        # not in a bridge (the customer leg and the member's ;2 run Wait())
        ("BlindTransfer", {"Channel": held.customer_channel, "Exten": "sales"}, "Transfer invalid"),
        (
            "BlindTransfer",
            {"Channel": held.agent_channel[:-1] + "2", "Exten": "sales"},
            "Transfer invalid",
        ),
        ("Hangup", {}, "No channel specified"),
        ("Hangup", {"Channel": ""}, "No channel specified"),
        ("Hangup", {"Channel": "PJSIP/nobody-00000001"}, "No such channel"),
    ]
    for n, (action, fields, message) in enumerate(cases):
        reply = await peer.action(action, f"e-{n}", **fields)
        assert reply == {"Response": "Error", "ActionID": f"e-{n}", "Message": message}, (
            action,
            fields,
        )
    assert held.state == "held" and not held.ended.is_set()  # nothing happened to the call


async def test_scripted_calls_are_not_moved(server: AmiServer, peer: Peer) -> None:
    """A scripted call's channels exist but are not the sim's to move or end."""
    timed = sc.answered(
        server.pbx, random.Random(3), start=time.time(), number="+15550100001", name="A"
    )
    events = [e for _, e in timed]
    connect = next(i for i, e in enumerate(events) if e["Event"] == "AgentConnect")
    bridged = connect + next(
        i for i, e in enumerate(events[connect:]) if e["Event"] == "BridgeEnter"
    )
    for event in events[: bridged + 2]:
        server.emit(event)
    agent_channel = events[connect]["DestChannel"]
    reply = await peer.action("BlindTransfer", "s-1", Channel=agent_channel, Exten="sales")
    assert reply["Message"] == "Transfer invalid"
    reply = await peer.action("Hangup", "s-2", Channel=agent_channel)
    assert reply["Message"] == "No such channel"


async def test_restart_forgets_held_calls(server: AmiServer, peer: Peer) -> None:
    held = await held_call(server)
    server.reset_state()
    assert held.ended.is_set() and server.held.calls() == []
    reply = await peer.action("Hangup", "r", Channel=held.agent_channel)
    assert reply["Message"] == "No such channel"


async def test_hold_call_checks_its_arguments(server: AmiServer) -> None:
    with pytest.raises(ValueError, match="unknown queue"):
        server.hold_call(number="1", name=None, queue="nope")
    with pytest.raises(ValueError, match="not a member"):
        server.hold_call(number="1", name=None, queue="sales", agent="Alice")


async def test_an_action_during_a_transfer_waits_for_it(
    server: AmiServer, peer: Peer, emitted: Events
) -> None:
    """At speed > 0 the new member rings for a while; a hang-up sent meanwhile is played
    after the answer, never in the middle of the transfer's events."""
    server.speed = 20.0  # the 2 s ring takes 0.1 s
    held = await held_call(server, agent="Alice")
    reply = await peer.action(
        "BlindTransfer", "t", Channel=held.agent_channel, Exten="sales", Context="incoming"
    )
    assert reply["Message"] == "Transfer succeeded"
    await asyncio.sleep(0.02)
    assert held.state == "moving"
    reply = await peer.action("Hangup", "h", Channel=held.caller_channel)
    assert reply["Message"] == "Channel Hungup"
    await asyncio.wait_for(held.wait_ended(), 3)
    names = [e["Event"] for e in emitted]
    connects = [i for i, n in enumerate(names) if n == "AgentConnect"]
    completes = [i for i, n in enumerate(names) if n == "AgentComplete"]
    assert len(connects) == 2 and len(completes) == 2
    assert connects[0] < completes[0] < connects[1] < completes[1]
    assert emitted[completes[1]]["Reason"] == "caller"
    (record,) = model(emitted)
    assert record.queues == ("support", "sales") and record.outcome == "answered"


async def test_a_caller_with_a_talk_limit_hangs_up_on_each_member_in_turn(
    server: AmiServer, peer: Peer, emitted: Events
) -> None:
    """``talk``: the caller hangs up on whoever has them that long after the answer (a
    demo's held calls end by themselves); a transfer gives the next member their own talk."""
    server.speed = 1.0  # real time: the talk is 0.6 s from each answer
    held = server.hold_call(
        number="+15550200001", name="Hannah", agent="Alice", talk=0.6, ring=0.05
    )
    await held.wait_held()
    reply = await peer.action(
        "BlindTransfer", "t-1", Channel=held.agent_channel, Exten="sales", Context="incoming"
    )
    assert reply["Message"] == "Transfer succeeded"
    await held.wait_held()  # Alice's talk limit passes meanwhile: it is not hers any more
    second = held.agent
    assert second != "Alice" and held.state == "held"
    await asyncio.wait_for(held.wait_ended(), 5)
    (record,) = model(emitted)
    assert record.handled_by == ("Alice", second)
    reasons = [e["Reason"] for e in emitted if e["Event"] == "AgentComplete"]
    assert reasons == ["transfer", "caller"]  # the caller hung up on the second member
    forever = server.hold_call(number="+15550200002", name="Ida", agent="Bob", ring=0.05)
    await forever.wait_held()
    await asyncio.sleep(0.8)
    assert forever.state == "held"  # no talk limit: held until an action
