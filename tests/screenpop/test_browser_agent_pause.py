"""The agent page's own Pause / Unpause in a real Chromium, against the real app, a real
AmiClient and the PBX simulator: the pause lands in Asterisk's queue with its reason, "other"
takes free text, a PBX that went away shows its error, and every attempt is audited.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import audit
from cti.ami import AmiClient
from cti.controls import MemberControls
from cti.settings import AgentSettings
from pbxsim import AmiServer
from tests.support.screenpop import (
    PASSWORDS,
    PBX,
    build_app,
    eventually,
    new_pop,
    new_store,
    pause_state,
    served,
    simulated_pbx,
)

ALICE = "Local/1001@agents/n"  # Alice in the simulator's support queue


@dataclass
class Site:
    url: str
    server: AmiServer
    ami: AmiClient
    engine: AsyncEngine


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    pop = new_pop(store)
    async with simulated_pbx() as (server, ami):
        controls = MemberControls({PBX: ami}, [AgentSettings("Alice", members=("Alice", ALICE))])
        try:
            async with served(build_app(pop, store, controls=controls)) as url:
                yield Site(url, server, ami, engine)
        finally:
            await pop.close()


async def log_in(page: Page, site: Site) -> None:
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(site.url + "/")
    await expect(page.locator("#link")).to_have_text("live")


async def test_agent_pauses_and_unpauses_from_the_page(browser: Browser, site: Site) -> None:
    context = await browser.new_context(viewport={"width": 1100, "height": 560})
    page = await context.new_page()
    await log_in(page, site)
    control = page.locator("#pause-control")
    status = control.locator(".pause-status")
    other = control.get_by_label("Other reason")
    await expect(page.locator("#empty")).to_be_visible()  # the page works as before
    await expect(other).to_be_hidden()

    await control.get_by_label("Pause reason").select_option("lunch")
    await control.get_by_role("button", name="Pause", exact=True).click()
    await expect(status).to_have_text("Paused: lunch")
    await expect(status).to_have_class(re.compile(r"\bok\b"))
    assert await pause_state(site.ami) == ("1", "lunch")

    # "other": free text, up to 64 characters, and required
    await control.get_by_label("Pause reason").select_option("other")
    await expect(other).to_be_visible()
    await control.get_by_role("button", name="Pause", exact=True).click()
    await expect(status).to_have_text("Give a reason.")
    await other.fill("dentist " * 10)
    assert len(await other.input_value()) == 64
    await other.fill("dentist")
    await control.get_by_role("button", name="Pause", exact=True).click()
    await expect(status).to_have_text("Paused: dentist")
    assert await pause_state(site.ami) == ("1", "dentist")

    await control.get_by_role("button", name="Unpause").click()
    await expect(status).to_have_text("Available")
    assert await pause_state(site.ami) == ("0", "")

    # the PBX goes away: the page says why, nothing pretends it worked
    await site.server.stop()
    await eventually(lambda: not site.ami.connected)
    await control.get_by_role("button", name="Pause", exact=True).click()
    await expect(status).to_have_class(re.compile(r"\berror\b"))
    await expect(status).to_contain_text("not connected")
    await expect(control.get_by_role("button", name="Pause", exact=True)).to_be_enabled()

    entries = await audit.recent(site.engine)
    assert [(e.login, e.action, e.detail, e.result.split(":")[0]) for e in entries] == [
        ("alice", "pause", "dentist", "failed"),
        ("alice", "unpause", "", "ok"),
        ("alice", "pause", "dentist", "ok"),
        ("alice", "pause", "lunch", "ok"),
    ]
    await context.close()
