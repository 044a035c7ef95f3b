"""The wallboard lets go of calls the model closed unseen (expired, or gone at a resync) and of
calls merged into another: it keeps nothing per call once the call is over (issue 21, item 4).
Times come from the stream or are given: never the wall clock."""

from __future__ import annotations

from cti.board import Board
from cti.calls import _IDLE_CHECK_EVERY, CallTracker
from cti.events import CallAnswered, CallEnded, CallMerged, DomainEvent
from tests.cti.test_calls_expiry import AGE, N, never_ended
from tests.support.amistream import Chan, Stream


def per_call(board: Board) -> dict[str, int]:
    """Everything the board holds per call."""
    agents = board._agents.values()
    return {
        "calls": len(board._calls),
        "engaged": len(board._engaged),
        "waiting": sum(len(q.waiting) for q in board._queues.values()),
        "ringing": sum(len(a.ringing) for a in agents),
        "on a call": sum(a.call is not None for a in agents),
    }


def fed(tracker: CallTracker, board: Board, s: Stream) -> list[DomainEvent]:
    events: list[DomainEvent] = []
    for message in s.messages:
        events += tracker.on_event(message)
    for event in events:
        board.publish(event)
    return events


def test_twenty_thousand_expired_calls_leave_nothing_on_the_board() -> None:
    s = Stream()
    never_ended(N, s)
    tracker, board = CallTracker("lab", max_call_age=AGE), Board()
    fed(tracker, board, s)
    board.snapshot(s.now)
    assert per_call(board)["calls"] == N and per_call(board)["waiting"] > 0
    later = s.now + AGE + _IDLE_CHECK_EVERY
    for event in tracker.expire(later):
        board.publish(event)
    assert per_call(board) == dict.fromkeys(per_call(board), 0)
    view = board.snapshot(later)
    (support,) = view["queues"]
    assert support["waiting"] == 0
    (alice,) = view["agents"]
    assert alice["state"] != "on_call"


def test_an_expired_call_adds_no_made_up_talk_time() -> None:
    """Nobody saw it end: hours since the answer are not the agent's talk time."""
    s = Stream()
    caller = Chan("PJSIP/trunk-1", "lab-1.1", "lab-1.1", "+4930555")
    leg = Chan("PJSIP/1001-1", "lab-1.2", "lab-1.1", "+4930555")
    s.queue_call_answered(caller, leg, "support", "Alice", "PJSIP/1001", "b1")
    tracker, board = CallTracker("lab", max_call_age=AGE), Board()
    fed(tracker, board, s)
    later = s.now + AGE + 1
    board.snapshot(later)  # the wallboard's clock moves on with its pushes
    (ended,) = [e for e in tracker.expire(later) if isinstance(e, CallEnded)]
    board.publish(ended)
    agent = board._agents[("lab", "Alice")]
    assert (agent.call, agent.wrap, agent.handle_n) == (None, None, 0)
    assert per_call(board) == dict.fromkeys(per_call(board), 0)


def test_a_merged_call_leaves_nothing_behind() -> None:
    """A consultation call rang and was answered under its own id, then merged into the
    customer's call: the board follows the agent under the surviving id."""
    board = Board()
    board.publish(CallAnswered("lab", "consult", 10.0, "Bob", None, None, None))
    board.publish(CallMerged("lab", "customer", 20.0, "consult"))
    agent = board._agents[("lab", "Bob")]
    assert agent.call is not None and agent.call[0] == "customer"
    s = Stream()
    caller = Chan("PJSIP/trunk-1", "customer", "customer", "+4930555")
    s.ev("Newchannel", caller.snap())
    tracker = CallTracker("lab", max_call_age=AGE)
    fed(tracker, Board(), s)
    (record,) = [e.record for e in tracker.expire(s.now + AGE + 1) if isinstance(e, CallEnded)]
    board.publish(CallEnded("lab", "customer", 30.0, record))
    assert per_call(board) == dict.fromkeys(per_call(board), 0)
