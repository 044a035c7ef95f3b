"""``cti demo`` and ``cti simulate``: the built-in PBX simulator, with or without the product.

The demo runs the simulator and the whole product in one process, but they still talk real
AMI and real FastAGI over loopback sockets: what the demo shows is what a real Asterisk would
get. Demo customers are seeded with the numbers the simulated callers dial, so most calls pop
a card; every call goes through the IVR first (config/ivr), so cards show what the caller
told it, and calls an agent hangs up take the survey.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from sqlalchemy import select

from crm_sync.db import create_engine
from crm_sync.migrate import upgrade
from crm_sync.models import Customer
from crm_sync.phones import PhoneNormalizer
from crm_sync.receiver import Receiver
from crm_sync.segments import load_rules
from cti.console import ConsoleSink
from cti.hashing import hash_password
from cti.settings import (
    DEMO_DATABASE_URL,
    AgentSettings,
    CrmSettings,
    IvrSettings,
    PbxSettings,
    SegmentSettings,
    Settings,
    StoreSettings,
    WebSettings,
)
from cti.waits import wait_set
from cti_app.seed import seed_demo
from cti_app.stack import Ready, run_stack
from pbxsim import AmiServer, run_traffic
from pbxsim.ivr_callers import DEMO_PIN, IvrCallers
from pbxsim.scenarios import AGENTS
from screenpop.auth import Account, Accounts

CONFIG = Path(__file__).resolve().parent.parent / "config"
DISPOSITIONS = CONFIG / "dispositions.toml"
SEGMENT_RULES = CONFIG / "segments.toml"

DEMO_USER = "cti"
DEMO_SECRET = "cti-secret"  # the simulator's own account, on 127.0.0.1 only


def demo_accounts(settings: Settings) -> Accounts:
    """Every simulated agent, and one supervisor, all with the demo password."""
    agents = Accounts.for_agents(settings.agents, DEMO_PASSWORD)
    supervisor = Account(
        DEMO_SUPERVISOR, "Demo supervisor", "", "supervisor", hash_password(DEMO_PASSWORD)
    )
    return Accounts([*agents, supervisor])


async def _until(stop: asyncio.Event, duration: float | None) -> None:
    if duration is None:
        await stop.wait()
    else:
        await wait_set(stop, duration)


async def _traffic(
    server: AmiServer,
    *,
    rate: float,
    seed: int,
    speed: float,
    stop: asyncio.Event,
    after_login: bool,
) -> None:
    """Calls until ``stop``; with ``after_login`` only from the first successful Login on, so
    that the client sees every call from its first event (none joined mid-call)."""
    if after_login:
        login = asyncio.ensure_future(server.logged_in.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({login, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            login.cancel()
            stopped.cancel()
        if stop.is_set():
            return
    await run_traffic(server, rate_per_minute=rate, seed=seed, stop=stop, speed=speed)


@contextlib.asynccontextmanager
async def _simulated_pbx(
    *, port: int, rate: float, seed: int, speed: float, after_login: bool = False
) -> AsyncIterator[AmiServer]:
    """A listening simulator with calls coming in (``after_login``: once a client logged
    in); stopped (calls cut) on exit. Callbacks the product places ring and answer at the
    traffic's ``speed`` too."""
    server = AmiServer(
        port=port, username=DEMO_USER, secret=DEMO_SECRET, system_name="sim", speed=speed
    )
    await server.start()
    stop = asyncio.Event()
    traffic = asyncio.create_task(
        _traffic(server, rate=rate, seed=seed, speed=speed, stop=stop, after_login=after_login)
    )
    try:
        yield server
    finally:
        stop.set()
        await traffic
        await server.stop()


async def simulate(
    *, port: int, rate: float, seed: int, speed: float = 1.0, duration: float | None = None
) -> None:
    """Serve simulated AMI traffic on 127.0.0.1:``port`` until cancelled (or ``duration``)."""
    async with _simulated_pbx(port=port, rate=rate, seed=seed, speed=speed) as server:
        print(
            f"PBX simulator: AMI on 127.0.0.1:{server.port} (user {DEMO_USER}, secret "
            f"{DEMO_SECRET}), about {rate:g} calls/minute",
            flush=True,
        )
        await _until(asyncio.Event(), duration)


DEMO_PASSWORD = "demo"
DEMO_SUPERVISOR = "supervisor"  # its wallboard moves with the simulated traffic


