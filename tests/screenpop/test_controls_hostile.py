"""A hostile tester against the controls (issue 22, findings 8 and 10).

8: every value that becomes an AMI header is checked as received: a CR/LF (or any control
character, or a lone surrogate) at its start, middle or end is 422 naming the field, and no
action reaches the PBX; nothing but surrounding spaces is ever taken off. The audit row
holds what was sent, and a hostile text of a denied request only escaped.
10: a flood of denied attempts leaves a bounded number of rows, then is answered 429, every
attempt still counted; a supervisor's control done meanwhile is found by a filter and a page.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import audit
from cti.controls import ControlError, MemberControls, check_action, check_text
from cti.settings import AgentSettings
from tests.screenpop.test_controls import ALICE, BOB, Lab, open_lab, post
from tests.support.screenpop import PBX

POSITIONS = ("{}lunch", "lun{}ch", "lunch{}")  # start, middle, end
BREAKS = ("\r", "\n", "\r\n", "\r\nAction: Originate\r\n")
OTHERS = ("\x00", "\t", "\x1b", "\x7f", "\x85", "\u2028")  # controls, a line separator
SURROGATE = "\ud800"  # what JSON's "\ud800" decodes to: no UTF-8 can carry it
AMI_ACTIONS = {"queuepause", "queueadd", "queueremove", "originate"}


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self) -> None:
        self.at = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def lab(engine: AsyncEngine, clock: Clock) -> AsyncIterator[Lab]:
    async with open_lab(engine, clock=clock) as opened:
        yield opened


def controls_sent(lab: Lab) -> list[str]:
    """The control actions that reached the simulator."""
    return [a["action"] for a in lab.received if a.get("action", "").lower() in AMI_ACTIONS]


async def switch(lab: Lab, name: str) -> dict[str, str]:
    """Log in as someone else on the same client (a fresh cookie jar: a logged-in browser
    is sent past the login form)."""
    lab.client.session.cookie_jar.clear()
    return await lab.login(name)


def hostile(char: str) -> list[str]:
    return [position.format(char) for position in POSITIONS]


# --------------------------------------------------------------------------- finding 8


@pytest.mark.parametrize("field", ["reason", "queue"])
async def test_a_break_anywhere_in_a_pause_field_is_422(lab: Lab, field: str) -> None:
    sue = await lab.login("sue")
    for char in (*BREAKS, *OTHERS):
        for text in hostile(char):
            body = {"paused": True, "reason": "lunch", "queue": "support", field: text}
            status, answer = await post(lab, "/api/agents/Alice/pause", sue, body)
            assert (status, answer["error_id"], answer["field"]) == (422, "invalid_field", field)
    await asyncio.sleep(0.05)
    assert controls_sent(lab) == []
    assert await lab.audit() == []


async def test_a_break_anywhere_in_a_queue_add_is_422(lab: Lab) -> None:
    sue = await lab.login("sue")
    for char in BREAKS:
        for text in hostile(char):
            status, answer = await post(lab, "/api/queues/sales/members", sue, {"agent": text})
            assert (status, answer["field"]) == (422, "agent")
            path = "/api/queues/{}/members".format(text.replace("\r", "%0D").replace("\n", "%0A"))
            status, answer = await post(lab, path, sue, {"agent": "Alice"})
            assert (status, answer["field"]) == (422, "queue")
            path = path + "/Alice"
            response = await lab.client.delete(path, headers=sue)
            assert (response.status, (await response.json())["field"]) == (422, "queue")
    await asyncio.sleep(0.05)
    assert controls_sent(lab) == []
    assert await lab.audit() == []


async def test_a_lone_surrogate_in_the_json_is_refused_not_500(lab: Lab) -> None:
    """The body reader may refuse it first (400 bad_json); else the field check does."""
    sue = await lab.login("sue")
    raw = '{"paused": true, "reason": "lunch\\ud800"}'
    headers = {**sue, "Content-Type": "application/json"}
    response = await lab.client.post("/api/agents/Alice/pause", data=raw, headers=headers)
    answer = await response.json()
    assert (response.status, answer.get("field")) in ((422, "reason"), (400, None))
    await asyncio.sleep(0.05)
    assert controls_sent(lab) == []
    assert await lab.audit() == []


async def test_surrounding_spaces_are_taken_off_and_the_row_holds_what_was_sent(
    lab: Lab,
) -> None:
    sue = await lab.login("sue")
    body = {"paused": True, "reason": "  lunch break ", "queue": " support"}
    assert (await post(lab, "/api/agents/Alice/pause", sue, body))[0] == 200
    [entry] = await lab.audit()
    expected = [
        {
            "Action": "QueuePause",
            "Interface": interface,
            "Paused": "true",
            "Reason": "lunch break",
            "Queue": "support",
        }
        for interface in (ALICE, "PJSIP/1001")
    ]
    assert entry.sent == expected
    assert (entry.detail, entry.queue, entry.result) == ("lunch break", "support", "ok")
    received = [a for a in lab.received if a["action"] == "QueuePause"]
    assert [(a["reason"], a["queue"]) for a in received] == [("lunch break", "support")] * 2
    listed = await (await lab.client.get("/api/audit")).json()
    assert listed["entries"][0]["sent"] == expected


async def test_a_refusal_is_audited_with_the_actions_sent(lab: Lab) -> None:
    sue = await lab.login("sue")
    assert (await post(lab, "/api/queues/nowhere/members", sue, {"agent": "Bob"}))[0] == 409
    [entry] = await lab.audit()
    assert entry.result.startswith("refused: ")
    assert entry.sent == [
        {
            "Action": "QueueAdd",
            "Queue": "nowhere",
            "Interface": BOB,
            "MemberName": "Bob",
            "StateInterface": BOB,
        }
    ]


async def test_a_denied_requests_hostile_path_is_audited_escaped(lab: Lab) -> None:
    alice = await lab.login("alice")
    path = "/api/queues/x%0D%0AAction:%20Logoff%00/members/Bob"
    response = await lab.client.delete(path, headers=alice)
    assert response.status == 403
    [entry] = await lab.audit()
    assert entry.queue == "x\\r\\nAction: Logoff\\x00"
    assert entry.sent is None and entry.attempts == 1
    assert controls_sent(lab) == []


async def test_a_configured_interface_with_a_break_is_never_sent(lab: Lab) -> None:
    bad = AgentSettings("Eve", members=("Eve", "PJSIP/1001\r\nAction: Logoff"))
    controls = MemberControls({PBX: lab.ami}, (bad,))
    for call in (
        controls.pause(PBX, "Eve", True, "lunch"),
        controls.add(PBX, "Eve", "sales"),
        controls.remove(PBX, "Eve", "sales"),
    ):
        with pytest.raises(ControlError) as caught:
            await call
        assert (caught.value.kind, caught.value.field) == ("invalid", "interface")
        assert caught.value.sent == ()
    await asyncio.sleep(0.05)
    assert controls_sent(lab) == []


def test_check_text_refuses_rather_than_trims() -> None:
    for char in (*BREAKS, *OTHERS, SURROGATE):
        for text in hostile(char):
            with pytest.raises(ControlError) as caught:
                check_text("reason", text)
            assert (caught.value.kind, caught.value.field) == ("invalid", "reason")
    assert check_text("reason", "  lunch  ") == "lunch"
    assert check_text("reason", "Pausa café 咖啡") == "Pausa café 咖啡"
    assert check_text("reason", "", required=False) == ""
    for empty in ("", "   "):
        with pytest.raises(ControlError):
            check_text("reason", empty)
    with pytest.raises(ControlError):
        check_text("reason", "x" * 65)


def test_check_action_names_the_field() -> None:
    check_action({"Action": "QueuePause", "Interface": "PJSIP/1001", "Reason": "lunch"})
    for key, value, field in (
        ("Reason", "lunch\r", "reason"),
        ("Interface", "\nPJSIP/1", "interface"),
        ("Channel", "PJSIP/2001\x00", "device"),
        ("MemberName", "Al\x85ice", "member name"),
        ("Queue", "\ud800", "queue"),
        ("X\r\nAction", "Logoff", "x\r\naction"),
    ):
        with pytest.raises(ControlError) as caught:
            check_action({"Action": "QueuePause", key: value})
        assert caught.value.field == field


# --------------------------------------------------------------------------- finding 10


async def test_a_flood_of_denied_attempts_is_bounded_and_buries_nothing(
    lab: Lab, clock: Clock
) -> None:
    statuses: list[int] = []
    alice = await lab.login("alice")
    for i in range(100):  # 100 attempts in 0.2 s of the app's clock
        if i == 50:  # meanwhile, a supervisor's control that must stay in reach
            sue = await switch(lab, "sue")
            body = {"paused": True, "reason": "coaching"}
            assert (await post(lab, "/api/agents/Bob/pause", sue, body))[0] == 200
            alice = await switch(lab, "alice")
        target = "Bob" if i % 2 else f"Agent{i}"
        response = await lab.client.post(
            f"/api/agents/{target}/pause", json={"paused": True, "reason": "x"}, headers=alice
        )
        statuses.append(response.status)
        clock.advance(0.002)
    limit = audit.DENIED_LIMIT
    assert statuses == [403] * limit + [429] * (100 - limit)
    denied = await audit.page(lab.engine, 500, outcome="denied")
    assert len(denied) <= limit
    assert sum(r.attempts for r in denied) == 100  # every attempt still counted
    assert all(r.login == "alice" for r in denied)
    [bob] = [r for r in denied if r.agent == "Bob"]  # identical ones folded into one row
    assert bob.attempts > 1 and bob.last_at is not None and bob.last_at > bob.at
    assert [a["action"] for a in lab.received if a["action"] == "QueuePause"] == ["QueuePause"]

    await switch(lab, "sue")
    found = await (await lab.client.get("/api/audit?outcome=ok")).json()
    assert [(e["login"], e["detail"]) for e in found["entries"]] == [("sue", "coaching")]
    by_login = await (await lab.client.get("/api/audit?login=sue&action=pause")).json()
    assert by_login["entries"] == found["entries"]
    by_agent = await (await lab.client.get("/api/audit?agent=Bob&limit=1")).json()
    assert by_agent["next"] is not None and len(by_agent["entries"]) == 1
    ids = await walk(lab, "limit=3")
    assert found["entries"][0]["id"] in ids
    assert sorted(ids) == sorted(r.id for r in await audit.page(lab.engine, 500))

    clock.advance(audit.DENIED_WINDOW.total_seconds() + 1)  # a new window: 403 again
    alice = await switch(lab, "alice")
    response = await lab.client.post("/api/agents/Bob/pause", json={}, headers=alice)
    assert response.status == 403


async def walk(lab: Lab, query: str) -> list[int]:
    """Every entry's id, following ``next`` page by page."""
    ids: list[int] = []
    url = f"/api/audit?{query}"
    for _ in range(100):
        page: dict[str, Any] = await (await lab.client.get(url)).json()
        ids += [e["id"] for e in page["entries"]]
        if page["next"] is None:
            return ids
        url = f"/api/audit?{query}&before={page['next']}"
    raise AssertionError("the pages never ended")


async def test_audit_listing_refuses_bad_filters(lab: Lab) -> None:
    await lab.login("sue")
    for query in ("outcome=maybe", "before=x", "before=0", "limit=501"):
        response = await lab.client.get(f"/api/audit?{query}")
        assert response.status == 422, query
