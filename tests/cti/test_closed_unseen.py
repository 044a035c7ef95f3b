"""Calls closed unseen — 20,000 at a resync, or expired — are told in one summary line per
batch, not a console line each; their events still reach the pop and the board (issue 21,
item 4). Times come from the stream (or are given), never from the wall clock."""

from __future__ import annotations

import io
import logging

import pytest

from cti.agents import AgentDirectory
from cti.ami import AmiEvent, ResyncBegin, ResyncEnd
from cti.console import ConsoleSink, closed_summaries
from cti.events import CallEnded, CallRecord, DomainEvent
from cti.service import PbxFollower
from cti.settings import PbxSettings
from tests.cti.test_calls_expiry import AGE, N, never_ended
from tests.support.amistream import Stream


class Collector:
    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def publish(self, event: DomainEvent) -> None:
        self.events.append(event)


def follower_with(n: int) -> tuple[PbxFollower, io.StringIO, Collector, Stream]:
    """A follower of PBX ``lab`` that has seen ``n`` calls start and none end."""
    out, collector = io.StringIO(), Collector()
    s = Stream()
    never_ended(n, s)
    follower = PbxFollower(
        PbxSettings(name="lab", max_call_age=AGE),
        AgentDirectory(),
        [ConsoleSink(out, clock=lambda: s.now), collector],
    )
    for message in s.messages:
        follower._emit(follower.apply(AmiEvent("lab", message, s.now)))
    out.seek(0)
    out.truncate()
    return follower, out, collector, s


def summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "closed" in r.getMessage()]


def test_a_resync_closing_twenty_thousand_calls_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    follower, out, collector, s = follower_with(N)
    caplog.set_level(logging.INFO, logger="cti.service")
    follower._emit(follower.apply(ResyncBegin("lab", s.now)))
    follower._emit(follower.apply(ResyncEnd("lab", s.now + 60, complete=True)))
    ended = [e for e in collector.events if isinstance(e, CallEnded)]
    assert len(ended) == N  # every call's own event still reaches every sink
    assert out.getvalue() == ""  # and none prints a line of its own
    assert summaries(caplog) == [
        "PBX lab: resync: closed 20,000 calls ended while disconnected: lab-0.1, lab-1.1,"
        " lab-2.1, lab-3.1, lab-4.1 and 19,995 more"
    ]


def test_expired_calls_log_one_line_per_batch(caplog: pytest.LogCaptureFixture) -> None:
    follower, out, collector, s = follower_with(N)
    caplog.set_level(logging.INFO, logger="cti.service")
    s.messages.clear()
    s.ev("FullyBooted", Status="Fully Booted", dt=AGE + 300)  # hours later, an event
    for message in s.messages:
        follower._emit(follower.apply(AmiEvent("lab", message, s.now)))
    assert len([e for e in collector.events if isinstance(e, CallEnded)]) == N
    assert out.getvalue() == ""
    assert summaries(caplog) == [
        "PBX lab: expiry: closed 20,000 calls with no event for 1h: lab-0.1, lab-1.1,"
        " lab-2.1, lab-3.1, lab-4.1 and 19,995 more"
    ]


def record(call_id: str, *flags: str) -> CallRecord:
    return CallRecord(
        call_id, "lab", "", "", "", (), (), None, (), (), None, 1.0, None, None, None, None, None,
        flags,
    )  # fmt: skip


def test_summary_lines_name_a_few_ids_and_say_nothing_of_calls_seen_ending() -> None:
    events: list[DomainEvent] = [
        CallEnded("lab", "a", None, record("a", "ended_while_disconnected")),
        CallEnded("lab", "b", 5.0, record("b")),
        CallEnded("lab", "c", None, record("c", "merged", "expired")),
    ]
    assert closed_summaries(events, 4 * 3600) == [
        "resync: closed 1 call ended while disconnected: a",
        "expiry: closed 1 call with no event for 4h: c",
    ]
    assert closed_summaries(events[1:2], 90) == []
    out = io.StringIO()
    sink = ConsoleSink(out, clock=lambda: 10.0)
    for event in events:
        sink.publish(event)
    assert out.getvalue().count("\n") == 1 and "] b  ended at " in out.getvalue()
