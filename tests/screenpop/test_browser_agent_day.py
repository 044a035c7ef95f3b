"""The agent's working day on the page (issue 20), in a real Chromium against the real app,
store, pop, follow-up desk and the PBX simulator: each defect a tester found, walked the way
an agent meets it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from playwright.async_api import Browser, Locator, Page, expect
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.followups import Followups
from crm_sync.models import Customer, Interaction, OutboxRow
from cti.ami import AmiClient
from cti.board import Board
from cti.callbacks import CallbackDialer
from cti.controls import MemberControls
from cti.events import MemberUpdated
from cti.settings import FollowupSettings
from cti.wrapup import QueuePauseWrapup
from screenpop.cards import PopBook
from screenpop.followups_api import FollowupDesk
from screenpop.hub import Hub
from screenpop.pipeline import PopService
from tests.screenpop.test_followups_api import AGENTS, ALICE, add_followups
from tests.support.screenpop import (
    NOBODY,
    PASSWORDS,
    PBX,
    WEI,
    Calls,
    Seeded,
    build_app,
    new_store,
    now,
    pause_state,
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
    ami: AmiClient


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    seeded = await seed(store)
    async with simulated_pbx() as (_server, ami):
        held = QueuePauseWrapup({PBX: ami}, AGENTS)  # require_outcome is on in the config
        # these tests are about the page, not the lookup's time budget: a loaded machine
        # must not turn 张伟 into an unknown caller (the budget has tests of its own)
        pop = PopService(PopBook(), Hub(), store, clock=now, budget=10.0, wrapup=held)
        board = Board(agents=AGENTS)
        board.observe(MemberUpdated(PBX, time.time(), "support", "Alice", "Alice", ALICE, 1,
                                    False, "", False, 0.0))  # fmt: skip
        desk = FollowupDesk(
            Followups(store.sessions, SETTINGS),
            CallbackDialer({PBX: ami}, AGENTS, SETTINGS),
            board.queues_of,
        )
        try:
            controls = MemberControls({PBX: ami}, AGENTS)
            app = build_app(pop, store, followups=desk, controls=controls)
            async with served(app) as url:
                yield Site(url, pop, Calls(pop), seeded, ami)
        finally:
            await pop.close()
            await held.close()


async def log_in(page: Page, site: Site, login: str = "alice") -> None:
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill(login)
    await page.get_by_label("Password").fill(PASSWORDS[login])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#link")).to_have_text("live")


async def until_paused(ami: AmiClient, expected: tuple[str, str]) -> None:
    for _ in range(100):
        if await pause_state(ami) == expected:
            return
        await asyncio.sleep(0.05)
    assert await pause_state(ami) == expected


async def take_call(page: Page, site: Site, call_id: str) -> Locator:
    """A call from 张伟 rings, is answered and ends: its card is in wrap-up."""
    site.calls.ring(call_id, "Alice", WEI)
    site.calls.answer(call_id, "Alice")
    card = page.locator(f'[data-card-id="{PBX}/{call_id}/Alice"]')
    await expect(card.locator("form.outcome")).to_be_visible()
    await expect(card.locator(".who .name")).to_have_text("张伟")  # the lookup answered
    site.calls.end(call_id, "Alice", WEI)
    await expect(card.locator(".badge.state")).to_have_text("wrap-up")
    return card


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


async def test_every_call_that_ends_holds_the_agent_again(browser: Browser, site: Site) -> None:
    """Defect 2: after the agent clicked Unpause while an outcome was still owed, the next
    call's end no longer held them (the hold was sent only for the first card owed)."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    first = await take_call(page, site, "c1")
    await until_paused(site.ami, ("1", "wrap-up"))
    await page.locator("#pause-control").get_by_role("button", name="Unpause").click()
    await until_paused(site.ami, ("0", ""))

    second = await take_call(page, site, "c2")
    await until_paused(site.ami, ("1", "wrap-up"))  # held again, with the reason

    for card in (first, second):
        await card.get_by_label("Disposition").select_option("resolved")
        await card.get_by_role("button", name="Save outcome").click()
        await expect(card).to_have_count(0)
    await until_paused(site.ami, ("0", ""))  # nothing owed: released


