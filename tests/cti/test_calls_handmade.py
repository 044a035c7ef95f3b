"""Queue exits, transfers and reconnects on hand-made streams (see tests/amistream.py).

These sequences are not in the shared captures; their shapes come from the reference notes
(app_queue.c, stasis_bridges.c) and were not confirmed on a real PBX. What was not confirmed:
the exact interleaving of QUEUESTATUS with other channels' events, the REFER-less (DTMF)
blind transfer order, and the Linkedid change of the target after an attended transfer being
visible on its next event (taken from a recorded chan_sip/click-to-dial case in the notes).
"""

from __future__ import annotations

import pytest

from cti.calls import CallTracker
from cti.events import (
    AgentRinging,
    AgentRingStopped,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallMerged,
    CallQueued,
    CallRecord,
    CallTransferred,
    DomainEvent,
    Transfer,
)
from cti.replay import replay
from tests.support.amistream import Chan, Stream

CALLER = Chan("PJSIP/trunk-00000001", "lab-100.1", "lab-100.1", "+4930123456", "José Núñez")
ALICE = Chan("PJSIP/1001-00000002", "lab-100.2", "lab-100.1", "+4930123456", "José Núñez")
BOB_IF, ALICE_IF, CAROL_IF = "PJSIP/1002", "PJSIP/1001", "PJSIP/1003"


def run(stream: Stream) -> tuple[list[DomainEvent], list[CallRecord]]:
    tracker = CallTracker("lab")
    events: list[DomainEvent] = []
    for message in stream.messages:
        events += tracker.on_event(message)
    events += tracker.flush()
    return events, [e.record for e in events if isinstance(e, CallEnded)]


def leave_queue(stream: Stream, hold: str, dt: float = 0.001) -> None:
    """QueueCallerAbandon then QueueCallerLeave, the order app_queue sends them in."""
    stream.ev(
        "QueueCallerAbandon",
        CALLER.snap(),
        Queue="support",
        Position="1",
        OriginalPosition="1",
        HoldTime=hold,
        dt=dt,
    )
    stream.ev("QueueCallerLeave", CALLER.snap(), Queue="support", Position="1", Count="0")


def waiting_caller(stream: Stream) -> None:
    stream.ev("Newchannel", CALLER.but(state="Ring").snap())
    stream.ev("QueueCallerJoin", CALLER.snap(), Queue="support", Position="1", Count="1")


@pytest.mark.parametrize(
    ("status", "reason"),
    [("TIMEOUT", "timeout"), ("LEAVEEMPTY", "leave_empty"), ("WITHDRAW", "withdrawn")],
)
def test_exit_reason_from_queuestatus(status: str, reason: str) -> None:
    s = Stream()
    waiting_caller(s)
    leave_queue(s, hold="30", dt=30)
    s.ev("VarSet", CALLER.snap(), Variable="QUEUESTATUS", Value=status)
    s.ev("Newexten", CALLER.snap(), Application="Voicemail", AppData="100")
    s.hangup(CALLER, "SoftHangupRequest")
    events, (record,) = run(s)
    (abandon,) = [e for e in events if isinstance(e, CallAbandoned)]
    assert (abandon.reason, abandon.queue, abandon.hold_seconds) == (reason, "support", 30.0)
    assert record.outcome == reason
    assert record.flags == ()


def test_withdraw_info_before_abandon_is_withdrawn() -> None:
    s = Stream()
    waiting_caller(s)
    s.ev("VarSet", CALLER.snap(), Variable="QUEUE_WITHDRAW_INFO", Value="callback")
    leave_queue(s, hold="12")
    s.hangup(CALLER, "SoftHangupRequest")
    _, (record,) = run(s)
    assert record.outcome == "withdrawn"


def test_timeout_without_dialplan_events_is_inferred_and_marked() -> None:
    s = Stream()
    waiting_caller(s)
    leave_queue(s, hold="60")
    s.hangup(CALLER, "SoftHangupRequest")
    _, (record,) = run(s)
    assert record.outcome == "timeout"
    assert record.flags == ("exit_reason_inferred",)


