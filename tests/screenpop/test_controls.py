"""Supervisor and agent controls end to end: the real app over HTTP, a real AmiClient, the
PBX simulator over a loopback socket, and the audit log in SQLite and PostgreSQL.

Choices under test: a refused permission is audited (``denied: …``); bad input (header
injection included) is answered 422, reaches no PBX and is not audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import audit
from crm_sync.models import AuditEntry
from cti.ami import AmiClient
from cti.controls import ControlError, MemberControls, spy_prefix
from cti.hashing import hash_password
from cti.settings import AgentSettings
from pbxsim import AmiServer
from screenpop.app import create_app
from screenpop.auth import Account, Accounts
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    PASSWORDS,
    PBX,
    WEI,
    Calls,
    client_for,
    dispositions,
    eventually,
    login,
    new_pop,
    new_store,
    now,
    simulated_pbx,
)

Client = TestClient[web.Request, web.Application]
ALICE = "Local/1001@agents/n"  # Alice's and Bob's interfaces in the simulator's queues
BOB = "Local/1002@agents/n"
AGENTS = (
    AgentSettings("Alice", members=("Alice", ALICE, "PJSIP/1001")),
    AgentSettings("Bob", members=("Bob", BOB)),
    AgentSettings("Zed", members=("Zed", "PJSIP/1999")),  # in no queue of the simulator
)
INJECTION = "lunch\r\nAction: Originate\r\nChannel: PJSIP/666\r\nApplication: ChanSpy"


@dataclass
class Lab:
    server: AmiServer
    ami: AmiClient
    client: Client
    pop: PopService
    engine: AsyncEngine
    emitted: list[Mapping[str, str]]
    woken: list[str]  # one entry each time the app said the store's figures changed
    received: list[Mapping[str, str]]  # every action the simulator was asked, keys lowered

    async def login(self, name: str) -> dict[str, str]:
        """Log in; the headers an unsafe request of that session needs."""
        return {"X-CSRF-Token": await login(self.client, name)}

    def emitted_named(self, event: str) -> list[Mapping[str, str]]:
        return [e for e in self.emitted if e.get("Event") == event]

    async def audit(self) -> list[AuditEntry]:
        return await audit.recent(self.engine, 100)


def accounts(device: str) -> Accounts:
    def account(login: str, name: str, agent: str, role: Any, device: str = "") -> Account:
        hashed = hash_password(PASSWORDS[login], n=2**10)
        return Account(login, name, agent, role, hashed, device=device)

    return Accounts(
        [
            account("alice", "Alice Agent", "Alice", "agent"),
            account("bob", "Bob Agent", "Bob", "agent"),
            account("sue", "Sue Supervisor", "", "supervisor", device),
        ]
    )


@asynccontextmanager
async def open_lab(
    engine: AsyncEngine,
    *,
    device: str = "PJSIP/2001",
    action_timeout: float = 5.0,
    clock: Callable[[], datetime] = now,
) -> AsyncIterator[Lab]:
    async with simulated_pbx() as (server, ami):
        emitted: list[Mapping[str, str]] = []
        server.observers.append(emitted.append)
        received: list[Mapping[str, str]] = []
        for name, handler in list(server.actions.items()):
            server.actions[name] = _recording(handler, received)
        store = new_store(engine)
        pop = new_pop(store)
        woken: list[str] = []
        app = create_app(
            pop=pop,
            accounts=accounts(device),
            dispositions=dispositions(),
            store=store,
            now=clock,
            controls=MemberControls({PBX: ami}, AGENTS, timeout=action_timeout),
            work_changed=lambda: woken.append("rated"),
        )
        try:
            async with client_for(app) as client:
                yield Lab(server, ami, client, pop, engine, emitted, woken, received)
        finally:
            await pop.close()


def _recording(handler: Any, into: list[Mapping[str, str]]) -> Any:
    """The simulator's action handler, noting each action it is asked first."""

    async def recorded(client: Any, action: Mapping[str, str]) -> None:
        into.append(dict(action))
        await handler(client, action)

    return recorded


