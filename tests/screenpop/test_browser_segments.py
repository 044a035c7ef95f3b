"""Segments where people look, in a real Chromium: the pop card says a customer is VIP and
why (badges and the rules' reasons, also on the customer page), and the wallboard counts VIP
callers waiting and shows the tier of an agent's current call. The segments are computed by
the rules from the customer's orders and survey answers; the board is the real one, fed the
same events as the pop and told the tiers by it, as in the service."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.customers import InteractionIn, add_interaction
from crm_sync.models import CallScore, Customer
from crm_sync.segmenting import recompute_stale
from crm_sync.segments import DEFAULT_RULES
from cti.board import Board
from cti.controls import MemberControls
from cti.events import AgentRinging, CallAnswered, CallQueued, CallStarted, DomainEvent
from screenpop.pipeline import PopService
from screenpop.wallboard import FEED, WallboardFeed
from tests.support.screenpop import (
    NOBODY,
    PASSWORDS,
    PBX,
    WEI,
    Seeded,
    build_app,
    eventually,
    new_pop,
    new_store,
    now,
    seed,
    served,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # store not under test
WEI_REASONS = [
    "VIP: 5 orders in 12 months, ¥36,000 spent, last order 3 days ago",
    "Active: last order 3 days ago",
    "Loyal: satisfaction 4.5 of 5 (2 answers), 5 orders in 12 months",
]


@dataclass
class Site:
    url: str
    app: web.Application
    pop: PopService
    board: Board
    seeded: Seeded

    def feed(self, *events: DomainEvent) -> None:
        """As the service does: every event to the pop, then to the board."""
        for event in events:
            self.pop.publish(event)
            self.board.publish(event)


async def segmented(engine: AsyncEngine, seeded: Seeded) -> None:
    """张伟's orders (besides the seed's one, 20 days ago) and survey answers, then the
    segments computed: VIP, active, loyal."""
    at = now()
    async with new_store(engine).sessions() as session, session.begin():
        await session.execute(
            update(Customer).where(Customer.id == seeded.wei).values(currency="CNY")
        )
        for days in (3, 30, 60, 120):
            order = InteractionIn(
                None,
                "order",
                at - timedelta(days=days),
                "Web order",
                amount=Decimal(9000),
                status="delivered",
                customer_id=seeded.wei,
            )
            await add_interaction(session, order)
        session.add_all(
            CallScore(
                pbx=PBX,
                call_id=f"old-{score}",
                agent="Bob",
                customer_id=seeded.wei,
                question="attitude",
                score=score,
                created_at=at - timedelta(days=10),
            )
            for score in (5, 4)
        )
    await recompute_stale(new_store(engine).sessions, DEFAULT_RULES, now=at)


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    seeded = await seed(store)
    await segmented(engine, seeded)
    pop = new_pop(store)
    board = Board()
    pop.callers = board
    app = build_app(pop, store, board=board, controls=MemberControls({}, []))
    app[FEED] = WallboardFeed(board, pop, interval=0.1)
    try:
        async with served(app) as url:
            yield Site(url, app, pop, board, seeded)
    finally:
        await pop.close()


async def log_in(page: Page, site: Site, login: str, path: str = "/") -> None:
    await page.goto(site.url + path)
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.get_by_label("Login").fill(login)
    await page.get_by_label("Password").fill(PASSWORDS[login])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(site.url + path)


async def test_the_pop_card_says_vip_and_why(browser: Browser, site: Site) -> None:
    page = await (await browser.new_context()).new_page()
    await log_in(page, site, "alice")
    await expect(page.locator("#link")).to_have_text("live")
    at = time.time()
    site.feed(
        CallStarted(PBX, "c1", at - 20, WEI, "", "800"),
        CallQueued(PBX, "c1", at - 18, "support", 1, WEI, ""),
        AgentRinging(PBX, "c1", at, "Alice", "Alice", "Local/Alice", "support", WEI, ""),
    )
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.locator(".who .name")).to_have_text("张伟")
    tier = card.locator(".badge.tier")
    await expect(tier).to_have_text("vip")
    await expect(tier).to_have_text("VIP", use_inner_text=True)  # as the agent reads it
    await expect(card.locator(".badge.life")).to_have_text("active")
    await expect(card.locator(".badge.quadrant")).to_have_text("loyal")
    await expect(card.locator(".why li")).to_have_text(WEI_REASONS)

    # the customer's page says the same
    await page.goto(f"{site.url}/customers/{site.seeded.wei}")
    await expect(page.locator(".customer .badge.tier")).to_have_text("vip")
    await expect(page.locator(".customer .badge.quadrant")).to_have_text("loyal")
    await expect(page.locator(".customer .why li")).to_have_text(WEI_REASONS)
    # a customer who never ordered, found with the search box: the rules say so too
    box = page.get_by_role("searchbox", name="Find a customer")
    await box.fill("twin")
    await box.press("Enter")
    await page.get_by_role("link", name="Ana Twin").click()
    await expect(page.locator(".customer h1")).to_have_text("Ana Twin")
    await expect(page.locator(".customer .badge.life")).to_have_text("prospect")
    await expect(page.locator(".customer .why li")).to_have_text(
        ["Regular: no order yet", "Prospect: no order yet"]
    )


async def test_the_wallboard_counts_vip_callers_and_shows_the_tier_of_a_call(
    browser: Browser, site: Site
) -> None:
    page = await (await browser.new_context(timezone_id="UTC")).new_page()
    await log_in(page, site, "sue", "/wallboard")
    await expect(page.locator("#link")).to_have_text("live")
    at = time.time()
    for call_id, number in (("c1", WEI), ("c2", NOBODY)):
        site.feed(
            CallStarted(PBX, call_id, at - 20, number, "", "800"),
            CallQueued(PBX, call_id, at - 18, "support", 1, number, ""),
        )
    await eventually(lambda: site.pop.lookup_for(PBX, "c1") is not None)
    support = page.locator(f'.tile[data-queue="{PBX}/support"]')
    await expect(support.locator(".stat-waiting .value")).to_have_text("2")
    await expect(support.locator(".stat-waiting .label")).to_have_text("waiting · 1 VIP")
    total = page.locator('.tile[data-queue="total"]')
    await expect(total.locator(".stat-waiting .label")).to_have_text("waiting · 1 VIP")

    site.feed(CallAnswered(PBX, "c1", time.time(), "Alice", "support", 18.0, 2.0))
    alice = page.locator(f'#agents tr[data-agent="{PBX}/Alice"]')
    await expect(alice.locator(".customer")).to_have_text("张伟")
    await expect(alice.locator(".tier-badge")).to_have_text("VIP")
    await expect(alice.locator(".tier-badge")).to_have_class(re.compile(r"\btier-vip\b"))
    await expect(support.locator(".stat-waiting .value")).to_have_text("1")
    await expect(support.locator(".stat-waiting .label")).to_have_text("waiting")
