"""The agent's working day on the page (issue 20), in a real Chromium against the real app,
store, pop, follow-up desk and the PBX simulator: each defect a tester found, walked the way
an agent meets it."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.followups import Followups
from cti.board import Board
from cti.callbacks import CallbackDialer
from cti.events import MemberUpdated
from cti.settings import FollowupSettings
from screenpop.followups_api import FollowupDesk
from screenpop.pipeline import PopService
from tests.screenpop.test_followups_api import AGENTS, ALICE
from tests.support.screenpop import (
    PASSWORDS,
    PBX,
    WEI,
    Calls,
    Seeded,
    build_app,
    new_pop,
    new_store,
    seed,
    served,
    simulated_pbx,
)

SETTINGS = FollowupSettings(contact_max=2, ring_seconds=5.0)
NOTE = "Wants the refund on the card ending 4242 — call after 17:00, not before.\nSecond line."


@dataclass
class Site:
    url: str
    pop: PopService
    calls: Calls
    seeded: Seeded


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    pop = new_pop(store)
    seeded = await seed(store)
    async with simulated_pbx() as (_server, ami):
        board = Board(agents=AGENTS)
        board.observe(MemberUpdated(PBX, time.time(), "support", "Alice", "Alice", ALICE, 1,
                                    False, "", False, 0.0))  # fmt: skip
        desk = FollowupDesk(
            Followups(store.sessions, SETTINGS),
            CallbackDialer({PBX: ami}, AGENTS, SETTINGS),
            board.queues_of,
        )
        try:
            async with served(build_app(pop, store, followups=desk)) as url:
                yield Site(url, pop, Calls(pop), seeded)
        finally:
            await pop.close()


async def log_in(page: Page, site: Site, login: str = "alice") -> None:
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill(login)
    await page.get_by_label("Password").fill(PASSWORDS[login])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#link")).to_have_text("live")


async def test_what_an_agent_wrote_is_seen_again(browser: Browser, site: Site) -> None:
    """Defect 1: outcome notes were stored but shown nowhere, and the follow-up row showed
    the raw code ("Follow up: callback")."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await log_in(page, site)

    site.calls.ring("c1", "Alice", WEI)
    site.calls.answer("c1", "Alice")
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.locator("form.outcome")).to_be_visible()
    site.calls.end("c1", "Alice", WEI)
    await card.get_by_label("Disposition").select_option("callback")
    await card.get_by_label("Notes").fill(NOTE)
    await card.locator("summary").filter(has_text="Follow-up").click()
    await card.get_by_label("Due").fill("2031-05-06")
    await card.get_by_role("button", name="Save outcome").click()
    await expect(card).to_have_count(0)

    # the follow-up list: the label, not the code, and what was said
    row = page.locator("#followups tbody tr").filter(has_text="Callback needed")
    await expect(row.locator(".col-why")).to_contain_text("Follow up: Callback needed")
    await expect(row.locator(".col-why .note")).to_have_text(NOTE)

    # the customer calls again: the next card shows the outcome with its notes
    site.calls.ring("c2", "Alice", WEI)
    again = page.locator(f'[data-card-id="{PBX}/c2/Alice"]')
    recent = again.locator(".recent li.kind-outcome")
    await expect(recent.locator(".title")).to_have_text(["Callback needed"])
    await expect(recent.locator(".note")).to_have_text([NOTE])
    opened = again.locator(".open li.kind-followup").filter(has_text="Callback needed")
    await expect(opened.locator(".title")).to_have_text("Follow up: Callback needed")
    await expect(opened.locator(".note")).to_have_text(NOTE)

    # ... and so does the customer's page
    await page.goto(f"{site.url}/customers/{site.seeded.wei}")
    outcome = page.locator("li.kind-outcome").first
    await expect(outcome.locator(".title")).to_have_text("Callback needed")
    await expect(outcome.locator(".note")).to_have_text(NOTE)
    assert re.search(r"\n", await outcome.locator(".note").inner_text()), "lines are kept"
    assert errors == []
