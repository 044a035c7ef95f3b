"""The whole product in one process: AMI followers, customer store, pop pipeline, agent page.

``cti serve`` and ``cti demo`` both run :func:`run_stack`; each part gets its collaborators by
constructor, and everything is closed in reverse order when the stack stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web

from crm_sync.db import create_engine
from crm_sync.migrate import upgrade
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore
from cti.service import CtiService, EventSink
from cti.settings import Settings
from cti.wrapup import QueuePauseWrapup
from screenpop.app import create_app
from screenpop.auth import Accounts
from screenpop.cards import PopBook
from screenpop.dispositions import Dispositions
from screenpop.hub import Hub
from screenpop.pipeline import PopService

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


async def run_stack(
    settings: Settings,
    *,
    accounts: Accounts | None,
    sinks: Sequence[EventSink] = (),
    on_ready: Callable[[str | None], None] = lambda url: None,
) -> None:
    """Run until cancelled. ``on_ready`` gets the agent page's URL (None without accounts).

    Raises SettingsError-like errors from the dispositions file, and AmiAuthError /
    AmiProtocolError from a PBX that refuses us for good.
    """
    await asyncio.to_thread(upgrade, settings.store.database_url)
    engine = create_engine(settings.store.database_url)
    phones = PhoneNormalizer(settings.store.default_region)
    store = CustomerStore(engine, phones)
    pop = PopService(PopBook(), Hub(), store, clock=utc_now, budget=settings.store.lookup_budget)
    service = CtiService(settings, [*sinks, pop])
    clients = {f.settings.name: f.client for f in service.followers}
    wrapup = QueuePauseWrapup(clients, settings.agents)
    runner: web.AppRunner | None = None
    try:
        url = None
        if accounts is not None:
            dispositions = Dispositions.load(settings.web.dispositions_file)
            if dispositions.require_outcome:
                pop.wrapup = wrapup  # agents owing an outcome are paused in their queues
            app = create_app(
                pop=pop,
                accounts=accounts,
                dispositions=dispositions,
                store=store,
                now=utc_now,
                secure_cookies=settings.web.secure_cookies,
            )
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, settings.web.host, settings.web.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}/"
        on_ready(url)
        await service.run()
    finally:
        await service.close()
        if runner is not None:
            await runner.cleanup()
        await pop.close()
        await wrapup.close()
        await engine.dispose()