@pytest.fixture
async def lab(engine: AsyncEngine) -> AsyncIterator[Lab]:
    async with open_lab(engine) as opened:
        yield opened


async def members(ami: AmiClient, queue: str) -> dict[str, dict[str, str]]:
    """The queue's members by interface, as Asterisk's QueueStatus tells them."""
    reply = await ami.send_action({"Action": "QueueStatus", "Queue": queue}, timeout=5)
    items = reply if isinstance(reply, list) else [reply]
    return {m["Location"]: m for m in items if m.get("Event") == "QueueMember"}


async def post(
    lab: Lab, url: str, headers: dict[str, str], body: Any
) -> tuple[int, dict[str, Any]]:
    response = await lab.client.post(url, json=body, headers=headers)
    return response.status, await response.json()


# --------------------------------------------------------------------------- pause


async def test_supervisor_pauses_an_agent_and_it_is_audited(lab: Lab) -> None:
    sue = await lab.login("sue")
    status, body = await post(
        lab, "/api/agents/Alice/pause", sue, {"paused": True, "reason": "lunch"}
    )
    assert (status, body) == (200, {"ok": True})
    paused = [e for e in lab.emitted_named("QueueMemberPause") if e["Interface"] == ALICE]
    assert [(e["Queue"], e["Paused"], e["PausedReason"]) for e in paused] == [
        ("support", "1", "lunch")
    ]
    assert (await members(lab.ami, "support"))[ALICE]["PausedReason"] == "lunch"
    [entry] = await lab.audit()
    assert (entry.login, entry.role, entry.action, entry.agent) == (
        "sue",
        "supervisor",
        "pause",
        "Alice",
    )
    assert (entry.queue, entry.pbx, entry.detail, entry.result) == (None, PBX, "lunch", "ok")
    assert entry.at.utcoffset() is not None and abs((now() - entry.at).total_seconds()) < 60

    status, _ = await post(lab, "/api/agents/Alice/pause", sue, {"paused": False, "reason": ""})
    assert status == 200
    assert (await members(lab.ami, "support"))[ALICE]["Paused"] == "0"
    assert [e.action for e in await lab.audit()] == ["unpause", "pause"]


async def test_pause_in_one_queue_only(lab: Lab) -> None:
    sue = await lab.login("sue")
    body = {"paused": True, "reason": "coaching", "queue": "support", "pbx": PBX}
    assert (await post(lab, "/api/agents/Bob/pause", sue, body))[0] == 200
    assert (await members(lab.ami, "support"))[BOB]["Paused"] == "1"
    [entry] = await lab.audit()
    assert (entry.action, entry.queue, entry.detail) == ("pause", "support", "coaching")


async def test_agent_pauses_and_unpauses_themselves(lab: Lab) -> None:
    alice = await lab.login("alice")
    body = {"paused": True, "reason": "break"}
    assert await post(lab, "/api/agents/Alice/pause", alice, body) == (200, {"ok": True})
    assert (await members(lab.ami, "support"))[ALICE]["PausedReason"] == "break"
    assert (await post(lab, "/api/agents/Alice/pause", alice, {"paused": False}))[0] == 200
    assert (await members(lab.ami, "support"))[ALICE]["Paused"] == "0"
    entries = await lab.audit()
    assert [(e.login, e.role, e.action, e.result) for e in entries] == [
        ("alice", "agent", "unpause", "ok"),
        ("alice", "agent", "pause", "ok"),
    ]


async def test_an_agent_may_not_pause_another_agent(lab: Lab) -> None:
    alice = await lab.login("alice")
    status, body = await post(
        lab, "/api/agents/Bob/pause", alice, {"paused": True, "reason": "break"}
    )
    assert (status, body["error_id"]) == (403, "not_allowed")
    assert lab.emitted_named("QueueMemberPause") == []
    [entry] = await lab.audit()
    assert (entry.login, entry.action, entry.agent) == ("alice", "pause", "Bob")
    assert entry.result == "denied: Agents may pause and unpause only themselves."