def demo_settings(
    server_port: int, web_port: int, database_url: str, agi_port: int = 4573
) -> Settings:
    """One simulated PBX, its five agents as accounts, a SQLite store, the agent page, the
    IVR with the shipped menus, the shipped segment rules."""
    pbx = PbxSettings(name="demo", port=server_port, username=DEMO_USER, secret=DEMO_SECRET)
    agents = tuple(
        AgentSettings(
            id=a.name.lower(), name=f"{a.name} (ext {a.exten})", members=(a.name, a.interface)
        )
        for a in AGENTS
    )
    return Settings(
        pbxs=(pbx,),
        agents=agents,
        store=StoreSettings(database_url=database_url, default_region="CN"),
        web=WebSettings(port=web_port, dispositions_file=str(DISPOSITIONS)),
        ivr=IvrSettings(port=agi_port, menus_dir=str(CONFIG / "ivr")),
        segments=SegmentSettings(rules_file=str(SEGMENT_RULES)),
    )


async def seed(database_url: str, *, seed: int, rate: float) -> tuple[str, list[int]]:
    """Fresh demo customers whose numbers are the ones the simulated callers will dial; what
    was seeded, and customer numbers (ids) callers asked for one may type in the IVR."""
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        report = await seed_demo(
            engine,
            seed=seed,
            now=datetime.now(UTC),
            phones=PhoneNormalizer("CN"),
            simulator_rate=rate,
            rules=load_rules(SEGMENT_RULES),
        )
        async with engine.connect() as connection:
            people = select(Customer.id).where(Customer.kind == "person").order_by(Customer.id)
            numbers = list((await connection.scalars(people.limit(200))).all())
    finally:
        await engine.dispose()
    return report.describe(), numbers


@contextlib.asynccontextmanager
async def _demo_crm() -> AsyncIterator[str]:
    """The reference receiver on a free loopback port, standing in for the company's CRM."""
    runner = web.AppRunner(Receiver(DEMO_SECRET).app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()


async def demo(
    *,
    port: int,
    rate: float,
    seed_value: int,
    speed: float = 1.0,
    duration: float | None = None,
    web_port: int = 8080,
    agi_port: int = 4573,
    database_url: str = DEMO_DATABASE_URL,
) -> None:
    """Simulator + the whole product; prints where to look, then every call event."""
    print("cti demo: seeding demo customers ...", flush=True)
    described, numbers = await seed(database_url, seed=seed_value, rate=rate)
    print(described, flush=True)
    callers: IvrCallers | None = None
    async with (
        _simulated_pbx(
            port=port, rate=rate, seed=seed_value, speed=speed, after_login=True
        ) as server,
        _demo_crm() as crm,
    ):
        settings = demo_settings(server.port, web_port, database_url, agi_port)
        settings = replace(settings, crm=CrmSettings(webhook_url=f"{crm}hook", secret=DEMO_SECRET))
        accounts = demo_accounts(settings)

        def ready(at: Ready) -> None:
            nonlocal callers
            if at.agi is not None:  # from now on the simulated calls go through the IVR
                callers = IvrCallers(at.agi, seed=seed_value, accounts=numbers)
                server.observers.append(callers)
            logins = ", ".join(a.id for a in settings.agents)
            agi = f"agi://{at.agi[0]}:{at.agi[1]}/main" if at.agi else "off"
            print(
                f"\ncti demo is running.\n"
                f"  Agent page:  {at.agent_page}   log in as one of {logins} "
                f"(password: {DEMO_PASSWORD})\n"
                f"  Wallboard:   {at.agent_page}wallboard   log in as {DEMO_SUPERVISOR} "
                f"(password: {DEMO_PASSWORD})\n"
                f"  Simulated Asterisk AMI: 127.0.0.1:{server.port} (user {DEMO_USER}, "
                f"secret {DEMO_SECRET}), about {rate:g} calls/minute\n"
                f"  IVR (FastAGI): {agi}; demo customers' PIN is {DEMO_PIN}\n"
                f"  CRM webhook: {crm}   what the demo CRM received (outcomes, calls, "
                "follow-ups), newest first\n"
                "Call events follow below. Ctrl-C stops.\n",
                flush=True,
            )

        runner = asyncio.create_task(
            run_stack(settings, accounts=accounts, sinks=[ConsoleSink()], on_ready=ready)
        )
        until = asyncio.create_task(_until(asyncio.Event(), duration))
        try:
            await asyncio.wait({runner, until}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                runner.result()  # the product stopped by itself: say why (a port taken, ...)
        finally:
            until.cancel()
            if callers is not None:
                await callers.close()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
