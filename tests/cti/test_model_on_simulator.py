"""Every simulator scenario through the live path (wire bytes → filtered decoder → model).

The simulator and the model were written separately from the same reference notes; this
cross-checks them on the scenarios the captures do not contain. Seeds vary the orderings the
captures show varying (OriginateResponse, AgentComplete shapes).
"""

from __future__ import annotations

import random

import pytest

from cti.calls import CallTracker, frame_filter
from cti.codec import AmiDecoder, encode
from cti.events import CallEnded, CallRecord, DomainEvent
from pbxsim.scenarios import AGENTS, SCENARIOS, Pbx, with_timestamp

# scenario → (outcome, queues, handled_by is non-empty, transfer types)
EXPECTED: dict[str, tuple[str, int, bool, tuple[str, ...]]] = {
    "answered": ("answered", 1, True, ()),
    "abandoned": ("abandoned", 1, False, ()),
    "ring_no_answer": ("answered", 1, True, ()),
    "ring_all": ("answered", 1, True, ()),
    "timeout": ("timeout", 1, False, ()),
    "leave_empty": ("leave_empty", 1, False, ()),
    "exit_key": ("exit_key", 1, False, ()),
    "redirect": ("redirected", 1, False, ()),
    "withdraw": ("withdrawn", 1, False, ()),
    "blind_transfer": ("answered", 1, True, ("blind",)),
    "blind_transfer_to_queue": ("answered", 2, True, ("blind",)),
    "attended_transfer": ("answered", 1, True, ("attended",)),
}


def play(name: str, seed: int) -> tuple[list[DomainEvent], list[CallRecord]]:
    pbx = Pbx("sim")
    rng = random.Random(seed)
    queue = "sales" if name == "ring_all" else "support"
    timed = SCENARIOS[name](
        pbx, rng, start=1_800_000_000.0, number="+8613800138000", name="张伟 O'Brien", queue=queue
    )
    wire = b"".join(
        encode(with_timestamp(event, 1_800_000_000.0 + offset, "sim"))
        for offset, event in sorted(timed, key=lambda pair: pair[0])
    )
    tracker = CallTracker("sim")
    for agent in AGENTS:  # what the QueueStatus snapshot of every login tells the model
        location = f"Local/{agent.exten}@agents/n"
        tracker.on_event({"Event": "QueueMember", "Name": agent.name, "Location": location})
    events: list[DomainEvent] = []
    for message in AmiDecoder(expect_banner=False, frame_filter=frame_filter).feed(wire):
        events += tracker.on_event(message)
    events += tracker.flush()
    assert tracker.active_calls() == []
    return events, [e.record for e in events if isinstance(e, CallEnded)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario_is_followed(name: str, seed: int) -> None:
    _, records = play(name, seed)
    (record,) = records
    outcome, queues, handled, transfers = EXPECTED[name]
    assert record.outcome == outcome
    assert len(record.queues) == queues
    assert bool(record.handled_by) is handled
    assert tuple(t.type for t in record.transfers) == transfers
    assert record.caller_number == "+8613800138000"
    assert record.caller_name == "张伟 O'Brien"
    assert record.flags in ((), ("merged",))
    if handled:
        assert record.talk_seconds is not None and record.talk_seconds > 0
    if transfers:
        assert len(record.handled_by) == 2
        assert record.transfers[0].from_agent == record.handled_by[0]