def test_redirect_out_of_queue() -> None:
    """AMI Redirect: ast_async_goto soft-hangs-up without publishing it; no QUEUESTATUS."""
    s = Stream()
    waiting_caller(s)
    leave_queue(s, hold="5")
    s.ev("VarSet", CALLER.snap(), Variable="QUEUEPOSITION", Value="1")
    s.ev("Newexten", CALLER.but(context="after-redirect").snap(), Application="Playback")
    s.hangup(CALLER, "SoftHangupRequest")
    events, (record,) = run(s)
    assert [e.reason for e in events if isinstance(e, CallAbandoned)] == ["redirected"]
    assert (record.outcome, record.flags) == ("redirected", ())


def test_system_hangup_of_a_waiting_caller_is_abandoned() -> None:
    """AMI Hangup / dialplan Hangup publish SoftHangupRequest before the abandon."""
    s = Stream()
    waiting_caller(s)
    s.ev("SoftHangupRequest", CALLER.snap(), Cause="16")
    leave_queue(s, hold="5")
    s.hangup(CALLER, request="")
    _, (record,) = run(s)
    assert record.outcome == "abandoned"


def test_exit_key_has_no_abandon_event() -> None:
    s = Stream()
    waiting_caller(s)
    s.ev("QueueCallerLeave", CALLER.snap(), Queue="support", Position="1", Count="0", dt=8)
    s.hangup(CALLER, "SoftHangupRequest")
    events, (record,) = run(s)
    (abandon,) = [e for e in events if isinstance(e, CallAbandoned)]
    assert abandon.reason == "exit_key"
    assert abandon.hold_seconds == pytest.approx(8.0)
    assert record.outcome == "exit_key"


def test_caller_hangs_up_while_agent_rings() -> None:
    s = Stream()
    waiting_caller(s)
    s.ring(CALLER, ALICE, "support", "Alice", ALICE_IF)
    s.ev("HangupRequest", CALLER.snap(), dt=2)
    for _ in range(2):  # app_queue publishes DialEnd CANCEL twice
        s.ev("DialEnd", CALLER.snap(), ALICE.snap("Dest"), DialStatus="CANCEL")
    s.hangup(ALICE, request="")
    leave_queue(s, hold="2")
    s.hangup(CALLER, "SoftHangupRequest")
    events, (record,) = run(s)
    stops = [(e.agent, e.reason) for e in events if isinstance(e, AgentRingStopped)]
    assert stops == [("Alice", "canceled")]
    assert record.outcome == "abandoned"
    assert record.agents_rung == ("Alice",)


def blind_transfer_stream(extension: str) -> Stream:
    s = Stream()
    s.ev(
        "QueueMemberStatus",
        Queue="support",
        MemberName="Bob",
        Interface=BOB_IF,
        StateInterface=BOB_IF,
        Status="1",
        Paused="0",
    )
    s.queue_call_answered(CALLER, ALICE, "support", "Alice", ALICE_IF, "b1")
    s.ev(
        "BlindTransfer",
        ALICE.snap("Transferer"),
        CALLER.snap("Transferee"),
        BridgeUniqueid="b1",
        BridgeType="basic",
        Result="Success",
        IsExternal="Yes",
        Context="agents",
        Extension=extension,
        dt=20,
    )
    s.ev("BridgeLeave", ALICE.snap(), BridgeUniqueid="b1")
    s.complete(CALLER, ALICE, "support", "Alice", ALICE_IF, "20", Reason="transfer")
    s.hangup(ALICE)
    s.ev("BridgeLeave", CALLER.snap(), BridgeUniqueid="b1")
    return s


def test_blind_transfer_to_another_agent() -> None:
    s = blind_transfer_stream("1002")
    bob = Chan("PJSIP/1002-00000003", "lab-100.3", "lab-100.1", "+4930123456", "José Núñez")
    s.ev("Newchannel", bob.but(state="Down").snap())
    s.ev("DialBegin", CALLER.snap(), bob.but(state="Down").snap("Dest"), DialString=BOB_IF)
    s.ev("DialEnd", CALLER.snap(), bob.snap("Dest"), DialStatus="ANSWER", dt=4)
    s.ev("BridgeCreate", BridgeUniqueid="b2")
    s.ev("BridgeEnter", bob.snap(), BridgeUniqueid="b2")
    s.ev("BridgeEnter", CALLER.snap(), BridgeUniqueid="b2")
    s.hangup(bob, dt=30)
    s.hangup(CALLER, "SoftHangupRequest")
    events, (record,) = run(s)
    assert record.handled_by == ("Alice", "Bob")
    assert record.answered_by == "Alice"
    assert [(t.type, t.from_agent, t.to) for t in record.transfers] == [("blind", "Alice", "1002")]
    assert record.outcome == "answered"
    assert record.talk_seconds == pytest.approx(20 + 30.001, abs=0.01)
    rings = [(e.agent, e.queue) for e in events if isinstance(e, AgentRinging)]
    assert rings == [("Alice", "support"), ("Bob", None)]
    kinds = [type(e).__name__ for e in events if e.call_id == record.call_id]
    assert kinds.index("CallTransferred") < kinds.index("CallEnded")
    assert len({e.call_id for e in events}) == 1


