"""The agent's follow-ups in a real Chromium, against the real app, a real AmiClient and the
PBX simulator: the list (own and queue's, overdue first, hostile names as plain text), Dial
(the simulator answers the Originate and the follow-up closes in the page), a refused call
showing the contact rule's reason, and Close with a result and a note; the filters, "Show
more", and putting follow-ups off (snooze, a picked time, a past one refused), in a browser
whose time zone puts its noon at the test's "now", so "today" holds whatever hour it runs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.followups import Followups
from crm_sync.models import Interaction
from crm_sync.store import CustomerStore
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
    now,
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
    store: CustomerStore
    followups: Followups
    emitted: list[Mapping[str, str]]


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    pop = new_pop(store)
    async with simulated_pbx() as (server, ami):
        emitted: list[Mapping[str, str]] = []
        server.observers.append(emitted.append)
        ids = await add_followups(pop, await seed(store))
        board = Board(agents=AGENTS)
        board.observe(MemberUpdated(PBX, time.time(), "support", "Alice", "Alice", ALICE, 1,
                                    False, "", False, 0.0))  # fmt: skip
        followups = Followups(store.sessions, SETTINGS)
        desk = FollowupDesk(
            followups, CallbackDialer({PBX: ami}, AGENTS, SETTINGS), board.queues_of
        )
        try:
            async with served(build_app(pop, store, followups=desk)) as url:
                yield Site(url, server, ids, store, followups, emitted)
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
    await expect(section.locator(".count")).to_have_text("(2 · 1 overdue)")
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
    await expect(section.locator(".count")).to_have_text("(1 · 1 overdue)")

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


def noon_zone() -> str:
    """A fixed-offset zone whose local time is about noon now: an hour either side of "now"
    is the same day there, whenever the test runs."""
    hours = 12 - now().hour  # from -11 to +12; Etc/GMT's sign is the other way round
    return "Etc/GMT" if hours == 0 else f"Etc/GMT{-hours:+d}"


async def due_of(site: Site, followup_id: int) -> datetime | None:
    item = await site.followups.get(followup_id, now=now())
    assert item is not None
    return item.due_at


async def test_agent_filters_and_puts_followups_off(browser: Browser, site: Site) -> None:
    zone = noon_zone()
    context = await browser.new_context(viewport={"width": 1200, "height": 800}, timezone_id=zone)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await log_in(page, site)
    section = page.locator("#followups")
    rows = section.locator("tbody tr")
    own_id, queued_id = site.ids["Alice"], site.ids["queue:support"]
    own = section.locator(f'tr[data-followup-id="{own_id}"]')
    queued = section.locator(f'tr[data-followup-id="{queued_id}"]')
    await expect(rows).to_have_count(2)

    # the filters: each shows its part, the heading still counts the whole list
    for label, shown in (("Overdue", own_id), ("My queues", queued_id), ("Mine", own_id)):
        await section.get_by_label(label, exact=True).check()
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-followup-id", str(shown))
        await expect(section.locator(".count")).to_have_text("(2 · 1 overdue)")
    await section.get_by_label("Today", exact=True).check()  # due an hour ago, in an hour
    await expect(rows).to_have_count(2)
    await section.get_by_label("All", exact=True).check()
    await expect(rows).to_have_count(2)

    # snooze the overdue one an hour: no longer overdue, now after the queue's one
    await own.get_by_role("button", name="Reschedule").click()
    await own.get_by_role("button", name="+1 hour").click()
    await expect(own.locator(".row-status")).to_contain_text("Now due")
    await expect(own).to_have_class("followup state-open")
    await expect(section.locator(".count")).to_have_text("(2)")
    await expect(rows.first).to_have_attribute("data-followup-id", str(queued_id))
    snoozed = await due_of(site, own_id)
    assert snoozed is not None
    assert timedelta(minutes=55) < snoozed - now() <= timedelta(hours=1)

    # tomorrow 09:00 where the agent is
    local = ZoneInfo(zone)
    tomorrow = (now().astimezone(local) + timedelta(days=1)).date()
    await queued.get_by_role("button", name="Reschedule").click()
    await queued.get_by_role("button", name="Tomorrow 09:00").click()
    await expect(queued.locator(".row-status")).to_contain_text("Now due")
    at_nine = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 9, 0, tzinfo=local)
    assert await due_of(site, queued_id) == at_nine
    await section.get_by_label("Today", exact=True).check()  # it is tomorrow's work now
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-followup-id", str(own_id))
    await section.get_by_label("All", exact=True).check()

    # a picked date and time; a past one is refused and changes nothing
    await own.get_by_role("button", name="Reschedule").click()
    form = own.locator(".reschedule-form")
    yesterday = tomorrow - timedelta(days=2)
    await form.get_by_label("New date").fill(yesterday.isoformat())
    await form.get_by_label("Time").fill("10:30")
    await form.get_by_role("button", name="Save").click()
    await expect(own.locator(".row-status")).to_contain_text("in the past")
    assert await due_of(site, own_id) == snoozed
    await form.get_by_label("New date").fill(tomorrow.isoformat())
    await form.get_by_role("button", name="Save").click()
    await expect(own.locator(".row-status")).to_contain_text("Now due")
    at = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 10, 30, tzinfo=local)
    assert await due_of(site, own_id) == at
    await expect(rows.first).to_have_attribute("data-followup-id", str(queued_id))
    assert errors == []
    await context.close()


async def test_show_more_pages_through_a_long_list(browser: Browser, site: Site) -> None:
    at = now()
    seeded = await seed_more(site, at, 55)
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    await log_in(page, site)
    section = page.locator("#followups")
    rows = section.locator("tbody tr")
    await expect(rows).to_have_count(50)  # a page
    await expect(section.locator(".count")).to_have_text("(57 · 1 overdue)")  # all of them
    await expect(section.locator(".followups-more .shown")).to_have_text("Showing 50 of 57.")
    await section.get_by_role("button", name="Show more").click()
    await expect(rows).to_have_count(57)
    await expect(section.get_by_role("button", name="Show more")).to_be_hidden()
    await expect(rows.last).to_have_attribute("data-followup-id", str(seeded[-1]))
    # a refresh reads as many pages as are open
    await page.evaluate("window.dispatchEvent(new Event('online'))")
    await expect(rows).to_have_count(57)
    await context.close()


async def seed_more(site: Site, at: datetime, count: int) -> list[int]:
    """``count`` more follow-ups of Alice's, due one minute apart from two hours on."""
    ids = []
    async with site.store.sessions() as session, session.begin():
        customer = await session.get(Interaction, site.ids["Alice"])
        assert customer is not None
        for n in range(count):
            row = Interaction(
                customer_id=customer.customer_id, kind="followup", occurred_at=at,
                title=f"more {n}", status="open", owner="Alice",
                due_at=at + timedelta(hours=2, minutes=n),
            )  # fmt: skip
            session.add(row)
            await session.flush()
            ids.append(row.id)
    return ids


