"""Finding a customer without a call, in a real Chromium: the header's search box on every
page, by name (any word, folded), by number in any spelling and by the CRM id; hostile names
shown as text; the result opens the customer's page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.models import Customer
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    HOSTILE,
    PASSWORDS,
    Seeded,
    build_app,
    new_pop,
    new_store,
    seed,
    served,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # store: test_search


@dataclass
class Site:
    url: str
    pop: PopService
    seeded: Seeded


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    seeded = await seed(store)
    pop = new_pop(store)
    try:
        async with served(build_app(pop, store)) as url:
            yield Site(url, pop, seeded)
    finally:
        await pop.close()


async def logged_in(browser: Browser, site: Site, login: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill(login)
    await page.get_by_label("Password").fill(PASSWORDS[login])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(site.url + "/")
    return page


async def find(page: Page, query: str) -> None:
    box = page.get_by_role("searchbox", name="Find a customer")
    await box.fill(query)
    await box.press("Enter")
    await expect(page).to_have_url(re.compile(r"/search\?q="))


async def test_an_agent_finds_a_customer_by_name_and_opens_the_page(
    browser: Browser, site: Site
) -> None:
    page = await logged_in(browser, site, "alice")
    await find(page, "twin")
    rows = page.locator(".search-results tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.locator("td:first-child a")).to_have_text(["Ana Twin", "Bea Twin"])
    await expect(page.locator(".search-count")).to_have_text("2 found for “twin”")
    await expect(page.get_by_role("searchbox", name="Find a customer")).to_have_value("twin")
    await rows.first.get_by_role("link", name="Ana Twin").click()
    await expect(page).to_have_url(f"{site.url}/customers/{site.seeded.twin_a}")
    await expect(page.locator(".customer h1")).to_have_text("Ana Twin")
    # the box is on the customer's page too: the next search starts from there
    await find(page, "张")
    await expect(page.locator(".search-results tbody tr td:first-child a")).to_have_text(["张伟"])


async def test_by_number_in_any_spelling_and_by_crm_id(browser: Browser, site: Site) -> None:
    page = await logged_in(browser, site, "alice")
    await find(page, "+86 138-0013-8000")
    row = page.locator(".search-results tbody tr")
    await expect(row.locator("td:first-child a")).to_have_text("张伟")
    await expect(row.locator("td").nth(1)).to_have_text("138 0013 8000")  # as agents read it
    await expect(row.locator("td").nth(3)).to_have_text("phone number")
    await find(page, "nobody-like-this")
    await expect(page.locator(".search-count")).to_have_text("Nobody found for “nobody-like-this”.")
    await expect(page.locator(".search-results")).to_have_count(0)


async def test_hostile_names_and_queries_are_text(browser: Browser, site: Site) -> None:
    page = await logged_in(browser, site, "alice")
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await find(page, "<script>alert(1)</script> brien")
    link = page.locator(".search-results tbody tr td:first-child a")
    await expect(link).to_have_text(HOSTILE)
    await expect(page.locator(".search-count")).to_contain_text("<script>alert(1)</script>")
    assert dialogs == []
    assert await page.locator(".search-results img").count() == 0


async def test_an_agent_corrects_contact_data(
    browser: Browser, site: Site, engine: AsyncEngine
) -> None:
    """'A writable history': the agent corrects how to reach a customer. One born here (no
    CRM id) changes at once; one the CRM owns is only sent to the CRM, as the page says."""
    page = await logged_in(browser, site, "alice")
    await find(page, "twin")  # what her search shows, she may open and correct
    await page.get_by_role("link", name="Ana Twin").click()
    await expect(page).to_have_url(f"{site.url}/customers/{site.seeded.twin_a}")
    form = page.locator(".correct-contact")
    await form.locator("summary").click()
    await expect(form).to_contain_text("not in the CRM yet: your correction applies at once")
    phones = form.get_by_label("Phones, one per line")
    await phones.fill("1001")
    await form.get_by_role("button", name="Save the correction").click()
    await expect(form.locator(".error")).to_have_text(
        "Not sent: phones: '1001' is an internal extension, not a customer's"
    )
    await expect(phones).to_have_value("1001")  # what was typed is kept
    await form.get_by_label("E-mail").fill("ana@example.com")
    await form.get_by_label("Phones, one per line").fill("+49 30 123456\n+44 20 7946 0958")
    await form.get_by_role("button", name="Save the correction").click()
    await expect(page).to_have_url(f"{site.url}/customers/{site.seeded.twin_a}#timeline")
    await expect(page.locator(".facts")).to_contain_text("ana@example.com")
    await expect(page.locator(".facts")).to_contain_text("+44 20 7946 0958")
    entry = page.locator(".timeline li").filter(has_text="Contact corrected: e-mail, phones")
    await expect(entry.locator(".note")).to_contain_text("e-mail: none → ana@example.com")

    async with engine.begin() as conn:  # now the CRM owns 张伟
        await conn.execute(
            update(Customer).where(Customer.id == site.seeded.wei).values(external_id="CRM-7")
        )
    await find(page, "张")
    await page.get_by_role("link", name="张伟").click()
    await expect(page).to_have_url(f"{site.url}/customers/{site.seeded.wei}")
    form = page.locator(".correct-contact")
    await form.locator("summary").click()
    await expect(form).to_contain_text("The CRM owns these")
    await form.get_by_label("Address").fill(HOSTILE)
    await form.get_by_role("button", name="Send the correction to the CRM").click()
    sent = page.locator(".timeline li").filter(has_text="Contact correction sent to the CRM")
    await expect(sent.locator(".note")).to_contain_text("address: none → <script>")
    await form.locator("summary").click()
    await expect(form.get_by_label("Address")).to_have_value("")  # not applied here
