"""Calls whose hang-ups never come are expired after ``max_call_age`` without an event, so
the model's state stays bounded (issue 21, item 4). Time is fed explicitly: never the clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cti.calls import _GONE_MAX, _IDLE_CHECK_EVERY, CallTracker
from cti.codec import Message
from cti.events import AgentRingStopped, CallEnded, CallMerged, DomainEvent
from cti.settings import SettingsError, load
from tests.support.amistream import Chan, Stream

AGE = 3600.0
N = 20_000
ALICE_IF = "PJSIP/1001"


def never_ended(n: int, s: Stream) -> None:
    """``n`` calls in four shapes, none of which ever hangs up: waiting in a queue, ringing
    an agent, answered by a queue agent (held in the member map), and one re-keyed to a
    second Linkedid (an alias)."""
    for i in range(n):
        caller = Chan(f"PJSIP/trunk-{i:08x}", f"lab-{i}.1", f"lab-{i}.1", f"+49301{i:06d}")
        leg = Chan(f"PJSIP/1001-{i:08x}", f"lab-{i}.2", f"lab-{i}.1", caller.num)
        shape = i % 4
        if shape == 2:
            s.queue_call_answered(caller, leg, "support", "Alice", ALICE_IF, f"b{i}")
            continue
        s.ev("Newchannel", caller.but(state="Ring").snap())
        s.ev("QueueCallerJoin", caller.snap(), Queue="support", Position="1", Count="1")
        if shape == 1:
            s.ring(caller, leg, "support", "Alice", ALICE_IF)
        elif shape == 3:
            s.ev("NewConnectedLine", caller.but(linked=f"lab-{i}.9").snap())


def feed(tracker: CallTracker, messages: list[Message]) -> list[DomainEvent]:
    events: list[DomainEvent] = []
    for message in messages:
        events += tracker.on_event(message)
    return events


def sizes(tracker: CallTracker) -> dict[str, int]:
    return {
        "channels": len(tracker._channels),
        "calls": len(tracker._calls),
        "aliases": len(tracker._by_linkedid),
        "connected": len(tracker._connected),
        "closing": len(tracker._closing),
    }


def test_twenty_thousand_never_ended_calls_expire_and_every_map_empties() -> None:
    s = Stream()
    never_ended(N, s)
    tracker = CallTracker("lab", max_call_age=AGE)
    started = feed(tracker, s.messages)
    assert not [e for e in started if isinstance(e, CallEnded)]
    before = sizes(tracker)
    assert before["calls"] == N and before["channels"] == N + N // 2
    assert before["aliases"] == N + N // 4 and before["connected"] == 1  # one member, one slot

    first = float(s.messages[0]["Timestamp"])
    assert tracker.expire(first + AGE - 1) == []  # none old enough yet: nothing ends
    began = time.perf_counter()
    events = tracker.expire(s.now + AGE + _IDLE_CHECK_EVERY)  # looked at once a minute
    took = time.perf_counter() - began

    ended = [e for e in events if isinstance(e, CallEnded)]
    assert len(ended) == N and len({e.call_id for e in ended}) == N
    assert sizes(tracker) == dict.fromkeys(before, 0)
    assert len(tracker._gone) <= _GONE_MAX  # ids kept to ignore late events: capped
    assert tracker.active_calls() == []
    assert tracker.anomalies["call_expired"] == N
    for event in ended:
        record = event.record
        assert "expired" in record.flags
        assert (event.at, record.ended_at) == (None, None)  # nobody saw it end
        # what was seen is kept; nothing is invented for the rest
        assert record.outcome == ("answered" if record.answered_by else None)
    stops = [e for e in events if isinstance(e, AgentRingStopped)]
    assert len(stops) == N // 4 and {e.reason for e in stops} == {"canceled"}
    assert took < 5.0, f"expiring {N} calls took {took:.2f}s"


def test_a_busy_stream_expires_stale_calls_without_expire_being_called() -> None:
    """The service calls expire() only when its queue is quiet: under steady traffic the
    events' own times must do it."""
    s = Stream()
    never_ended(100, s)
    tracker = CallTracker("lab", max_call_age=AGE)
    feed(tracker, s.messages)
    s.messages.clear()
    live = Chan("PJSIP/trunk-live", "live.1", "live.1", "+4930555")
    s.ev("Newchannel", live.snap(), dt=AGE / 2)
    for _ in range(4):
        s.ev("Newstate", live.snap(), dt=AGE / 4)  # one event every 15 minutes
    events = feed(tracker, s.messages)
    assert len([e for e in events if isinstance(e, CallEnded)]) == 100
    assert [c.call_id for c in tracker.active_calls()] == ["live.1"]  # its events kept it


def test_a_call_with_events_is_never_expired_however_long() -> None:
    s = Stream()
    caller = Chan("PJSIP/trunk-1", "lab-1.1", "lab-1.1", "+4930555")
    leg = Chan("PJSIP/1001-1", "lab-1.2", "lab-1.1", "+4930555")
    s.queue_call_answered(caller, leg, "support", "Alice", ALICE_IF, "b1")
    tracker = CallTracker("lab", max_call_age=AGE)
    for _ in range(10):
        s.ev("Hold", leg.snap(), dt=AGE - 1)
        s.ev("Unhold", leg.snap())
    events = feed(tracker, s.messages)
    events += tracker.expire(s.now + AGE - _IDLE_CHECK_EVERY)
    assert not [e for e in events if isinstance(e, CallEnded)]
    (ended,) = [e for e in tracker.expire(s.now + AGE + 1) if isinstance(e, CallEnded)]
    assert ended.record.flags[0] == "expired"
    assert (ended.record.outcome, ended.record.answered_by) == ("answered", "Alice")
    assert ended.record.talk_seconds is None  # its end was not seen: no talk time made up


def test_a_merged_call_leaves_no_alias_behind_when_it_expires() -> None:
    s = Stream()
    caller = Chan("PJSIP/trunk-1", "lab-1.1", "lab-1.1", "+4930555")
    other = Chan("PJSIP/trunk-2", "lab-2.1", "lab-2.1", "+4930556")
    s.ev("Newchannel", caller.snap())
    s.ev("Newchannel", other.snap())
    s.ev("NewConnectedLine", other.but(linked="lab-1.1").snap())  # bridges merged
    tracker = CallTracker("lab", max_call_age=AGE)
    events = feed(tracker, s.messages)
    assert [e.absorbed_call_id for e in events if isinstance(e, CallMerged)] == ["lab-2.1"]
    (ended,) = [e for e in tracker.expire(s.now + AGE + 1) if isinstance(e, CallEnded)]
    assert ended.record.flags == ("merged", "expired")
    assert sizes(tracker) == dict.fromkeys(sizes(tracker), 0)


def test_max_call_age_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_call_age"):
        CallTracker("lab", max_call_age=0)


def test_max_call_age_is_a_pbx_setting(tmp_path: Path) -> None:
    path = tmp_path / "cti.toml"
    path.write_text("[pbx.paris]\nmax_call_age = 7200\n")
    (pbx,) = load(path, env={}).pbxs
    assert pbx.max_call_age == 7200.0
    assert load(None, env={}).pbxs[0].max_call_age == 4 * 3600.0  # the default: 4 hours
    path.write_text("[pbx.paris]\nmax_call_age = 0\n")
    with pytest.raises(SettingsError, match=r"\[pbx.paris\]: max_call_age must be positive"):
        load(path, env={})
