"""Replay of the real Asterisk 22.10 captures (tests/fixtures, copied from shared/captures).

Two independent sources of truth: the tables below (read off the captures by hand) and the
lab dialplan's own ``UserEvent: CallOutcome`` summary plus raw queue events, parsed here
without the call model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cti.children import preexec
from cti.codec import AmiDecoder
from cti.events import AgentRingStopped, CallRecord
from cti.replay import ReplayResult, replay_file

FIXTURES = Path(__file__).parent.parent / "fixtures"

# call_id, caller_number, caller_name, queue, agents_rung, answered_by, outcome, hold, talk
TEN_CALLS = [
    (
        "astlab-1795418875.0",
        "+15550100001",
        "Alice Customer",
        "support",
        ["Alice"],
        "Alice",
        "answered",
        0,
        4,
    ),
    (
        "astlab-1795418876.4",
        "+15550100002",
        "Bob Buyer",
        "support",
        ["Bob"],
        "Bob",
        "answered",
        0,
        3,
    ),
    (
        "astlab-1795418877.8",
        "+15550100003",
        "Carla Client",
        "support",
        ["Carol"],
        "Carol",
        "answered",
        0,
        3,
    ),
    (
        "astlab-1795418878.12",
        "+15550100004",
        "Dan Dialer",
        "support",
        ["Dave"],
        "Dave",
        "answered",
        0,
        5,
    ),
    (
        "astlab-1795418879.16",
        "+15550100005",
        "Erin Enduser",
        "support",
        ["Alice"],
        "Alice",
        "answered",
        1,
        3,
    ),
    (
        "astlab-1795418880.18",
        "+15550100006",
        "Frank Fielder",
        "support",
        ["Bob"],
        "Bob",
        "answered",
        0,
        3,
    ),
    (
        "astlab-1795418881.30",
        "+15550100007",
        "Gina Gray",
        "support",
        ["Carol"],
        "Carol",
        "answered",
        0,
        5,
    ),
    (
        "astlab-1795418883.39",
        "+15550100009",
        "Ivy Irving",
        "support",
        ["Dave"],
        "Dave",
        "answered",
        1,
        5,
    ),
    (
        "astlab-1795418884.41",
        "+15550100010",
        "Customer 0010",
        "support",
        ["Alice"],
        "Alice",
        "answered",
        0,
        6,
    ),
    (
        "astlab-1795418882.37",
        "+15550100008",
        "Hank Hill",
        "support",
        ["Bob"],
        "Bob",
        "answered",
        2,
        7,
    ),
]
EXTRA = [
    (
        "astlab-1795418978.91",
        "+15557827056",
        "Casey King",
        "sales",
        ["Carol"],
        "Carol",
        "answered",
        1,
        6,
    ),
    (
        "astlab-1795418978.95",
        "+15553786850",
        "Chris Young",
        "sales",
        ["Carol", "Eve", "Dave"],
        "Dave",
        "answered",
        0,
        7,
    ),
    (
        "astlab-1795418999.132",
        "+15556309082",
        "Kim Moore",
        "support",
        [],
        None,
        "abandoned",
        4,
        None,
    ),
    (
        "astlab-1795418999.133",
        "+15555934871",
        "Pat Hall",
        "support",
        [],
        None,
        "abandoned",
        4,
        None,
    ),
    (
        "astlab-1795418999.136",
        "+15557213629",
        "Lee Smith",
        "support",
        ["Bob"],
        "Bob",
        "answered",
        0,
        4,
    ),
    (
        "astlab-1795418999.126",
        "+15558406757",
        "Alex Jones",
        "support",
        ["Alice"],
        "Alice",
        "answered",
        0,
        4,
    ),
    (
        "astlab-1795418999.140",
        "+15553293757",
        "Chris Hall",
        "support",
        [],
        None,
        "abandoned",
        4,
        None,
    ),
    (
        "astlab-1795418999.130",
        "+15552703840",
        "Quinn Wilson",
        "support",
        ["Carol"],
        "Carol",
        "answered",
        0,
        4,
    ),
    (
        "astlab-1795418999.142",
        "+15554321493",
        "Casey Wilson",
        "support",
        [],
        None,
        "abandoned",
        4,
        None,
    ),
    (
        "astlab-1795418999.128",
        "+15556068694",
        "Sam Garcia",
        "support",
        [],
        None,
        "abandoned",
        4,
        None,
    ),
    (
        "astlab-1795418999.138",
        "+15558554264",
        "Sam Brown",
        "support",
        [],
        None,
        "abandoned",
        4,
        None,
    ),
    (
        "astlab-1795418999.144",
        "+15556520657",
        "Drew Young",
        "support",
        [],
        None,
        "abandoned",
        4,
        None,
    ),
    (
        "astlab-1795418978.93",
        "+15555311816",
        "Quinn Clark",
        "sales",
        ["Eve", "Carol", "Dave"],
        "Dave",
        "answered",
        17,
        9,
    ),
]
AGI_DOWN = [
    (
        "astlab-1795418942.74",
        "+15550100002",
        "Bob Buyer",
        "support",
        ["Dave"],
        "Dave",
        "answered",
        0,
        3,
    ),
    (
        "astlab-1795418941.70",
        "+15550100001",
        "Alice Customer",
        "support",
        ["Carol"],
        "Carol",
        "answered",
        0,
        4,
    ),
    (
        "astlab-1795418943.78",
        "+15550100003",
        "Carla Client",
        "support",
        ["Alice"],
        "Alice",
        "answered",
        0,
        8,
    ),
]
CAPTURES = {"capture_10calls": TEN_CALLS, "capture_extra": EXTRA, "capture_agi_down": AGI_DOWN}


def _raw(name: str) -> list[dict[str, str]]:
    return AmiDecoder().feed((FIXTURES / f"{name}.txt").read_bytes())


def _oracle(name: str) -> dict[str, dict[str, Any]]:
    """Per call (Linkedid): what the raw stream says, computed without the call model."""
    calls: dict[str, dict[str, Any]] = {}
    member_call: dict[tuple[str, str], str] = {}
    for msg in _raw(name):
        event, linked = msg.get("Event"), msg.get("Linkedid", "")
        at = float(msg["Timestamp"]) if "Timestamp" in msg else None
        if event == "Newchannel" and msg["Uniqueid"] == linked:
            calls[linked] = {"started_at": at, "ended_at": None, "talk": None}
        if linked not in calls and event != "AgentComplete":
            continue
        call = calls.get(linked, {})
        if event == "UserEvent" and msg.get("UserEvent") == "CallOutcome":
            call["summary"] = msg
        elif event == "QueueCallerJoin":
            call["queued_at"] = at
        elif event == "AgentConnect":
            call["answered_at"] = at
            call["hold"] = float(msg["HoldTime"])
            member_call[(msg["Queue"], msg["MemberName"])] = linked
        elif event == "QueueCallerAbandon":
            call["hold"] = float(msg["HoldTime"])
        elif event == "AgentComplete":
            owner = linked or member_call[(msg["Queue"], msg["MemberName"])]
            calls[owner]["talk"] = float(msg["TalkTime"])
        elif event == "Hangup":
            call["ended_at"] = max(call["ended_at"] or 0.0, at or 0.0)
    return calls


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def replayed(request: pytest.FixtureRequest) -> tuple[str, ReplayResult]:
    name: str = request.param
    return name, replay_file(FIXTURES / f"{name}.txt")


def test_every_call_field_by_field(replayed: tuple[str, ReplayResult]) -> None:
    name, result = replayed
    assert result.problems == []
    assert result.unfinished == 0
    got = [
        (
            r.call_id,
            r.caller_number,
            r.caller_name,
            r.queues[0],
            list(r.agents_rung),
            r.answered_by,
            r.outcome,
            r.hold_seconds,
            r.talk_seconds,
        )
        for r in result.records
    ]
    assert got == CAPTURES[name]
    for record in result.records:
        assert record.pbx == "astlab"
        assert record.transfers == ()
        assert record.flags == ()
        assert record.handled_by == ((record.answered_by,) if record.answered_by else ())


def test_times_and_units_match_the_raw_stream(replayed: tuple[str, ReplayResult]) -> None:
    name, result = replayed
    oracle = _oracle(name)
    assert set(oracle) == {r.call_id for r in result.records}
    for record in result.records:
        truth = oracle[record.call_id]
        assert record.started_at == truth["started_at"]
        assert record.queued_at == truth["queued_at"]
        assert record.answered_at == truth.get("answered_at")
        assert record.ended_at == truth["ended_at"]
        assert record.hold_seconds == truth["hold"]
        assert record.talk_seconds == truth["talk"]
        summary = truth["summary"]
        assert record.caller_number == summary["CallerIDNum"]
        assert record.caller_name == summary["CallerIDName"]
        assert record.queues == (summary["Queue"],)
        assert record.answered_by == (summary["MemberName"] or None)


def test_extra_has_seven_abandons_and_eves_ring_no_answer() -> None:
    result = replay_file(FIXTURES / "capture_extra.txt")
    assert sum(r.outcome == "abandoned" for r in result.records) == 7
    stops = [e for e in result.events if isinstance(e, AgentRingStopped)]
    quinn = [(e.agent, e.reason) for e in stops if e.call_id == "astlab-1795418978.93"]
    assert quinn == [
        ("Eve", "ring_no_answer"),
        ("Carol", "answered_elsewhere"),
        ("Eve", "answered_elsewhere"),
    ]
    ring_all = [(e.agent, e.reason) for e in stops if e.call_id == "astlab-1795418978.95"]
    assert ring_all == [("Carol", "answered_elsewhere"), ("Eve", "answered_elsewhere")]


def test_cli_json_prints_the_calls_of_capture_extra() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cti", "replay", str(FIXTURES / "capture_extra.txt"), "--json"],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=preexec(),
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(c["call_id"], c["outcome"], c["answered_by"]) for c in lines] == [
        (row[0], row[6], row[5]) for row in EXTRA
    ]
    required = set(CallRecord.__dataclass_fields__)
    assert all(required <= set(c) for c in lines)
    assert proc.stderr == ""
