"""The wallboard's figures: exact numbers on the real captures (checked against an oracle read
straight from the raw AMI), and hand-made streams for what the captures do not show."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cti.agents import AgentDirectory
from cti.board import Board, Quality
from cti.calls import CallTracker, frame_filter
from cti.codec import AmiDecoder, Message
from cti.events import (
    AgentRinging,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallQueued,
    CallRecord,
    FeedStatus,
    MemberRemoved,
    MemberUpdated,
    QueueDefined,
)
from cti.members import MemberTracker
from cti.settings import BoardRules, QueueRules, Weights

FIXTURES = Path(__file__).parent.parent / "fixtures"
CAPTURES = ["capture_10calls.txt", "capture_extra.txt", "capture_agi_down.txt"]
T0 = 1_795_399_980.0  # a whole minute (epoch seconds), in 2026-11


def messages(name: str, *, filtered: bool = True) -> Iterator[Message]:
    decoder = AmiDecoder(frame_filter=frame_filter if filtered else None)
    yield from decoder.feed((FIXTURES / name).read_bytes())
    decoder.eof()


def replayed(name: str, rules: BoardRules) -> tuple[Board, float]:
    """The capture through the call model and member tracker into a board, as the service
    feeds it; returns the board and the capture's last timestamp."""
    agents = AgentDirectory()
    tracker, members, board = CallTracker("lab", agents), MemberTracker("lab", agents), Board(rules)
    last = 0.0
    for message in messages(name):
        last = max(last, float(message.get("Timestamp") or 0.0))
        for state in members.on_event(message, last):
            board.observe(state)
        for event in tracker.on_event(message, last):
            board.publish(event)
    for event in tracker.flush():
        board.publish(event)
    return board, last


@dataclass
class Oracle:
    """What each queue did, read from the raw capture without the call model."""

    answered_holds: dict[str, list[float]] = field(default_factory=dict)
    abandon_holds: dict[str, list[float]] = field(default_factory=dict)
    other_exits: dict[str, int] = field(default_factory=dict)
    talks: dict[str, list[float]] = field(default_factory=dict)
    offered: dict[str, int] = field(default_factory=dict)


def oracle(name: str) -> Oracle:
    result = Oracle()
    left: dict[tuple[str, str], str] = {}  # (uniqueid, queue) -> how
    exit_status: dict[str, str] = {}
    for m in messages(name, filtered=False):
        event, queue = m.get("Event"), m.get("Queue", "")
        if event == "AgentConnect":
            result.answered_holds.setdefault(queue, []).append(float(m["HoldTime"]))
            left[(m["Uniqueid"], queue)] = "answered"
        elif event == "QueueCallerAbandon":
            left[(m["Uniqueid"], queue)] = "abandon:" + m["HoldTime"]
        elif event == "VarSet" and m.get("Variable") == "QUEUESTATUS" and m.get("Value"):
            exit_status[m["Uniqueid"]] = m["Value"]
        elif event == "QueueCallerLeave":
            left.setdefault((m["Uniqueid"], queue), "other")
        elif event == "AgentComplete":
            result.talks.setdefault(queue, []).append(float(m["TalkTime"]))
    for (uid, queue), how in left.items():
        result.offered[queue] = result.offered.get(queue, 0) + 1
        if how.startswith("abandon:"):
            if exit_status.get(uid, "") in ("TIMEOUT", "LEAVEEMPTY", "WITHDRAW"):
                result.other_exits[queue] = result.other_exits.get(queue, 0) + 1
            else:
                result.abandon_holds.setdefault(queue, []).append(float(how[8:]))
        elif how == "other":
            result.other_exits[queue] = result.other_exits.get(queue, 0) + 1
    return result


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("short", [3.0, 5.0])
def test_queue_figures_on_real_captures(capture: str, short: float) -> None:
    board, last = replayed(capture, BoardRules(short_abandon=short))
    snap = board.snapshot(last + 60)  # every wrap-up (none paused; wrapuptime 0) has ended
    truth = oracle(capture)
    assert {q["name"] for q in snap["queues"]} >= set(truth.offered)  # and queues with members
    for queue in snap["queues"]:
        name, today = queue["name"], queue["figures"]["today"]
        truth.offered.setdefault(name, 0)
        holds = truth.answered_holds.get(name, [])
        abandons = truth.abandon_holds.get(name, [])
        short_ones = [h for h in abandons if h < short]
        counted = truth.offered[name] - len(short_ones)
        in_sl = sum(1 for h in holds if h <= 20)
        talks = truth.talks.get(name, [])
        assert today["offered"] == truth.offered[name]
        assert today["answered"] == len(holds)
        assert today["answered_in_sl"] == in_sl
        assert today["short_abandoned"] == len(short_ones)
        assert today["abandoned"] == len(abandons) - len(short_ones)
        assert today["other_exits"] == truth.other_exits.get(name, 0)
        assert today["asa"] == (pytest.approx(statistics.mean(holds)) if holds else None)
        assert today["aht"] == (pytest.approx(statistics.mean(talks)) if talks else None)
        assert today["handled"] == len(talks)
        expected_sl = 100 * in_sl / counted if counted else None
        assert today["service_level"] == (pytest.approx(expected_sl) if counted else None)
        assert today["gaps"] == []
        assert queue["waiting"] == 0 and queue["longest_wait"] is None


