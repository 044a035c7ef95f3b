"""Follow-ups as work, on SQLite and PostgreSQL: the work list and its order, the wallboard's
counts (and the board showing them), the dial's states with their outbox rows, closing by
hand, a dial whose result was lost, the contact-frequency rule at its boundaries and under
two dials at once, and callbacks filed for missed calls."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.followups import (
    ContactRefused,
    Cursor,
    FollowupError,
    Followups,
    contact_decision,
    missed_call_reason,
    number_to_call,
    work_counts,
)
from crm_sync.models import Customer, Interaction, OutboxRow, Phone
from cti.board import Board
from cti.events import CallRecord, MemberUpdated
from cti.settings import FollowupSettings

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
SETTINGS = FollowupSettings(contact_max=2, contact_window_hours=24.0, ring_seconds=30.0)


def record(outcome: str | None, **changes: Any) -> CallRecord:
    """A finished queue call of the support queue nobody answered (unless changed)."""
    base = CallRecord(
        call_id="1764842400.7", pbx="lab", caller_number="13800138000", caller_name="",
        dialed="800", queues=("support",), agents_rung=("alice",), answered_by=None,
        handled_by=(), transfers=(), outcome=outcome,  # type: ignore[arg-type]
        started_at=1.0, queued_at=2.0, answered_at=None, ended_at=40.0, hold_seconds=None,
        talk_seconds=None, flags=(),
    )  # fmt: skip
    return replace(base, **changes)


# -- pure rules -------------------------------------------------------------------------------


def test_contact_rule_counts_calls_inside_the_window_only() -> None:
    limit: dict[str, Any] = {"now": NOW, "limit": 2, "window": DAY}
    # a call exactly a window old no longer counts; a second younger one does
    assert contact_decision([NOW - DAY, NOW - timedelta(hours=1)], **limit).allowed
    refused = contact_decision(
        [NOW - DAY + timedelta(seconds=1), NOW - timedelta(hours=1)], **limit
    )
    assert not refused.allowed and refused.placed == 2
    # allowed again the moment the oldest call ages out
    assert refused.next_at == NOW + timedelta(seconds=1)
    assert "called this customer 2 times in the last 24 hours (at most 2)" in refused.message
    assert "2026-12-04 10:00 UTC" in refused.message
    # more calls than the limit (it was lowered): wait until enough of them aged out
    three = [NOW - timedelta(hours=h) for h in (20, 10, 1)]
    assert contact_decision(three, **limit).next_at == NOW - timedelta(hours=10) + DAY
    assert contact_decision([], **limit).allowed
    off = contact_decision([], now=NOW, limit=0, window=DAY)
    assert not off.allowed and off.next_at is None and "switched off" in off.message


def test_number_to_call_and_missed_call_reasons() -> None:
    assert number_to_call("Call back +8613800138000", ["+861"]) == "+8613800138000"
    assert number_to_call("Call back 1001", ["+442079460958"]) == "+442079460958"
    assert number_to_call(None, []) is None
    assert missed_call_reason(record("abandoned"), SETTINGS) == "hung up while waiting in support"
    assert "queue timeout" in str(missed_call_reason(record("timeout"), SETTINGS))
    assert missed_call_reason(record("answered", answered_by="alice"), SETTINGS) is None
    assert missed_call_reason(record("exit_key"), SETTINGS) is None  # sent on by the dialplan
    assert missed_call_reason(record("abandoned", queues=()), SETTINGS) is None  # no queue
    off = replace(SETTINGS, from_abandoned=False, from_missed=False)
    assert missed_call_reason(record("abandoned"), off) is None
    assert missed_call_reason(record("timeout"), off) is None


# -- the store ----------------------------------------------------------------------------------


async def customer(engine: AsyncEngine, name: str, *phones: str) -> int:
    async with async_sessionmaker(engine)() as session, session.begin():
        row = Customer(kind="person", name=name, created_at=NOW, updated_at=NOW)
        session.add(row)
        await session.flush()
        session.add_all(Phone(customer_id=row.id, e164=p) for p in phones)
        return row.id


async def followup(
    engine: AsyncEngine, who: int, owner: str, *, due: timedelta | None, status: str = "open"
) -> int:
    async with async_sessionmaker(engine)() as session, session.begin():
        row = Interaction(
            customer_id=who, kind="followup", occurred_at=NOW - DAY, title=f"for {owner}",
            status=status, owner=owner, due_at=NOW + due if due is not None else None,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        return row.id


async def outbox(engine: AsyncEngine) -> list[tuple[str, str, dict[str, Any]]]:
    async with async_sessionmaker(engine)() as session:
        rows = await session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [(r.topic, r.key, r.payload) for r in rows]


async def calls_of(engine: AsyncEngine, who: int) -> list[Interaction]:
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        query = select(Interaction).where(
            Interaction.customer_id == who, Interaction.kind == "call"
        )
        return list(await session.scalars(query.order_by(Interaction.id)))


def store(engine: AsyncEngine, settings: FollowupSettings = SETTINGS) -> Followups:
    return Followups(async_sessionmaker(engine, expire_on_commit=False), settings)


async def test_work_list_overdue_first_and_counts_per_owner(engine: AsyncEngine) -> None:
    ana = await customer(engine, "Ana", "+4930123456", "+4930999999")
    ben = await customer(engine, "Ben <b>")
    late = await followup(engine, ana, "alice", due=-timedelta(hours=2))
    queue = await followup(engine, ben, "queue:support", due=timedelta(hours=1))
    undated = await followup(engine, ben, "alice", due=None)
    latest = await followup(engine, ana, "queue:support", due=-timedelta(minutes=5))
    await followup(engine, ana, "alice", due=-DAY, status="closed")  # done: not work
    await followup(engine, ana, "bob", due=-DAY)  # bob's, not alice's
    work = (await store(engine).work(["alice", "queue:support"], now=NOW)).items
    assert [i.id for i in work] == [late, latest, queue, undated]
    first = work[0]
    assert (first.customer_name, first.number, first.overdue, first.state) == (
        "Ana", "+4930123456", True, "open",
    )  # fmt: skip
    assert work[2].customer_name == "Ben <b>" and work[2].number is None
    assert not work[3].overdue  # no due time: never overdue
    assert len((await store(engine).work(None, now=NOW)).items) == 5  # a supervisor: all
    counts = await work_counts(async_sessionmaker(engine), now=NOW)
    assert counts.queues == {"support": (2, 1)}
    assert counts.agents == {"alice": (2, 1), "bob": (1, 1)}


async def test_the_work_list_pages_by_keyset_through_ties_and_undated(
    engine: AsyncEngine,
) -> None:
    ana = await customer(engine, "Ana", "+4930123456")
    # 3 due at the same moment (ties broken by id), 2 others, 2 undated, 1 closed, 1 of bob
    tied = [await followup(engine, ana, "alice", due=timedelta(hours=1)) for _ in range(3)]
    early = await followup(engine, ana, "alice", due=-timedelta(hours=3))
    late = await followup(engine, ana, "queue:support", due=timedelta(days=2))
    undated = [await followup(engine, ana, "alice", due=None) for _ in range(2)]
    await followup(engine, ana, "alice", due=timedelta(hours=1), status="closed")
    await followup(engine, ana, "bob", due=timedelta(hours=1))
    work = store(engine)
    owners = ["alice", "queue:support"]
    expected = [early, *tied, late, *undated]
    for size in (1, 2, 3, 7, 50):
        seen, after, pages = [], None, 0
        while True:
            page = await work.work(owners, now=NOW, after=after, limit=size)
            seen += [i.id for i in page.items]
            pages += 1
            if page.next is None:
                break
            after = Cursor.parse(page.next.text())  # through its text, as the page sends it
        assert seen == expected, size
        assert pages == max(1, -(-len(expected) // size)), size  # no empty last page
    # a follow-up done meanwhile shifts nothing: the next page starts after the cursor
    first = await work.work(owners, now=NOW, limit=2)
    assert first.next is not None and first.next.id == tied[0]
    await work.close(early, result="done", note="", by="alice", now=NOW)
    rest = await work.work(owners, now=NOW, after=first.next, limit=50)
    assert [i.id for i in rest.items] == [*tied[1:], late, *undated]
    assert await work.tally(owners, now=NOW) == (6, 0)
    assert await work.tally(None, now=NOW) == (7, 0)


async def test_the_work_list_filters_overdue_and_a_day(engine: AsyncEngine) -> None:
    ana = await customer(engine, "Ana", "+4930123456")
    old = await followup(engine, ana, "alice", due=-DAY + timedelta(hours=1))
    past = await followup(engine, ana, "alice", due=-timedelta(minutes=1))
    soon = await followup(engine, ana, "alice", due=timedelta(hours=1))
    await followup(engine, ana, "alice", due=DAY)  # tomorrow: a day ends before its end
    await followup(engine, ana, "alice", due=None)  # never overdue, never "today"
    work = store(engine)
    overdue = await work.work(["alice"], now=NOW, due_before=NOW)
    assert [i.id for i in overdue.items] == [old, past] and overdue.next is None
    # the agent's day in UTC+14 (NOW is 10:00 UTC = 00:00 there) and in UTC-10
    day = timedelta(hours=24)
    kiribati = NOW.astimezone(timezone(timedelta(hours=14)))
    assert (kiribati.hour, kiribati.minute) == (0, 0)
    today = await work.work(["alice"], now=NOW, due_from=kiribati, due_before=kiribati + day)
    assert [i.id for i in today.items] == [soon]
    hawaii = datetime(2026, 12, 4, tzinfo=timezone(timedelta(hours=-10)))  # 10:00 UTC
    today = await work.work(["alice"], now=NOW, due_from=hawaii, due_before=hawaii + day)
    assert [i.id for i in today.items] == [soon]
    start = hawaii - day
    yesterday = await work.work(["alice"], now=NOW, due_from=start, due_before=hawaii)
    assert [i.id for i in yesterday.items] == [old, past]
    assert await work.tally(["alice"], now=NOW) == (5, 2)
    assert await work.tally(["alice"], now=NOW, due_from=start, due_before=hawaii) == (2, 2)
    # paged within a filter
    first = await work.work(["alice"], now=NOW, due_before=NOW, limit=1)
    assert [i.id for i in first.items] == [old] and first.next is not None
    second = await work.work(["alice"], now=NOW, due_before=NOW, after=first.next, limit=1)
    assert [i.id for i in second.items] == [past] and second.next is None


def test_a_cursor_from_elsewhere_is_refused() -> None:
    at = datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC)
    assert Cursor.parse(Cursor(at, 7).text()) == Cursor(at, 7)
    assert Cursor.parse(Cursor(None, 7).text()) == Cursor(None, 7)
    for bad in ("", "7", "x_7", "none_", "1_-2", "9" * 40 + "_1", "none_7_8"):
        with pytest.raises(FollowupError) as caught:
            Cursor.parse(bad)
        assert (caught.value.kind, caught.value.field) == ("invalid", "after")


async def test_rescheduling(engine: AsyncEngine) -> None:
    ana = await customer(engine, "Ana", "+4930123456")
    fid = await followup(engine, ana, "alice", due=-timedelta(hours=1))
    work = store(engine)
    later = datetime(2026, 12, 5, 9, 0, tzinfo=timezone(timedelta(hours=1)))  # 08:00 UTC
    item, before = await work.reschedule(fid, due_at=later, by="alice", now=NOW)
    assert (item.due_at, item.overdue, item.state, before) == (
        later, False, "open", NOW - timedelta(hours=1),
    )  # fmt: skip
    assert item.due_at is not None and item.due_at.utcoffset() == timedelta(0)
    (told,) = [(k, d) for t, k, d in await outbox(engine) if t == "followup.rescheduled"]
    assert told == (
        f"followup.rescheduled:{fid}:{NOW.isoformat()}",
        {
            "followup_id": fid,
            "owner": "alice",
            "due_at": later.astimezone(UTC).isoformat(),
            "was_due_at": (NOW - timedelta(hours=1)).isoformat(),
            "by": "alice",
            "at": NOW.isoformat(),
        },
    )
    # it moved in the list too: after the one now due earlier
    other = await followup(engine, ana, "alice", due=timedelta(hours=2))
    assert [i.id for i in (await work.work(["alice"], now=NOW)).items] == [other, fid]
    for bad in (
        NOW,
        NOW - timedelta(seconds=1),
        NOW + timedelta(days=367),
        later.replace(tzinfo=None),
    ):
        with pytest.raises(FollowupError) as caught:
            await work.reschedule(fid, due_at=bad, by="alice", now=NOW)
        assert (caught.value.kind, caught.value.field) == ("invalid", "due_at"), bad
    with pytest.raises(FollowupError, match="in the past"):
        await work.reschedule(fid, due_at=NOW - timedelta(minutes=5), by="alice", now=NOW)
    unchanged = await work.get(fid, now=NOW)
    assert unchanged is not None and unchanged.due_at == later  # refused: nothing written
    with pytest.raises(FollowupError) as missing:
        await work.reschedule(fid + 100, due_at=later, by="alice", now=NOW)
    assert missing.value.kind == "missing"
    await work.close(fid, result="done", note="", by="alice", now=NOW)
    with pytest.raises(FollowupError, match="closed") as caught:
        await work.reschedule(fid, due_at=later, by="alice", now=NOW)
    assert caught.value.kind == "conflict"
    closed = await work.get(fid, now=NOW)
    assert closed is not None and closed.due_at == later


async def test_a_callback_that_reaches_the_customer_closes_the_followup(
    engine: AsyncEngine,
) -> None:
    ana = await customer(engine, "Ana", "+4930123456")
    fid = await followup(engine, ana, "queue:support", due=-timedelta(hours=1))
    work = store(engine)
    first = await work.start_dial(fid, agent="alice", pbx="lab", token="aa11", now=NOW)
    assert (first.number, first.call_id) == ("+4930123456", f"cti-cb-{fid}-aa11")
    item = await work.get(fid, now=NOW)
    assert item is not None and item.state == "dialling" and item.dialling_since == NOW
    with pytest.raises(FollowupError, match="being dialled"):
        await work.start_dial(fid, agent="bob", pbx="lab", token="bb22", now=NOW)
    assert await outbox(engine) == []  # starting a dial is not news for the CRM
    # nobody answered: still open, with the attempt's result; the CRM hears of the call
    later = NOW + timedelta(minutes=1)
    item = await work.finish_dial(first, "no_answer", "no answer", now=later)
    assert item is not None and (item.state, item.result, item.closed_at) == (
        "open", "no_answer", None,
    )  # fmt: skip
    # the second try reaches the customer: closed, and both calls are on the timeline
    second = await work.start_dial(fid, agent="alice", pbx="lab", token="cc33", now=later)
    item = await work.finish_dial(second, "reached", "the customer answered", now=later)
    assert item is not None
    assert (item.state, item.result, item.closed_at) == ("closed", "reached", later)
    calls = await calls_of(engine, ana)
    assert [(c.direction, c.result, c.agent, c.call_id) for c in calls] == [
        ("outbound", "no_answer", "alice", first.call_id),
        ("outbound", "reached", "alice", second.call_id),
    ]
    assert calls[1].external_id == f"call:lab:{second.call_id}"  # record_call's own key
    assert calls[1].title == "Callback to +4930123456: the customer answered"
    rows = await outbox(engine)
    assert [(topic, key) for topic, key, _ in rows] == [
        ("call.placed", f"call.placed:{first.call_id}"),
        ("call.placed", f"call.placed:{second.call_id}"),
        ("followup.closed", f"followup.closed:{fid}"),
    ]
    assert rows[0][2]["result"] == "no_answer" and rows[0][2]["followup_id"] == fid
    assert rows[2][2] | {"closed_at": None} == {
        "followup_id": fid, "owner": "queue:support", "result": "reached", "closed_at": None,
        "by": "alice", "note": None,
    }  # fmt: skip
    with pytest.raises(FollowupError, match="closed"):
        await work.start_dial(fid, agent="alice", pbx="lab", token="dd44", now=later)


async def test_closing_by_hand(engine: AsyncEngine) -> None:
    ana = await customer(engine, "Ana", "+4930123456")
    fid = await followup(engine, ana, "alice", due=timedelta(hours=1))
    work = store(engine)
    for bad, problem in (({"result": "reached"}, "result"), ({"note": "x\x00"}, "note")):
        with pytest.raises(FollowupError, match=problem) as caught:
            await work.close(fid, **{"result": "done", "note": "", **bad}, by="alice", now=NOW)
        assert caught.value.kind == "invalid"
    item = await work.close(fid, result="cancelled", note="sorted by mail", by="alice", now=NOW)
    assert (item.state, item.result, item.closed_at) == ("closed", "cancelled", NOW)
    assert item.body == "Closed (cancelled) by alice: sorted by mail"
    [(topic, key, data)] = await outbox(engine)
    assert (topic, key, data["note"], data["by"]) == (
        "followup.closed", f"followup.closed:{fid}", "sorted by mail", "alice",
    )  # fmt: skip
    with pytest.raises(FollowupError, match="closed") as caught:
        await work.close(fid, result="done", note="", by="bob", now=NOW)
    assert caught.value.kind == "conflict"
    with pytest.raises(FollowupError) as missing:
        await work.close(fid + 100, result="done", note="", by="bob", now=NOW)
    assert missing.value.kind == "missing"
    assert len(await outbox(engine)) == 1  # nothing refused was written


async def test_a_dial_whose_result_was_lost_may_be_dialled_again(engine: AsyncEngine) -> None:
    ana = await customer(engine, "Ana", "+4930123456")
    fid = await followup(engine, ana, "alice", due=None)
    work = store(engine)
    lost = await work.start_dial(fid, agent="alice", pbx="lab", token="aa11", now=NOW)
    within = NOW + work.dial_timeout - timedelta(seconds=1)
    with pytest.raises(FollowupError, match="being dialled"):
        await work.start_dial(fid, agent="alice", pbx="lab", token="bb22", now=within)
    after = NOW + work.dial_timeout
    again = await work.start_dial(fid, agent="alice", pbx="lab", token="cc33", now=after)
    # the lost call is settled as unknown; its late result changes neither it nor the follow-up
    item = await work.finish_dial(lost, "reached", "late", now=after)
    assert item is not None and item.state == "dialling"
    assert [c.result for c in await calls_of(engine, ana)] == ["unknown", None]
    assert [(t, d["result"]) for t, _, d in await outbox(engine)] == [("call.placed", "unknown")]
    item = await work.finish_dial(again, "busy", "the line is busy", now=after)
    assert item is not None and (item.state, item.result) == ("open", "busy")


async def test_the_contact_rule_refuses_a_third_call_and_says_when(engine: AsyncEngine) -> None:
    ana = await customer(engine, "Ana", "+4930123456")
    one = await followup(engine, ana, "alice", due=None)
    two = await followup(engine, ana, "bob", due=None)
    work = store(engine)
    # a call Asterisk never placed does not count
    refused = await work.start_dial(one, agent="alice", pbx="lab", token="a0", now=NOW)
    await work.finish_dial(refused, "not_placed", "Originate failed", now=NOW)
    for token, at in (("a1", NOW), ("a2", NOW + timedelta(hours=2))):
        dialled = await work.start_dial(one, agent="alice", pbx="lab", token=token, now=at)
        await work.finish_dial(dialled, "no_answer", "no answer", now=at)
    # another follow-up of the same customer: the rule is the customer's, not the follow-up's
    third = NOW + timedelta(hours=3)
    with pytest.raises(ContactRefused) as caught:
        await work.start_dial(two, agent="bob", pbx="lab", token="b1", now=third)
    decision = caught.value.decision
    assert (decision.placed, decision.limit, decision.next_at) == (2, 2, NOW + DAY)
    item = await work.get(two, now=third)
    assert item is not None and item.state == "open"  # refused: nothing changed
    assert len(await calls_of(engine, ana)) == 3
    # a window later the first call has aged out
    allowed = await work.start_dial(two, agent="bob", pbx="lab", token="b2", now=NOW + DAY)
    assert allowed.number == "+4930123456"


async def test_a_customer_without_a_phone_cannot_be_dialled(engine: AsyncEngine) -> None:
    ben = await customer(engine, "Ben")
    fid = await followup(engine, ben, "alice", due=None)
    with pytest.raises(FollowupError, match="no phone number") as caught:
        await store(engine).start_dial(fid, agent="alice", pbx="lab", token="aa", now=NOW)
    assert caught.value.kind == "invalid"
    item = await store(engine).get(fid, now=NOW)
    assert item is not None and item.state == "open"


async def test_missed_calls_of_known_customers_become_one_callback(engine: AsyncEngine) -> None:
    ana = await customer(engine, "Ana", "+8613800138000")
    work = store(engine)
    abandoned = record("abandoned")
    fid = await work.file_missed_call(ana, abandoned, number="+8613800138000", now=NOW)
    assert fid is not None
    assert await work.file_missed_call(ana, abandoned, number=None, now=NOW) is None  # once
    # another missed call meanwhile: the open callback covers it
    timeout = record("timeout", call_id="1764842500.9")
    assert await work.file_missed_call(ana, timeout, number=None, now=NOW) is None
    item = await work.get(fid, now=NOW)
    assert item is not None
    assert (item.owner, item.title, item.due_at, item.number, item.call_id) == (
        "queue:support", "Call back: hung up while waiting in support",
        NOW + timedelta(minutes=30), "+8613800138000", abandoned.call_id,
    )  # fmt: skip
    [(topic, key, data)] = await outbox(engine)
    assert (topic, key, data["source"], data["owner"]) == (
        "followup.created", f"followup.created:{fid}", "missed_call", "queue:support",
    )  # fmt: skip
    # once that one is done, the next missed call files a new one; an answered call none
    await work.close(fid, result="done", note="", by="alice", now=NOW)
    answered = record("answered", call_id="1764842600.1", answered_by="alice")
    assert await work.file_missed_call(ana, answered, number=None, now=NOW) is None
    again = await work.file_missed_call(ana, timeout, number=None, now=NOW)
    assert again is not None and again != fid
    off = store(engine, replace(SETTINGS, from_missed=False))
    later = record("leave_empty", call_id="1764842700.2")
    await off.close(again, result="done", note="", by="alice", now=NOW)
    assert await off.file_missed_call(ana, later, number=None, now=NOW) is None


async def test_two_dials_of_one_customer_at_once_pass_the_rule_once(engine: AsyncEngine) -> None:
    """The customer's row is locked first, so the second dial sees the first one's call."""
    ana = await customer(engine, "Ana", "+4930123456")
    one = await followup(engine, ana, "alice", due=None)
    two = await followup(engine, ana, "bob", due=None)
    work = store(engine, replace(SETTINGS, contact_max=1))
    results = await asyncio.gather(
        work.start_dial(one, agent="alice", pbx="lab", token="a1", now=NOW),
        work.start_dial(two, agent="bob", pbx="lab", token="b1", now=NOW),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1, results
    assert isinstance(refused[0], ContactRefused), refused
    assert len(await calls_of(engine, ana)) == 1


def test_the_board_shows_followups_per_queue_and_agent() -> None:
    """What cti_app.stack.refresh_work hands the wallboard from :func:`work_counts`, and the
    queue membership the follow-up routes ask it for."""
    board = Board()
    at = NOW.timestamp()
    for queue in ("support", "sales"):
        board.observe(MemberUpdated("p", at, queue, "alice", "Alice", "PJSIP/1001", 1, False,
                                    "", False, 0.0))  # fmt: skip
    board.observe(MemberUpdated("p", at, "sales", "bob", "Bob", "PJSIP/1002", 1, False, "",
                                False, 0.0))  # fmt: skip
    assert board.queues_of("alice") == {"support", "sales"}
    assert board.queues_of("nobody") == frozenset()
    version = board.version
    board.set_callbacks({"support": 3}, {"support": 1})
    board.set_followups({"alice": (2, 1)})
    assert board.version > version
    shot = board.snapshot(at + 1)
    tiles = {q["name"]: (q["callbacks"], q["callbacks_overdue"]) for q in shot["queues"]}
    assert tiles == {"support": (3, 1), "sales": (0, 0)}
    assert (shot["total"]["callbacks"], shot["total"]["callbacks_overdue"]) == (3, 1)
    rows = {a["id"]: (a["followups"], a["followups_overdue"]) for a in shot["agents"]}
    assert rows == {"alice": (2, 1), "bob": (0, 0)}
    board.set_followups({})  # all done
    assert {a["followups"] for a in board.snapshot(at + 2)["agents"]} == {0}
