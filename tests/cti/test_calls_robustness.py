"""The call model on odd input: attaching mid-call, duplicates, unknown and malformed events."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from cti.calls import CallTracker, frame_filter
from cti.codec import AmiDecoder, Message
from cti.events import AgentRinging, CallEnded, CallStarted, DomainEvent
from cti.replay import replay_file

FIXTURES = Path(__file__).parent.parent / "fixtures"
CAPTURES = ["capture_10calls", "capture_extra", "capture_agi_down"]


def _messages(name: str) -> list[Message]:
    return AmiDecoder(frame_filter=frame_filter).feed((FIXTURES / f"{name}.txt").read_bytes())


def _run(messages: list[Message]) -> list[DomainEvent]:
    tracker = CallTracker("astlab")
    events: list[DomainEvent] = []
    for message in messages:
        events += tracker.on_event(message)
    return events + tracker.flush()


def _check_invariants(events: list[DomainEvent]) -> None:
    started = Counter(e.call_id for e in events if isinstance(e, CallStarted))
    ended = Counter(e.call_id for e in events if isinstance(e, CallEnded))
    assert all(n == 1 for n in started.values())
    assert all(n == 1 for n in ended.values())
    assert set(ended) <= set(started)


@pytest.mark.parametrize("name", CAPTURES)
def test_every_suffix_replays_without_error(name: str) -> None:
    """Attaching at any point of a real stream never crashes and never duplicates a call."""
    messages = _messages(name)
    full = {e.call_id: e.record for e in _run(messages) if isinstance(e, CallEnded)}
    for start in range(len(messages)):
        events = _run(messages[start:])
        _check_invariants(events)
        for event in events:
            if isinstance(event, CallEnded) and "joined_mid_call" not in event.record.flags:
                # a call seen from its first event is reported exactly as in the full replay
                assert event.record == full[event.call_id]


@pytest.mark.parametrize("name", CAPTURES)
def test_every_message_twice_changes_nothing(name: str) -> None:
    """Duplicated events (F9) are idempotent: same records, one ring event per ring."""
    messages = _messages(name)
    once = _run(messages)
    twice = _run([m for m in messages for _ in range(2)])
    records = [e.record for e in once if isinstance(e, CallEnded)]
    assert [e.record for e in twice if isinstance(e, CallEnded)] == records
    rings = [(e.call_id, e.agent) for e in once if isinstance(e, AgentRinging)]
    assert [(e.call_id, e.agent) for e in twice if isinstance(e, AgentRinging)] == rings


def test_unknown_events_and_channels_are_harmless() -> None:
    tracker = CallTracker()
    assert tracker.on_event({"Event": "SomethingNew", "Foo": "bar"}) == []
    assert tracker.on_event({"Response": "Success"}) == []
    assert tracker.on_event({"Event": "Hangup", "Uniqueid": "nope"}) == []
    assert tracker.on_event({"Event": "AgentComplete", "Queue": "q", "MemberName": "x"}) == []
    assert (
        tracker.on_event({"Event": "DialEnd", "DestUniqueid": "zz", "DialStatus": "CANCEL"}) == []
    )
    assert tracker.on_event({"Event": "QueueCallerJoin", "Queue": "q"}) == []
    assert tracker.anomalies["hangup_unknown_channel"] == 1
    assert tracker.active_calls() == []


def test_malformed_numbers_in_fields_do_not_raise() -> None:
    tracker = CallTracker()
    base = {"Uniqueid": "1.1", "Linkedid": "1.1", "Channel": "PJSIP/a-00000001"}
    tracker.on_event({"Event": "Newchannel", "Timestamp": "not-a-time", **base})
    events = tracker.on_event(
        {"Event": "QueueCallerJoin", "Queue": "q", "Position": "x", "Count": "", **base}
    )
    assert [type(e).__name__ for e in events] == ["CallQueued"]
    abandon = {"Event": "QueueCallerAbandon", "Queue": "q", "HoldTime": "??", **base}
    tracker.on_event({"Event": "HangupRequest", **base})
    (event,) = tracker.on_event(abandon)
    assert event.hold_seconds is None  # type: ignore[attr-defined]


def test_caller_names_are_unescaped() -> None:
    tracker = CallTracker()
    base = {"Uniqueid": "1.1", "Linkedid": "1.1", "Channel": "PJSIP/a-00000001"}
    tracker.on_event(
        {
            "Event": "Newchannel",
            "CallerIDNum": "+8613800138000",
            "CallerIDName": 'O\\\'Brien \\"张伟\\" 😀',
            **base,
        }
    )
    (record,) = tracker.active_calls()
    assert record.caller_name == 'O\'Brien "张伟" 😀'
    assert record.caller_number == "+8613800138000"


def test_frame_filter_keeps_queue_exit_reasons_only() -> None:
    assert frame_filter(b"Event: VarSet\r\nVariable: QUEUESTATUS\r\nValue: TIMEOUT")
    assert not frame_filter(b"Event: VarSet\r\nVariable: RTPAUDIOQOS\r\nValue: x")
    assert not frame_filter(b"Event: Newexten\nChannel: x")
    assert frame_filter(b"Event: Hangup\r\nChannel: x")


def test_replayed_calls_carry_the_pbx_name() -> None:
    result = replay_file(FIXTURES / "capture_10calls.txt", pbx="paris")
    assert {r.pbx for r in result.records} == {"paris"}
    assert {e.pbx for e in result.events} == {"paris"}


def test_mutated_capture_messages_never_raise() -> None:
    """Fields dropped or replaced by junk (F8): the model shrugs, the stream goes on."""
    rng = random.Random(7)
    junk = ["", "<unknown>", "\x00", "-1", "nan", "9" * 40, "张伟", "a: b", "x\\"]
    messages = _messages("capture_extra") + _messages("capture_10calls")
    tracker = CallTracker("astlab")
    for message in messages * 3:
        mutated = dict(message)
        for key in rng.sample(sorted(mutated), k=min(3, len(mutated))):
            if rng.random() < 0.5:
                del mutated[key]
            else:
                mutated[key] = rng.choice(junk)
        tracker.on_event(mutated)
    tracker.flush()
    # the tracker is not corrupted: a clean capture it has not seen replays exactly
    events = [e for m in _messages("capture_agi_down") for e in tracker.on_event(m)]
    events += tracker.flush()
    ended = [
        (e.record.caller_name, e.record.answered_by) for e in events if isinstance(e, CallEnded)
    ]
    assert ended == [("Bob Buyer", "Dave"), ("Alice Customer", "Carol"), ("Carla Client", "Alice")]
