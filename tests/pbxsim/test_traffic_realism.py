"""The simulator's traffic behaves like a call center run by Asterisk's queue rules: phones
ring a few seconds before the answer, a member rests for the queue's wrapuptime after a
call, and at a load its members can carry, callers are served quickly and few hang up.

Everything runs on the planner's virtual clock (no wall time): calls are planned as
``run_traffic`` plans them, and their events are merged by time as a client receives them.
"""

from __future__ import annotations

import random

import pytest

from cti.agents import AgentDirectory
from cti.board import Board
from cti.calls import CallTracker, frame_filter
from cti.codec import encode
from cti.events import AgentRinging, CallAnswered, DomainEvent
from cti.settings import AgentSettings
from pbxsim.scenarios import AGENTS, QUEUES, Pbx, TimedEvent, with_timestamp
from pbxsim.traffic import _Planner

START = 1_800_000_000.0


def planned(minutes: float, rate: float, seed: int = 1) -> list[tuple[float, dict[str, str]]]:
    """The events of ``minutes`` of traffic at ``rate`` calls a minute, in time order."""
    rng = random.Random(seed)
    planner = _Planner(Pbx("sim"), rng, None)
    merged: list[tuple[float, int, int, dict[str, str]]] = []
    clock, n = START, 0
    while clock < START + minutes * 60:
        events: list[TimedEvent] = planner.next_call(clock)
        merged += [(clock + off, n, i, e) for i, (off, e) in enumerate(events)]
        n += 1
        clock += rng.expovariate(rate / 60.0)
    merged.sort(key=lambda item: item[:3])
    return [(at, with_timestamp(e, at, "sim")) for at, _n, _i, e in merged]


def domain_events(stream: list[tuple[float, dict[str, str]]]) -> list[DomainEvent]:
    """What the service's call model makes of the stream (the frames it reads)."""
    agents = [AgentSettings(id=a.name.lower(), members=(a.name, a.interface)) for a in AGENTS]
    tracker = CallTracker("sim", AgentDirectory(agents))
    out: list[DomainEvent] = []
    for at, event in stream:
        if frame_filter(encode(event)):
            out += tracker.on_event(event, at) + tracker.expire(at)
    return out + tracker.flush()


def test_a_member_rings_a_few_seconds_before_answering() -> None:
    rings: dict[tuple[str, str], float] = {}
    waited: list[float] = []
    for event in domain_events(planned(30, 5)):
        if isinstance(event, AgentRinging) and event.at is not None:
            rings[event.call_id, event.agent] = event.at
        elif isinstance(event, CallAnswered) and event.at is not None:
            rang = rings.get((event.call_id, event.agent))
            if rang is not None:
                waited.append(event.at - rang)
    assert len(waited) > 100
    assert min(waited) >= 2.0 and max(waited) <= 8.5
    assert 4.0 <= sum(waited) / len(waited) <= 6.0


def test_a_member_is_not_rung_during_wrap_up() -> None:
    wrapup = {q.name: q.wrapuptime for q in QUEUES}
    assert min(wrapup.values()) > 0
    done: dict[str, float] = {}  # member -> when their last queue call ended (+ wrap-up)
    talking: dict[str, str] = {}  # member -> queue of the call in progress
    checked = 0
    for at, event in planned(30, 5):
        name = event["Event"]
        if name == "AgentConnect":
            talking[event["MemberName"]] = event["Queue"]
        elif name == "AgentComplete":
            queue = talking.pop(event["MemberName"], event["Queue"])
            done[event["MemberName"]] = at + wrapup[queue] - 1.0  # hangups follow at once
        elif name == "AgentCalled" and event["MemberName"] in done:
            assert at >= done[event["MemberName"]], event["MemberName"]
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("seed", [1, 2])
def test_the_default_mix_at_a_plausible_load_keeps_queues_green(seed: int) -> None:
    """Five members, four calls a minute of about half a minute each (ring, talk, wrap-up):
    most callers are answered within the service level (20 s) and few hang up, as the
    wallboard shows it."""
    stream = planned(60, 4, seed)
    board = Board()
    for event in domain_events(stream):
        board.publish(event)
    figures = board.snapshot(stream[-1][0])["total"]["figures"]["1h"]
    assert figures["offered"] > 200
    assert figures["service_level"] >= 80.0
    assert figures["abandon_rate"] <= 5.0