def test_blind_transfer_to_a_queue() -> None:
    s = blind_transfer_stream("5002")
    carol = Chan("PJSIP/1003-00000004", "lab-100.4", "lab-100.1", "+4930123456", "José Núñez")
    s.ev("QueueCallerJoin", CALLER.snap(), Queue="sales", Position="1", Count="1")
    s.ring(CALLER, carol, "sales", "Carol", CAROL_IF)
    s.ev("DialEnd", CALLER.snap(), carol.snap("Dest"), DialStatus="ANSWER", dt=6)
    s.ev("QueueCallerLeave", CALLER.snap(), Queue="sales", Position="1", Count="0")
    s.connect(CALLER, carol, "sales", "Carol", CAROL_IF, hold="6")
    s.hangup(CALLER, dt=40)
    s.complete(CALLER, carol, "sales", "Carol", CAROL_IF, "40", HoldTime="6")
    s.hangup(carol, "SoftHangupRequest")
    events, (record,) = run(s)
    assert record.queues == ("support", "sales")
    assert record.handled_by == ("Alice", "Carol")
    assert record.hold_seconds == 3.0  # the first wait, as Asterisk measured it
    assert record.talk_seconds == 60.0
    queued = [e.queue for e in events if isinstance(e, CallQueued)]
    assert queued == ["support", "sales"]
    assert [e.agent for e in events if isinstance(e, CallAnswered)] == ["Alice", "Carol"]


def test_attended_transfer_merges_the_consultation_into_the_call() -> None:
    s = Stream()
    s.ev(
        "QueueMemberStatus",
        Queue="support",
        MemberName="Bob",
        Interface=BOB_IF,
        StateInterface=BOB_IF,
        Status="1",
        Paused="0",
    )
    s.queue_call_answered(CALLER, ALICE, "support", "Alice", ALICE_IF, "b1")
    consult = Chan(
        "PJSIP/1001-00000003", "lab-200.3", "lab-200.3", "1001", "Alice", "Ring", "agents", "1002"
    )
    bob = Chan("PJSIP/1002-00000004", "lab-200.4", "lab-200.3", "1001", "Alice")
    s.ev("Hold", ALICE.snap(), dt=10)
    s.ev("Newchannel", consult.snap())
    s.ev("Newchannel", bob.but(state="Down").snap())
    s.ev("DialBegin", consult.snap(), bob.but(state="Down").snap("Dest"), DialString=BOB_IF)
    s.ev("DialEnd", consult.snap(), bob.snap("Dest"), DialStatus="ANSWER", dt=3)
    s.ev("BridgeCreate", BridgeUniqueid="b2")
    s.ev("BridgeEnter", bob.snap(), BridgeUniqueid="b2")
    s.ev("BridgeEnter", consult.but(state="Up").snap(), BridgeUniqueid="b2")
    s.ev("BridgeLeave", ALICE.snap(), BridgeUniqueid="b1", dt=15)
    s.ev("BridgeLeave", consult.but(state="Up").snap(), BridgeUniqueid="b2")
    s.ev("BridgeEnter", bob.snap(), BridgeUniqueid="b1")
    s.ev(
        "AttendedTransfer",
        ALICE.snap("OrigTransferer"),
        consult.but(state="Up").snap("SecondTransferer"),
        CALLER.snap("Transferee"),
        bob.snap("TransferTarget"),
        Result="Success",
        DestType="Bridge",
        DestBridgeUniqueid="b1",
        OrigBridgeUniqueid="b1",
        SecondBridgeUniqueid="b2",
        IsExternal="No",
    )
    s.ev("NewConnectedLine", bob.but(linked="lab-100.1").snap())  # Linkedid re-keyed now
    s.complete(CALLER, ALICE, "support", "Alice", ALICE_IF, "28", Reason="transfer")
    s.hangup(ALICE, "SoftHangupRequest")
    s.hangup(consult.but(state="Up"), "SoftHangupRequest")
    s.hangup(CALLER, dt=50)
    s.hangup(bob.but(linked="lab-100.1"), "SoftHangupRequest")
    events, records = run(s)
    (record,) = records
    assert record.call_id == "lab-100.1"
    assert record.handled_by == ("Alice", "Bob")
    assert [(t.type, t.from_agent, t.to) for t in record.transfers] == [
        ("attended", "Alice", "Bob")
    ]
    assert record.talk_seconds == pytest.approx(28 + 50.003, abs=0.01)
    (merged,) = [e for e in events if isinstance(e, CallMerged)]
    assert (merged.call_id, merged.absorbed_call_id) == ("lab-100.1", "lab-200.3")
    (transferred,) = [e for e in events if isinstance(e, CallTransferred)]
    assert transferred.transfer == Transfer("attended", "Alice", "Bob", transferred.at)
    # the consultation rang Bob under its own id; after the merge everything is one call
    assert [(e.call_id, e.agent) for e in events if isinstance(e, AgentRinging)] == [
        ("lab-100.1", "Alice"),
        ("lab-200.3", "Bob"),
    ]
    assert [e.call_id for e in events if isinstance(e, CallEnded)] == ["lab-100.1"]


