"""Names the store would refuse today but may still hold (imported before the text rule):
a 200-letter unbroken name and one with U+202E (RIGHT-TO-LEFT OVERRIDE). In a real Chromium
the agent page, with such a caller's card and such customers' follow-ups, stays as wide as
the window, its Dial/Close buttons stay on screen, and the override reorders nothing
outside the name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp import web
from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.followups import Followups
from crm_sync.models import Customer, Interaction, Phone
from cti.settings import FollowupSettings
from screenpop.followups_api import FollowupDesk
from screenpop.pipeline import PopService
from tests.screenpop.test_browser_agent_page import Site, log_in
from tests.support.screenpop import (
    Calls,
    build_app,
    new_pop,
    new_store,
    now,
    seed,
    served,
)

LONG = "W" * 200
RLO = "Evil\u202eCorp"
LONG_PHONE, RLO_PHONE = "+8613900139001", "+8613900139002"


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    seeded = await seed(store)
    at = now()
    async with store.sessions() as session, session.begin():
        for name, phone in ((LONG, LONG_PHONE), (RLO, RLO_PHONE)):
            customer = Customer(
                kind="person",
                name=name,
                tier="regular",
                lifecycle="active",
                tags=[],
                created_at=at,
                updated_at=at,
            )
            session.add(customer)
            await session.flush()
            session.add(Phone(customer_id=customer.id, e164=phone))
            session.add(
                Interaction(
                    customer_id=customer.id,
                    kind="followup",
                    occurred_at=at,
                    title="Call back",
                    status="open",
                    owner="Alice",
                    due_at=at + timedelta(hours=1),
                )
            )
    pop: PopService = new_pop(store)
    desk = FollowupDesk(Followups(store.sessions, FollowupSettings()), None, lambda _: frozenset())
    app: web.Application = build_app(pop, store, followups=desk)
    try:
        async with served(app) as url:
            yield Site(url, app, pop, Calls(pop), seeded, engine)
    finally:
        await pop.close()


async def test_hostile_names_neither_widen_the_page_nor_reorder_it(
    browser: Browser, site: Site
) -> None:
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    page = await context.new_page()
    await log_in(page, site, "alice")
    site.calls.ring("long1", "Alice", "0086" + LONG_PHONE[3:])
    site.calls.ring("rlo1", "Alice", "0086" + RLO_PHONE[3:])
    names = page.locator("#cards .who .name")
    await expect(names).to_have_count(2)
    buttons = page.locator("button.dial, button.close")
    await expect(buttons.first).to_be_visible()
    assert await buttons.count() >= 4  # both follow-ups, each with Dial and Close

    width = await page.evaluate("innerWidth")
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    for index in range(await buttons.count()):
        box = await buttons.nth(index).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width

    # the override stays inside the name: isolated, so what follows it keeps its order
    rlo = page.locator("#cards .who .name", has_text="Corp")
    assert await rlo.evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"
    for followup_name in await page.locator("text=Corp").all():
        style = await followup_name.evaluate("e => getComputedStyle(e).unicodeBidi")
        display = await followup_name.evaluate("e => getComputedStyle(e).display")
        assert style == "isolate" or display != "inline"
    await context.close()
