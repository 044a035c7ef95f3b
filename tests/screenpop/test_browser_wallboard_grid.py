"""The supervisor's agent grid on a desk screen (issue 20), in a real Chromium against the
real app, pop and audit log, with the PBX simulator answering the controls and a fake board
whose snapshot the test sets.

What a supervisor meets: the grid's controls fit a 1280 px laptop without the page scrolling
sideways; Listen, Whisper and Barge ring the supervisor's own phone into an agent's call in
the mode chosen, and are not offered at all to a supervisor with no phone on the account
(the page says why, once); a control's "done" message fades after a few seconds (at once,
without a fade, under reduced motion), an error stays until the next action.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import audit
from cti.controls import MemberControls
from cti.settings import AgentSettings
from screenpop.app import create_app
from screenpop.wallboard import FEED, WallboardFeed
from tests.screenpop.test_browser_wallboard import center
from tests.screenpop.test_controls import accounts
from tests.screenpop.test_wallboard_app import FakeBoard
from tests.support.screenpop import (
    PASSWORDS,
    PBX,
    TWINS,
    WEI,
    Calls,
    dispositions,
    new_pop,
    new_store,
    now,
    seed,
    served,
    simulated_pbx,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # store not under test

PHONE = "PJSIP/2001"  # the supervisor's own phone, when the account has one
ALICE = "Local/1001@agents/n"  # Alice and Bob in the simulator's queues
BOB = "Local/1002@agents/n"
SPY = {"listen": "qE", "whisper": "qEw", "barge": "qEB"}  # ChanSpy's options per mode
NO_PHONE = "Listening needs a phone on your account."


@dataclass
class Desk:
    url: str
    board: FakeBoard
    at: float
    engine: AsyncEngine
    emitted: list[Mapping[str, str]]  # what the simulator sent over AMI

    def spied(self) -> list[tuple[str, str]]:
        """Each ChanSpy the supervisor's phone was rung into: (channel rung, ChanSpy data)."""
        return [
            (e["Channel"].split("-")[0], e["Data"])
            for e in self.emitted
            if e.get("Event") == "OriginateResponse" and e.get("Application") == "ChanSpy"
        ]


@asynccontextmanager
async def open_desk(engine: AsyncEngine, device: str) -> AsyncIterator[Desk]:
    """Sue (a supervisor whose phone is ``device``, or none if empty) and the center of
    test_browser_wallboard: Alice and Bob on answered calls, the others in every state."""
    store = new_store(engine)
    await seed(store)
    pop = new_pop(store)
    calls = Calls(pop)
    calls.ring("c1", "Alice", WEI)
    calls.answer("c1", "Alice")
    calls.ring("c3", "Bob", TWINS)
    calls.answer("c3", "Bob")
    at = time.time()
    board = FakeBoard(center(at))
    members = {"Alice": ("Alice", ALICE, "PJSIP/1001"), "Bob": ("Bob", BOB)}
    ids = [a["id"] for a in board.data["agents"]]
    agents = [AgentSettings(i, members=members.get(i, ())) for i in ids]
    async with simulated_pbx() as (server, ami):
        emitted: list[Mapping[str, str]] = []
        server.observers.append(emitted.append)
        app = create_app(
            pop=pop,
            accounts=accounts(device),
            dispositions=dispositions(),
            store=store,
            now=now,
            board=board,
            controls=MemberControls({PBX: ami}, agents),
        )
        app[FEED] = WallboardFeed(board, pop, interval=0.1)
        try:
            async with served(app) as url:
                yield Desk(url, board, at, engine, emitted)
        finally:
            await pop.close()


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Desk]:
    async with open_desk(engine, PHONE) as opened:
        yield opened