async def test_agents_may_not_add_remove_listen_or_read_the_audit(lab: Lab) -> None:
    Calls(lab.pop).ring("c1", "Alice", WEI)
    Calls(lab.pop).answer("c1", "Alice")
    alice = await lab.login("alice")
    add = await post(lab, "/api/queues/sales/members", alice, {"agent": "Alice"})
    remove = await lab.client.delete("/api/queues/support/members/Alice", headers=alice)
    spy = await post(lab, f"/api/calls/{PBX}/c1/listen", alice, {"mode": "listen"})
    assert [add[0], remove.status, spy[0]] == [403, 403, 403]
    assert (await lab.client.get("/api/audit")).status == 403
    assert ALICE not in await members(lab.ami, "sales")  # nothing was asked of the PBX
    assert ALICE in await members(lab.ami, "support")
    assert lab.emitted_named("OriginateResponse") == []
    entries = await lab.audit()
    assert sorted(e.action for e in entries) == ["listen", "queue_add", "queue_remove"]
    assert all(e.result == "denied: Only supervisors may do this." for e in entries)


async def test_a_control_needs_the_csrf_token(lab: Lab) -> None:
    await lab.login("sue")
    response = await lab.client.post(
        "/api/agents/Alice/pause", json={"paused": True, "reason": "lunch"}
    )
    assert response.status == 403
    assert (await response.json())["error_id"] == "csrf_failed"
    assert lab.emitted_named("QueueMemberPause") == []
    assert await lab.audit() == []


@pytest.mark.parametrize(
    "body",
    [
        {"paused": True, "reason": INJECTION},
        {"paused": True, "reason": "lunch\u2028Action: Originate"},  # a Unicode line break
        {"paused": True, "reason": "x" * 65},
        {"paused": True, "reason": ""},
        {"paused": True, "reason": "lunch", "queue": "support\r\nAction: Logoff"},
        {"paused": "yes", "reason": "lunch"},
        {"paused": True, "reason": "lunch", "pbx": "elsewhere"},
    ],
)
async def test_bad_input_reaches_no_pbx(lab: Lab, body: dict[str, Any]) -> None:
    sue = await lab.login("sue")
    status, answer = await post(lab, "/api/agents/Alice/pause", sue, body)
    assert (status, answer["error_id"]) == (422, "invalid_field")
    await asyncio.sleep(0.05)
    assert lab.emitted_named("QueueMemberPause") == []
    assert lab.emitted_named("OriginateResponse") == []
    assert (await members(lab.ami, "support"))[ALICE]["Paused"] == "0"
    assert await lab.audit() == []


async def test_injection_through_the_path_is_refused(lab: Lab) -> None:
    sue = await lab.login("sue")
    queue = "support%0D%0AAction:%20Originate"
    status, answer = await post(lab, f"/api/queues/{queue}/members", sue, {"agent": "Alice"})
    assert (status, answer["field"]) == (422, "queue")
    status, answer = await post(lab, "/api/agents/Nobody/pause", sue, {"paused": False})
    assert (status, answer["field"]) == (422, "agent")
    assert lab.emitted_named("QueueMemberAdded") == []
    assert await lab.audit() == []


async def test_a_refusal_of_asterisk_is_409_and_audited(lab: Lab) -> None:
    sue = await lab.login("sue")
    status, body = await post(lab, "/api/agents/Zed/pause", sue, {"paused": True, "reason": "x"})
    assert (status, body["error_id"]) == (409, "pbx_refused")
    assert body["message"] == (
        "this phone is not a member of any queue on the PBX"
        " (Asterisk: PJSIP/1999: Interface not found)"
    )
    [entry] = await lab.audit()
    assert entry.result == f"refused: {body['message']}"


async def test_pbx_down_is_502_and_audited_as_failed(lab: Lab) -> None:
    sue = await lab.login("sue")
    await lab.server.stop()
    await eventually(lambda: not lab.ami.connected)
    status, body = await post(lab, "/api/agents/Alice/pause", sue, {"paused": True, "reason": "x"})
    assert (status, body["error_id"]) == (502, "pbx_failed")
    assert "not connected" in body["message"]
    [entry] = await lab.audit()
    assert entry.result.startswith("failed: ") and "not connected" in entry.result


