"""The wallboard in a real Chromium (Playwright), against the real app and pop with a fake
board whose snapshot the test changes between pushes.

A supervisor logs in and watches: the figures of the chosen window, numbers that move after a
push, a queue turning red with its alert (and the time it started) in the list, a trend line
broken where there was no data, a gap notice, durations counting up, the pause form surviving
a push, and the page reconnecting after the link drops. A second test fills every text with
hostile markup (it must stay text) and checks that an agent gets 403. Chromium is Debian's;
without it the tests are skipped, except under CI.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import audit, ratings
from crm_sync.store import CustomerStore
from cti.ami import AmiClient
from cti.board import Board
from cti.controls import MemberControls
from cti.events import MemberUpdated, QueueDefined
from cti.settings import AgentSettings, BoardRules
from cti.wrapup import QueuePauseWrapup
from screenpop.keys import SESSIONS, STORE
from screenpop.wallboard import FEED, WallboardFeed
from tests.screenpop.test_wallboard_app import (
    HOSTILE_NAME,
    FakeBoard,
    agent,
    call,
    figures,
    queue,
    snapshot,
)
from tests.support.screenpop import (
    HOSTILE,
    HOSTILE_PHONE,
    PASSWORDS,
    PBX,
    ROOT,
    TWINS,
    WEI,
    Calls,
    build_app,
    eventually,
    new_pop,
    new_store,
    seed,
    served,
    simulated_pbx,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # store not under test
DASH = "\u2013"  # an en dash: a figure with nothing to compute it from, and time ranges
SCREENSHOT = ROOT / "docs" / "wallboard.png"  # refreshed only with CTI_UPDATE_SCREENSHOT=1

ALICE = "Local/1001@agents/n"  # Alice in the simulator's support queue


@dataclass
class Site:
    url: str
    app: web.Application
    board: FakeBoard
    at: float


def hhmm(epoch: float) -> str:
    """A time as the page shows it (the browser runs in UTC here)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M")


