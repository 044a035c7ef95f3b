"""The supervisor wallboard of ``cti demo`` end to end, as a new user of ``make demo`` sees it.

``python -m cti demo`` runs as a subprocess (the simulated PBX speaking real AMI to the whole
product) at 12 calls a minute (three times the demo's default, so queues fill within the
test), with time running 4x faster. A supervisor logs in to the printed wallboard address in
a real Chromium and watches: the link goes live, the demo's two queues and five agents are
shown, today's offered count grows with the simulated traffic, and a queue that was not in
alert turns red while the alert list gains an entry naming that queue, with the time the
alert started.

The demo's settings are the product defaults (``QueueRules``: longest wait 60 s, service
level 80 % over 15 min once 5 attempts count). The simulator's call mix alone (abandons,
timeouts, exits by key, ... besides the answered calls) keeps the service level under 80 %,
so the service-level alert trips after the first handful of calls, with no special settings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.support.demo import running_demo

ALERT_BACKGROUND = "rgb(58, 21, 24)"  # .tile.level-alert in screenpop/static/wallboard.css
ALERT_STRIPE = "rgb(239, 68, 68)"  # its top stripe: --wb-alert
AGENTS = 5  # pbxsim.scenarios.AGENTS: Alice, Bob, Carol, Dave, Eve
GROW_WAIT_MS = 20_000  # at 12 calls a virtual minute, 4x: a call leaves a queue every ~1.5 s
ALERT_WAIT_MS = 30_000  # 5 attempts must have left a queue first: ~15 s after start


class Demo:
    """A running ``cti demo``: its wallboard address and what it printed so far."""

    def __init__(self, url: str, lines: list[str]) -> None:
        self.url = url
        self.lines = lines

    def output(self) -> str:
        return "".join(self.lines[-40:])


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    address = r"Wallboard:\s+(http://127\.0\.0\.1:\d+/wallboard)\s"
    with running_demo(tmp_path, rate=12, speed=4, address=address) as (url, lines):
        assert any("log in as supervisor" in line for line in lines), "".join(lines)
        yield Demo(url, lines)


def hhmm(epoch: float) -> str:
    """A time as the page shows it (the browser context runs in UTC)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M")


async def test_the_demo_wallboard_moves_with_the_traffic_and_raises_an_alert(
    browser: Browser, demo: Demo
) -> None:
    started = time.time()
    context = await browser.new_context(timezone_id="UTC")
    page = await context.new_page()
    await page.goto(demo.url)
    await expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)wallboard$"))
    await page.get_by_label("Login").fill("supervisor")
    await page.get_by_label("Password").fill("demo")
    await page.get_by_role("button", name=re.compile("log in", re.I)).click()
    await expect(page).to_have_url(demo.url)
    link = page.locator("#link")
    await expect(link).to_have_text("live")
    await expect(link).to_have_class(re.compile(r"\blive\b"))
    await expect(page.locator("#wallboard")).not_to_have_class(re.compile(r"\bstale\b"))

    # the demo's PBX, its two queues and its agents, as the service learnt them over AMI
    tiles = page.locator("#queues .tile")
    await expect(page.locator('#queues .tile[data-queue="total"]')).to_have_count(1)
    for name in ("support", "sales"):
        await expect(page.locator(f'#queues .tile[data-queue="demo/{name}"]')).to_have_count(1)
    await expect(page.locator("#agents tbody tr")).to_have_count(AGENTS)
    await expect(page.locator("#feed .pbx-link.up")).to_contain_text("AMI demo connected")
    before = {
        await tile.get_attribute("data-queue"): await tile.get_attribute("class")
        for tile in await tiles.all()
    }

    # today's offered count can only grow: it must move with the simulated calls
    await page.get_by_role("button", name="today").click()
    await expect(page.get_by_role("button", name="today")).to_have_attribute("aria-pressed", "true")
    offered = page.locator('#queues .tile[data-queue="total"] .stat-offered .value')
    first = await offered.inner_text()
    assert first.isdigit(), first
    await expect(offered).not_to_have_text(first, timeout=GROW_WAIT_MS)
    later = await offered.inner_text()
    assert later.isdigit() and int(later) > int(first), (first, later, demo.output())

    # a queue turns red, and the alert list says which and since when
    red = page.locator("#queues .tile.level-alert:not(.total)")
    await expect(red.first).to_be_visible(timeout=ALERT_WAIT_MS)
    key = await red.first.get_attribute("data-queue")
    assert key is not None and key.startswith("demo/"), key
    assert "level-alert" not in (before.get(key) or ""), (key, before)
    tile = page.locator(f'#queues .tile[data-queue="{key}"]')
    await expect(tile.locator(".level-badge")).to_have_text("ALERT")
    await expect(tile).to_have_css("background-color", ALERT_BACKGROUND)
    await expect(tile).to_have_css("border-top-color", ALERT_STRIPE)
    await expect(page.locator('#queues .tile[data-queue="total"]')).to_have_class(
        re.compile(r"\blevel-alert\b")
    )
    queue = key.removeprefix("demo/")
    await expect(page.locator("#no-alerts")).to_be_hidden()
    entry = page.locator("#alerts li.alert", has_text=f"{queue} · demo").first
    await expect(entry).to_be_visible()
    await expect(entry.locator(".text")).to_have_text(
        re.compile(r"^(Service level \d+% in 15 min, under 80%|A caller has waited over 60 s)$")
    )
    await expect(entry.locator(".age")).to_have_text(re.compile(r"^for \d+:\d\d$"))
    since = await entry.locator("time.started").inner_text()
    # the alert started while this test watched: after the tile was seen not red, before now
    watched = {hhmm(t) for t in range(int(started), int(time.time()) + 2)}
    assert since in watched, (since, sorted(watched))
    await context.close()
