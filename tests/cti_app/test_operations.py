"""The operations endpoints of the assembled product (:func:`cti_app.stack.run_stack`):
probes and metrics without a login, against the simulator and a SQLite store."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cti.settings import PbxSettings, Settings, StoreSettings, WebSettings
from cti_app.stack import Ready, run_stack
from pbxsim import AmiServer
from tests.support.screenpop import accounts


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[str, AmiServer]]:
    """The whole product on free loopback ports; its agent page's base URL, and its PBX."""
    server = AmiServer(auth_delay=0.0)
    await server.start()
    settings = Settings(
        pbxs=(PbxSettings(name="sim", port=server.port, secret=server.secret),),
        store=StoreSettings(database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}"),
        web=WebSettings(port=0),
    )
    ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_stack(settings, accounts=accounts(), on_ready=ready.set_result))
    try:
        at = await asyncio.wait_for(ready, 10)
        assert at.agent_page is not None
        yield at.agent_page.rstrip("/"), server
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()
        await server.stop()


async def eventually_status(http: aiohttp.ClientSession, url: str, status: int) -> None:
    """The PBX link comes up (or goes) a moment after the stack is ready."""
    for _ in range(500):
        async with http.get(url) as response:
            if response.status == status:
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{url} never answered {status}")


async def test_probes_answer_without_a_login(stack: tuple[str, AmiServer]) -> None:
    base, server = stack
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz", allow_redirects=False) as alive:
            assert alive.status == 200
        await eventually_status(http, f"{base}/readyz", 200)
        await server.stop()
        await eventually_status(http, f"{base}/readyz", 503)
        async with http.get(f"{base}/readyz") as down:
            body = await down.json()
        assert body["ready"] is False
        assert body["store"] == {"ready": True}
        assert body["pbx"]["sim"]["ready"] is False


async def test_metrics_are_scraped_without_a_login(stack: tuple[str, AmiServer]) -> None:
    base, _ = stack
    async with aiohttp.ClientSession() as http:
        await eventually_status(http, f"{base}/readyz", 200)
        async with http.get(f"{base}/metrics", allow_redirects=False) as response:
            assert response.status == 200
            text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("cti_ami_link_up", (("pbx", "sim"),))] == 1
    assert samples[("cti_outbox_pending", ())] == 0  # read from the stack's own store
    assert samples[("cti_pops_total", ())] == 0