async def test_a_pbx_that_does_not_answer_is_502_after_the_timeout(engine: AsyncEngine) -> None:
    async with open_lab(engine, action_timeout=0.3) as lab:
        sue = await lab.login("sue")
        lab.server.freeze()
        body = {"paused": True, "reason": "lunch"}
        status, answer = await post(lab, "/api/agents/Alice/pause", sue, body)
        assert (status, answer["error_id"]) == (502, "pbx_failed")
        assert "no response to QueuePause within 0.3 s" in answer["message"]
        [entry] = await lab.audit()
        assert entry.result.startswith("failed: ")


async def test_without_a_pbx_controls_are_503(engine: AsyncEngine) -> None:
    store = new_store(engine)
    pop = new_pop(store)
    app = create_app(
        pop=pop, accounts=accounts(""), dispositions=dispositions(), store=store, now=now
    )
    try:
        async with client_for(app) as client:
            headers = {"X-CSRF-Token": await login(client, "sue")}
            body = {"paused": True, "reason": "lunch"}
            response = await client.post("/api/agents/Alice/pause", json=body, headers=headers)
            assert response.status == 503
            assert (await response.json())["error_id"] == "no_pbx"
    finally:
        await pop.close()


# --------------------------------------------------------------------------- queue members


async def test_queue_add_and_remove_round_trip(lab: Lab) -> None:
    sue = await lab.login("sue")
    assert ALICE not in await members(lab.ami, "sales")
    body = {"agent": "Alice", "penalty": 2}
    assert await post(lab, "/api/queues/sales/members", sue, body) == (200, {"ok": True})
    member = (await members(lab.ami, "sales"))[ALICE]
    assert (member["Name"], member["StateInterface"]) == ("Alice", "PJSIP/1001")
    assert (member["Membership"], member["Penalty"]) == ("dynamic", "2")

    status, again = await post(lab, "/api/queues/sales/members", sue, {"agent": "Alice"})
    assert (status, again["message"]) == (
        409,
        f"already logged in to that queue (Asterisk: {ALICE}: Unable to add interface: Already"
        " there)",
    )

    removed = await lab.client.delete("/api/queues/sales/members/Alice", headers=sue)
    assert (removed.status, await removed.json()) == (200, {"ok": True})
    assert ALICE not in await members(lab.ami, "sales")
    gone = await lab.client.delete(f"/api/queues/sales/members/Alice?pbx={PBX}", headers=sue)
    assert gone.status == 409

    entries = await lab.audit()
    assert [(e.action, e.queue, e.detail, e.result.split(":")[0]) for e in entries] == [
        ("queue_remove", "sales", "", "refused"),
        ("queue_remove", "sales", "", "ok"),
        ("queue_add", "sales", "", "refused"),
        ("queue_add", "sales", "penalty 2", "ok"),
    ]


async def test_queue_add_to_an_unknown_queue(lab: Lab) -> None:
    sue = await lab.login("sue")
    status, body = await post(lab, "/api/queues/nowhere/members", sue, {"agent": "Bob"})
    assert status == 409
    assert body["message"] == (
        f"the PBX has no queue of that name (Asterisk: {BOB}: Unable to add interface to queue:"
        " No such queue)"
    )
    status, body = await post(
        lab, "/api/queues/sales/members", sue, {"agent": "Bob", "penalty": -1}
    )
    assert (status, body["field"]) == (422, "penalty")


# --------------------------------------------------------------------------- listen


async def test_listen_originates_the_supervisors_phone_into_chanspy(lab: Lab) -> None:
    calls = Calls(lab.pop)
    calls.ring("c1", "Bob", WEI)
    calls.answer("c1", "Bob")
    sue = await lab.login("sue")
    assert await post(lab, f"/api/calls/{PBX}/c1/listen", sue, {"mode": "whisper"}) == (
        200,
        {"ok": True},
    )
    [spy] = lab.emitted_named("OriginateResponse")
    assert (spy["Response"], spy["Reason"], spy["Application"]) == ("Success", "4", "ChanSpy")
    assert spy["Data"] == "Local/1002@agents-,qEw"  # only a Local interface: its channels
    assert spy["Channel"].startswith("PJSIP/2001-")
    assert (spy["CallerIDName"], spy["CallerIDNum"]) == ("Listen Bob", "Bob")
    assert spy["ActionID"] and spy["Uniqueid"]
    [entry] = await lab.audit()
    assert (entry.action, entry.agent, entry.detail, entry.result) == (
        "listen",
        "Bob",
        "whisper",
        "ok",
    )