def test_capture_extra_known_answers() -> None:
    """The figures written out, so a wrong oracle cannot hide a wrong board."""
    board, last = replayed("capture_extra.txt", BoardRules(short_abandon=5.0))
    queues = {q["name"]: q["figures"]["today"] for q in board.snapshot(last + 60)["queues"]}
    support = queues["support"]
    # 7 callers hung up after 4 s each: short abandons at 5 s, so SL counts only the rest
    assert (support["short_abandoned"], support["abandoned"]) == (7, 0)
    assert (
        support["offered"] - support["short_abandoned"]
        == support["answered"] + support["other_exits"]
    )
    strict, _ = replayed("capture_extra.txt", BoardRules(short_abandon=3.0))
    support3 = {q["name"]: q for q in strict.snapshot(last + 60)["queues"]}["support"]
    assert support3["figures"]["today"]["abandoned"] == 7
    assert support3["figures"]["today"]["abandon_rate"] == pytest.approx(
        100 * 7 / support3["figures"]["today"]["offered"]
    )


def test_agents_on_real_capture_end_available_with_their_calls_counted() -> None:
    board, last = replayed("capture_10calls.txt", BoardRules())
    snap = board.snapshot(last + 60)
    agents = {a["id"]: a for a in snap["agents"]}
    completes: dict[str, int] = {}
    for m in messages("capture_10calls.txt", filtered=False):
        if m.get("Event") == "AgentComplete":
            completes[m["MemberName"]] = completes.get(m["MemberName"], 0) + 1
    assert {k: a["handled_today"] for k, a in agents.items() if a["handled_today"]} == completes
    assert all(a["state"] == "available" and a["call"] is None for a in agents.values())


# ---------------------------------------------------------------- hand-made streams


def record(call_id: str, agent: str | None, talk: float | None, ended: float) -> CallRecord:
    return CallRecord(
        call_id, "p", "+100", "", "", ("q",), (), agent, (agent,) if agent else (), (), None,
        None, None, None, ended, None, talk, (),
    )  # fmt: skip


def member(at: float, agent: str = "alice", **state: Any) -> MemberUpdated:
    fields: dict[str, Any] = {
        "status": 1, "paused": False, "reason": "", "in_call": False, "wrapup": 0.0, **state
    }  # fmt: skip
    return MemberUpdated("p", at, "q", agent, agent, f"PJSIP/{agent}", **fields)


def answered_call(board: Board, call_id: str, at: float, hold: float, talk: float) -> None:
    board.publish(CallQueued("p", call_id, at - hold, "q", 1, "+100", ""))
    board.publish(AgentRinging("p", call_id, at - 1, "alice", "alice", "PJSIP/alice", "q", "", ""))
    board.publish(CallAnswered("p", call_id, at, "alice", "q", hold, 1.0))
    board.publish(CallEnded("p", call_id, at + talk, record(call_id, "alice", talk, at + talk)))


def queue_view(board: Board, now: float) -> dict[str, Any]:
    (queue,) = board.snapshot(now)["queues"]
    result: dict[str, Any] = queue
    return result


def test_windows_slide_and_today_keeps_all() -> None:
    board = Board(BoardRules())
    board.observe(member(T0))
    answered_call(board, "c1", T0 + 10, hold=5, talk=30)  # minute 0
    answered_call(board, "c2", T0 + 20 * 60, hold=40, talk=60)  # minute 20
    now = T0 + 30 * 60
    figures = queue_view(board, now)["figures"]
    assert (figures["15m"]["answered"], figures["1h"]["answered"]) == (1, 2)
    assert figures["today"]["answered"] == 2
    assert figures["1h"]["asa"] == pytest.approx(22.5)
    assert figures["1h"]["service_level"] == pytest.approx(50.0)  # 5 s in, 40 s out of 20 s
    later = queue_view(board, T0 + 61 * 60)["figures"]
    assert (later["15m"]["answered"], later["1h"]["answered"]) == (0, 1)  # c1's minute left
    assert later["today"]["answered"] == 2


