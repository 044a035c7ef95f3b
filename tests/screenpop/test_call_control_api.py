"""Hang up and blind transfer end to end (issue 23): the real app over HTTP, a real AmiClient,
the PBX simulator's held calls over a loopback socket (answered and talking until an action
moves or ends them), the call model following the simulator's events, and the audit log in
SQLite and PostgreSQL.

What must hold: the action names the channel the agent talks on (the one Asterisk's own
recordings show), an agent acts only on a call they are on, hostile input reaches no PBX,
each action is audited with what was sent, and the call model sees the result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import audit
from crm_sync.models import AuditEntry
from cti.call_control import CallControls
from cti.calls import CallTracker, Leg
from cti.events import CallEnded, CallTransferred, DomainEvent
from cti.settings import PbxSettings
from pbxsim import AmiServer, HeldCall
from screenpop.app import create_app
from tests.screenpop.test_controls import AGENTS, INJECTION, accounts
from tests.support.screenpop import (
    PBX,
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
RING = 0.05  # seconds a held call's agent takes to answer


@dataclass
class Lab:
    server: AmiServer
    client: Client
    engine: AsyncEngine
    tracker: CallTracker
    events: list[DomainEvent]  # what the call model made of the simulator's events
    received: list[Mapping[str, str]]  # the call-control actions the simulator was asked
    stale: dict[str, Leg]  # call id -> a leg the model shows that Asterisk no longer has

    async def login(self, name: str) -> dict[str, str]:
        return {"X-CSRF-Token": await login(self.client, name)}

    async def post(self, url: str, who: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        response = await self.client.post(url, json=body, headers=who)
        return response.status, await response.json()

    async def held(self, agent: str) -> HeldCall:
        """A customer's call in ``support``, answered by ``agent``, followed by the model."""
        call = self.server.hold_call(number="+15550100001", name="Wei", agent=agent, ring=RING)
        await call.wait_held()
        await eventually(lambda: self.tracker.leg(call.call_id, agent) is not None)
        return call

    async def audit(self) -> list[AuditEntry]:
        return await audit.recent(self.engine, 100)


@pytest.fixture
async def lab(engine: AsyncEngine) -> AsyncIterator[Lab]:
    async with simulated_pbx() as (server, ami):
        tracker = CallTracker(PBX)
        events: list[DomainEvent] = []
        server.observers.append(lambda event: events.extend(tracker.on_event(dict(event))))
        received: list[Mapping[str, str]] = []
        for name in ("blindtransfer", "hangup"):
            server.actions[name] = _recording(server.actions[name], received)
        stale: dict[str, Leg] = {}
        store = new_store(engine)
        pop = new_pop(store)
        app = create_app(
            pop=pop,
            accounts=accounts("PJSIP/2001"),
            dispositions=dispositions(),
            store=store,
            now=now,
            call_controls=CallControls(
                {PBX: ami},
                [PbxSettings(name=PBX)],
                AGENTS,
                lambda _pbx, call_id, agent: stale.get(call_id) or tracker.leg(call_id, agent),
                lambda _pbx: ["sales", "support"],
            ),
        )
        try:
            async with client_for(app) as client:
                yield Lab(server, client, engine, tracker, events, received, stale)
        finally:
            await pop.close()


def _recording(handler: Any, into: list[Mapping[str, str]]) -> Any:
    async def recorded(client: Any, action: Mapping[str, str]) -> None:
        into.append(dict(action))
        await handler(client, action)

    return recorded


def _url(call: HeldCall, what: str) -> str:
    return f"/api/calls/{PBX}/{call.call_id}/{what}"


async def test_an_agent_transfers_their_call_to_a_queue(lab: Lab) -> None:
    call = await lab.held("Alice")
    alices = call.agent_channel  # the held call moves on to the next agent's
    alice = await lab.login("alice")
    body = {"type": "blind", "kind": "queue", "target": "sales"}
    assert await lab.post(_url(call, "transfer"), alice, body) == (200, {"ok": True})
    [sent] = lab.received
    assert {k: v for k, v in sent.items() if k != "actionid"} == {
        "action": "BlindTransfer",
        "channel": alices,  # the member's Local ;1, as in the real recording
        "exten": "sales",
        "context": "incoming",
    }
    await eventually(lambda: any(isinstance(e, CallTransferred) for e in lab.events))
    [moved] = [e for e in lab.events if isinstance(e, CallTransferred)]
    assert (moved.call_id, moved.transfer.type, moved.transfer.to) == (
        call.call_id,
        "blind",
        "sales",
    )
    assert moved.transfer.from_agent == "Alice"
    await call.wait_held()  # a member of sales answered: the call goes on with them
    assert call.agent != "Alice"
    assert lab.tracker.leg(call.call_id, "Alice") is None
    assert lab.tracker.leg(call.call_id, call.agent) is not None
    [entry] = await lab.audit()
    assert (entry.login, entry.action, entry.agent, entry.queue, entry.pbx, entry.result) == (
        "alice",
        "transfer",
        "Alice",
        "sales",
        PBX,
        "ok",
    )
    assert entry.detail == f"{call.call_id} blind to queue sales"
    assert entry.sent == [
        {
            "Action": "BlindTransfer",
            "Channel": alices,
            "Exten": "sales",
            "Context": "incoming",
        }
    ]