def reconnect_stream() -> bytes:
    """Session 1 sees calls A (talking), B (waiting), C (ringing Alice); the link drops;
    B hangs up and D starts meanwhile; session 2 logs in and gets the snapshot."""
    a = Chan("PJSIP/trunk-0000000a", "lab-1.10", "lab-1.10", "+861380013800", "张伟")
    a_leg = Chan("PJSIP/1002-0000000b", "lab-1.11", "lab-1.10", "+861380013800", "张伟")
    b = Chan("PJSIP/trunk-0000000c", "lab-1.12", "lab-1.12", "0207946095", "B")
    c = Chan("PJSIP/trunk-0000000d", "lab-1.13", "lab-1.13", "13800138000", "C")
    c_leg = Chan("PJSIP/1001-0000000e", "lab-1.14", "lab-1.13", "13800138000", "C")
    d = Chan("PJSIP/trunk-0000000f", "lab-1.15", "lab-1.15", "+15550100001", "Dee")
    s = Stream()
    s.raw(Response="Success", ActionID="login", Message="Authentication accepted")
    s.queue_call_answered(a, a_leg, "support", "Bob", BOB_IF, "ba")
    s.ev("Newchannel", b.snap())
    s.ev("QueueCallerJoin", b.snap(), Queue="support", Position="1", Count="1")
    s.ev("Newchannel", c.snap())
    s.ev("QueueCallerJoin", c.snap(), Queue="support", Position="2", Count="2")
    s.ring(c, c_leg, "support", "Alice", ALICE_IF)
    first = s.to_bytes()
    s.messages.clear()
    s.now += 60
    s.raw(Response="Success", ActionID="login2", Message="Authentication accepted")
    s.ev("FullyBooted", Uptime="86400", LastReload="3600", Status="Fully Booted")
    s.raw(Response="Success", ActionID="cs", EventList="start", Message="Channels will follow")
    for chan, bridge, app in (
        (a, "ba", "Queue"),
        (a_leg, "ba", "AppQueue"),
        (c, "", "Queue"),
        (d, "", "Queue"),
    ):
        s.raw(
            Event="CoreShowChannel",
            ActionID="cs",
            **chan.snap(),
            Application=app,
            ApplicationData="support",
            Duration="00:01:00",
            BridgeId=bridge,
        )
    s.raw(Event="CoreShowChannelsComplete", ActionID="cs", EventList="Complete", ListItems="4")
    s.raw(Response="Success", ActionID="qs", EventList="start", Message="Queue status will follow")
    s.raw(
        Event="QueueMember",
        ActionID="qs",
        Queue="support",
        Name="Bob",
        Location=BOB_IF,
        StateInterface=BOB_IF,
        Status="2",
        Paused="0",
    )
    for position, chan, wait in ((1, c, "70"), (2, d, "25")):
        s.raw(
            Event="QueueEntry",
            ActionID="qs",
            Queue="support",
            Position=str(position),
            Channel=chan.name,
            Uniqueid=chan.uid,
            CallerIDNum=chan.num,
            CallerIDName=chan.cid,
            ConnectedLineNum="unknown",
            ConnectedLineName="unknown",
            Wait=wait,
            Priority="0",
        )
    s.raw(Event="QueueStatusComplete", ActionID="qs", EventList="Complete", ListItems="3")
    s.hangup(a, dt=5)
    s.complete(a, a_leg, "support", "Bob", BOB_IF, "65")
    s.hangup(a_leg, "SoftHangupRequest")
    return (
        b"Asterisk Call Manager/11.0.0\r\n"
        + first
        + (b"Asterisk Call Manager/11.0.0\r\n" + s.to_bytes())
    )