def test_windows_show_their_start() -> None:
    board = Board(BoardRules())
    snap = board.snapshot(T0 + 125)
    marks = {w["key"]: w["since"] for w in snap["windows"]}
    assert marks["15m"] == T0 + 120 - 14 * 60
    assert marks["1h"] == T0 + 120 - 59 * 60


def test_abandons_short_and_other_exits() -> None:
    board = Board(BoardRules(short_abandon=5))
    for n, (reason, hold) in enumerate(
        [("abandoned", 2.0), ("abandoned", 30.0), ("timeout", 300.0), ("exit_key", 10.0)]
    ):
        board.publish(CallQueued("p", f"a{n}", T0, "q", 1, "+1", ""))
        board.publish(CallAbandoned("p", f"a{n}", T0 + hold, "q", reason, hold, 1))  # type: ignore[arg-type]
    answered_call(board, "c1", T0 + 10, hold=10, talk=20)
    today = queue_view(board, T0 + 400)["figures"]["today"]
    assert (today["offered"], today["answered"], today["abandoned"]) == (5, 1, 1)
    assert (today["short_abandoned"], today["other_exits"]) == (1, 2)
    assert today["service_level"] == pytest.approx(25.0)  # 1 of 4 counted
    assert today["abandon_rate"] == pytest.approx(25.0)


def test_waiting_and_longest_wait_and_its_alert() -> None:
    board = Board(BoardRules(default=QueueRules(alert_longest_wait=60)))
    board.publish(CallQueued("p", "w1", T0, "q", 1, "+1", ""))
    board.publish(CallQueued("p", "w2", T0 + 30, "q", 2, "+2", ""))
    board.publish(CallQueued("p", "w2", T0 + 31, "q", 2, "+2", ""))  # re-join: no double count
    early = queue_view(board, T0 + 40)
    assert (early["waiting"], early["longest_wait"], early["level"]) == (2, 40.0, "warn")
    late = queue_view(board, T0 + 75)
    assert late["level"] == "alert"
    assert late["alerts"] == [
        {"kind": "longest_wait", "text": "A caller has waited over 60 s", "since": T0 + 60}
    ]
    board.publish(CallAbandoned("p", "w1", T0 + 80, "q", "abandoned", 80.0, 1))
    calm = queue_view(board, T0 + 81)
    assert (calm["waiting"], calm["longest_wait"], calm["alerts"]) == (1, 51.0, [])


def test_service_level_alert_needs_enough_calls() -> None:
    board = Board(BoardRules(default=QueueRules(service_level=20, alert_service_level=80)))
    for n in range(4):
        answered_call(board, f"c{n}", T0 + 10 * n, hold=60, talk=10)
    assert queue_view(board, T0 + 100)["alerts"] == []  # 0% of 4 calls: too few to alert
    answered_call(board, "c5", T0 + 50, hold=60, talk=10)
    (alert,) = queue_view(board, T0 + 110)["alerts"]
    assert alert["kind"] == "service_level" and alert["since"] == T0 + 110
    assert queue_view(board, T0 + 120)["alerts"][0]["since"] == T0 + 110  # still the start


def test_service_level_threshold_from_asterisk_unless_configured() -> None:
    board = Board(BoardRules())
    board.observe(QueueDefined("p", T0, "q", 30.0))
    answered_call(board, "c1", T0 + 10, hold=25, talk=10)
    assert queue_view(board, T0 + 60)["figures"]["today"]["service_level"] == 100.0
    strict = Board(BoardRules(queues={"q": QueueRules(service_level=10)}))
    strict.observe(QueueDefined("p", T0, "q", 30.0))
    answered_call(strict, "c1", T0 + 10, hold=25, talk=10)
    assert queue_view(strict, T0 + 60)["figures"]["today"]["service_level"] == 0.0


