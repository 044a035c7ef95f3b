"""A restart of the service in a real Chromium: the agent's page comes back logged in.

The service is stopped (its sockets closed with 1001, as at a SIGTERM) and a new one, with
nothing in memory, starts on the same port and database: the page reconnects on its own,
stays off the login page, and the next call pops on it. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from playwright.async_api import Browser, expect

from crm_sync.db import create_engine
from tests.support.screenpop import (
    NOBODY,
    PASSWORDS,
    Calls,
    build_app,
    new_pop,
    new_store,
)


@asynccontextmanager
async def service(db_url: str, port: int = 0) -> AsyncIterator[tuple[int, Calls]]:
    """One run of the web side on ``db_url`` (its own engine, nothing shared in memory) on
    loopback ``port`` (0: a free one); the port and its calls."""
    engine = create_engine(db_url)
    store = new_store(engine)
    pop = new_pop(store)
    runner = web.AppRunner(build_app(pop, store))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield runner.addresses[0][1], Calls(pop)
    finally:
        await runner.cleanup()
        await pop.close()
        await engine.dispose()


async def test_the_agent_page_comes_back_logged_in_after_a_restart(
    browser: Browser, db_url: str
) -> None:
    page = await browser.new_page()
    link = page.locator("#link")
    cards = page.locator("#cards .card:not(.closing)")
    async with service(db_url) as (port, calls):
        url = f"http://127.0.0.1:{port}"
        await page.goto(url + "/")
        await expect(page).to_have_url(re.compile(r"/login\?next="))
        await page.get_by_label("Login").fill("alice")
        await page.get_by_label("Password").fill(PASSWORDS["alice"])
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(url + "/")
        await expect(link).to_have_text("live")
        calls.ring("c1", "Alice", NOBODY)
        await expect(cards).to_have_count(1)
    await expect(link).not_to_have_text("live")  # the service is gone

    async with service(db_url, port) as (_, calls):  # nothing of the first run in memory
        await expect(link).to_have_text("live", timeout=10_000)
        await expect(page).to_have_url(url + "/")  # never sent to the login page
        calls.ring("c2", "Alice", NOBODY)
        await expect(cards).to_have_count(1)  # c1 went with the first run's memory
        await expect(page.locator('[data-card-id$="/c2/Alice"]')).to_be_visible()
        await page.reload()
        await expect(page).to_have_url(url + "/")
        await expect(link).to_have_text("live")
    await page.close()