def test_reconnect_rebuilds_state_and_closes_what_ended_meanwhile() -> None:
    result = replay(reconnect_stream(), "lab")
    by_id = {r.call_id: r for r in result.records}
    gone = by_id["lab-1.12"]
    assert gone.flags == ("ended_while_disconnected",)
    assert (gone.outcome, gone.ended_at, gone.caller_number) == (None, None, "0207946095")
    talking = by_id["lab-1.10"]
    assert (talking.outcome, talking.answered_by, talking.caller_name) == (
        "answered",
        "Bob",
        "张伟",
    )
    assert (talking.flags, talking.talk_seconds) == ((), 65.0)
    assert set(by_id) == {"lab-1.10", "lab-1.12"}
    assert result.unfinished == 2  # C still waiting, D seen for the first time
    stops = [
        (e.call_id, e.agent, e.reason) for e in result.events if isinstance(e, AgentRingStopped)
    ]
    assert stops == [("lab-1.13", "Alice", "canceled")]  # its agent leg vanished
    queued = [(e.call_id, e.queue, e.at) for e in result.events if isinstance(e, CallQueued)]
    assert queued[-1][:2] == ("lab-1.15", "support")
    assert queued[-1][2] is not None
    assert not any(e.call_id == "lab-1.15" for e in result.events if isinstance(e, CallEnded))


def test_resync_that_failed_closes_nothing() -> None:
    tracker = CallTracker("lab")
    s = Stream()
    waiting_caller(s)
    for message in s.messages:
        tracker.on_event(message)
    tracker.begin_resync()
    assert tracker.end_resync(None, complete=False) == []
    assert len(tracker.active_calls()) == 1


def test_direct_dial_to_a_members_state_interface_rings_that_agent() -> None:
    """Local members ring a phone whose device is the member's StateInterface."""
    s = Stream()
    s.ev(
        "QueueMemberStatus",
        Queue="support",
        MemberName="Carol",
        Interface="Local/1003@agents/n",
        StateInterface="PJSIP/1003",
        Status="1",
        Paused="0",
    )
    caller = Chan("PJSIP/trunk-00000009", "lab-9.1", "lab-9.1", "02079460958", "O'Brien")
    phone = Chan("PJSIP/1003-0000000a", "lab-9.2", "lab-9.1", "02079460958", "O'Brien")
    s.ev("Newchannel", caller.snap())
    s.ev("Newchannel", phone.but(state="Down").snap())
    s.ev("DialBegin", caller.snap(), phone.but(state="Down").snap("Dest"), DialString="PJSIP/1003")
    s.ev("DialEnd", caller.snap(), phone.snap("Dest"), DialStatus="BUSY")
    s.hangup(phone, request="")
    s.hangup(caller)
    events, (record,) = run(s)
    assert [(e.agent, e.caller_name) for e in events if isinstance(e, AgentRinging)] == [
        ("Carol", "O'Brien")
    ]
    assert [(e.agent, e.reason) for e in events if isinstance(e, AgentRingStopped)] == [
        ("Carol", "busy")
    ]
    assert (record.outcome, record.caller_name, record.agents_rung) == (
        "busy",
        "O'Brien",
        ("Carol",),
    )