def center(at: float) -> dict[str, Any]:
    """A believable center: three queues, eight agents in every state, two calls (one from a
    customer the store knows, one from a number two customers share)."""
    trend = [
        {
            "at": at - 3600 + 60 * i,
            "waiting": [1, 2, 2, 3, 4, 3, 2][i % 7],
            "service_level": 90.0 - i % 9,
        }
        for i in range(1, 61)
    ]
    return snapshot(
        at,
        queues=[
            queue("support", at, trend=trend),
            queue(
                "sales",
                at,
                waiting=1,
                longest_wait=12.0,
                paused_reasons={},
                agents={
                    "logged_in": 3,
                    "available": 1,
                    "on_call": 2,
                    "ringing": 0,
                    "wrap_up": 0,
                    "paused": 0,
                },
                figures={
                    w: figures(service_level=93.0, abandon_rate=2.1, abandoned=1, asa=8.0)
                    for w in ("15m", "1h", "today")
                },
                trend=[{**p, "waiting": p["waiting"] // 2, "service_level": 95.0} for p in trend],
                callbacks=0,
            ),
            queue(
                "billing",
                at,
                waiting=0,
                longest_wait=None,
                paused_reasons={"training": 1},
                figures={
                    w: figures(
                        offered=12, answered=12, abandoned=0, abandon_rate=0.0, service_level=100.0
                    )
                    for w in ("15m", "1h", "today")
                },
                trend=[{**p, "waiting": 0, "service_level": 100.0} for p in trend],
                callbacks=1,
            ),
        ],
        agents=[
            agent(
                "Alice", "Alice Martin", at, state="on_call", since=at - 125, call=call("c1", at)
            ),
            agent(
                "Bob",
                "Bob Keller",
                at,
                state="on_call",
                since=at - 40,
                call=call("c3", at, caller=TWINS, since=at - 40, queue="sales"),
            ),
            agent(
                "Carol",
                "Carol Nguyen",
                at,
                state="ringing",
                since=at - 6,
                queues=["support", "sales"],
            ),
            agent("Dave", "Dave Okafor", at, state="wrap_up", since=at - 35, handled_today=17),
            agent(
                "Eve", "Eve Rossi", at, state="paused", since=at - 610, reason="lunch", score=74.0
            ),
            agent("Frank", "Frank Li", at, state="available", since=at - 95, csat=4.8, fcr=0.91),
            agent(
                "Grace",
                "Grace Park",
                at,
                state="paused",
                since=at - 1300,
                reason="training",
                queues=["billing"],
            ),
            agent(
                "Heidi",
                "Heidi Berg",
                at,
                state="logged_out",
                since=at - 5400,
                handled_today=0,
                aht_today=None,
                fcr=None,
                csat=None,
                supervisor_rating=None,
                score=None,
            ),
        ],
    )


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    store = new_store(engine)
    await seed(store)
    pop = new_pop(store)
    calls = Calls(pop)
    calls.ring("c1", "Alice", WEI)
    calls.ring("c2", "Bob", HOSTILE_PHONE)  # for the hostile test
    calls.ring("c3", "Bob", TWINS)  # two customers share the number: none is named
    for call_id in ("c1", "c2", "c3"):
        await eventually(lambda c=call_id: pop.lookup_for(PBX, c) is not None)
    at = time.time()
    board = FakeBoard(center(at))
    rated = [AgentSettings(a["id"]) for a in board.snapshot(at)["agents"]]
    app = build_app(pop, store, board=board, controls=MemberControls({}, rated))
    app[FEED] = WallboardFeed(board, pop, interval=0.1)
    try:
        async with served(app) as url:
            yield Site(url, app, board, at)
    finally:
        await pop.close()


async def log_in(page: Page, site: Site | str, login: str) -> None:
    """Log in on the way to the wallboard of ``site`` (or of the site at that URL)."""
    await page.goto((site if isinstance(site, str) else site.url) + "/wallboard")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.get_by_label("Login").fill(login)
    await page.get_by_label("Password").fill(PASSWORDS[login])
    await page.get_by_role("button", name="Log in").click()


async def test_the_wallboard_follows_the_board(browser: Browser, site: Site) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000}, timezone_id="UTC")
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await log_in(page, site, "sue")
    await expect(page).to_have_url(site.url + "/wallboard")
    await expect(page.locator("#link")).to_have_text("live")
    at, board = site.at, site.board

    # the figures of the last 15 minutes, tile by tile
    support = page.locator('.tile[data-queue="lab/support"]')
    await expect(support.locator(".stat-waiting .value")).to_have_text("3")
    await expect(support.locator(".stat-sl .value")).to_have_text("77%")
    await expect(support.locator(".stat-sl .label")).to_have_text("SL (20 s)")
    await expect(support.locator(".stat-abandoned .value")).to_have_text("3")
    await expect(support.locator(".stat-abandoned .label")).to_have_text("abandoned 8%")
    await expect(support.locator(".stat-asa .value")).to_have_text("0:14")
    await expect(support.locator(".stat-aht .value")).to_have_text("4:05")
    await expect(support.locator(".stat-callbacks .value")).to_have_text("2")
    await expect(support.locator(".stat-available .value")).to_have_text("2")
    await expect(support.locator(".stat-paused .value")).to_have_text("1")
    await expect(support.locator(".reasons")).to_have_text("paused: lunch 1")
    await expect(support.locator(".stat-longest .value")).to_have_text(re.compile(r"^1:3\d$"))
    await expect(page.locator('.tile[data-queue="total"] .name')).to_have_text("all queues")
    billing = page.locator('.tile[data-queue="lab/billing"]')
    await expect(billing.locator(".stat-longest .value")).to_have_text(DASH)
    await expect(page.locator("#window-label")).to_have_text(
        f"last 15 min · since {hhmm(at - 900)}"
    )
    await expect(page.locator("#feed")).to_have_text(f"AMI lab connected since {hhmm(at - 7200)}")
    await expect(support).to_have_class(re.compile(r"\blevel-ok\b"))
    await expect(page.locator("#no-alerts")).to_be_visible()

    # another window: its own figures and label
    await page.get_by_role("button", name="1 h").click()
    await expect(support.locator(".stat-offered .value")).to_have_text("150")
    await expect(page.locator("#window-label")).to_have_text(f"last hour · since {hhmm(at - 3600)}")

    # the agent grid: states, current calls with the store's customer, figures
    alice = page.locator(f'#agents tr[data-agent="{PBX}/Alice"]')
    await expect(alice.locator(".state-badge")).to_have_text("on call")
    await expect(alice.locator(".customer")).to_have_text("张伟")
    await expect(alice.locator(".col-queue")).to_have_text("support")
    await expect(alice.locator(".col-fcr")).to_have_text("83%")
    await expect(alice.locator(".col-csat")).to_have_text("4.4")
    await expect(alice.locator(".col-score")).to_have_text("82")
    await expect(alice.locator(".col-aht")).to_have_text("3:50")
    await expect(alice.get_by_role("button", name="Listen")).to_be_hidden()  # Sue: no phone
    await expect(page.locator("#no-phone")).to_have_text("Listening needs a phone on your account.")
    bob = page.locator(f'#agents tr[data-agent="{PBX}/Bob"]')
    await expect(bob.locator(".customer")).to_have_text(TWINS)  # nobody named: the number
    eve = page.locator(f'#agents tr[data-agent="{PBX}/Eve"]')
    await expect(eve.locator(".col-reason")).to_have_text("lunch")
    await expect(eve.get_by_role("button", name="Unpause")).to_be_visible()
    await expect(eve.get_by_role("button", name="Listen")).to_be_hidden()
    heidi = page.locator(f'#agents tr[data-agent="{PBX}/Heidi"]')
    await expect(heidi.locator(".col-fcr")).to_have_text(DASH)
    await expect(heidi.get_by_role("button", name="Pause")).to_be_hidden()

    # durations count up in the browser, between pushes
    call_time = alice.locator(".col-call-time")
    first = await call_time.text_content()
    await expect(call_time).not_to_have_text(first or "")

    # the pause form opens inline and survives a push
    frank = page.locator(f'#agents tr[data-agent="{PBX}/Frank"]')
    await frank.get_by_role("button", name="Pause").click()
    await frank.get_by_label("Reason").fill("coaching")

    # a push: the queue goes red, an alert starts, numbers move, an hour with a gap
    started = at - 185
    trend = list(board.data["queues"][0]["trend"])
    trend[29] = {"at": trend[29]["at"], "waiting": None, "service_level": None}
    gap = [at - 1900, at - 1720]
    red = queue(
        "support",
        at,
        waiting=9,
        longest_wait=240.0,
        level="alert",
        trend=trend,
        figures={
            "15m": figures(service_level=41.0),
            "1h": figures(offered=152, service_level=55.5, gaps=[gap]),
            "today": figures(offered=901),
        },
        alerts=[{"kind": "longest_wait", "text": "Longest wait over 3 min", "since": started}],
    )
    board.change(
        queues=[red, *board.data["queues"][1:]],
        alerts=[
            {
                "pbx": PBX,
                "queue": "support",
                "kind": "longest_wait",
                "text": "Longest wait over 3 min",
                "since": started,
            }
        ],
    )
    await expect(support.locator(".stat-waiting .value")).to_have_text("9")
    await expect(support.locator(".stat-offered .value")).to_have_text("152")
    await expect(support.locator(".stat-sl .value")).to_have_text("56%")
    await expect(support).to_have_class(re.compile(r"\blevel-alert\b"))
    await expect(support.locator(".level-badge")).to_have_text("ALERT")
    alert = page.locator("#alerts li")
    await expect(alert).to_have_count(1)
    await expect(alert.locator(".started")).to_have_text(hhmm(started))
    await expect(alert.locator(".where")).to_have_text("support · lab")
    await expect(alert.locator(".text")).to_have_text("Longest wait over 3 min")
    await expect(page.locator("#no-alerts")).to_be_hidden()
    # the minute with no data breaks both lines and is shaded, never drawn as zero
    trend_svg = support.locator("svg.trend")
    await expect(trend_svg.locator("path.waiting")).to_have_count(2)
    await expect(trend_svg.locator("path.sl")).to_have_count(2)
    await expect(trend_svg.locator("rect.gap")).to_have_count(1)
    await expect(support.locator(".gap-notice")).to_have_text(
        f"no data {hhmm(gap[0])}{DASH}{hhmm(gap[1])}"
    )
    await expect(frank.locator(".pause-form")).to_be_visible()  # what was typed is still there
    await expect(frank.get_by_label("Reason")).to_have_value("coaching")
    await frank.get_by_role("button", name="Cancel").click()
    await expect(frank.locator(".pause-form")).to_be_hidden()
    await expect(frank.get_by_role("button", name="Pause")).to_be_visible()

    # the PBX link drops: the feed line says since when
    refused = "login refused for user 'cti' <b>(Authentication failed)</b>"
    board.change(feed=[{"pbx": PBX, "connected": False, "since": at - 30, "reason": refused}])
    down = page.locator("#feed .pbx-link.down")
    await expect(down).to_contain_text(f"AMI lab disconnected since {hhmm(at - 30)}")
    await expect(down.locator(".pbx-reason")).to_have_text(f": {refused}")  # why, as text

    # the browser's link drops: "reconnecting", then a full snapshot again
    for socket in site.app[SESSIONS].sockets():
        await socket.close(code=1012, message=b"restart")
    await expect(page.locator("#link")).to_have_text("reconnecting…")
    await expect(page.locator("#link")).to_have_text("live")
    board.change(feed=[{"pbx": PBX, "connected": True, "since": at - 5}])
    await expect(page.locator("#feed")).to_have_text(f"AMI lab connected since {hhmm(at - 5)}")

    await page.get_by_role("button", name="15 min").click()
    await page.mouse.move(0, 0)
    shot = await page.screenshot()
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("CTI_UPDATE_SCREENSHOT"):
        SCREENSHOT.write_bytes(shot)
    assert dialogs == []
    await context.close()