async def test_a_reload_shows_the_pause_asterisk_has(browser: Browser, site: Site) -> None:
    """Defect 8: after a reload the page did not show that the agent was paused."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    control = page.locator("#pause-control")
    status = control.locator(".pause-status")
    await expect(status).to_have_text("Available")
    await control.get_by_label("Pause reason").select_option("lunch")
    await control.get_by_role("button", name="Pause", exact=True).click()
    await expect(status).to_have_text("Paused: lunch")
    await page.reload()
    await expect(page.locator("#link")).to_have_text("live")
    await expect(status).to_have_text("Paused: lunch")

    # a pause the page did not place itself: the service's wrap-up hold
    await control.get_by_role("button", name="Unpause").click()
    await until_paused(site.ami, ("0", ""))
    await take_call(page, site, "c1")
    await until_paused(site.ami, ("1", "wrap-up"))
    await page.reload()
    await expect(status).to_have_text("Held in wrap-up")

    # what Asterisk says is read for this agent only: another agent may not look
    other = await page.request.get(f"{site.url}/api/agents/Bob/pause")
    assert other.status == 403


async def test_saving_during_the_call_keeps_the_card(browser: Browser, site: Site) -> None:
    """Defect 3: saving the outcome while the call went on removed the card, and keyboard
    focus fell to the page's body. Now the card stays until the call ends, focus stays in
    it, and the end closes it without a wrap-up (nothing is owed)."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    site.calls.ring("c1", "Alice", WEI)
    site.calls.answer("c1", "Alice")
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.locator(".who .name")).to_have_text("张伟")  # the lookup answered
    await card.get_by_label("Disposition").select_option("resolved")
    await card.get_by_label("Notes").fill("sorted while talking")
    await card.get_by_role("button", name="Save outcome").focus()
    await page.keyboard.press("Enter")
    status = card.locator(".save-status")
    await expect(status).to_have_text("Saved ✓ — the card closes when the call ends.")
    await expect(status).to_be_focused()
    await page.wait_for_timeout(1500)  # longer than the fade of a closing card
    await expect(card).to_have_count(1)
    await expect(card.locator(".badge.state")).to_have_text("answered")

    # a reload (or a second tab) shows it saved, not an empty form to fill again
    await page.reload()
    await expect(card.locator(".save-status")).to_have_text(
        "Saved ✓ — the card closes when the call ends."
    )
    await expect(card.get_by_role("button", name="Save outcome")).to_be_disabled()

    # the call ends: the card closes, no wrap-up, no hold
    site.calls.end("c1", "Alice", WEI)
    await expect(card).to_have_count(0)
    await expect(page.locator("#wrapup-banner")).to_be_hidden()
    assert await pause_state(site.ami) == ("0", "")


