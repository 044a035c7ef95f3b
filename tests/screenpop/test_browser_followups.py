"""The agent's follow-ups in a real Chromium, against the real app, a real AmiClient and the
PBX simulator: the list (own and queue's, overdue first, hostile names as plain text), Dial
(the simulator answers the Originate and the follow-up closes in the page), a refused call
showing the contact rule's reason, and Close with a result and a note.
"""

from __future__ import annotations

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
from pbxsim import AmiServer
from screenpop.followups_api import FollowupDesk
from tests.screenpop.test_followups_api import AGENTS, ALICE, add_followups
from tests.support.screenpop import (
    HOSTILE,
    HOSTILE_PHONE,
    PASSWORDS,
    PBX,
    build_app,
    new_pop,
    new_store,
    seed,
    served,
    simulated_pbx,
)

SETTINGS = FollowupSettings(contact_max=1, ring_seconds=5.0)


@dataclass
class Site:
    url: str
    server: AmiServer
    ids: dict[str, int]


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    pop = new_pop(store)
    async with simulated_pbx() as (server, ami):
        ids = await add_followups(pop, await seed(store))
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
                yield Site(url, server, ids)
        finally:
            await pop.close()


async def log_in(page: Page, site: Site) -> None:
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#link")).to_have_text("live")


async def test_agent_dials_a_callback_and_closes_another(browser: Browser, site: Site) -> None:
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    await log_in(page, site)

    section = page.locator("#followups")
    rows = section.locator("tbody tr")
    await expect(rows).to_have_count(2)  # her own and her queue's; not sales', not Bob's
    await expect(section.locator(".count")).to_have_text("(2)")
    own = section.locator(f'tr[data-followup-id="{site.ids["Alice"]}"]')
    queued = section.locator(f'tr[data-followup-id="{site.ids["queue:support"]}"]')
    await expect(rows.first).to_have_attribute("data-followup-id", str(site.ids["Alice"]))
    await expect(own).to_have_class("followup state-open overdue")
    await expect(own.locator(".col-customer .name")).to_have_text(HOSTILE)  # text, not markup
    await expect(own.locator(".col-customer .number")).to_have_text(HOSTILE_PHONE)
    await expect(own.locator(".col-owner")).to_have_text("you")
    await expect(queued.locator(".col-owner")).to_have_text("queue support")
    await expect(queued.locator(".col-state")).to_have_text("open")

    # Dial: the simulator's customer answers, the follow-up closes in the page
    await queued.get_by_role("button", name="Dial").click()
    await expect(queued.locator(".col-state")).to_have_text("closed · reached")
    await expect(queued.get_by_role("button", name="Dial")).to_have_count(0)
    await expect(section.locator(".count")).to_have_text("(1)")

    # the customer does not answer: still open; a second call breaks the contact rule
    site.server.silent_devices.add(f"Local/{HOSTILE_PHONE}@callbacks")
    await own.get_by_role("button", name="Dial").click()
    await expect(own.locator(".col-state")).to_have_text("open · last try: no answer")
    await expect(own.locator(".row-status")).to_have_text("Not reached: no answer.")
    await own.get_by_role("button", name="Dial").click()
    await expect(own.locator(".row-status")).to_contain_text(
        "Not called: the center called this customer once in the last 24 hours"
    )

    # Close by hand, with a result and a note
    await own.get_by_role("button", name="Close").click()
    form = own.locator(".close-form")
    await form.get_by_label("Result").select_option("no_answer")
    await form.get_by_label("Note").fill("<img src=x onerror=alert(1)> tried twice")
    await form.get_by_role("button", name="Close it").click()
    await expect(own.locator(".col-state")).to_have_text("closed · no answer")
    await expect(section.locator(".count")).to_have_text("")

    # a reload reads the list again: both are done
    await page.reload()
    await expect(section.locator(".followups-empty")).to_be_visible()
    assert errors == []
    await context.close()