@pytest.mark.parametrize(("mode", "options"), [("listen", "qE"), ("barge", "qEB")])
async def test_listen_spies_on_the_device_not_the_local_channel(
    lab: Lab, mode: str, options: str
) -> None:
    calls = Calls(lab.pop)
    calls.ring("c2", "Alice", WEI)
    calls.answer("c2", "Alice")
    sue = await lab.login("sue")
    assert (await post(lab, f"/api/calls/{PBX}/c2/listen", sue, {"mode": mode}))[0] == 200
    [spy] = lab.emitted_named("OriginateResponse")
    assert spy["Data"] == f"PJSIP/1001-,{options}"


async def test_listen_errors(lab: Lab) -> None:
    sue = await lab.login("sue")
    status, body = await post(lab, f"/api/calls/{PBX}/nope/listen", sue, {"mode": "listen"})
    assert (status, body["error_id"]) == (404, "no_call")
    Calls(lab.pop).ring("c3", "Bob", WEI)
    status, body = await post(lab, f"/api/calls/{PBX}/c3/listen", sue, {"mode": "listen"})
    assert status == 404  # ringing: nobody handles it yet
    Calls(lab.pop).answer("c3", "Bob")
    status, body = await post(lab, f"/api/calls/{PBX}/c3/listen", sue, {"mode": "spy"})
    assert (status, body["field"]) == (422, "mode")
    lab.server.silent_devices.add("PJSIP/2001")
    status, body = await post(lab, f"/api/calls/{PBX}/c3/listen", sue, {"mode": "listen"})
    assert (status, body["message"]) == (409, "could not call PJSIP/2001: the phone did not answer")
    [entry] = await lab.audit()
    assert entry.result == "refused: could not call PJSIP/2001: the phone did not answer"


async def test_listen_without_a_phone_is_409(engine: AsyncEngine) -> None:
    async with open_lab(engine, device="") as lab:
        calls = Calls(lab.pop)
        calls.ring("c1", "Bob", WEI)
        calls.answer("c1", "Bob")
        sue = await lab.login("sue")
        status, body = await post(lab, f"/api/calls/{PBX}/c1/listen", sue, {"mode": "listen"})
        assert (status, body["message"]) == (409, "this account has no phone to listen on")
        assert lab.emitted_named("OriginateResponse") == []
        [entry] = await lab.audit()
        assert entry.result == "refused: this account has no phone to listen on"


# --------------------------------------------------------------------------- audit listing


async def test_audit_listing_for_supervisors(lab: Lab) -> None:
    sue = await lab.login("sue")
    for reason in ("one", "two", "three"):
        body = {"paused": True, "reason": reason}
        assert (await post(lab, "/api/agents/Bob/pause", sue, body))[0] == 200
    response = await lab.client.get("/api/audit?limit=2")
    assert response.status == 200
    entries = (await response.json())["entries"]
    assert [e["detail"] for e in entries] == ["three", "two"]
    assert set(entries[0]) == {
        "id", "at", "login", "role", "action", "agent", "queue", "pbx", "detail", "result",
        "sent", "attempts", "last_at",
    }  # fmt: skip
    assert entries[0]["at"].endswith("+00:00")
    assert entries[0]["attempts"] == 1 and entries[0]["last_at"] == entries[0]["at"]
    assert [a["Reason"] for a in entries[0]["sent"]] == ["three"]  # what Asterisk was sent
    page = await (await lab.client.get(f"/api/audit?limit=2&before={entries[1]['id']}")).json()
    assert [e["detail"] for e in page["entries"]] == ["one"]
    assert (body := await (await lab.client.get("/api/audit?limit=2")).json())["next"] == (
        entries[1]["id"]
    ) and body["entries"] == entries
    assert page["next"] is None
    assert (await lab.client.get("/api/audit?limit=0")).status == 422
    assert (await lab.client.get("/api/audit?limit=many")).status == 422