async def test_hostile_text_stays_text_and_agents_are_refused(browser: Browser, site: Site) -> None:
    at = site.at
    site.board.change(
        queues=[queue(HOSTILE_NAME, at, paused_reasons={HOSTILE: 1}, level="warn")],
        agents=[
            agent(
                "x'\"<b>",
                HOSTILE_NAME,
                at,
                state="on_call",
                reason=HOSTILE,
                queues=[HOSTILE_NAME],
                call=call("c2", at, caller=HOSTILE, queue=HOSTILE_NAME),  # customer: HOSTILE
            )
        ],
        alerts=[{"pbx": PBX, "queue": HOSTILE_NAME, "kind": "x", "text": HOSTILE, "since": at}],
    )
    context = await browser.new_context(timezone_id="UTC")
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await log_in(page, site, "sue")
    await expect(page.locator("#link")).to_have_text("live")
    tile = page.locator(".tile").nth(1)
    await expect(tile.locator(".name")).to_have_text(HOSTILE_NAME)
    await expect(tile.locator(".reasons")).to_have_text(f"paused: {HOSTILE} 1")
    row = page.locator("#agents tbody tr")
    await expect(row.locator(".agent-name")).to_have_text(HOSTILE_NAME)
    await expect(row.locator(".col-reason")).to_have_text(HOSTILE)
    await expect(row.locator(".customer")).to_have_text(HOSTILE)
    await expect(row.locator(".col-queue")).to_have_text(HOSTILE_NAME)
    await expect(page.locator("#alerts .text")).to_have_text(HOSTILE)
    await expect(page.locator("#wallboard script, #wallboard img, #wallboard b")).to_have_count(0)
    assert dialogs == [], "no script from the board's text ran"
    await context.close()

    agent_context = await browser.new_context()
    agent_page = await agent_context.new_page()
    await log_in(agent_page, site, "alice")
    await expect(agent_page.locator(".failure h1")).to_have_text("403")
    await expect(agent_page.locator(".failure")).to_contain_text(
        "The wallboard is for supervisors."
    )
    response = await agent_page.goto(site.url + "/wallboard")
    assert response is not None and response.status == 403
    await agent_context.close()