async def test_a_followup_goes_to_an_agent_or_queue_picked_from_a_list(
    browser: Browser, site: Site
) -> None:
    """Defect 9: the follow-up's owner was free text, so a typo ("bobb") made a follow-up
    nobody ever saw. The form now offers the agents and the queues, and the API refuses any
    other owner."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    card = await take_call(page, site, "c1")
    await card.get_by_label("Disposition").select_option("callback")
    await card.locator("summary").filter(has_text="Follow-up").click()
    owner = card.get_by_label("Owner")
    await expect(owner.locator("option")).to_have_text(
        ["me (Alice Agent)", "Bob Agent", "queue support"]
    )
    await owner.select_option(label="queue support")
    await card.get_by_label("Due").fill("2031-05-06")
    await card.get_by_role("button", name="Save outcome").click()
    await expect(card).to_have_count(0)
    # Alice is in the support queue: the queue's follow-up is in her list, owned by the queue
    row = page.locator("#followups tbody tr").filter(has_text="Callback needed")
    await expect(row.locator(".col-owner")).to_have_text("queue support")


async def test_no_callback_is_dialled_while_the_agent_is_on_a_call(
    browser: Browser, site: Site
) -> None:
    """Defect 6: Dial on a follow-up placed the callback while the agent was talking on
    another call (the customer was "reached" into a busy agent, no card, no log line). Now
    it is refused with the reason, audited, and works once the call has ended."""
    ids = await add_followups(site.pop, site.seeded)
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    row = page.locator(f'#followups tr[data-followup-id="{ids["queue:support"]}"]')
    card = await take_call(page, site, "c1")  # ends in wrap-up: not talking any more
    site.calls.ring("c2", "Alice", WEI)
    site.calls.answer("c2", "Alice")  # talking now
    await row.get_by_role("button", name="Dial").click()
    await expect(row.locator(".row-status")).to_have_text(
        "You are on a call: place the call when this one has ended."
    )
    await expect(row.locator(".col-state")).to_have_text("open")

    site.calls.end("c2", "Alice", WEI)
    await row.get_by_role("button", name="Dial").click()
    await expect(row.locator(".col-state")).to_have_text("closed · reached")
    assert await card.count() == 1  # the first call's wrap-up card is still owed


async def test_calls_that_ended_while_the_page_was_closed_do_not_hold(
    browser: Browser, site: Site
) -> None:
    """Defect 4: calls that ended while the page was closed popped as wrap-up cards at the
    next login, the banner said "In wrap-up" though nobody held the agent, and none could be
    dismissed. Now they wait in My day with their outcome missing, off the screen, the banner
    stays down, and each can be dismissed or finished with an outcome."""
    for call_id in ("c1", "c2"):  # Alice's page is not open: the calls end unattended
        site.calls.ring(call_id, "Alice", WEI)
        site.calls.answer(call_id, "Alice")
        site.calls.end(call_id, "Alice", WEI)
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    missing = page.locator("#my-day .day-call.missing")
    await expect(missing).to_have_count(2)
    await expect(page.locator("#cards .card")).to_have_count(0)
    await expect(page.locator("#wrapup-banner")).to_be_hidden()
    assert await pause_state(site.ami) == ("0", "")  # and Asterisk was never told to hold

    first = page.locator('#my-day [data-call-id="c1"]')
    await first.get_by_role("button", name=re.compile(r"^Dismiss the call from 张伟")).click()
    await expect(first.get_by_role("button", name=re.compile("^Dismiss"))).to_have_count(0)
    second = page.locator('#my-day [data-call-id="c2"]')
    await second.get_by_role(
        "button", name=re.compile(r"^Finish the outcome of the call from 张伟")
    ).click()
    await second.get_by_label("Disposition").select_option("resolved")
    await second.get_by_role("button", name=re.compile(r"^Save outcome")).click()
    await expect(second.locator(".result .label")).to_have_text("Resolved on the call")
    await page.reload()
    await expect(page.locator("#empty")).to_be_visible()
    await expect(page.locator("#cards .card")).to_have_count(0)

    # a card the agent was held for cannot be dismissed: it needs its outcome
    held = await take_call(page, site, "c3")
    await expect(page.locator("#wrapup-banner")).to_be_visible()
    await expect(held.locator(".away-note")).to_have_count(0)
    assert site.pop.dismiss(PBX, "c3", "Alice") is False


async def test_a_ring_is_noticed_wherever_the_agent_has_scrolled(
    browser: Browser, site: Site
) -> None:
    """ "A ring that is noticed": the card pops at the top of a long page; an agent who has
    scrolled down sees a bar that stays in view and the tab's title, a screen reader hears
    one announcement (not the ticking wait time), and "Show the card" brings it into view."""
    context = await browser.new_context(
        viewport={"width": 1200, "height": 600}, reduced_motion="reduce"
    )
    page = await context.new_page()
    await log_in(page, site)
    title = await page.title()
    await page.evaluate("document.querySelector('main').style.paddingBottom = '6000px'")
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    bar = page.locator("#ring-bar")
    await expect(bar).to_be_hidden()
    assert await page.locator("#cards").get_attribute("aria-live") is None

    site.calls.ring("c1", "Alice", WEI)
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.locator(".who .name")).to_have_text("张伟")
    await expect(bar).to_be_in_viewport()
    await expect(bar.locator(".ring-text")).to_have_text("Ringing: 张伟 · queue support")
    await expect(page).to_have_title(f"☎ 张伟 · {title}")
    await expect(card).not_to_be_in_viewport()
    announced = page.locator("#announcer")
    await expect(announced).to_contain_text("ringing (queue support)")
    said = await announced.text_content()
    await page.wait_for_timeout(1500)  # the wait time ticks on the card ...
    assert await announced.text_content() == said  # ... and is not announced again
    # no looping animation for an agent who asked for reduced motion
    assert await bar.evaluate("b => getComputedStyle(b).animationName") == "none"
    assert await card.evaluate("c => getComputedStyle(c).animationName") == "none"
    await page.emulate_media(reduced_motion="no-preference")  # the others see it ring
    assert await card.evaluate("c => getComputedStyle(c).animationName") == "ring"
    await page.emulate_media(reduced_motion="reduce")

    await bar.get_by_role("button", name="Show the card").click()
    await expect(card).to_be_in_viewport()
    await expect(card).to_be_focused()
    site.calls.answer("c1", "Alice")
    await expect(bar).to_be_hidden()
    await expect(page).to_have_title(title)
    await context.close()


async def test_a_supervisor_lands_on_the_wallboard(browser: Browser, site: Site) -> None:
    """A supervisor who logs in from the start page lands on the wallboard (no calls pop for
    them on the agent page); a link they followed to another page is kept."""
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(site.url + "/")
    await page.get_by_label("Login").fill("sue")
    await page.get_by_label("Password").fill(PASSWORDS["sue"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(site.url + "/wallboard")
    page = await browser.new_page(viewport={"width": 1280, "height": 800})  # a new session
    await page.goto(f"{site.url}/customers/{site.seeded.wei}")
    await page.get_by_label("Login").fill("sue")
    await page.get_by_label("Password").fill(PASSWORDS["sue"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{site.url}/customers/{site.seeded.wei}")


async def test_the_caller_id_name_is_offered_for_a_new_customer(
    browser: Browser, site: Site
) -> None:
    """Defect 7 (in part): an unknown caller's caller ID name was not offered for the new
    customer's name. It is now, as a button (never filled in behind the agent's back), and
    not when it is a carrier's placeholder."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    site.calls.ring("c1", "Alice", NOBODY, "José Núñez")
    site.calls.answer("c1", "Alice")
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.locator(".lookup")).to_have_text(
        "New customer: this number is not in the store."
    )
    name = card.get_by_label("New customer's name")
    await expect(name).to_have_value("")
    await card.get_by_role("button", name="Use the caller ID name: José Núñez").click()
    await expect(name).to_have_value("José Núñez")
    await expect(name).to_be_focused()

    site.calls.ring("c2", "Alice", "+15550100998", "ANONYMOUS")
    site.calls.answer("c2", "Alice")
    other = page.locator(f'[data-card-id="{PBX}/c2/Alice"]')
    await expect(other.get_by_label("New customer's name")).to_be_visible()
    await expect(other.locator(".caller-id-name")).to_be_hidden()