def test_agent_states_and_wrap_up_pause_counts_in_handle_time() -> None:
    board = Board(BoardRules(wrapup_grace=5))
    board.observe(member(T0))
    board.publish(CallQueued("p", "c1", T0 + 1, "q", 1, "+100", ""))
    board.publish(AgentRinging("p", "c1", T0 + 2, "alice", "alice", "PJSIP/alice", "q", "", ""))
    assert board.snapshot(T0 + 3)["agents"][0]["state"] == "ringing"
    board.publish(CallAnswered("p", "c1", T0 + 4, "alice", "q", 3.0, 2.0))
    (agent,) = board.snapshot(T0 + 5)["agents"]
    assert (agent["state"], agent["since"], agent["call"]["caller"]) == ("on_call", T0 + 4, "+100")
    board.publish(CallEnded("p", "c1", T0 + 64, record("c1", "alice", 60.0, T0 + 64)))
    board.observe(member(T0 + 65, paused=True, reason="wrap-up"))
    assert board.snapshot(T0 + 80)["agents"][0]["state"] == "wrap_up"
    assert queue_view(board, T0 + 80)["agents"]["wrap_up"] == 1
    board.observe(member(T0 + 94))  # outcome saved: unpaused, 30 s after the call
    snap = board.snapshot(T0 + 95)
    assert snap["agents"][0]["state"] == "available"
    assert snap["agents"][0]["aht_today"] == pytest.approx(90.0)  # 60 talk + 30 wrap-up
    assert snap["queues"][0]["figures"]["today"]["aht"] == pytest.approx(90.0)


def test_wrapuptime_without_pause_and_grace() -> None:
    board = Board(BoardRules(wrapup_grace=5))
    board.observe(member(T0, wrapup=15.0))
    answered_call(board, "c1", T0 + 10, hold=1, talk=20)  # ends at T0 + 30
    assert board.snapshot(T0 + 40)["agents"][0]["state"] == "wrap_up"
    snap = board.snapshot(T0 + 46)
    assert snap["agents"][0]["state"] == "available"
    assert snap["agents"][0]["aht_today"] == pytest.approx(35.0)


def test_paused_agent_with_reason_and_queue_counts() -> None:
    board = Board(BoardRules())
    board.observe(member(T0, "alice", paused=True, reason="lunch"))
    board.observe(member(T0, "bob"))
    board.observe(member(T0, "carol", status=5))  # device unavailable: not logged in
    snap = board.snapshot(T0 + 10)
    agents = {a["id"]: a for a in snap["agents"]}
    assert (agents["alice"]["state"], agents["alice"]["reason"]) == ("paused", "lunch")
    assert agents["carol"]["state"] == "logged_out"
    counts = snap["queues"][0]["agents"]
    assert counts == {
        "logged_in": 2, "available": 1, "on_call": 0, "ringing": 0, "wrap_up": 0, "paused": 1
    }  # fmt: skip
    assert snap["queues"][0]["paused_reasons"] == {"lunch": 1}


def test_a_feed_gap_is_shown_not_zeroed() -> None:
    board = Board(BoardRules())
    board.observe(FeedStatus("p", T0, True))
    board.publish(CallQueued("p", "c1", T0 + 5, "q", 1, "+1", ""))
    board.snapshot(T0 + 30)
    board.observe(FeedStatus("p", T0 + 70, False))
    board.snapshot(T0 + 90)  # minute 1 ends during the outage
    board.snapshot(T0 + 150)
    board.observe(FeedStatus("p", T0 + 170, True))
    snap = board.snapshot(T0 + 190)
    queue = snap["queues"][0]
    assert queue["figures"]["15m"]["gaps"] == [(T0 + 70, T0 + 170)]
    points = {p["at"]: p for p in queue["trend"]}
    assert points[T0]["waiting"] == 1
    assert points[T0 + 60]["waiting"] is None and points[T0 + 120]["waiting"] is None
    assert snap["feed"] == [{"pbx": "p", "connected": True, "since": T0 + 170, "reason": ""}]


def test_a_pbx_down_says_why_and_since_when_it_first_went() -> None:
    board = Board(BoardRules())
    board.observe(FeedStatus("p", T0, False, "cannot connect: connection refused"))
    board.observe(FeedStatus("p", T0 + 30, False, "login refused (Authentication failed)"))
    assert board.snapshot(T0 + 40)["feed"] == [
        {"pbx": "p", "connected": False, "since": T0,
         "reason": "login refused (Authentication failed)"},
    ]  # fmt: skip
    board.observe(FeedStatus("p", T0 + 60, True))
    assert board.snapshot(T0 + 70)["feed"] == [
        {"pbx": "p", "connected": True, "since": T0 + 60, "reason": ""}
    ]


