"""My day on the agent page (issue 20), in a real Chromium against the real app, store and
pop: the agent's calls of the day with their outcomes; a call that ended while the page was
closed waits there (not on the screen) and is finished there; hostile text stays text. The
browser's time zone is pinned so that its local noon is about now: "today" holds at any hour,
on any date."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from screenpop.cards import PopBook
from screenpop.hub import Hub
from screenpop.pipeline import PopService
from tests.screenpop.test_browser_followups import noon_zone
from tests.support.screenpop import (
    HOSTILE,
    HOSTILE_PHONE,
    NOBODY,
    PASSWORDS,
    PBX,
    WEI,
    Calls,
    build_app,
    eventually,
    new_store,
    now,
    seed,
    served,
)


class NoHold:
    """Wrap-up is tracked (so a call ending with no page open is marked away), no PBX held."""

    def hold(self, pbx: str, agent: str) -> None: ...

    def release(self, pbx: str, agent: str) -> None: ...


@dataclass
class Site:
    url: str
    pop: PopService
    calls: Calls


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    await seed(store)
    pop = PopService(PopBook(), Hub(), store, clock=now, budget=10.0, wrapup=NoHold())
    try:
        async with served(build_app(pop, store)) as url:
            yield Site(url, pop, Calls(pop))
    finally:
        await pop.close()


async def open_page(browser: Browser, site: Site) -> Page:
    context = await browser.new_context(
        viewport={"width": 1200, "height": 900}, timezone_id=noon_zone()
    )
    page = await context.new_page()
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#link")).to_have_text("live")
    return page


async def unattended(site: Site, call_id: str, number: str) -> None:
    """Alice takes a call while no page of hers is open; it ends once the caller is known."""
    site.calls.ring(call_id, "Alice", number)
    await eventually(lambda: site.pop.lookup_for(PBX, call_id) is not None)
    site.calls.answer(call_id, "Alice")
    site.calls.end(call_id, "Alice", number)


async def test_calls_of_the_day_with_outcomes_and_one_finished_there(
    browser: Browser, site: Site
) -> None:
    await unattended(site, "c1", WEI)
    await unattended(site, "c2", NOBODY)
    await unattended(site, "c3", HOSTILE_PHONE)
    page = await open_page(browser, site)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    day = page.locator("#my-day")
    rows = day.locator(".day-call")

    # ended while the page was closed: in My day with the outcome missing, not on the screen
    await expect(rows).to_have_count(3)
    await expect(day.locator(".day-call.missing")).to_have_count(3)
    await expect(page.locator("#cards .card")).to_have_count(0)
    await expect(page.locator("#wrapup-banner")).to_be_hidden()
    await expect(day.locator(".count")).to_have_text("(3 · 3 without outcome)")
    hostile = day.locator('[data-call-id="c3"]')
    await expect(hostile.locator(".who .name")).to_have_text(HOSTILE)  # text, not markup
    assert await page.locator("#my-day script, #my-day img").count() == 0

    # finish the known caller's outcome there, with hostile notes
    wei = day.locator('[data-call-id="c1"]')
    await wei.get_by_role("button", name="Finish the outcome of the call from 张伟").click()
    form = wei.locator("form.outcome")
    await form.get_by_label("Disposition").select_option("resolved")
    await form.get_by_label("Notes").fill(HOSTILE)
    await form.get_by_role("button", name="Save outcome: 张伟").click()
    await expect(wei.locator(".result .label")).to_have_text("Resolved on the call")
    await expect(wei.locator(".result .note")).to_have_text(HOSTILE)
    await expect(wei).not_to_have_class("day-call missing")
    await expect(wei.locator("form.outcome")).to_have_count(0)

    # the unknown caller: a new customer's name is asked, as on the card
    unknown = day.locator('[data-call-id="c2"]')
    await unknown.get_by_role(
        "button", name="Finish the outcome of the call from +1 555-010-0999"
    ).click()
    form = unknown.locator("form.outcome")
    await form.get_by_label("Disposition").select_option("callback")
    await form.get_by_role("button", name="Save outcome").click()
    await expect(form.locator(".save-status")).to_have_text("Give the new customer's name.")
    await form.get_by_label("New customer's name").fill("<b>Neu</b> Kunde")
    await form.get_by_role("button", name="Save outcome").click()
    await expect(unknown.locator(".result .label")).to_have_text("Callback needed")
    await expect(unknown.locator(".who .name")).to_have_text("<b>Neu</b> Kunde")

    # the last one is dismissed: the call of a known customer stays, its outcome missing
    third = day.locator('[data-call-id="c3"]')
    await third.get_by_role("button", name=f"Dismiss the call from {HOSTILE}").click()
    await expect(third.get_by_role("button", name="Dismiss")).to_have_count(0)
    await expect(day.locator(".count")).to_have_text("(3 · 1 without outcome)")

    # a reload reads the same day again
    await page.reload()
    await expect(rows).to_have_count(3)
    await expect(day.locator('[data-call-id="c1"] .result .label')).to_have_text(
        "Resolved on the call"
    )
    assert errors == []


async def test_what_the_agent_types_in_my_day_survives_a_refresh_of_the_list(
    browser: Browser, site: Site
) -> None:
    """My day is read again whenever a call of the agent ends: the open form keeps its place,
    its text and the keyboard focus (a refresh once took the focus, and the notes typed next
    went nowhere)."""
    await unattended(site, "c1", WEI)
    page = await open_page(browser, site)
    day = page.locator("#my-day")
    wei = day.locator('[data-call-id="c1"]')
    await wei.get_by_role("button", name="Finish the outcome of the call from 张伟").click()
    notes = wei.locator("form.outcome").get_by_label("Notes")
    await notes.click()
    await page.keyboard.type("asked about ")
    site.calls.ring("c2", "Alice", NOBODY)  # the page is open: a card, then a wrap-up
    await eventually(lambda: site.pop.lookup_for(PBX, "c2") is not None)
    site.calls.answer("c2", "Alice")
    site.calls.end("c2", "Alice", NOBODY)
    await expect(day.locator('[data-call-id="c2"]')).to_have_count(1)  # the list was read again
    await expect(notes).to_be_focused()
    await page.keyboard.type("the invoice")
    await expect(notes).to_have_value("asked about the invoice")


async def test_a_live_call_goes_to_my_day_when_its_outcome_is_saved(
    browser: Browser, site: Site
) -> None:
    page = await open_page(browser, site)
    day = page.locator("#my-day")
    site.calls.ring("c9", "Alice", WEI)
    await eventually(lambda: site.pop.lookup_for(PBX, "c9") is not None)
    site.calls.answer("c9", "Alice")
    card = page.locator(f'[data-card-id="{PBX}/c9/Alice"]')
    await expect(card.locator(".who .name")).to_have_text("张伟")
    site.calls.end("c9", "Alice", WEI)
    await expect(page.locator("#wrapup-banner")).to_be_visible()  # held: the page was open
    row = day.locator('[data-call-id="c9"]')
    await expect(row.locator(".badge.missing")).to_have_text("Outcome missing")
    await card.get_by_label("Disposition").select_option("info_given")
    await card.get_by_role("button", name="Save outcome").click()
    await expect(row.locator(".result .label")).to_have_text("Information given")
    await expect(page.locator("#wrapup-banner")).to_be_hidden()