async def test_a_supervisor_rates_an_agent_from_the_grid(browser: Browser, site: Site) -> None:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    await log_in(page, site, "sue")
    frank = page.locator("#agents tbody tr", has_text="Frank Li")
    await frank.get_by_role("button", name="Rate").click()
    await frank.get_by_label("Rating").select_option("5")
    await frank.get_by_label("Note").fill("calm with an angry caller <b>")
    await frank.get_by_role("button", name="Save").click()
    await expect(frank.locator(".control-status")).to_have_text("Rated ✓")
    await expect(frank.locator(".rate-form")).to_be_hidden()
    store = site.app[STORE]
    assert store is not None
    [saved] = await ratings.recent(store.sessions, "Frank")
    assert (saved.score, saved.note, saved.rater) == (5, "calm with an angry caller <b>", "sue")
    await context.close()


async def test_a_supervisor_logs_an_agent_in_and_out_of_a_queue(
    browser: Browser, engine: AsyncEngine
) -> None:
    """Against the PBX simulator: Queues → sales → Log in is a QueueAdd Asterisk keeps, Log
    out its QueueRemove, both audited."""
    store = new_store(engine)
    pop = new_pop(store)
    at = time.time()
    board = FakeBoard(center(at))
    alice = AgentSettings("Alice", members=("Alice", ALICE, "PJSIP/1001"))
    async with simulated_pbx() as (_, ami):
        app = build_app(pop, store, board=board, controls=MemberControls({PBX: ami}, [alice]))
        app[FEED] = WallboardFeed(board, pop, interval=0.1)
        try:
            async with served(app) as url:
                page = await browser.new_page(viewport={"width": 1600, "height": 1000})
                await log_in(page, Site(url, app, board, at), "sue")
                row = page.locator("#agents tbody tr", has_text="Alice Martin")
                await row.get_by_role("button", name="Queues").click()
                picker = row.locator(".member-form").get_by_label("Queue")
                await expect(picker.locator("option")).to_have_text(
                    ["support (member)", "sales", "billing"]
                )
                await picker.select_option("sales")
                await row.get_by_role("button", name="Log in").click()
                await expect(row.locator(".control-status")).to_have_text("Logged in to sales ✓")
                assert ALICE in await queue_members(ami, "sales")
                await row.get_by_role("button", name="Queues").click()
                await picker.select_option("sales")
                await row.get_by_role("button", name="Log out").click()
                await expect(row.locator(".control-status")).to_have_text("Logged out of sales ✓")
                assert ALICE not in await queue_members(ami, "sales")
                await row.get_by_role("button", name="Queues").click()
                await picker.select_option("sales")
                await row.get_by_role("button", name="Log out").click()  # not a member any more
                await expect(row.locator(".control-status")).to_contain_text(
                    f"{ALICE}: Unable to remove interface: Not there"
                )
                entries = await audit.recent(store.sessions)
                assert [(e.action, e.queue, e.result.split(":")[0]) for e in entries] == [
                    ("queue_remove", "sales", "refused"),
                    ("queue_remove", "sales", "ok"),
                    ("queue_add", "sales", "ok"),
                ]
                await page.close()
        finally:
            await pop.close()


