"""Shared fixtures: databases (a SQLite file, and a real PostgreSQL when one answers) and a
real browser (Debian's Chromium at /usr/bin/chromium, driven by Playwright).

PostgreSQL comes from ``TEST_DATABASE_URL`` (default: the local server with trust auth,
database ``test``). Each test gets a fresh database created from it and dropped after. Where
PostgreSQL does not answer, the run stops at once with one line saying so (rather than every
test waiting for its own connect timeout); with ``TEST_SKIP_SERVICES=1`` (ignored under CI,
``CI`` set) the tests that need it are skipped with the reason instead, so a green CI run has
really used PostgreSQL. Chromium is checked the same way when a test first asks for it.
"""

from __future__ import annotations

import asyncio
import os
import re
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


def _postgres_down() -> str | None:
    """Why the PostgreSQL of ``TEST_DATABASE_URL`` cannot be used, or None if it answers."""

    async def probe() -> None:
        await (await _connect()).close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        url = make_url(PG_URL).render_as_string(hide_password=True)
        return f"no PostgreSQL at {url}: {exc or type(exc).__name__}"
    return None


_DOWN: dict[str, str] = {}  # service -> why it cannot be used, found once per run


def pytest_sessionstart(session: pytest.Session) -> None:
    """Check the services once, in seconds, before any test runs."""
    reason = _postgres_down()
    if reason is None:
        return
    if os.environ.get("CI") or not os.environ.get("TEST_SKIP_SERVICES"):
        pytest.exit(f"{reason} (TEST_SKIP_SERVICES=1 skips the tests that need it)", returncode=3)
    _DOWN["postgresql"] = reason


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs this service: {reason}")
    pytest.skip(reason)


async def _connect() -> asyncpg.Connection:
    url = make_url(PG_URL)
    return await asyncpg.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        database=url.database,
        timeout=3,
    )


async def _admin() -> asyncpg.Connection:
    if "postgresql" in _DOWN:
        _missing(_DOWN["postgresql"])
    try:
        return await _connect()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _missing(f"PostgreSQL stopped answering: {exc}")
        raise


# --- fuzz case counts (issue 22: "CI runs a stated number of cases", printed) -----------------

FUZZ_CASES = "fuzz cases"  # a user property: (how many cases a fuzz test ran, of what kind)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """Note how many cases each hypothesis test ran (the plugin's statistics for the test,
    set while it ran); tests/fuzz/test_atheris.py notes its own counts."""
    stats = getattr(item, "hypothesis_statistics", None)
    if call.when == "call" and stats:
        counts = re.findall(r"(\d+) passing, (\d+) failing", stats)  # per phase
        cases = sum(int(passed) + int(failed) for passed, failed in counts)
        item.user_properties.append((FUZZ_CASES, (cases, "hypothesis examples")))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per fuzz test with the cases it ran, and the totals, so a CI log states them."""
    found = [
        (report.nodeid, *value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for key, value in getattr(report, "user_properties", [])
        if key == FUZZ_CASES
    ]
    if not found:
        return
    terminalreporter.write_sep("=", f"{FUZZ_CASES} ({len(found)} tests)")
    totals: dict[str, int] = {}
    for nodeid, cases, kind in sorted(found):
        terminalreporter.write_line(f"{nodeid}: {cases} {kind}")
        totals[kind] = totals.get(kind, 0) + cases
    terminalreporter.write_line(
        "total: " + ", ".join(f"{cases} {kind}" for kind, cases in sorted(totals.items()))
    )


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
