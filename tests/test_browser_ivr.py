"""The IVR's findings on the agent's card, in a real Chromium: how the caller was identified,
the menu path, callback, route and win-back; hostile text stays text; no findings, no section."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, expect

from tests.screenpop_support import HOSTILE, NOBODY, PBX, WEI
from tests.test_browser_agent_page import Site, log_in, site  # noqa: F401  (the fixture)


def findings(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "menu": "main",
        "customer_id": None,
        "customer_name": None,
        "tier": None,
        "lifecycle": None,
        "identified_by": "none",
        "language": "en",
        "path": [["welcome", "played"], ["identify", "skip"], ["agent", "routed"]],
        "callback": None,
        "route": {"queue": "support", "priority": 0, "owner": None, "winback": False},
        "scores": {},
        "hung_up": False,
        "ended_at_step": "agent",
    }
    return {**base, **changes}


async def test_the_card_shows_what_the_caller_told_the_ivr(browser: Browser, site: Site) -> None:  # noqa: F811
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await log_in(page, site, "alice")

    # learned before the ring: the first card already carries it
    route = {"queue": "support", "priority": 10, "owner": "bob", "winback": True}
    site.pop.ivr_learned(
        PBX,
        "c1",
        findings(
            identified_by="account",
            customer_id=site.seeded.hostile,
            customer_name=HOSTILE,
            language="zh",
            path=[["identify", "account"], ["main", "9"], ["callback", "created"]],
            callback="17",
            route=route,
        ),
    )
    site.calls.ring("c1", "Alice", NOBODY)
    card = page.locator(f'[data-card-id="{PBX}/c1/Alice"]')
    ivr = card.locator(".ivr")
    await expect(ivr.locator(".identified")).to_have_text("by customer number")
    await expect(ivr.locator(".ivr-customer")).to_have_text(HOSTILE)  # as text, not markup
    await expect(ivr.locator(".ivr-path")).to_have_text(
        "identify: account → main: 9 → callback: created"
    )
    await expect(ivr.locator(".badge.callback")).to_have_text("callback requested")
    await expect(ivr.locator(".ivr-route")).to_have_text("queue support, priority 10")
    await expect(ivr.locator(".ivr-owner")).to_have_text("owner first: bob")
    await expect(ivr.locator(".badge.winback")).to_be_visible()
    await expect(card.locator("script, img")).to_have_count(0)

    # learned after the ring: the card updates in place
    other = page.locator(f'[data-card-id="{PBX}/c2/Alice"]')
    site.calls.ring("c2", "Alice", WEI)
    await expect(other.locator(".who .name")).to_have_text("张伟")
    await expect(other.locator(".ivr")).to_have_count(0)  # no findings, no section
    site.pop.ivr_learned(
        PBX, "c2", findings(identified_by="caller_id", hung_up=True, ended_at_step="main")
    )
    await expect(other.locator(".ivr .identified")).to_have_text("by caller ID")
    await expect(other.locator(".ivr .badge.hungup")).to_have_text("hung up in the IVR at main")
    assert dialogs == []
    await page.close()
