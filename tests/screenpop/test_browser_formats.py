"""One date/time and one money format per locale, the browser's (Intl): the same instant and
amount read in each locale's own form on the agent page's card and on the customer page
(server-rendered <time datetime> made local by formats.js). The instants are fixed dates in
the past, never the wall clock: the test reads the same on any day."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.models import Customer, Interaction, Phone
from ivr.menus import load_menu
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    PASSWORDS,
    PBX,
    ROOT,
    Calls,
    build_app,
    ivr_findings,
    new_pop,
    new_store,
    served,
)

CALLED = datetime(2024, 3, 5, 13, 5, tzinfo=UTC)  # 14:05 Berlin, 08:05 New York, 21:05 Beijing
PHONE = "+4930999888"
BALANCE = {"figure": "balance", "kind": "amount", "value": "-1234.50", "currency": "CNY"}


@dataclass(frozen=True)
class Locale:
    locale: str
    zone: str
    date: str  # CALLED's date, as this locale writes it
    time: str  # CALLED's time of day there
    balance: re.Pattern[str]  # BALANCE in this locale's money format
    plain: str  # 1234.5 with no currency: a plain number, in this locale's digits


LOCALES = [
    Locale(
        "de-DE", "Europe/Berlin", "05.03.2024", "14:05", re.compile(r"-1\.234,50\s*CN¥"), "1.234,5"
    ),
    Locale(
        "en-US", "America/New_York", "Mar 5, 2024", "8:05", re.compile(r"-CN¥1,234\.50"), "1,234.5"
    ),
    Locale(
        "zh-CN", "Asia/Shanghai", "2024年3月5日", "21:05", re.compile(r"-¥1,234\.50"), "1,234.5"
    ),
]


@dataclass
class Site:
    url: str
    pop: PopService
    customer: int


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    async with store.sessions() as session, session.begin():
        customer = Customer(
            kind="person", name="Lena Format", tier="regular", lifecycle="active", tags=[],
            created_at=CALLED, updated_at=CALLED,
        )  # fmt: skip
        session.add(customer)
        await session.flush()
        session.add(Phone(customer_id=customer.id, e164=PHONE))
        session.add(
            Interaction(
                customer_id=customer.id,
                kind="call",
                occurred_at=CALLED,
                title="Asked about the bill",
            )
        )
    pop = new_pop(store)
    try:
        async with served(build_app(pop, store)) as url:
            yield Site(url, pop, customer.id)
    finally:
        await pop.close()


async def log_in(page: Page, site: Site) -> None:
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#link")).to_have_text("live")


@pytest.mark.parametrize("where", LOCALES, ids=[w.locale for w in LOCALES])
async def test_times_and_money_read_in_the_browsers_locale(
    browser: Browser, site: Site, where: Locale
) -> None:
    context = await browser.new_context(locale=where.locale, timezone_id=where.zone)
    page = await context.new_page()
    await log_in(page, site)

    # the card: the balance the IVR told, with its currency; the customer's last call's date
    path = (("identify", "caller_id"), ("main", "2"), ("balance", "said"))
    terms = load_menu(ROOT / "config" / "ivr" / "main.toml").terms()
    found = ivr_findings(identified_by="caller_id", path=path)
    site.pop.ivr_learned(PBX, "f1", {**found, "terms": terms, "told": {"balance": BALANCE}})
    Calls(site.pop).ring("f1", "Alice", PHONE)
    card = page.locator(f'[data-card-id="{PBX}/f1/Alice"]')
    told = card.locator('.ivr-path .step[data-step="balance"]')
    await expect(told).to_have_text(re.compile(r"^Balance: was told "))
    await expect(told).to_have_text(where.balance)
    recent = card.locator(".recent time")
    await expect(recent).to_have_text(where.date)
    await expect(recent).to_have_attribute("datetime", "2024-03-05T13:05:00.000Z")

    # the customer page: the server's UTC time, made local in the browser
    await page.goto(f"{site.url}/customers/{site.customer}")
    stamp = page.locator(".timeline time").first
    await expect(stamp).to_have_attribute("datetime", "2024-03-05T13:05:00+00:00")
    await expect(stamp).to_contain_text(where.date)
    await expect(stamp).to_contain_text(where.time)
    await expect(stamp).not_to_contain_text("UTC")

    # server-rendered amounts: with their currency, or a plain number with a note (no guess)
    await page.evaluate(
        """() => {
            const add = (amount, currency) => {
                const node = document.createElement("span");
                node.className = "amount-under-test";
                node.dataset.amount = amount;
                node.dataset.currency = currency;
                node.textContent = `${amount} ${currency}`;
                document.querySelector("main").append(node);
            };
            add("-1234.50", "CNY");
            add("1234.5", "");
            add("<b>x</b>", "CNY");
            window.ctiFormats.apply(document);
        }"""
    )
    amounts = page.locator(".amount-under-test")
    await expect(amounts.nth(0)).to_have_text(where.balance)
    await expect(amounts.nth(1)).to_have_text(f"{where.plain} (currency not on record)")
    await expect(amounts.nth(2)).to_have_text("<b>x</b>")  # not a number: kept, as text
    await context.close()
