"""Shared fixtures: databases (a SQLite file, and a real PostgreSQL when one answers) and a
real browser (Debian's Chromium at /usr/bin/chromium, driven by Playwright).

PostgreSQL comes from ``TEST_DATABASE_URL`` (default: the local server with trust auth,
database ``test``). Each test gets a fresh database created from it and dropped after. Where
no PostgreSQL answers, those tests are skipped with the reason; under CI (``CI`` set) that
skip is a failure instead, so a green CI run has really used PostgreSQL. The same holds for
Chromium.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, async_playwright
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.db import create_engine
from crm_sync.migrate import upgrade

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs this service: {reason}")
    pytest.skip(reason)


async def _admin() -> asyncpg.Connection:
    url = make_url(PG_URL)
    try:
        return await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            database=url.database,
            timeout=3,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _missing(f"no PostgreSQL at {url.render_as_string(hide_password=True)}: {exc}")
        raise


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cti.sqlite3'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    admin = await _admin()
    name = f"cti_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()
