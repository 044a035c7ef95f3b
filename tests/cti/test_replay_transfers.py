"""Replay of the real Asterisk 22.10 recordings of AMI-driven transfers (tests/fixtures, copied
from shared/captures): a ``BlindTransfer`` of an answered queue call to the ``sales`` queue,
and an ``Atxfer`` consult through ``600@xfer`` (a Local channel whose other half runs
``Queue(sales)``) completed by hanging up the first agent.

Truth is the ``.expected.json`` beside each recording (what a correct model reports, written
with the recording), and the raw ``BlindTransfer`` / ``AttendedTransfer`` events, read here
without the call model, for when each transfer happened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cti.calls import CallTracker, Leg
from cti.codec import AmiDecoder
from cti.events import CallTransferred
from cti.replay import ReplayResult, replay_file

FIXTURES = Path(__file__).parent.parent / "fixtures"
RECORDINGS = ("transfer_blind_to_queue", "transfer_attended")


@pytest.fixture(scope="module", params=RECORDINGS)
def recording(request: pytest.FixtureRequest) -> tuple[str, ReplayResult, list[dict[str, Any]]]:
    name: str = request.param
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    return name, replay_file(FIXTURES / f"{name}.txt"), expected


def _raw_transfers(name: str) -> dict[str, list[tuple[str, float]]]:
    """Successful transfer events by the customer's Linkedid: (event, Timestamp)."""
    found: dict[str, list[tuple[str, float]]] = {}
    for msg in AmiDecoder().feed((FIXTURES / f"{name}.txt").read_bytes()):
        event = msg.get("Event")
        if event in ("BlindTransfer", "AttendedTransfer") and msg.get("Result") == "Success":
            found.setdefault(msg["TransfereeLinkedid"], []).append((event, float(msg["Timestamp"])))
    return found


def test_each_call_as_the_recording_says(
    recording: tuple[str, ReplayResult, list[dict[str, Any]]],
) -> None:
    _name, result, expected = recording
    assert result.problems == []
    assert result.unfinished == 0
    by_id = {r.call_id: r for r in result.records}
    assert sorted(by_id) == sorted(e["customer_linkedid"] for e in expected)
    for truth in expected:
        record = by_id[truth["customer_linkedid"]]
        got = {
            "caller_number": record.caller_number,
            "caller_name": record.caller_name,
            "queues": list(record.queues),
            "answered_by": record.answered_by,
            "agents_rung": list(record.agents_rung),
            "transfers": [
                {"type": t.type, "from_agent": t.from_agent, "to": t.to} for t in record.transfers
            ],
            "final_agent": record.handled_by[-1] if record.handled_by else None,
            "outcome": record.outcome,
        }
        assert got == {k: v for k, v in truth.items() if k != "customer_linkedid"}, truth


def test_each_transfer_at_its_event_and_told_once(
    recording: tuple[str, ReplayResult, list[dict[str, Any]]],
) -> None:
    name, result, _expected = recording
    raw = _raw_transfers(name)
    kind = {"BlindTransfer": "blind", "AttendedTransfer": "attended"}
    for record in result.records:
        assert [(t.type, t.at) for t in record.transfers] == [
            (kind[event], at) for event, at in raw.get(record.call_id, [])
        ]
        told = [
            e.transfer
            for e in result.events
            if isinstance(e, CallTransferred) and e.call_id == record.call_id
        ]
        assert told == list(record.transfers)
        # the agent who handed the call on and the one who took it both handled it
        for transfer in record.transfers:
            assert transfer.from_agent in record.handled_by


def test_the_leg_an_agent_acts_on_is_the_channel_asterisk_transferred() -> None:
    """Just before each real ``BlindTransfer``, the model names the channels it was done
    with: the answering agent's ``Local/…;1`` (the AMI action's Channel) and the caller's."""
    tracker = CallTracker("astlab")
    seen = 0
    data = (FIXTURES / "transfer_blind_to_queue.txt").read_bytes()
    for msg in AmiDecoder().feed(data):
        if msg.get("Event") == "BlindTransfer":
            call_id = msg["TransfereeLinkedid"]
            legs = {
                agent: leg
                for agent in ("Alice", "Bob", "Carol", "Dave", "Eve")
                if (leg := tracker.leg(call_id, agent)) is not None
            }
            assert list(legs.values()) == [
                Leg(msg["TransfererChannel"], msg["TransfereeChannel"])
            ], legs
            seen += 1
        tracker.on_event(msg)
    assert seen == 3
    # once the calls are over nobody has a leg to act on, on them or on a call never seen
    ended = {m["Linkedid"] for m in AmiDecoder().feed(data) if m.get("Event") == "Hangup"}
    assert len(ended) >= 3
    for call_id in [*ended, "astlab-0.0"]:
        assert all(tracker.leg(call_id, a) is None for a in ("Alice", "Bob", "Carol", "Dave"))