async def wallboard(context: BrowserContext, desk: Desk) -> Page:
    """Sue's wallboard, logged in and live."""
    page = await context.new_page()
    await page.goto(desk.url + "/wallboard")
    await page.get_by_label("Login").fill("sue")
    await page.get_by_label("Password").fill(PASSWORDS["sue"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#link")).to_have_text("live")
    return page


def row(page: Page, agent: str) -> Any:
    return page.locator(f'#agents tr[data-agent="{PBX}/{agent}"]')


# what of the grid lies beyond the window's right edge, or is cut off by the grid's own box
OVERFLOW = """() => {
  const doc = document.documentElement;
  const grid = document.querySelector("section.agents");
  const box = grid.getBoundingClientRect();
  const outside = [];
  for (const node of grid.querySelectorAll("button, input, select")) {
    if (!node.checkVisibility()) continue;
    const r = node.getBoundingClientRect();
    if (r.left < Math.max(0, box.left) - 0.5 || r.right > Math.min(innerWidth, box.right) + 0.5) {
      const where = node.closest("tr").dataset.agent;
      outside.push(`${where} ${node.getAttribute("aria-label") || node.textContent}`);
    }
  }
  return {
    page: doc.scrollWidth > doc.clientWidth,
    grid: grid.scrollWidth > grid.clientWidth,
    outside,
  };
}"""


async def test_the_grid_fits_a_1280_px_screen(browser: Browser, desk: Desk) -> None:
    """Every control of every row is inside the window and the grid's box: nothing to scroll
    sideways to, not even with a row's pause and rating forms open."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await wallboard(context, desk)
    await expect(row(page, "Alice").get_by_role("button", name="Barge")).to_be_visible()
    fits = {"page": False, "grid": False, "outside": []}
    assert await page.evaluate(OVERFLOW) == fits

    frank = row(page, "Frank")
    await frank.get_by_role("button", name="Pause").click()
    await frank.get_by_role("button", name="Rate").click()
    await frank.get_by_role("button", name="Queues").click()
    await expect(frank.get_by_label("Note")).to_be_visible()
    assert await page.evaluate(OVERFLOW) == fits

    # and usable there: a click on a control at the far end of a row does its work
    await row(page, "Bob").get_by_role("button", name="Whisper").click()
    await expect(row(page, "Bob").locator(".control-status")).to_have_text("Whispering ✓")
    assert desk.spied() == [(PHONE, f"{BOB.rsplit('/', 1)[0]}-,{SPY['whisper']}")]
    await context.close()


async def test_a_supervisor_listens_whispers_and_barges(browser: Browser, desk: Desk) -> None:
    """Each button rings Sue's phone into the agent's call in its own ChanSpy mode, says so
    in the row and is audited with the mode; each names the agent it acts on."""
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await wallboard(context, desk)
    sent: list[Any] = []
    page.on("request", lambda r: sent.append(r.post_data_json) if "/listen" in r.url else None)
    alice, bob = row(page, "Alice"), row(page, "Bob")
    await expect(alice.get_by_role("group", name="Alice Martin's call")).to_be_visible()
    await expect(page.locator("#no-phone")).to_have_count(0)  # she has a phone: nothing to say
    for agent in ("Carol", "Dave", "Eve", "Frank", "Grace", "Heidi"):  # on no call
        await expect(row(page, agent).locator("button.spy")).to_have_count(3)
        await expect(row(page, agent).locator("button.spy").first).to_be_hidden()

    await alice.get_by_role("button", name="Whisper to Alice Martin").click()
    await expect(alice.locator(".control-status")).to_have_text("Whispering ✓")
    await bob.get_by_role("button", name="Barge in on Bob Keller's call").click()
    await expect(bob.locator(".control-status")).to_have_text("Barging in ✓")
    await alice.get_by_role("button", name="Listen to Alice Martin").click()
    await expect(alice.locator(".control-status")).to_have_text("Listening ✓")

    assert sent == [{"mode": "whisper"}, {"mode": "barge"}, {"mode": "listen"}]
    assert desk.spied() == [
        (PHONE, f"PJSIP/1001-,{SPY['whisper']}"),  # Alice's own phone, not her Local channel
        (PHONE, f"Local/1002@agents-,{SPY['barge']}"),
        (PHONE, f"PJSIP/1001-,{SPY['listen']}"),
    ]
    entries = await audit.recent(desk.engine)
    assert [(e.login, e.action, e.agent, e.detail, e.result) for e in reversed(entries)] == [
        ("sue", "listen", "Alice", "whisper", "ok"),
        ("sue", "listen", "Bob", "barge", "ok"),
        ("sue", "listen", "Alice", "listen", "ok"),
    ]

    # a mode that is not one is refused as input, whatever its type (a list was a 500)
    csrf = await page.evaluate("JSON.parse(document.getElementById('page-config').text).csrf")
    for mode in ("spy", ["whisper"], {"barge": 1}, 3, None):
        answer = await page.request.post(
            f"{desk.url}/api/calls/{PBX}/c1/listen",
            data={"mode": mode},
            headers={"X-CSRF-Token": csrf},
        )
        assert (answer.status, (await answer.json())["field"]) == (422, "mode"), mode
    assert len(desk.spied()) == 3
    await context.close()


async def test_no_listening_without_a_phone(browser: Browser, engine: AsyncEngine) -> None:
    """Sue's account has no phone: no Listen, Whisper or Barge on any row, and one quiet line
    says why; the rest of the grid's controls are there."""
    async with open_desk(engine, "") as desk:
        context = await browser.new_context(viewport={"width": 1600, "height": 1000})
        page = await wallboard(context, desk)
        alice = row(page, "Alice")
        await expect(alice.locator(".state-badge")).to_have_text("on call")
        await expect(alice.get_by_role("button", name="Pause Alice Martin")).to_be_visible()
        await expect(alice.get_by_role("button", name="Rate Alice Martin")).to_be_visible()
        for name in ("Listen", "Whisper", "Barge"):
            await expect(page.get_by_role("button", name=name)).to_have_count(0)
        await expect(page.get_by_text(NO_PHONE)).to_have_count(1)
        await expect(page.get_by_text(NO_PHONE)).to_be_visible()
        desk.board.change(agents=list(desk.board.data["agents"]))  # a push: still said once
        await expect(page.get_by_text(NO_PHONE)).to_have_count(1)
        await context.close()


FADE_AFTER_MS = 4000  # wallboard.js: a "done" message goes after this
FADE_MS = 600  # and fades for this long, unless motion is reduced


async def frozen_clock(page: Page) -> None:
    """Stop the page's clock: its timers run only when the test moves the clock on."""
    await page.clock.pause_at(await page.evaluate("Date.now()") + 1000)


async def test_done_fades_and_errors_stay(browser: Browser, desk: Desk) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    await context.clock.install()
    page = await wallboard(context, desk)
    await frozen_clock(page)
    frank = row(page, "Frank")
    status = frank.locator(".control-status")

    async def rate() -> None:
        await frank.get_by_role("button", name="Rate Frank Li").click()
        await frank.get_by_role("button", name="Save").click()
        await expect(status).to_have_text("Rated ✓")

    await rate()
    await page.clock.run_for(FADE_AFTER_MS - 1000)
    await rate()  # a new message starts its own few seconds
    await page.clock.run_for(FADE_AFTER_MS - 1000)
    await expect(status).to_have_text("Rated ✓")
    await expect(status).not_to_have_class(re.compile(r"\bfading\b"))
    await page.clock.run_for(1000)
    await expect(status).to_have_class(re.compile(r"\bfading\b"))  # going, not yet gone
    await expect(status).to_have_css("transition-duration", "0.6s")
    await page.clock.run_for(FADE_MS)
    await expect(status).to_have_text("")
    await expect(status).to_be_hidden()

    # an error stays until the next action
    await frank.get_by_role("button", name="Pause Frank Li").click()
    await frank.get_by_label("Reason").fill("coaching")
    await frank.locator(".pause-form").get_by_role("button", name="Pause").click()
    await expect(status).to_have_class(re.compile(r"\berror\b"))
    message = await status.text_content()
    assert message and "✓" not in message
    await page.clock.run_for(10 * FADE_AFTER_MS)
    await expect(status).to_have_text(message)
    await expect(status).to_be_visible()
    await frank.get_by_role("button", name="Cancel").click()
    await rate()
    await context.close()


async def test_done_goes_without_a_fade_under_reduced_motion(browser: Browser, desk: Desk) -> None:
    context = await browser.new_context(
        viewport={"width": 1600, "height": 1000}, reduced_motion="reduce"
    )
    await context.clock.install()
    page = await wallboard(context, desk)
    await frozen_clock(page)
    alice = row(page, "Alice")
    status = alice.locator(".control-status")
    await alice.get_by_role("button", name="Listen to Alice Martin").click()
    await expect(status).to_have_text("Listening ✓")
    await page.clock.run_for(FADE_AFTER_MS - 1)
    await expect(status).to_have_text("Listening ✓")
    await page.clock.run_for(1)
    await expect(status).to_have_text("")  # at once: nothing moves on the screen
    await expect(status).to_be_hidden()
    await context.close()