async def queue_members(ami: AmiClient, queue: str) -> set[str]:
    reply = await ami.send_action({"Action": "QueueStatus", "Queue": queue}, timeout=5)
    items = reply if isinstance(reply, list) else [reply]
    return {m["Location"] for m in items if m.get("Event") == "QueueMember"}


# ---------------------------------------------------------------- with the real board

T0 = 1_795_399_980.0  # a whole minute (epoch seconds), in 2026-11: the board's fixed clock


def in_queue(queue: str, agent: str, at: float = T0, **state: Any) -> MemberUpdated:
    """What the member tracker reports of an agent's membership (logged in, not paused)."""
    fields: dict[str, Any] = {
        "status": 1, "paused": False, "reason": "", "in_call": False, "wrapup": 0.0, **state
    }  # fmt: skip
    return MemberUpdated(PBX, at, queue, agent, agent, f"Local/{agent}@agents/n", **fields)


@asynccontextmanager
async def real_board(
    board: Board, store: CustomerStore, controls: MemberControls | None = None
) -> AsyncIterator[str]:
    """The app with a real :class:`cti.board.Board` fed by the test, its snapshots taken at a
    fixed time after the events; yields the base URL."""
    pop = new_pop(store)
    app = build_app(pop, store, board=board, controls=controls or MemberControls({}, []))
    app[FEED] = WallboardFeed(board, pop, interval=0.1, clock=lambda: T0 + 120)
    try:
        async with served(app) as url:
            yield url
    finally:
        await pop.close()


async def test_the_all_queues_tile_counts_agents_not_memberships(
    browser: Browser, engine: AsyncEngine
) -> None:
    """Five agents, seven memberships of two queues with different service-level thresholds:
    the total tile says five logged in, and no threshold of its own until the queues agree."""
    names = {"Alice": "Alice Martin", "Bob": "Bob Keller", "Carol": "Carol Nguyen"}
    names |= {"Dave": "Dave Okafor", "Eve": "Eve Rossi"}
    board = Board(BoardRules(), [AgentSettings(i, name) for i, name in names.items()])
    board.observe(QueueDefined(PBX, T0, "support", 20.0))
    board.observe(QueueDefined(PBX, T0, "sales", 30.0))
    for agent_id in ("Alice", "Bob"):
        board.observe(in_queue("support", agent_id))
        board.observe(in_queue("sales", agent_id))
    board.observe(in_queue("support", "Carol"))
    board.observe(in_queue("sales", "Dave", paused=True, reason="lunch"))
    board.observe(in_queue("support", "Eve"))
    async with real_board(board, new_store(engine)) as url:
        page = await browser.new_page(viewport={"width": 1600, "height": 1000})
        await log_in(page, url, "sue")
        await expect(page.locator("#link")).to_have_text("live")
        support = page.locator(f'.tile[data-queue="{PBX}/support"]')
        await expect(support.locator(".stat-logged-in .value")).to_have_text("4")
        await expect(support.locator(".stat-sl .label")).to_have_text("SL (20 s)")
        total = page.locator('.tile[data-queue="total"]')
        await expect(total.locator(".stat-logged-in .value")).to_have_text("5")
        await expect(total.locator(".stat-available .value")).to_have_text("4")
        await expect(total.locator(".stat-paused .value")).to_have_text("1")
        await expect(total.locator(".reasons")).to_have_text("paused: lunch 1")
        await expect(total.locator(".stat-sl .label")).to_have_text("SL (per queue)")
        board.observe(QueueDefined(PBX, T0 + 60, "sales", 20.0))  # now every queue says 20 s
        await expect(total.locator(".stat-sl .label")).to_have_text("SL (20 s)")
        await page.close()