async def test_agent_finds_a_customer_and_calls_them_from_their_page(
    browser: Browser, site: Site
) -> None:
    page = await (await browser.new_context()).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await log_in(page, site)
    box = page.get_by_role("searchbox", name="Find a customer")
    await box.fill("张伟")
    await box.press("Enter")
    await page.get_by_role("link", name="张伟").click()
    await expect(page.locator(".customer h1")).to_have_text("张伟")

    status = page.locator(".call-status")
    await page.get_by_role("button", name="Call 张伟 at 138 0013 8000").click()
    await expect(status).to_have_text(
        "138 0013 8000: answered: your phone rings now, the card pops on your agent page."
    )
    await expect(status).to_be_focused()  # a screen reader hears how it went
    [response] = [e for e in site.emitted if e.get("Event") == "OriginateResponse"]
    assert response["Channel"].startswith("Local/+8613800138000@callbacks-")

    # one call a day (this site's rule): the next one, to any number, is refused with why
    other = page.get_by_label("Call another number")
    await other.fill("+44 20 7946 0958")
    await page.locator(".call-other").get_by_role("button", name="Call").click()
    await expect(status).to_contain_text("Not called: the center called this customer once")
    await other.fill("1001")
    await page.locator(".call-other").get_by_role("button", name="Call").click()
    await expect(status).to_contain_text("number: a phone number")
    assert len([e for e in site.emitted if e.get("Event") == "OriginateResponse"]) == 1
    assert errors == []
