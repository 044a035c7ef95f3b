"""A call placed from a customer's page, end to end in `cti demo`: the agent finds a seeded
customer, clicks Call, the simulated PBX plays the Originate as Asterisk does (the customer's
trunk leg rings and answers, then the agent's phone rings from a channel whose caller ID is
the customer's number), and the agent's own page pops the card of that customer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.support.demo import running_demo


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    address = r"Agent page:\s+(http://127\.0\.0\.1:\d+/)"
    # hardly any inbound calls: Alice must be free when she calls out
    with running_demo(tmp_path, rate=0.05, speed=4, address=address) as found:
        yield found


async def test_a_call_from_a_customer_page_pops_that_customer(
    demo: tuple[str, list[str]], browser: Browser
) -> None:
    url, _ = demo
    context = await browser.new_context()
    agent_page = await context.new_page()
    await agent_page.goto(url)
    await agent_page.get_by_label("Login").fill("alice")
    await agent_page.get_by_label("Password").fill("demo")
    await agent_page.get_by_role("button", name=re.compile("log in", re.I)).click()
    await expect(agent_page.locator("#link")).to_have_text("live")

    answer = await agent_page.request.get(url + "api/customers/search?q=smith")
    found = [c for c in (await answer.json())["customers"] if c["phones"]]
    assert found, "the demo's seed has a Smith with a phone"
    customer = found[0]
    page = await context.new_page()
    await page.goto(f"{url}customers/{customer['id']}")
    status = page.locator(".call-status")
    answered = agent_page.locator("#cards .card.state-answered")
    for _ in range(10):  # a demo caller may be talking to Alice: call out once she is free
        await expect(answered).to_have_count(0, timeout=60_000)
        await page.locator("button.call").first.click()
        # the click set "pending" before it returned; the answer sets "ok" or "error"
        await expect(status).to_have_class(re.compile(r"\b(ok|error)\b"), timeout=20_000)
        if "You are on a call" not in (await status.text_content() or ""):
            break
    await expect(status).to_contain_text("answered: your phone rings now")
    card = agent_page.locator("#cards .card").filter(has_text=customer["name"])
    await expect(card.locator(".who .name")).to_have_text(customer["name"], timeout=10_000)
    await expect(card.locator(".badge.state")).to_have_text(re.compile("ringing|answered"))
    await context.close()