async def test_a_supervisor_releases_an_agent_held_in_wrap_up(
    browser: Browser, engine: AsyncEngine
) -> None:
    """Against the PBX simulator: the service holds Alice in wrap-up (QueuePause, reason
    wrap-up); the grid offers "Release wrap-up" instead of Pause, which unpauses her through
    the supervisors' pause control, audited as an unpause; an agent on a plain pause keeps
    Unpause."""
    store = new_store(engine)
    alice = AgentSettings("Alice", "Alice Martin", members=("Alice", ALICE, "PJSIP/1001"))
    board = Board(BoardRules(), [alice, AgentSettings("Eve", "Eve Rossi")])
    async with simulated_pbx() as (_, ami):
        held = QueuePauseWrapup({PBX: ami}, [alice])
        held.hold(PBX, "Alice")  # as the pop does when her card owes an outcome
        await held.close()
        assert (await queue_member(ami, "support", ALICE))["PausedReason"] == "wrap-up"
        # what the member tracker reports of it, and of Eve at lunch
        board.observe(in_queue("support", "Alice", T0 + 30, paused=True, reason="wrap-up"))
        board.observe(in_queue("support", "Eve", paused=True, reason="lunch"))
        controls = MemberControls({PBX: ami}, [alice])
        async with real_board(board, store, controls) as url:
            page = await browser.new_page(viewport={"width": 1600, "height": 1000})
            await log_in(page, url, "sue")
            row = page.locator(f'#agents tr[data-agent="{PBX}/Alice"]')
            await expect(row.locator(".state-badge")).to_have_text("wrap-up")
            await expect(row.locator(".col-reason")).to_have_text("wrap-up")
            release = row.get_by_role("button", name="Release wrap-up")
            await expect(release).to_be_visible()
            await expect(row.get_by_role("button", name="Pause")).to_be_hidden()
            await expect(row.get_by_role("button", name="Unpause")).to_be_hidden()
            eve = page.locator(f'#agents tr[data-agent="{PBX}/Eve"]')
            await expect(eve.get_by_role("button", name="Unpause")).to_be_visible()
            await expect(eve.get_by_role("button", name="Release wrap-up")).to_be_hidden()

            await release.click()
            await expect(row.locator(".control-status")).to_have_text("Released from wrap-up ✓")
            member = await queue_member(ami, "support", ALICE)
            assert (member["Paused"], member["PausedReason"]) == ("0", "")
            entries = await audit.recent(store.sessions)
            assert [(e.login, e.action, e.agent, e.pbx, e.detail, e.result) for e in entries] == [
                ("sue", "unpause", "Alice", PBX, "", "ok")
            ]
            # the tracker reports the unpause: she is available, the usual controls are back
            board.observe(in_queue("support", "Alice", T0 + 60))
            await expect(row.locator(".state-badge")).to_have_text("available")
            await expect(release).to_be_hidden()
            await expect(row.get_by_role("button", name="Pause")).to_be_visible()
            # released at the longest wrap-up with the outcome still owed:
            # the grid keeps it in sight until it is saved
            await expect(row.locator(".outcomes-missing")).to_have_count(0)
            board.set_outcomes_missing(PBX, "Alice", 1)
            await expect(row.locator(".outcomes-missing")).to_have_text("1 outcome missing")
            board.set_outcomes_missing(PBX, "Alice", 0)
            await expect(row.locator(".outcomes-missing")).to_have_count(0)
            await page.close()


async def queue_member(ami: AmiClient, queue: str, location: str) -> dict[str, str]:
    reply = await ami.send_action({"Action": "QueueStatus", "Queue": queue}, timeout=5)
    items = reply if isinstance(reply, list) else [reply]
    (found,) = [m for m in items if m.get("Event") == "QueueMember" and m["Location"] == location]
    return dict(found)
