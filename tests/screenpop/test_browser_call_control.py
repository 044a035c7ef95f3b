"""Hang up and blind transfer from the agent's card (issue 23), in a real Chromium against the
real app, store and pop, the PBX simulator's held calls over a loopback socket and the call
model following them: the pop gets the model's domain events, so Alice's card pops, answers
and goes to wrap-up as it would in the service.

What must hold: the controls are on an answered card only, named for whose call they act on;
a click or an Enter sends the action on the agent's own leg, and the status says what
happened; an error is the API's message as text (hostile input stays text) and nothing
reaches the PBX.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Browser, Locator, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.call_control import CallControls
from cti.calls import CallTracker
from cti.events import DomainEvent
from cti.settings import PbxSettings
from pbxsim import AmiServer, HeldCall
from screenpop.pipeline import PopService
from tests.screenpop.test_controls import AGENTS
from tests.support.screenpop import (
    NOBODY,
    PASSWORDS,
    PBX,
    WEI,
    Calls,
    build_app,
    eventually,
    new_pop,
    new_store,
    seed,
    served,
    simulated_pbx,
)

RING = 0.05  # seconds a held call's agent takes to answer
HOSTILE_TARGET = '<img src=x onerror="window.__pwned=1"><b>O&amp;</b>'  # 51 characters


@dataclass
class Site:
    url: str
    server: AmiServer
    pop: PopService
    tracker: CallTracker
    events: list[DomainEvent]  # what the call model made of the simulator's events
    received: list[Mapping[str, str]]  # the call-control actions the simulator was asked
    gate: asyncio.Event  # cleared: the simulator holds its answer to those actions

    async def held(self) -> HeldCall:
        """张伟's call in ``support``, answered by Alice, followed by the model and the pop."""
        call = self.server.hold_call(number=WEI, name="Wei", agent="Alice", ring=RING)
        await call.wait_held()
        await eventually(lambda: self.tracker.leg(call.call_id, "Alice") is not None)
        return call


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    async with simulated_pbx() as (server, ami):
        store = new_store(engine)
        await seed(store)
        pop = new_pop(store)
        tracker = CallTracker(PBX)
        events: list[DomainEvent] = []

        def observe(event: Mapping[str, str]) -> None:
            found = tracker.on_event(dict(event))
            events.extend(found)
            for domain_event in found:
                pop.publish(domain_event)  # as the service hands the pop the model's events

        server.observers.append(observe)
        received: list[Mapping[str, str]] = []
        gate = asyncio.Event()
        gate.set()
        for name in ("blindtransfer", "hangup"):
            server.actions[name] = _recording(server.actions[name], received, gate)
        controls = CallControls(
            {PBX: ami},
            [PbxSettings(name=PBX)],
            AGENTS,
            lambda _pbx, call_id, agent: tracker.leg(call_id, agent),
            lambda _pbx: ["sales", "support"],
        )
        try:
            async with served(build_app(pop, store, call_controls=controls)) as url:
                yield Site(url, server, pop, tracker, events, received, gate)
        finally:
            await pop.close()


def _recording(handler: Any, into: list[Mapping[str, str]], gate: asyncio.Event) -> Any:
    async def recorded(client: Any, action: Mapping[str, str]) -> None:
        into.append(dict(action))
        await gate.wait()
        await handler(client, action)

    return recorded


async def open_page(browser: Browser, site: Site) -> Page:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#link")).to_have_text("live")
    return page


def card_of(page: Page, call_id: str) -> Locator:
    return page.locator(f'[data-card-id="{PBX}/{call_id}/Alice"]')


async def answered_card(page: Page, call: HeldCall) -> Locator:
    card = card_of(page, call.call_id)
    await expect(card).to_have_class("card state-answered")
    await expect(card.locator(".who .name")).to_have_text("张伟")  # the lookup ran
    return card


