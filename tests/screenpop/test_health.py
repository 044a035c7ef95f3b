"""``/healthz`` and ``/readyz`` (screenpop/health.py): no login, and a 503 that says why."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.db import create_engine
from screenpop import health
from screenpop.health import Readiness, store_answers
from tests.support.screenpop import (
    PBX,
    build_app,
    client_for,
    eventually,
    new_pop,
    simulated_pbx,
)

Client = TestClient[web.Request, web.Application]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    yield engine
    await engine.dispose()


def app_with(readiness: Readiness) -> web.Application:
    app = build_app(new_pop(None), None)
    health.add_routes(app, readiness)
    return app


async def test_ready_with_store_and_link_up_then_not_when_the_pbx_goes(
    sqlite: AsyncEngine,
) -> None:
    async with simulated_pbx() as (server, ami):
        readiness = Readiness(store_answers(sqlite), {PBX: ami})
        async with client_for(app_with(readiness)) as client:
            alive = await client.get("/healthz")
            assert (alive.status, await alive.json()) == (200, {"alive": True})
            ready = await client.get("/readyz")
            assert ready.status == 200, await ready.text()
            assert await ready.json() == {
                "ready": True,
                "store": {"ready": True},
                "pbx": {PBX: {"ready": True}},
            }
            await server.stop()  # the PBX is gone: connection cut, nobody listening
            await eventually(lambda: not ami.connected)
            down = await client.get("/readyz")
            body = await down.json()
            assert down.status == 503
            assert body["ready"] is False
            assert body["store"] == {"ready": True}
            assert body["pbx"][PBX]["ready"] is False
            assert body["pbx"][PBX]["reason"]
            assert (await client.get("/healthz")).status == 200  # alive all the same


async def test_a_store_that_refuses_connections_is_not_ready() -> None:
    engine = create_engine(f"postgresql://cti@127.0.0.1:{closed_port()}/cti")
    try:
        readiness = Readiness(store_answers(engine), {})
        async with client_for(app_with(readiness)) as client:
            response = await client.get("/readyz")
            body = await response.json()
    finally:
        await engine.dispose()
    assert response.status == 503
    assert body["ready"] is False
    assert body["store"]["ready"] is False
    assert "refused" in body["store"]["reason"].lower() or "connect" in body["store"]["reason"]


async def test_a_stalled_store_is_not_ready_and_the_probe_answers_on_time() -> None:
    never = asyncio.Event()

    async def stalled() -> None:
        await never.wait()

    readiness = Readiness(stalled, {}, timeout=0.2)
    async with client_for(app_with(readiness)) as client:
        started = time.monotonic()
        response = await client.get("/readyz")
        took = time.monotonic() - started
        body = await response.json()
    assert response.status == 503
    assert body["store"] == {"ready": False, "reason": "no answer within 0.2 s"}
    assert took < 1.0


async def test_a_link_never_up_says_so(sqlite: AsyncEngine) -> None:
    class Down:
        connected = False
        last_error = "Authentication failed"

    readiness = Readiness(store_answers(sqlite), {"paris": Down()})
    async with client_for(app_with(readiness)) as client:
        response = await client.get("/readyz")
        body = await response.json()
    assert response.status == 503
    assert body["pbx"] == {"paris": {"ready": False, "reason": "Authentication failed"}}


async def test_only_the_probes_are_open_the_rest_still_needs_a_login(sqlite: AsyncEngine) -> None:
    readiness = Readiness(store_answers(sqlite), {})
    async with client_for(app_with(readiness)) as client:
        assert (await client.get("/readyz")).status == 200
        api = await client.get("/api/me", headers={"Accept": "application/json"})
        assert api.status == 401
        page = await client.get("/", allow_redirects=False)
        assert page.status == 303