def test_score_weighs_the_known_parts() -> None:
    board = Board(BoardRules(weights=Weights(0.1, 0.2, 0.3, 0.4)))
    board.observe(member(T0))
    board.set_quality("alice", Quality(fcr=0.5, csat=5.0, rating=3.0))
    (agent,) = board.snapshot(T0 + 100)["agents"]
    # availability 100 (never paused), csat 100, rating 50, fcr 50
    assert agent["score"] == pytest.approx(0.1 * 100 + 0.2 * 100 + 0.3 * 50 + 0.4 * 50)
    board.set_quality("alice", Quality(csat=1.0))
    (agent,) = board.snapshot(T0 + 100)["agents"]
    assert agent["score"] == pytest.approx((0.1 * 100 + 0.2 * 0) / 0.3, abs=0.05)


def test_callbacks_per_queue_and_version_moves() -> None:
    board = Board(BoardRules())
    board.observe(member(T0))
    before = board.version
    board.set_callbacks({"q": 3, "other": 1})
    assert board.version > before
    assert queue_view(board, T0 + 1)["callbacks"] == 3
    assert board.snapshot(T0 + 1)["total"]["callbacks"] == 3


def test_hostile_names_pass_through_untouched() -> None:
    hostile = "<script>alert(1)</script>\"'😀"
    board = Board(BoardRules())
    board.observe(MemberUpdated("p", T0, hostile, hostile, hostile, "PJSIP/x", 1, True, hostile,
                                False, 0.0))  # fmt: skip
    snap = board.snapshot(T0 + 1)
    assert snap["queues"][0]["name"] == hostile
    assert snap["agents"][0]["reason"] == hostile
    assert snap["queues"][0]["paused_reasons"] == {hostile: 1}


def test_member_tracker_resync_removes_members_not_shown_again() -> None:
    agents = AgentDirectory()
    tracker = MemberTracker("p", agents)
    base = {"Queue": "q", "Status": "1", "Paused": "0", "PausedReason": ""}
    tracker.on_event({"Event": "QueueMemberStatus", "MemberName": "A", "Interface": "PJSIP/a",
                      **base}, T0)  # fmt: skip
    tracker.on_event({"Event": "QueueMemberStatus", "MemberName": "B", "Interface": "PJSIP/b",
                      **base}, T0)  # fmt: skip
    tracker.begin_resync()
    (shown,) = tracker.on_event(
        {"Event": "QueueMember", "Name": "A", "Location": "PJSIP/a", **base, "Paused": "1"}, T0
    )
    assert isinstance(shown, MemberUpdated) and shown.paused and shown.agent == "A"
    (gone,) = tracker.end_resync(T0 + 1)
    assert (type(gone).__name__, gone.agent) == ("MemberRemoved", "B")
    (defined,) = tracker.on_event({"Event": "QueueParams", "Queue": "q", "ServiceLevel": "0"}, T0)
    assert isinstance(defined, QueueDefined) and defined.service_level is None
    assert tracker.on_event({"Event": "QueueMemberStatus", "Queue": "q"}, T0) == []  # no member


def test_a_cached_queue_view_is_redone_after_any_change() -> None:
    board = Board(BoardRules())
    board.observe(member(T0))
    assert queue_view(board, T0 + 1)["agents"]["available"] == 1
    assert queue_view(board, T0 + 2)["agents"]["available"] == 1  # unchanged: reused
    board.observe(member(T0 + 3, paused=True, reason="lunch"))
    assert queue_view(board, T0 + 4)["agents"]["paused"] == 1
    board.set_callbacks({"q": 2})
    assert queue_view(board, T0 + 5)["callbacks"] == 2
    board.publish(CallQueued("p", "c1", T0 + 6, "q", 1, "+1", ""))
    assert queue_view(board, T0 + 7)["longest_wait"] == 1.0
    assert queue_view(board, T0 + 9)["longest_wait"] == 3.0  # the wait moves with the clock


def in_queue(at: float, queue: str, agent: str, **state: Any) -> MemberUpdated:
    """A member of ``queue`` (``member`` is always in "q")."""
    fields: dict[str, Any] = {
        "status": 1, "paused": False, "reason": "", "in_call": False, "wrapup": 0.0, **state
    }  # fmt: skip
    return MemberUpdated("p", at, queue, agent, agent, f"PJSIP/{agent}", **fields)


