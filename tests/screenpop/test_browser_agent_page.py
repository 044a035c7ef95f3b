"""The agent page in a real Chromium (Playwright), against the real app, store and pop.

One scenario, step by step, as an agent lives it: log in, a call rings and pops with the
right customer and what the IVR learned (a hostile name stays text), the call is answered, a
second tab shows the same single card, the outcome is saved ("saved" only after the commit)
and lands in the timeline, a late stale message does not re-pop, and a page whose link
dropped while a call rang catches up on reconnect. A second test goes through the card's IVR
section. Chromium is Debian's; without it the tests are skipped, except under CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, WebSocket, expect
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.models import Customer, Interaction
from cti.events import AgentRingStopped, FeedStatus
from ivr.walk import Route
from screenpop.keys import SESSIONS
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    HOSTILE,
    HOSTILE_PHONE,
    NOBODY,
    PASSWORDS,
    PBX,
    ROOT,
    TWINS,
    WEI,
    Calls,
    Seeded,
    build_app,
    ivr_findings,
    new_pop,
    new_store,
    seed,
    served,
    writes_blocked,
)

SCREENSHOT = ROOT / "docs" / "agent-page.png"  # refreshed only with CTI_UPDATE_SCREENSHOT=1
WEI_PATH = (
    ("welcome", "skipped"),
    ("identify", "caller_id"),
    ("main", "2"),
    ("balance", "said"),
    ("main", "3"),
    ("support", "routed"),
)


@dataclass
class Site:
    url: str
    app: web.Application
    pop: PopService
    calls: Calls
    seeded: Seeded
    engine: AsyncEngine


@dataclass
class Frames:
    """Every WebSocket a page opened, with the messages it received."""

    sockets: list[list[dict[str, Any]]] = field(default_factory=list)

    def watch(self, socket: WebSocket) -> None:
        received: list[dict[str, Any]] = []
        self.sockets.append(received)
        socket.on("framereceived", lambda payload: received.append(json.loads(payload)))

    def messages(self) -> list[dict[str, Any]]:
        return [m for received in self.sockets for m in received]


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    seeded = await seed(store)
    pop = new_pop(store)
    app = build_app(pop, store)
    try:
        async with served(app) as url:
            yield Site(url, app, pop, Calls(pop), seeded, engine)
    finally:
        await pop.close()


async def log_in(page: Page, site: Site, login: str) -> None:
    await page.goto(site.url + "/")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.get_by_label("Login").fill(login)
    await page.get_by_label("Password").fill(PASSWORDS[login])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(site.url + "/")
    await expect(page.locator("#link")).to_have_text("live")


async def outcomes(engine: AsyncEngine, call_id: str) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).where(
            Interaction.kind == "outcome", Interaction.call_id == call_id
        )
        return int((await conn.execute(query)).scalar_one())


async def test_agent_page_end_to_end(browser: Browser, site: Site) -> None:
    context = await browser.new_context(viewport={"width": 1100, "height": 560})
    dialogs: list[str] = []
    frames = Frames()
    page = await context.new_page()
    page.on("dialog", lambda d: dialogs.append(d.message))
    page.on("websocket", frames.watch)
    await log_in(page, site, "alice")
    cards = page.locator("#cards .card:not(.closing)")
    await expect(page.locator("#empty")).to_be_visible()

    # a known customer rings: number, name, company, badges, story, repeat flag, waiting time,
    # and what they told the IVR first
    site.pop.ivr_learned(
        PBX,
        "c1",
        ivr_findings(
            customer_id=site.seeded.wei,
            customer_name="张伟",
            tier="vip",
            lifecycle="active",
            identified_by="caller_id",
            language="zh",
            path=WEI_PATH,
            route=Route("support", 10, "alice", False),
            ended_at_step="support",
        ),
    )
    site.calls.ring("c1", "Alice", "008613800138000")
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.locator(".who .name")).to_have_text("张伟")
    await expect(card.locator(".number")).to_have_text("138 0013 8000")
    await expect(card.locator(".badge.state")).to_have_text("ringing")
    await expect(card.locator(".type")).to_contain_text("contact of ACME 有限公司")
    await expect(card.locator(".badge.tier")).to_have_text("vip")
    await expect(card.locator(".badge.life")).to_have_text("active")
    await expect(card.locator(".badge.repeat")).to_have_text("called again within 24 h")
    await expect(card.locator(".open .title")).to_have_text(
        ["Call back about the refund", "Broken hinge"]
    )
    await expect(card.locator(".queue")).to_have_text("queue support")
    await expect(card.locator(".waited")).to_contain_text("waiting")
    await expect(card.locator(".ivr .ivr-path")).to_have_text(
        "Welcome: skipped it → Identify: identified by caller ID → Main: pressed 2"
        " → Balance: was told a figure → Main: pressed 3 → Support: put through to an agent"
    )
    await expect(cards).to_have_count(1)
    shot = await page.screenshot()
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("CTI_UPDATE_SCREENSHOT"):
        SCREENSHOT.write_bytes(shot)

    # a caller whose name and notes are HTML/JS: it pops, and all of it stays text
    site.calls.ring("h1", "Alice", HOSTILE_PHONE)
    hostile = page.locator(f'[data-card-id="{PBX}/h1/Alice"]')
    await expect(hostile.locator(".who .name")).to_have_text(HOSTILE)
    await expect(hostile.locator(".recent .title")).to_have_text([HOSTILE])
    assert await page.locator("#cards script, #cards img").count() == 0
    site.calls.feed(AgentRingStopped(PBX, "h1", None, "Alice", "support", "canceled"))
    await expect(cards).to_have_count(1)  # it fades out; the other call's card stays

    # answered: the same card stays, now with the outcome form
    site.calls.answer("c1", "Alice")
    await expect(card.locator(".badge.state")).to_have_text("answered")
    await expect(card.locator("form.outcome")).to_be_visible()
    await expect(cards).to_have_count(1)

    # a second tab shows the same single card
    tab = await context.new_page()
    tab.on("dialog", lambda d: dialogs.append(d.message))
    await tab.goto(site.url + "/")
    tab_cards = tab.locator("#cards .card:not(.closing)")
    await expect(tab_cards.locator(".who .name")).to_have_text(["张伟"])
    assert await tab_cards.first.get_attribute("data-card-id") == f"{PBX}/c1/Alice"
    await page.bring_to_front()  # a background tab gets no animation frames to click in

    # the call ends: wrap-up, which the configuration says must end with a saved outcome
    site.calls.end("c1", "Alice", WEI)
    await expect(card.locator(".badge.state")).to_have_text("wrap-up")
    await expect(page.locator("#wrapup-banner")).to_be_visible()
    await expect(card.locator(".wrapup-hint")).to_be_visible()

    # the outcome: "saved" only once the database has committed it
    await card.get_by_label("Disposition").select_option("callback")
    await card.get_by_label("Notes").fill(HOSTILE)
    await card.locator("summary").filter(has_text="Follow-up").click()
    await card.get_by_label("Due").fill("2031-05-06")
    status = card.locator(".save-status")
    async with writes_blocked(site.engine):
        await card.get_by_role("button", name="Save outcome").click()
        await expect(status).to_have_text("Saving…")
        await asyncio.sleep(0.4)
        await expect(status).to_have_text("Saving…")
        assert await outcomes(site.engine, "c1") == 0
    await expect(status).to_have_text("Saved ✓")
    assert await outcomes(site.engine, "c1") == 1
    await expect(cards).to_have_count(0)  # the card closes (after a short fade) in both tabs
    await expect(tab_cards).to_have_count(0)
    await expect(page.locator("#wrapup-banner")).to_be_hidden()

    # ... and it is in the customer's timeline
    response = await page.request.get(f"{site.url}/api/customers/{site.seeded.wei}")
    timeline = (await response.json())["recent"]
    assert {(e["kind"], e["title"], e["agent"]) for e in timeline[:2]} == {
        ("outcome", "callback", "Alice"),  # the same instant: either may come first
        ("followup", "Follow up: Callback needed", "Alice"),
    }

    # a late, stale copy of the closed card (its ringing version) never pops it again
    stale = next(m["card"] for m in frames.messages() if m.get("card", {}).get("call_id") == "c1")
    assert stale["state"] == "ringing"
    site.pop.hub.publish("Alice", {"type": "card", "card": stale})
    site.calls.ring("c2", "Alice", NOBODY)
    await expect(cards.locator(".lookup")).to_have_text(
        ["New customer: this number is not in the store."]
    )
    await expect(cards).to_have_count(1)

    # the link drops while another call rings: the page reconnects and gets what it missed
    opened = len(frames.sockets)
    sockets = site.app[SESSIONS].sockets()
    assert len(sockets) == 2  # both tabs
    for socket in sockets:
        await socket.close(code=1012, message=b"restart")
    site.calls.ring("c3", "Alice", "+4930123456")
    await expect(cards).to_have_count(2)
    await expect(cards.first.locator(".lookup.several")).to_be_visible()
    await expect(page.locator("#link")).to_have_text("live")
    resumed = frames.sockets[opened]
    assert resumed[0]["type"] == "card", "the reconnect resumed, it did not need a snapshot"
    assert resumed[0]["card"]["call_id"] == "c3"
    await expect(tab_cards).to_have_count(2)

    # several customers share c3's number: the agent picks one; c2 is a new customer
    site.calls.answer("c3", "Alice")
    site.calls.answer("c2", "Alice")
    several = page.locator(f'[data-card-id="{PBX}/c3/Alice"]')
    await several.get_by_label("Bea Twin").check()
    await several.get_by_label("Disposition").select_option("resolved")
    await several.get_by_role("button", name="Save outcome").click()
    new = page.locator(f'[data-card-id="{PBX}/c2/Alice"]')
    await new.get_by_label("New customer's name").fill("Zoë Neu")
    await new.get_by_label("Disposition").select_option("info_given")
    await new.get_by_role("button", name="Save outcome").click()
    during = "Saved ✓ — the card closes when the call ends."  # both calls go on
    await expect(several.locator(".save-status")).to_have_text(during)
    await expect(new.locator(".save-status")).to_have_text(during)
    async with site.engine.connect() as conn:
        rows = await conn.execute(
            select(Interaction.call_id, Customer.name)
            .join(Customer, Customer.id == Interaction.customer_id)
            .where(Interaction.kind == "outcome", Interaction.call_id.in_(["c2", "c3"]))
            .order_by(Interaction.call_id)
        )
        assert [tuple(r) for r in rows] == [("c2", "Zoë Neu"), ("c3", "Bea Twin")]
    await expect(page.locator("#cards .card")).to_have_count(2)
    site.calls.end("c3", "Alice", TWINS)
    site.calls.end("c2", "Alice", NOBODY)
    await expect(page.locator("#cards .card")).to_have_count(0)

    assert dialogs == [], "no script from customer data ran"
    await context.close()


async def test_the_card_shows_what_the_caller_told_the_ivr(browser: Browser, site: Site) -> None:
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await log_in(page, site, "alice")

    # learned before the ring (an unknown number, then customer number and PIN): on the first card
    site.pop.ivr_learned(
        PBX,
        "c1",
        ivr_findings(
            customer_id=site.seeded.hostile,
            customer_name=HOSTILE,
            tier="vip",
            lifecycle="lost",
            identified_by="account",
            path=(
                ("welcome", "played"),
                ("identify", "caller-id-unknown"),
                ("identify", "account"),
                ("main", "0"),
                ("agent", "routed"),
            ),
            route=Route("support", 10, "bob", True),
        ),
    )
    site.calls.ring("c1", "Alice", NOBODY)
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    ivr = card.locator(".ivr")
    await expect(card.locator(".badge.state")).to_have_text("ringing")
    await expect(ivr.locator(".identified")).to_have_text("by customer number")
    await expect(ivr.locator(".ivr-customer")).to_have_text(HOSTILE)  # as text, not markup
    await expect(ivr.locator(".ivr-customer *")).to_have_count(0)
    await expect(ivr.locator(".ivr-language")).to_have_text("language en")
    await expect(ivr.locator(".ivr-path")).to_have_text(
        "Welcome: heard it → Identify: caller ID not on record"
        " → Identify: identified by customer number → Main: pressed 0"
        " → Agent: put through to an agent"
    )
    await expect(ivr.locator(".ivr-route")).to_have_text("queue support, priority 10")
    await expect(ivr.locator(".ivr-owner")).to_have_text("owner first: bob")
    await expect(ivr.locator(".badge.winback")).to_have_text("win-back")
    await expect(ivr.locator(".badge.callback")).to_have_count(0)
    await expect(ivr.locator(".badge.hungup")).to_have_count(0)
    # the IVR named the customer: the card shows that customer, though the number is unknown
    await expect(card.locator(".who .name")).to_have_text(HOSTILE)
    await expect(page.locator("#cards script, #cards img")).to_have_count(0)

    # a card without findings has no IVR section; a later version of it gets one
    other = page.locator(f'[data-card-id="{PBX}/c2/Alice"]')
    site.calls.ring("c2", "Alice", WEI)
    await expect(other.locator(".who .name")).to_have_text("张伟")
    await expect(other.locator(".ivr")).to_have_count(0)
    site.pop.ivr_learned(
        PBX,
        "c2",
        ivr_findings(
            customer_id=site.seeded.wei,
            customer_name="张伟",
            identified_by="caller_id",
            language="zh",
            path=(
                ("identify", "caller_id"),
                ("main", "9"),
                ("callback", "created"),
                ("callback", "hung-up"),
            ),
            callback="ivr-callback:1234",
            route=None,
            hung_up=True,
            ended_at_step="callback",
        ),
    )
    second = other.locator(".ivr")
    await expect(second.locator(".identified")).to_have_text("by caller ID")
    await expect(second.locator(".ivr-customer")).to_have_text("张伟")
    await expect(second.locator(".ivr-path")).to_have_text(
        "Identify: identified by caller ID → Main: pressed 9"
        " → Callback: asked to be called back → Callback: hung up here"
    )
    await expect(second.locator(".badge.callback")).to_have_text("callback requested")
    await expect(second.locator(".badge.hungup")).to_have_text("hung up in the IVR at Callback")
    await expect(second.locator(".ivr-route, .badge.winback")).to_have_count(0)

    # the survey after the call: the wrap-up card adds its scores to what the main menu learned
    site.calls.answer("c1", "Alice")
    site.calls.end("c1", "Alice", NOBODY)
    await expect(card.locator(".badge.state")).to_have_text("wrap-up")
    await expect(ivr.locator(".ivr-scores")).to_have_count(0)
    survey = (("attitude", "4"), ("solved", "yes"), ("thanks", "hangup"))
    scores = {"attitude": 4, "solved": 1}
    site.pop.ivr_learned(
        PBX, "c1", ivr_findings(menu="survey", path=survey, scores=scores, route=None)
    )
    await expect(ivr.locator(".ivr-scores")).to_have_text("survey: Attitude 4, Solved 1")
    await expect(ivr.locator(".identified")).to_have_text("by customer number")  # kept
    await expect(ivr.locator(".badge.winback")).to_have_text("win-back")

    assert dialogs == [], "no script from the IVR's findings ran"
    await page.close()


async def test_a_phone_system_down_is_said_on_the_page_until_it_is_back(
    browser: Browser, site: Site
) -> None:
    """Issue 21: a PBX that is down is shown as down, with why, on the agent page too (its
    calls do not pop meanwhile); a page opened during the outage says it at once."""
    links = site.pop.links
    links.observe(FeedStatus("lyon", time.time() - 120, False, "connection refused"))
    page = await browser.new_page()
    await log_in(page, site, "alice")
    banner = page.locator("#pbx-banner")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("Phone system lyon unreachable since")
    await expect(banner).to_contain_text("(connection refused)")
    links.observe(FeedStatus("paris", time.time(), False, "login refused: <b>Authentication</b>"))
    await expect(banner).to_contain_text("Phone system paris unreachable")
    await expect(banner).to_contain_text("<b>Authentication</b>")  # as text, never markup
    links.observe(FeedStatus("lyon", time.time(), True))
    await expect(banner).not_to_contain_text("lyon")
    links.observe(FeedStatus("paris", time.time(), True))
    await expect(banner).to_be_hidden()
    await page.close()