async def test_an_agent_hangs_up_and_the_call_ends(lab: Lab) -> None:
    call = await lab.held("Bob")
    bob = await lab.login("bob")
    assert await lab.post(_url(call, "hangup"), bob, {}) == (200, {"ok": True})
    assert [(a["action"], a["channel"]) for a in lab.received] == [("Hangup", call.agent_channel)]
    await call.wait_ended()
    await eventually(lambda: any(isinstance(e, CallEnded) for e in lab.events))
    [ended] = [e for e in lab.events if isinstance(e, CallEnded)]
    assert (ended.record.call_id, ended.record.outcome, ended.record.handled_by) == (
        call.call_id,
        "answered",
        ("Bob",),
    )
    [entry] = await lab.audit()
    assert (entry.action, entry.agent, entry.detail, entry.result) == (
        "hangup",
        "Bob",
        call.call_id,
        "ok",
    )


async def test_a_supervisor_acts_on_the_agent_named(lab: Lab) -> None:
    call = await lab.held("Alice")
    sue = await lab.login("sue")
    body = {"kind": "agent", "target": "Bob", "agent": "Alice"}
    assert (await lab.post(_url(call, "transfer"), sue, body))[0] == 200
    [sent] = lab.received
    assert (sent["channel"], sent["exten"], sent["context"]) == (
        call.agent_channel,
        "1002",
        "agents",
    )
    [entry] = await lab.audit()
    assert (entry.login, entry.role, entry.agent, entry.result) == (
        "sue",
        "supervisor",
        "Alice",
        "ok",
    )


async def test_nobody_acts_on_a_call_they_are_not_on(lab: Lab) -> None:
    call = await lab.held("Alice")
    bob = await lab.login("bob")
    # Bob's own side of Alice's call: there is none, Asterisk is not asked
    status, body = await lab.post(_url(call, "hangup"), bob, {})
    assert (status, body["error_id"]) == (409, "pbx_refused")
    assert body["message"] == "Bob is not talking on this call now"
    # naming Alice: refused, and the refusal audited
    status, body = await lab.post(_url(call, "hangup"), bob, {"agent": "Alice"})
    assert (status, body["error_id"]) == (403, "not_allowed")
    assert body["message"] == "Agents may act only on the calls they are on."
    assert lab.received == []
    assert not call.ended.is_set()
    results = sorted((e.agent, e.result) for e in await lab.audit())
    assert results == [
        ("Alice", "denied: Agents may act only on the calls they are on."),
        ("Bob", "refused: Bob is not talking on this call now"),
    ]


async def test_hostile_or_impossible_targets_reach_no_pbx(lab: Lab) -> None:
    call = await lab.held("Alice")
    alice = await lab.login("alice")
    for body, field in [
        ({"kind": "queue", "target": INJECTION}, "target"),
        ({"kind": "queue", "target": "billing"}, "target"),
        ({"kind": "agent", "target": "Mallory"}, "target"),
        ({"kind": "park", "target": "701"}, "kind"),
        ({"kind": "queue"}, "target"),
        ({"type": "attended", "kind": "queue", "target": "sales"}, "type"),
    ]:
        status, answer = await lab.post(_url(call, "transfer"), alice, body)
        assert (status, answer["error_id"], answer.get("field")) == (422, "invalid_field", field)
    status, answer = await lab.post(
        _url(call, "transfer"), alice, {"kind": "number", "target": "+15550100"}
    )
    assert (status, answer["error_id"]) == (409, "pbx_refused")  # no number_context set
    assert lab.received == []
    assert not call.ended.is_set()
    assert [e.result for e in await lab.audit()] == [
        "refused: transfers to numbers are not set up on lab (number_context)"
    ]


async def test_a_call_gone_meanwhile_is_said_in_words(lab: Lab) -> None:
    """The model still shows a leg whose channel Asterisk no longer has (the hang-up is on
    its way): Asterisk's refusal comes back in words, audited with what was sent."""
    call = await lab.held("Alice")
    alice = await lab.login("alice")
    lab.stale[call.call_id] = Leg("Local/1001@agents-0000ffff;1", call.caller_channel)
    status, body = await lab.post(_url(call, "hangup"), alice, {})
    assert (status, body["error_id"]) == (409, "pbx_refused")
    assert body["message"] == (
        "not hung up: the call is no longer on the PBX (Asterisk: No such channel)"
    )
    body = {"kind": "queue", "target": "sales"}
    status, answer = await lab.post(_url(call, "transfer"), alice, body)
    assert answer["message"] == (
        "not transferred: the call is no longer on the PBX "
        "(Asterisk: Channel specified does not exist)"
    )
    assert [a["channel"] for a in lab.received] == ["Local/1001@agents-0000ffff;1"] * 2
    assert not call.ended.is_set()
    entries = await lab.audit()
    assert [(e.action, e.result.split(":")[0], len(e.sent or [])) for e in entries] == [
        ("transfer", "refused", 1),
        ("hangup", "refused", 1),
    ]
