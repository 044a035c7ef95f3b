"""`cti demo` end to end, as a new user sees it: the simulated PBX speaks AMI to the service,
its callers go through the IVR over FastAGI, are found in the seeded store, and an agent's
card pops in a real Chromium with what they told the IVR."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from playwright.async_api import Browser, expect

from tests.support.demo import running_demo


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    address = r"Agent page:\s+(http://127\.0\.0\.1:\d+/)"
    with running_demo(tmp_path, rate=60, speed=4, address=address) as found:
        yield found


async def test_a_simulated_call_pops_a_known_customer_in_the_browser(
    demo: tuple[str, list[str]], browser: Browser
) -> None:
    url, lines = demo
    assert any("come from a seeded customer" in line for line in lines)
    pages = []
    for login in ("alice", "bob", "carol", "dave"):  # the queue rings one of them first
        page = await browser.new_page()
        await page.goto(url)
        await page.get_by_label("Login").fill(login)
        await page.get_by_label("Password").fill("demo")
        await page.get_by_role("button", name=re.compile("log in", re.I)).click()
        await expect(page.locator("#link")).to_have_text("live")
        pages.append(page)
    # a tier badge is only shown for a caller found in the store
    known = [p.locator("#cards .card .badge.tier") for p in pages]
    for _ in range(120):  # up to 60 s of demo traffic (time runs 4x)
        counts = [await names.count() for names in known]
        if any(counts):
            break
        await asyncio.sleep(0.5)
    assert any(counts), "no card with a known customer popped in 60 s"
    page = pages[counts.index(max(counts))]
    card = page.locator("#cards .card", has=page.locator(".badge.tier")).first
    await expect(card.locator(".number")).not_to_be_empty()
    await expect(card.locator(".who .name")).not_to_be_empty()
    await expect(card.locator(".badge.state")).to_have_text(re.compile("ringing|answered|wrap-up"))
    # the call went through the IVR first, and the card says what the caller did there
    await expect(card.locator(".ivr .ivr-path")).to_contain_text("Welcome: heard it")
    for p in pages:
        await p.close()
    # and the demo's CRM hears of the calls of known customers through the outbox
    (crm,) = {m.group(1) for line in lines if (m := re.search(r"CRM webhook: (\S+)", line))}
    topics: set[str] = set()
    async with ClientSession() as http:
        for _ in range(120):
            async with http.get(crm) as answer:
                received = await answer.json()
            topics = {change["topic"] for change in received["latest"]}
            if "call.ended" in topics:
                break
            await asyncio.sleep(0.5)
    assert "call.ended" in topics, received
    assert received["refused"] == 0
