"""`cti demo` end to end, as a new user sees it: the simulated PBX speaks AMI to the service,
its callers go through the IVR over FastAGI, are found in the seeded store, and an agent's
card pops in a real Chromium with what they told the IVR."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    command = [
        sys.executable, "-m", "cti", "demo", "--web-port", "0", "--agi-port", "0",
        "--rate", "60", "--speed", "4",
        "--url", f"sqlite:///{tmp_path / 'demo.sqlite3'}",
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path
    ) as process:
        assert process.stdout is not None
        lines: list[str] = []
        url = None
        for line in process.stdout:
            lines.append(line)
            found = re.search(r"Agent page:\s+(http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        try:
            assert url, "".join(lines)
            yield url, lines
        finally:
            process.terminate()
            process.wait(10)


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
    await expect(card.locator(".ivr .ivr-path")).to_contain_text("welcome: played")
    for p in pages:
        await p.close()