async def test_the_longest_wrap_up_releases_the_hold_and_says_so(
    browser: Browser, site: Site
) -> None:
    """Issue 21: an agent is never paused forever by the service. When the hold reaches
    [wrapup] max_seconds the agent is released in Asterisk; the card keeps its outcome form
    and says the outcome is still missing, and the banner no longer says "in wrap-up"."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    card = await take_call(page, site, "c1")
    await expect(page.locator("#wrapup-banner")).to_be_visible()
    await expect(card.locator(".wrapup-hint")).to_be_visible()
    await until_paused(site.ami, ("1", "wrap-up"))
    site.pop.wrapup_expired(PBX, "Alice")  # what the holder does at the limit
    await expect(card.locator(".released-hint")).to_have_text(
        "Wrap-up released after the longest wrap-up: this outcome is still missing."
    )
    await expect(card.locator(".wrapup-hint")).to_be_hidden()
    await expect(page.locator("#wrapup-banner")).to_be_hidden()
    await until_paused(site.ami, ("0", ""))
    await card.get_by_label("Disposition").select_option("resolved")
    await card.get_by_role("button", name=re.compile("^Save outcome")).click()
    await expect(card).to_have_count(0)  # a late outcome is taken as any
    await until_paused(site.ami, ("0", ""))


async def test_a_wrong_number_needs_no_customer(browser: Browser, site: Site) -> None:
    """Defect 7: "Wrong number" from an unknown caller demanded a new customer's name, so
    agents made junk customers up. A disposition that needs nobody (config: customer =
    false) now saves without one: the name field goes, nothing is added to the customers."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    assert site.pop.store is not None
    async with site.pop.store.sessions() as session:
        before = await session.scalar(select(func.count()).select_from(Customer))
    site.calls.ring("c1", "Alice", NOBODY, "Pizza Roma")
    site.calls.answer("c1", "Alice")
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    name = card.get_by_label("New customer's name")
    await expect(name).to_be_visible()
    site.calls.end("c1", "Alice", NOBODY)
    await expect(card.locator(".badge.state")).to_have_text("wrap-up")
    await card.get_by_label("Disposition").select_option("wrong_number")
    await expect(name).to_be_hidden()
    await expect(card.locator(".caller-id-name")).to_be_hidden()
    await card.get_by_label("Notes").fill("wanted Pizza Roma")
    await card.get_by_role("button", name=re.compile("^Save outcome")).click()
    await expect(card).to_have_count(0)
    await expect(page.locator("#wrapup-banner")).to_be_hidden()
    row = page.locator('#my-day [data-call-id="c1"]')
    await expect(row.locator(".result .label")).to_have_text("Wrong number")
    async with site.pop.store.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == before
        saved = await session.scalar(
            select(Interaction).where(Interaction.call_id == "c1", Interaction.kind == "outcome")
        )
    assert saved is not None and saved.customer_id is None and saved.body == "wanted Pizza Roma"
    # another disposition still asks who it was
    site.calls.ring("c2", "Alice", NOBODY)
    site.calls.answer("c2", "Alice")
    other = page.locator(f'[data-card-id="{PBX}/c2/Alice"]')
    await other.get_by_label("Disposition").select_option("resolved")
    await expect(other.get_by_label("New customer's name")).to_be_visible()
    await other.get_by_role("button", name=re.compile("^Save outcome")).click()
    await expect(other.locator(".save-status")).to_have_text("Give the new customer's name.")