def test_all_queues_count_each_agent_once_in_the_state_of_the_grid() -> None:
    """Nine memberships of five logged-in agents: the total says five, each in one state (an
    agent paused in one queue but not in another takes calls: available)."""
    board = Board(BoardRules())
    for agent in ("alice", "bob", "dave", "frank"):
        board.observe(in_queue(T0, "q", agent))
        board.observe(in_queue(T0, "r", agent))
    board.observe(in_queue(T0, "q", "carol", paused=True, reason="lunch"))
    board.observe(in_queue(T0, "q", "eve", status=5))  # device unavailable: not logged in
    board.observe(in_queue(T0 + 1, "q", "dave", paused=True, reason="wrap-up"))
    board.observe(in_queue(T0 + 1, "r", "dave", paused=True, reason="wrap-up"))
    board.observe(in_queue(T0 + 1, "q", "frank", paused=True, reason="coaching"))
    board.publish(CallQueued("p", "c1", T0 + 2, "q", 1, "+100", ""))
    board.publish(CallAnswered("p", "c1", T0 + 5, "bob", "q", 3.0, 1.0))
    snap = board.snapshot(T0 + 10)
    states = {a["id"]: a["state"] for a in snap["agents"]}
    assert states == {
        "alice": "available", "bob": "on_call", "carol": "paused", "dave": "wrap_up",
        "eve": "logged_out", "frank": "available",
    }  # fmt: skip
    queues = {q["name"]: q for q in snap["queues"]}
    assert queues["q"]["agents"]["logged_in"] + queues["r"]["agents"]["logged_in"] == 5 + 4
    assert queues["q"]["paused_reasons"] == {"lunch": 1, "coaching": 1}  # per queue: places
    total = snap["total"]
    assert total["agents"] == {
        "logged_in": 5, "available": 2, "on_call": 1, "ringing": 0, "wrap_up": 1, "paused": 1
    }  # fmt: skip
    assert total["paused_reasons"] == {"lunch": 1}

    board.observe(in_queue(T0 + 20, "q", "carol"))  # back from lunch
    board.observe(in_queue(T0 + 20, "q", "eve"))  # her phone registers
    board.observe(in_queue(T0 + 21, "q", "dave"))  # outcome saved: unpaused everywhere
    board.observe(in_queue(T0 + 21, "r", "dave"))
    board.publish(CallEnded("p", "c1", T0 + 25, record("c1", "bob", 20.0, T0 + 25)))
    total = board.snapshot(T0 + 60)["total"]  # bob's wrap-up (grace 5 s) is over
    assert total["agents"] == {
        "logged_in": 6, "available": 6, "on_call": 0, "ringing": 0, "wrap_up": 0, "paused": 0
    }  # fmt: skip
    assert total["paused_reasons"] == {}
    board.observe(MemberRemoved("p", T0 + 70, "q", "eve", "PJSIP/eve"))
    board.observe(in_queue(T0 + 70, "q", "alice", status=5))  # still logged in to r
    assert board.snapshot(T0 + 71)["total"]["agents"]["logged_in"] == 5


def test_all_queues_give_a_service_level_threshold_only_when_every_queue_has_it() -> None:
    board = Board(BoardRules())
    board.observe(QueueDefined("p", T0, "q", 20.0))
    board.observe(QueueDefined("p", T0, "r", 30.0))
    today = board.snapshot(T0 + 1)["total"]["figures"]["today"]
    assert "sl_threshold" not in today  # each call counts against its own queue's threshold
    board.observe(QueueDefined("p", T0 + 2, "r", 20.0))
    today = board.snapshot(T0 + 3)["total"]["figures"]["today"]
    assert today["sl_threshold"] == 20.0


def test_an_agent_held_in_wrap_up_says_so_in_any_state() -> None:
    """The grid offers to release an agent paused for wrap-up, even one who took a call."""
    board = Board(BoardRules())
    board.observe(member(T0))
    (agent,) = board.snapshot(T0 + 1)["agents"]
    assert agent["wrapup_paused"] is False
    board.observe(member(T0 + 2, paused=True, reason="wrap-up"))
    (agent,) = board.snapshot(T0 + 3)["agents"]
    assert (agent["state"], agent["reason"], agent["wrapup_paused"]) == ("wrap_up", "wrap-up", True)
    board.publish(CallAnswered("p", "d1", T0 + 4, "alice", None, 0.0, 1.0))  # a direct call
    (agent,) = board.snapshot(T0 + 5)["agents"]
    assert (agent["state"], agent["wrapup_paused"]) == ("on_call", True)
    board.observe(member(T0 + 6, paused=True, reason="lunch"))
    (agent,) = board.snapshot(T0 + 7)["agents"]
    assert agent["wrapup_paused"] is False