# --------------------------------------------------------------------------- ratings


async def test_a_supervisor_rates_an_agent(lab: Lab) -> None:
    sue = await lab.login("sue")
    note = "<script>alert(1)</script>\r\nAction: Logoff"  # stored as given, never an AMI header
    status, body = await post(lab, "/api/agents/Bob/ratings", sue, {"score": 4, "note": note})
    assert status == 201 and body["ok"] is True and isinstance(body["id"], int)
    assert (await post(lab, "/api/agents/Bob/ratings", sue, {"score": 2}))[0] == 201
    assert lab.woken == ["rated", "rated"]  # the wallboard's figures are refreshed at once
    listed = await (await lab.client.get("/api/agents/Bob/ratings")).json()
    assert [(r["score"], r["note"], r["rater"]) for r in listed["ratings"]] == [
        (2, "", "sue"),
        (4, note.replace("\r\n", "\n"), "sue"),  # free text: CR LF kept as LF
    ]
    assert await lab.audit() == []  # a rating is its own record


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/agents/Bob/ratings", {"score": 0}, "score"),
        ("/api/agents/Bob/ratings", {"score": 6}, "score"),
        ("/api/agents/Bob/ratings", {"score": True}, "score"),
        ("/api/agents/Bob/ratings", {"score": "5"}, "score"),
        ("/api/agents/Bob/ratings", {"score": 3, "note": "x" * 2001}, "note"),
        ("/api/agents/Nobody/ratings", {"score": 3}, "agent"),
    ],
)
async def test_bad_ratings_are_refused(lab: Lab, path: str, body: Any, field: str) -> None:
    sue = await lab.login("sue")
    status, answer = await post(lab, path, sue, body)
    assert (status, answer["field"]) == (422, field)
    assert lab.woken == []
    assert (await (await lab.client.get("/api/agents/Bob/ratings")).json())["ratings"] == []


async def test_agents_may_not_rate_or_read_ratings(lab: Lab) -> None:
    alice = await lab.login("alice")
    status, answer = await post(lab, "/api/agents/Alice/ratings", alice, {"score": 5})
    assert (status, answer["error_id"]) == (403, "supervisors_only")
    assert (await lab.client.get("/api/agents/Alice/ratings")).status == 403
    assert lab.woken == []


# --------------------------------------------------------------------------- MemberControls


def test_spy_prefix() -> None:
    assert spy_prefix(("Local/1001@agents/n", "PJSIP/1001")) == "PJSIP/1001-"
    assert spy_prefix(("Local/1001@agents/n",)) == "Local/1001@agents-"
    assert spy_prefix(("Local/1001@agents",)) == "Local/1001@agents-"
    assert spy_prefix(()) is None


async def test_the_pbx_is_named_when_there_are_several(lab: Lab) -> None:
    controls = MemberControls({"a": lab.ami, "b": lab.ami}, AGENTS)
    with pytest.raises(ControlError) as caught:
        controls.pbx_for(None)
    assert (caught.value.kind, caught.value.field) == ("invalid", "pbx")
    assert controls.pbx_for("b") == "b"
    assert MemberControls({"a": lab.ami}, AGENTS).pbx_for(None) == "a"


async def test_member_controls_check_headers_themselves(lab: Lab) -> None:
    controls = MemberControls({PBX: lab.ami}, AGENTS)
    for call in (
        controls.pause(PBX, "Alice", True, INJECTION),
        controls.add(PBX, "Alice", "sales\nAction: Logoff"),
        controls.remove(PBX, "Alice", "\x00"),
        controls.listen(PBX, "Alice", "PJSIP/2001\r\nAction: Logoff", "listen"),
    ):
        with pytest.raises(ControlError) as caught:
            await call
        assert caught.value.kind == "invalid"
    assert lab.emitted_named("QueueMemberPause") == []
    assert lab.emitted_named("OriginateResponse") == []