async def test_cards_and_buttons_say_whom_they_are_about(browser: Browser, site: Site) -> None:
    """Accessibility: a heading per card, and buttons that name the customer they act on
    (several cards and follow-ups are on screen at once)."""
    ids = await add_followups(site.pop, site.seeded)
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    await log_in(page, site)
    site.calls.ring("c1", "Alice", WEI)
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.get_by_role("heading", name="Call from 张伟, ringing")).to_have_count(1)
    site.calls.answer("c1", "Alice")
    await expect(card.get_by_role("button", name="Save outcome: 张伟", exact=True)).to_be_visible()
    row = page.locator(f'#followups tr[data-followup-id="{ids["queue:support"]}"]')
    await expect(row.get_by_role("button", name="Dial 张伟", exact=True)).to_be_visible()
    close = row.get_by_role("button", name="Close the follow-up for 张伟", exact=True)
    await expect(close).to_be_visible()


async def test_a_followup_is_due_at_a_time_of_day(browser: Browser, site: Site) -> None:
    """Follow-ups that fit work: a due time, not only a day (it was always 09:00), in the
    agent's own time zone."""
    context = await browser.new_context(
        viewport={"width": 1200, "height": 900}, timezone_id="Asia/Shanghai"
    )
    page = await context.new_page()
    await log_in(page, site)
    card = await take_call(page, site, "c1")
    await card.get_by_label("Disposition").select_option("callback")
    await card.locator("summary").filter(has_text="Follow-up").click()
    await card.get_by_label("Due").fill("2031-05-06")
    await card.get_by_label("Time", exact=True).fill("17:30")
    await card.get_by_role("button", name="Save outcome").click()
    await expect(card).to_have_count(0)
    assert site.pop.store is not None
    async with site.pop.store.sessions() as session:
        due = (
            await session.execute(
                select(Interaction.due_at).where(
                    Interaction.kind == "followup", Interaction.call_id == "c1"
                )
            )
        ).scalar_one()
    assert due.replace(tzinfo=UTC) == datetime(2031, 5, 6, 9, 30, tzinfo=UTC)  # 17:30 in Beijing
    await context.close()