async def test_an_answered_card_hangs_up_and_goes_to_wrap_up(browser: Browser, site: Site) -> None:
    page = await open_page(browser, site)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # a ringing card: nothing to hang up or transfer yet
    Calls(site.pop).ring("r1", "Alice", NOBODY)
    ringing = card_of(page, "r1")
    await expect(ringing).to_have_class("card state-ringing")
    await expect(ringing.get_by_role("button")).to_have_count(0)
    await expect(ringing.locator(".call-controls")).to_have_count(0)

    call = await site.held()
    card = await answered_card(page, call)
    hang = card.get_by_role("button", name="Hang up the call from 张伟")
    await expect(hang).to_be_visible()
    await expect(card.get_by_role("button", name="Transfer the call from 张伟")).to_be_visible()
    await expect(card.get_by_label("Transfer to")).to_have_value("queue")
    assert site.received == []

    alices = call.agent_channel
    site.gate.clear()  # Asterisk takes its time: the card says so, its controls wait
    await hang.click()
    status = card.get_by_role("status").filter(has_text="Hanging up…")
    await expect(status).to_be_visible()
    await expect(hang).to_be_disabled()
    await expect(card.get_by_role("button", name="Transfer the call from 张伟")).to_be_disabled()
    await expect(card.get_by_label("Target")).to_be_disabled()
    await expect(status).to_be_focused()  # the focus waits on the status, in the card
    site.gate.set()
    await expect(card.locator(".control-status")).to_have_text("Hung up")
    await call.wait_ended()
    assert [(a["action"], a["channel"]) for a in site.received] == [("Hangup", alices)]
    await expect(card).to_have_class("card state-wrapup")
    # the buttons are gone with the call; what happened stays said
    await expect(card.get_by_role("button", name="Hang up the call from 张伟")).to_have_count(0)
    await expect(card.locator(".control-status")).to_have_text("Hung up")
    await expect(card.get_by_label("Disposition")).to_be_visible()  # the outcome form is there
    assert errors == []


async def test_a_transfer_to_a_queue_with_the_keyboard(browser: Browser, site: Site) -> None:
    page = await open_page(browser, site)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    call = await site.held()
    card = await answered_card(page, call)
    alices = call.agent_channel  # the held call moves on to the next agent's
    await card.get_by_label("Transfer to").select_option("queue")
    target = card.get_by_label("Target")
    await target.fill("sales")
    await target.press("Enter")  # the form submits with Enter
    await expect(card.locator(".control-status")).to_have_text("Transferred to queue sales")
    [sent] = site.received
    assert {k: v for k, v in sent.items() if k != "actionid"} == {
        "action": "BlindTransfer",
        "channel": alices,
        "exten": "sales",
        "context": "incoming",
    }
    # Alice's part of the call ended: her card leaves the answered state
    await expect(card).to_have_class("card state-wrapup")
    await expect(card.get_by_role("button", name="Transfer the call from 张伟")).to_have_count(0)
    await call.wait_held()  # a member of sales answered: the call goes on with them
    assert call.agent != "Alice"
    assert errors == []


async def test_an_error_is_said_as_text_and_nothing_reaches_the_pbx(
    browser: Browser, site: Site
) -> None:
    page = await open_page(browser, site)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    call = await site.held()
    card = await answered_card(page, call)
    status = card.locator(".control-status")
    transfer = card.get_by_role("button", name="Transfer the call from 张伟")
    target = card.get_by_label("Target")

    # a queue that is not there: the API's 422 message, in words
    await target.fill("billing")
    await target.press("Enter")
    await expect(status).to_have_text("target: no queue named 'billing'")
    await expect(status).to_have_class("control-status error")
    await expect(transfer).to_be_enabled()  # the agent may try again
    await expect(target).to_be_focused()  # where the correction is typed

    # a hostile target: refused, and the message that echoes it stays text
    await target.fill(HOSTILE_TARGET)
    await transfer.click()
    await expect(status).to_have_text(f"target: no queue named '{HOSTILE_TARGET}'")
    assert await page.locator("#cards script, #cards img").count() == 0
    assert await page.evaluate("window.__pwned === undefined")

    # an empty target is not sent at all
    await target.fill("")
    await target.press("Enter")
    await expect(status).to_have_text("Give the queue, agent or number to transfer to.")

    assert site.received == []
    assert not call.ended.is_set()
    await expect(card).to_have_class("card state-answered")
    assert errors == []
