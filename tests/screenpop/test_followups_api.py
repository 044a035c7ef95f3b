"""Follow-ups end to end: the real app over HTTP, a real AmiClient, the PBX simulator over a
loopback socket, the store in SQLite and PostgreSQL; and the pop filing callbacks for
missed calls of known customers.

Choices under test: an agent works their own follow-ups and their queues' (membership as the
board learnt it from Asterisk); a refused permission or contact rule is audited and places no
call; a reached customer closes the follow-up, no answer leaves it open.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync import audit
from crm_sync.followups import Followups
from crm_sync.models import AuditEntry, Interaction
from cti.board import Board
from cti.callbacks import CallbackDialer
from cti.events import CallEnded, CallQueued, CallRecord, CallStarted, MemberUpdated
from cti.settings import AgentSettings, FollowupSettings
from pbxsim import AmiServer
from screenpop.cards import PopBook
from screenpop.followups_api import FollowupDesk
from screenpop.hub import Hub
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    HOSTILE,
    HOSTILE_PHONE,
    NOBODY,
    PBX,
    WEI,
    Seeded,
    buffered,
    build_app,
    client_for,
    eventually,
    login,
    new_pop,
    new_store,
    now,
    seed,
    simulated_pbx,
)

Client = TestClient[web.Request, web.Application]
ALICE = "Local/1001@agents/n"  # Alice's interface in the simulator's support queue
AGENTS = (AgentSettings("Alice", members=("Alice", ALICE)), AgentSettings("Bob", members=("Bob",)))
SETTINGS = FollowupSettings(contact_max=2, ring_seconds=5.0)
DAY = timedelta(hours=24)


@dataclass
class Lab:
    server: AmiServer
    client: Client
    pop: PopService
    engine: AsyncEngine
    seeded: Seeded
    ids: dict[str, int]  # follow-ups by owner
    emitted: list[Mapping[str, str]]
    woken: list[str]

    async def login(self, name: str) -> dict[str, str]:
        """Log in as ``name`` (whoever was logged in before is not)."""
        self.client.session.cookie_jar.clear()
        return {"X-CSRF-Token": await login(self.client, name)}

    async def post(self, url: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        response = await self.client.post(url, json=body, headers=headers)
        return response.status, await response.json()

    async def get(self, url: str) -> tuple[int, Any]:
        response = await self.client.get(url)
        return response.status, await response.json()

    def originated(self) -> list[Mapping[str, str]]:
        return [e for e in self.emitted if e.get("Event") == "OriginateResponse"]

    async def audit(self) -> list[AuditEntry]:
        return await audit.recent(self.engine, 100)


async def add_followups(pop: PopService, seeded: Seeded) -> dict[str, int]:
    """One follow-up per owner: Alice's own (the hostile customer, overdue), her queue's,
    another queue's, and Bob's."""
    at = now()
    owners = {
        "Alice": (seeded.hostile, -timedelta(hours=1)),
        "queue:support": (seeded.wei, timedelta(hours=1)),
        "queue:sales": (seeded.twin_a, timedelta(hours=2)),
        "Bob": (seeded.twin_b, timedelta(hours=3)),
    }
    assert pop.store is not None
    ids = {}
    async with pop.store.sessions() as session, session.begin():
        for owner, (customer, due) in owners.items():
            row = Interaction(
                customer_id=customer, kind="followup", occurred_at=at, title=f"Call {owner}",
                status="open", owner=owner, due_at=at + due,
            )  # fmt: skip
            session.add(row)
            await session.flush()
            ids[owner] = row.id
    return ids


@asynccontextmanager
async def open_lab(
    engine: AsyncEngine, settings: FollowupSettings = SETTINGS, *, with_pbx: bool = True
) -> AsyncIterator[Lab]:
    async with simulated_pbx() as (server, ami):
        emitted: list[Mapping[str, str]] = []
        server.observers.append(emitted.append)
        store = new_store(engine)
        pop = new_pop(store)
        seeded = await seed(store)
        ids = await add_followups(pop, seeded)
        board = Board(agents=AGENTS)  # Alice is a member of support, as Asterisk says
        member = MemberUpdated(PBX, time.time(), "support", "Alice", "Alice", ALICE, 1, False,
                               "", False, 0.0)  # fmt: skip
        board.observe(member)
        dialer = CallbackDialer({PBX: ami}, AGENTS, settings) if with_pbx else None
        desk = FollowupDesk(Followups(store.sessions, settings), dialer, board.queues_of)
        woken: list[str] = []
        app = build_app(pop, store, followups=desk, work_changed=lambda: woken.append("x"))
        try:
            async with client_for(app) as client:
                yield Lab(server, client, pop, engine, seeded, ids, emitted, woken)
        finally:
            await pop.close()


@pytest.fixture
async def lab(engine: AsyncEngine) -> AsyncIterator[Lab]:
    async with open_lab(engine) as opened:
        yield opened


# --------------------------------------------------------------------------- the work list


async def test_an_agent_sees_their_own_and_their_queues_followups(lab: Lab) -> None:
    await lab.login("alice")
    status, body = await lab.get("/api/followups")
    assert status == 200
    listed = body["followups"]
    assert [f["id"] for f in listed] == [lab.ids["Alice"], lab.ids["queue:support"]]
    own = listed[0]
    assert (own["customer"]["name"], own["number"], own["overdue"], own["state"]) == (
        HOSTILE, HOSTILE_PHONE, True, "open",
    )  # fmt: skip
    assert body["owners"] == ["Alice", "queue:support"]
    assert body["rule"] == {"contact_max": 2, "window_hours": 24.0}
    await lab.login("bob")  # in no queue: only his own
    assert [f["id"] for f in (await lab.get("/api/followups"))[1]["followups"]] == [lab.ids["Bob"]]


async def test_a_supervisor_sees_everybodys_or_one_owners(lab: Lab) -> None:
    await lab.login("sue")
    listed = (await lab.get("/api/followups"))[1]["followups"]
    assert set(lab.ids.values()) < {f["id"] for f in listed}  # and the seeded one, no owner
    one = (await lab.get("/api/followups?owner=queue:sales"))[1]["followups"]
    assert [f["id"] for f in one] == [lab.ids["queue:sales"]]


# --------------------------------------------------------------------------- dial


async def test_a_callback_that_reaches_the_customer_closes_the_followup(lab: Lab) -> None:
    alice = await lab.login("alice")
    seq = lab.pop.hub.last_seq("Alice")
    fid = lab.ids["queue:support"]
    status, body = await lab.post(f"/api/followups/{fid}/dial", alice, {})
    assert status == 200, body
    followup = body["followup"]
    assert (followup["state"], followup["result"]) == ("closed", "reached")
    [response] = lab.originated()
    assert response["Response"] == "Success"
    assert response["Channel"].startswith(f"Local/{WEI}@callbacks-")
    assert (response["Application"], response["Data"]) == ("Dial", f"{ALICE},20")
    assert response["Uniqueid"] == body["call"]["id"] and body["call"]["id"].startswith("cti-cb-")
    assert (response["CallerIDNum"], response["CallerIDName"]) == (WEI, "张伟")
    [entry] = await lab.audit()
    assert (entry.login, entry.action, entry.agent, entry.queue, entry.pbx, entry.result) == (
        "alice", "followup_dial", "Alice", "support", PBX, "ok",
    )  # fmt: skip
    assert entry.detail == f"follow-up {fid} to {WEI}: reached: the customer answered"
    assert [m["type"] for m in buffered(lab.pop.hub, "Alice", seq)] == ["followups"]
    assert lab.woken  # the wallboard's figures are read again
    listed = (await lab.get("/api/followups"))[1]["followups"]
    assert fid not in [f["id"] for f in listed]


async def test_no_answer_leaves_the_followup_open(lab: Lab) -> None:
    lab.server.silent_devices.add(f"Local/{HOSTILE_PHONE}@callbacks")
    alice = await lab.login("alice")
    fid = lab.ids["Alice"]
    status, body = await lab.post(f"/api/followups/{fid}/dial", alice, {})
    assert status == 200
    assert (body["followup"]["state"], body["followup"]["result"]) == ("open", "no_answer")
    # the customer's name reaches the PBX without its quotes and angle brackets
    [response] = lab.originated()
    assert (response["Response"], response["Reason"]) == ("Failure", "3")
    assert "<" not in response["CallerIDName"] and '"' not in response["CallerIDName"]
    [entry] = await lab.audit()
    assert entry.result == "ok" and entry.detail.endswith("no_answer: no answer")


async def test_the_contact_rule_refuses_the_next_call_with_when(engine: AsyncEngine) -> None:
    async with open_lab(engine, FollowupSettings(contact_max=1, ring_seconds=5.0)) as lab:
        lab.server.silent_devices.add(f"Local/{HOSTILE_PHONE}@callbacks")
        alice = await lab.login("alice")
        fid = lab.ids["Alice"]
        assert (await lab.post(f"/api/followups/{fid}/dial", alice, {}))[0] == 200
        status, body = await lab.post(f"/api/followups/{fid}/dial", alice, {})
        assert (status, body["error_id"], body["placed"], body["limit"]) == (
            409, "contact_limit", 1, 1,
        )  # fmt: skip
        assert body["next_allowed_at"] is not None
        assert body["message"].startswith("Not called: the center called this customer once")
        assert len(lab.originated()) == 1  # the refused call was never placed
        refused, placed = await lab.audit()
        assert refused.result.startswith("refused: Not called") and placed.result == "ok"


async def test_who_may_dial_and_close(lab: Lab) -> None:
    alice = await lab.login("alice")
    for owner in ("queue:sales", "Bob"):
        for action in ("dial", "close"):
            url = f"/api/followups/{lab.ids[owner]}/{action}"
            status, body = await lab.post(url, alice, {"result": "done"})
            assert (status, body["error_id"]) == (403, "not_allowed"), (owner, action)
    assert lab.originated() == []
    entries = await lab.audit()
    assert len(entries) == 4 and all(e.result.startswith("denied: ") for e in entries)
    assert {e.action for e in entries} == {"followup_dial", "followup_close"}
    bob = await lab.login("bob")
    status, _ = await lab.post(f"/api/followups/{lab.ids['Alice']}/dial", bob, {})
    assert status == 403
    # a supervisor may dial any, but Sue has no phone of her own to call from
    sue = await lab.login("sue")
    status, body = await lab.post(f"/api/followups/{lab.ids['Bob']}/dial", sue, {})
    assert (status, body["error_id"]) == (409, "no_device")
    assert lab.originated() == []
    assert (await lab.post("/api/followups/99999/dial", sue, {}))[0] == 404
    status, body = await lab.post(f"/api/followups/{lab.ids['Bob']}/dial", sue, {"pbx": "x"})
    assert (status, body["field"]) == (422, "pbx")


async def test_closing_by_hand(lab: Lab) -> None:
    alice = await lab.login("alice")
    url = f"/api/followups/{lab.ids['queue:support']}/close"
    status, body = await lab.post(url, alice, {"result": "reached"})
    assert (status, body["field"]) == (422, "result")
    status, body = await lab.post(url, alice, {"result": "done", "note": "<b>sent a mail</b>"})
    assert status == 200
    closed = body["followup"]
    assert (closed["state"], closed["result"]) == ("closed", "done")
    assert closed["body"].endswith("Closed (done) by Alice: <b>sent a mail</b>")
    status, body = await lab.post(url, alice, {"result": "cancelled"})
    assert (status, body["error_id"]) == (409, "followup_state")
    [entry] = await lab.audit()
    assert (entry.action, entry.result) == ("followup_close", "ok")


async def test_without_a_pbx_the_list_works_and_dial_says_why(engine: AsyncEngine) -> None:
    async with open_lab(engine, with_pbx=False) as lab:
        alice = await lab.login("alice")
        assert (await lab.get("/api/followups"))[0] == 200
        status, body = await lab.post(f"/api/followups/{lab.ids['Alice']}/dial", alice, {})
        assert (status, body["error_id"]) == (503, "no_pbx")


# --------------------------------------------------------------------- a call from a page


async def test_an_agent_calls_a_customer_from_their_page(lab: Lab) -> None:
    alice = await lab.login("alice")
    url = f"/api/customers/{lab.seeded.wei}/call"
    status, body = await lab.post(url, alice, {"number": "138 0013 8000"})  # as agents type
    assert status == 200, body
    call = body["call"]
    assert (call["result"], call["detail"]) == ("reached", "the customer answered")
    assert call["id"].startswith(f"cti-out-{lab.seeded.wei}-")
    [response] = lab.originated()
    assert response["Channel"].startswith(f"Local/{WEI}@callbacks-")
    assert (response["Uniqueid"], response["CallerIDName"]) == (call["id"], "张伟")
    [entry] = await lab.audit()
    assert (entry.action, entry.agent, entry.pbx, entry.result) == (
        "customer_call", "Alice", PBX, "ok",
    )  # fmt: skip
    assert entry.detail == f"customer {lab.seeded.wei} at {WEI}: reached: the customer answered"
    async with new_store(lab.engine).sessions() as session:
        row = await session.scalar(select(Interaction).where(Interaction.call_id == call["id"]))
    assert row is not None
    assert (row.customer_id, row.direction, row.agent, row.result, row.title) == (
        lab.seeded.wei, "outbound", "Alice", "reached", f"Call to {WEI}: the customer answered",
    )  # fmt: skip


async def test_a_call_from_a_page_counts_for_the_contact_rule(engine: AsyncEngine) -> None:
    async with open_lab(engine, FollowupSettings(contact_max=1, ring_seconds=5.0)) as lab:
        lab.server.silent_devices.add(f"Local/{HOSTILE_PHONE}@callbacks")
        alice = await lab.login("alice")
        url = f"/api/customers/{lab.seeded.hostile}/call"
        status, body = await lab.post(url, alice, {"number": HOSTILE_PHONE})
        assert (status, body["call"]["result"]) == (200, "no_answer")
        # the follow-up of the same customer is refused now: one call in the window
        status, body = await lab.post(f"/api/followups/{lab.ids['Alice']}/dial", alice, {})
        assert (status, body["error_id"]) == (409, "contact_limit")
        status, body = await lab.post(url, alice, {"number": HOSTILE_PHONE})
        assert (status, body["error_id"], body["placed"]) == (409, "contact_limit", 1)
        assert len(lab.originated()) == 1


async def test_bad_numbers_and_customers_place_nothing(lab: Lab) -> None:
    alice = await lab.login("alice")
    url = f"/api/customers/{lab.seeded.wei}/call"
    for bad in ("", "1001", "<script>", "+86 138 0013 8000" * 5, 42):
        status, body = await lab.post(url, alice, {"number": bad})
        assert (status, body.get("field")) == (422, "number"), bad
    # a customer outside her work (here: none at all) is refused and audited, not dialled
    status, body = await lab.post("/api/customers/99999/call", alice, {"number": WEI})
    assert (status, body["error_id"]) == (403, "not_your_customer")
    assert [(e.action, e.result) for e in await lab.audit()][-1] == (
        "customer.call", "denied: not your customer",
    )  # fmt: skip
    sue = await lab.login("sue")  # no phone of her own
    status, body = await lab.post(url, sue, {"number": WEI})
    assert (status, body["error_id"]) == (409, "no_device")
    assert lab.originated() == []


# --------------------------------------------------------------------------- missed calls


async def count_followups(session: AsyncSession, customer: int) -> int:
    query = select(func.count()).where(
        Interaction.customer_id == customer, Interaction.kind == "followup"
    )
    return int(await session.scalar(query) or 0)


def abandoned(call_id: str, number: str) -> CallRecord:
    at = time.time()
    return CallRecord(
        call_id, PBX, number, "", "800", ("support",), ("Alice",), None, (), (), "abandoned",
        at - 60, at - 58, None, at, None, None, (),
    )  # fmt: skip


def looked_up(pop: PopService, call_id: str) -> Callable[[], bool]:
    return lambda: pop.lookup_for(PBX, call_id) is not None


async def test_an_abandoned_call_of_a_known_customer_files_one_callback(
    engine: AsyncEngine,
) -> None:
    store = new_store(engine)
    pop = PopService(
        PopBook(), Hub(), store, clock=now, followups=Followups(store.sessions, SETTINGS)
    )
    seeded = await seed(store)
    try:
        for call_id, number in (("c-known", HOSTILE_PHONE), ("c-nobody", NOBODY)):
            at = time.time()
            pop.publish(CallStarted(PBX, call_id, at, number, "", "800"))
            pop.publish(CallQueued(PBX, call_id, at, "support", 1, number, ""))
            await eventually(looked_up(pop, call_id))
            ended = CallEnded(PBX, call_id, at + 40, abandoned(call_id, number))
            pop.publish(ended)
            pop.publish(ended)  # the same end again (a replay, a second instance)
    finally:
        await pop.close()  # lets the timeline writes finish
    async with store.sessions() as session:
        assert await count_followups(session, seeded.hostile) == 1
        row = await session.scalar(
            select(Interaction).where(
                Interaction.customer_id == seeded.hostile, Interaction.kind == "followup"
            )
        )
    assert row is not None
    assert (row.owner, row.status, row.call_id, row.body) == (
        "queue:support", "open", "c-known", f"Call back {HOSTILE_PHONE}",
    )  # fmt: skip
    # the unknown caller got no customer, so no follow-up either
    async with store.sessions() as session:
        total = await session.scalar(
            select(func.count()).where(
                Interaction.kind == "followup", Interaction.external_id.like("missed:%")
            )
        )
    assert total == 1


# --------------------------------------------------------------------------- filters, pages


async def test_the_work_list_filters_pages_and_counts(lab: Lab) -> None:
    await lab.login("alice")
    own, queued = lab.ids["Alice"], lab.ids["queue:support"]  # due an hour ago, in an hour
    status, body = await lab.get("/api/followups")
    assert (body["show"], body["next"], body["counts"]) == (
        "all", None, {"todo": 2, "overdue": 1, "matching": 2},
    )  # fmt: skip
    assert [f["owner_label"] for f in body["followups"]] == ["Alice Agent", "queue support"]
    shows = {"mine": [own], "queues": [queued], "overdue": [own]}
    for show, expected in shows.items():
        status, body = await lab.get(f"/api/followups?show={show}")
        assert status == 200 and [f["id"] for f in body["followups"]] == expected, show
        assert body["counts"] == {"todo": 2, "overdue": 1, "matching": 1}, show
    # "today" is the browser's day, sent as its bounds: here one that starts half an hour ago
    start = now() - timedelta(minutes=30)
    day = {"show": "today", "day_start": start.isoformat(), "day_end": (start + DAY).isoformat()}
    response = await lab.client.get("/api/followups", params=day)
    assert [f["id"] for f in (await response.json())["followups"]] == [queued]
    # a page at a time: the next one starts after the last one shown
    status, first = await lab.get("/api/followups?limit=1")
    assert [f["id"] for f in first["followups"]] == [own] and first["next"]
    assert first["counts"]["todo"] == 2  # the whole list's, whatever the page
    response = await lab.client.get("/api/followups", params={"limit": 1, "after": first["next"]})
    second = await response.json()
    assert [f["id"] for f in second["followups"]] == [queued] and second["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"show": "late"}, "show"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "2026-12-04_7"}, "after"),
        ({"show": "today"}, "day_start"),
        ({"show": "today", "day_start": "2026-12-04T00:00:00", "day_end": "x"}, "day_start"),
        ({"show": "today", "day_start": "2026-12-04T00:00+01:00", "day_end": "x"}, "day_end"),
        (
            {"show": "today", "day_start": "2026-12-04T00:00+01:00",
             "day_end": "2026-12-03T00:00+01:00"},
            "day_end",
        ),
        (
            {"show": "today", "day_start": "2026-12-04T00:00+01:00",
             "day_end": "2026-12-06T00:00+01:00"},
            "day_end",
        ),
    ],
)  # fmt: skip
async def test_a_bad_filter_is_refused_with_its_field(
    lab: Lab, query: dict[str, str], field: str
) -> None:
    await lab.login("alice")
    response = await lab.client.get("/api/followups", params=query)
    body = await response.json()
    assert (response.status, body["error_id"], body["field"]) == (422, "invalid_field", field)


# --------------------------------------------------------------------------- reschedule


async def test_rescheduling_a_followup(lab: Lab) -> None:
    alice = await lab.login("alice")
    fid = lab.ids["Alice"]  # overdue
    url = f"/api/followups/{fid}/reschedule"
    seq = lab.pop.hub.last_seq("Alice")
    due = (now() + timedelta(hours=20)).astimezone(timezone(timedelta(hours=-5)))
    status, body = await lab.post(url, alice, {"due_at": due.isoformat()})
    assert status == 200, body
    moved = body["followup"]
    assert datetime.fromisoformat(moved["due_at"]) == due
    assert (moved["state"], moved["overdue"], moved["owner_label"]) == (
        "open",
        False,
        "Alice Agent",
    )
    [entry] = await lab.audit()
    assert (entry.action, entry.agent, entry.result) == ("followup_due", "Alice", "ok")
    assert entry.detail.startswith(f"follow-up {fid}: due ") and "->" in entry.detail
    assert [m["type"] for m in buffered(lab.pop.hub, "Alice", seq)] == ["followups"]
    assert lab.woken  # the wallboard's overdue figures are read again
    listed = (await lab.get("/api/followups"))[1]
    assert [f["id"] for f in listed["followups"]] == [lab.ids["queue:support"], fid]
    assert listed["counts"]["overdue"] == 0
    # bad times are refused with the field, and change nothing
    past = (now() - timedelta(minutes=1)).isoformat()
    for bad in (past, "tomorrow", "2026-12-05T09:00:00", 17, None):
        status, body = await lab.post(url, alice, {"due_at": bad})
        assert (status, body["error_id"], body["field"]) == (422, "invalid_field", "due_at"), bad
    status, body = await lab.post(url, alice, {"due_at": past})
    assert "in the past" in body["message"]
    assert (await lab.get("/api/followups"))[1]["followups"][1]["due_at"] == moved["due_at"]
    # somebody else's, an unknown one, a closed one
    later = {"due_at": due.isoformat()}
    status, body = await lab.post(f"/api/followups/{lab.ids['Bob']}/reschedule", alice, later)
    assert (status, body["error_id"]) == (403, "not_allowed")
    assert (await lab.post("/api/followups/99999/reschedule", alice, later))[0] == 404
    await lab.post(f"/api/followups/{fid}/close", alice, {"result": "done"})
    status, body = await lab.post(url, alice, later)
    assert (status, body["error_id"]) == (409, "followup_state")
    actions = [(e.action, e.result[:7]) for e in await lab.audit()]
    assert ("followup_due", "denied:") in actions