async def test_an_agent_adds_a_note_without_a_call(browser: Browser, site: Site) -> None:
    """A writable history: what the agent learned by other means goes on the customer's
    timeline from the customer page (text stays text, lines kept), reaches the CRM through
    the outbox once however often the form is sent, and the next call's card shows it."""
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await log_in(page, site)
    box = page.get_by_role("searchbox", name="Find a customer")  # no call: she looks him up
    await box.fill("张伟")
    await box.press("Enter")
    await page.get_by_role("link", name="张伟").click()
    await expect(page).to_have_url(f"{site.url}/customers/{site.seeded.wei}")
    text = "Prefers WeChat <img src=x onerror=alert(1)>\nAsk for Mr Zhang's assistant"
    await page.get_by_label("Add a note (no call needed)").fill(text)
    form = await page.locator("form.add-note").evaluate("f => Object.fromEntries(new FormData(f))")
    await page.get_by_role("button", name="Add the note").click()
    await expect(page).to_have_url(f"{site.url}/customers/{site.seeded.wei}#timeline")
    note = page.locator("li.kind-note").first
    await expect(note.locator(".title")).to_have_text("Prefers WeChat <img src=x onerror=alert(1)>")
    await expect(note.locator(".note")).to_have_text(text)
    await expect(note.locator(".agent")).to_have_text("Alice")

    # the same form sent again (a double click, a reload's resubmit): still one note
    again = await page.request.post(
        f"{site.url}/customers/{site.seeded.wei}/notes", form=form, max_redirects=0
    )
    assert again.status == 303
    assert site.pop.store is not None
    async with site.pop.store.sessions() as session:
        notes = (
            await session.execute(select(Interaction.id).where(Interaction.kind == "note",
                                                               Interaction.agent == "Alice"))
        ).all()  # fmt: skip
        told = (
            await session.execute(select(OutboxRow.topic).where(OutboxRow.topic == "note.added"))
        ).all()
    assert (len(notes), len(told)) == (1, 1)
    # a form whose key was not the page's is refused, and says why
    forged = await page.request.post(
        f"{site.url}/customers/{site.seeded.wei}/notes", form={**form, "key": "x"}
    )
    assert forged.status == 422 and "expired" in await forged.text()

    site.calls.ring("c1", "Alice", WEI)  # the next call's card shows it
    await page.goto(site.url + "/")
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    await expect(card.locator(".recent li.kind-note .note").first).to_have_text(text)
    assert dialogs == []
