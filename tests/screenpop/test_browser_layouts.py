"""The agent page on a phone-sized window and on a wide screen (issue 20), in a real Chromium
against the real app, store, pop and follow-up desk, with the PBX simulator.

At 420 px an agent on a call must reach everything without scrolling the page sideways: the
card, its outcome form, the pause control and the follow-ups (whose rows stack) fit the
window. At 1920 px the page uses the width: the calls and the follow-ups stand side by side.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.followups import Followups
from cti.board import Board
from cti.callbacks import CallbackDialer
from cti.controls import MemberControls
from cti.events import MemberUpdated
from cti.settings import FollowupSettings
from screenpop.cards import PopBook
from screenpop.followups_api import FollowupDesk
from screenpop.hub import Hub
from screenpop.pipeline import PopService
from tests.screenpop.test_followups_api import AGENTS, ALICE, add_followups
from tests.support.screenpop import (
    PASSWORDS,
    PBX,
    WEI,
    Calls,
    build_app,
    new_store,
    now,
    seed,
    served,
    simulated_pbx,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # store not under test
SETTINGS = FollowupSettings(contact_max=2, ring_seconds=5.0)


@dataclass
class Site:
    url: str
    calls: Calls


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    """Alice's page with follow-ups to do (her own, her queue's)."""
    store = new_store(engine)
    seeded = await seed(store)
    async with simulated_pbx() as (_server, ami):
        pop = PopService(PopBook(), Hub(), store, clock=now, budget=10.0)
        await add_followups(pop, seeded)
        board = Board(agents=AGENTS)
        board.observe(MemberUpdated(PBX, time.time(), "support", "Alice", "Alice", ALICE, 1,
                                    False, "", False, 0.0))  # fmt: skip
        desk = FollowupDesk(
            Followups(store.sessions, SETTINGS),
            CallbackDialer({PBX: ami}, AGENTS, SETTINGS),
            board.queues_of,
        )
        try:
            app = build_app(pop, store, followups=desk, controls=MemberControls({PBX: ami}, AGENTS))
            async with served(app) as url:
                yield Site(url, Calls(pop))
        finally:
            await pop.close()


async def on_a_call(browser: Browser, site: Site, width: int, height: int) -> Page:
    """Alice's page at that size, a call from 张伟 answered (its card and outcome form open)
    and her follow-ups listed."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#link")).to_have_text("live")
    site.calls.ring("c1", "Alice", WEI)
    site.calls.answer("c1", "Alice")
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.locator(".who .name")).to_have_text("张伟")
    await expect(card.locator("form.outcome")).to_be_visible()
    await expect(page.locator("#followups tbody tr")).to_have_count(2)  # hers and her queue's
    return page


# the page's sideways overflow, and every visible thing reaching past the window's edges
GEOMETRY = """() => {
  const doc = document.documentElement;
  const outside = [];
  for (const node of document.querySelectorAll("body *")) {
    if (!node.checkVisibility() || node.closest(".visually-hidden")) continue;
    const r = node.getBoundingClientRect();
    if (r.width === 0 || (r.left >= -0.5 && r.right <= doc.clientWidth + 0.5)) continue;
    const what = node.id ? `#${node.id}` : node.className || node.tagName.toLowerCase();
    outside.push(`${what} ${Math.round(r.left)}..${Math.round(r.right)}`);
  }
  return { scrolls: doc.scrollWidth > doc.clientWidth, outside };
}"""


def box(found: dict[str, Any] | None) -> dict[str, float]:
    assert found is not None, "not laid out"
    return found


async def test_the_agent_page_fits_420_px(browser: Browser, site: Site) -> None:
    page = await on_a_call(browser, site, 420, 860)
    assert await page.evaluate(GEOMETRY) == {"scrolls": False, "outside": []}

    # the follow-ups' actions open their close form: still inside
    row = page.locator("#followups tbody tr").first
    await row.get_by_role("button", name="Close").click()
    await expect(row.locator(".close-form")).to_be_visible()
    assert await page.evaluate(GEOMETRY) == {"scrolls": False, "outside": []}

    # and the card reads as text, not a column of single words
    card = box(await page.locator(".card").bounding_box())
    assert card["width"] >= 360
    name = box(await page.locator(".card .who .name").bounding_box())
    assert name["height"] < 40  # one line
    await page.close()


async def test_the_agent_page_uses_a_1920_px_screen(browser: Browser, site: Site) -> None:
    page = await on_a_call(browser, site, 1920, 1080)
    main = box(await page.locator("main").bounding_box())
    assert main["width"] > 1200
    cards = box(await page.locator("#cards").bounding_box())
    followups = box(await page.locator("#followups").bounding_box())
    # side by side: the follow-ups to the right of the calls, from the top of the calls
    assert followups["x"] >= cards["x"] + cards["width"]
    assert followups["y"] <= cards["y"] + 1
    assert cards["width"] > 600 and followups["width"] > 600
    assert await page.evaluate(GEOMETRY) == {"scrolls": False, "outside": []}
    await page.close()
