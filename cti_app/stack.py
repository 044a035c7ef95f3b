"""The whole product in one process: AMI followers, customer store, pop pipeline, agent page,
IVR, and the background work on the store (segments' recompute, CRM relay).

``cti serve`` and ``cti demo`` both run :func:`run_stack`; each part gets its collaborators by
constructor, and everything is closed in reverse order when the stack stops.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from crm_sync.db import create_engine
from crm_sync.followups import Followups
from crm_sync.migrate import upgrade
from crm_sync.outbox import Outbox
from crm_sync.phones import PhoneNormalizer
from crm_sync.relay import Relay, RelayPolicy
from crm_sync.segmenting import keep_segments
from crm_sync.segments import rules_from
from crm_sync.store import CustomerStore
from crm_sync.work_figures import WorkFigures
from cti.board import Board, Quality
from cti.call_control import CallControls
from cti.callbacks import CallbackDialer
from cti.calls import Leg
from cti.controls import MemberControls
from cti.service import CtiService, EventSink, StateSink
from cti.settings import Settings
from cti.waits import wait_set
from cti.wrapup import QueuePauseWrapup
from ivr.guard import LOOPBACK, PeerAllowList, PinLimiter, TrackedCalls, is_network
from ivr.menus import load_menus
from ivr.runner import MenuHandler, pbx_from_query
from ivr.server import AgiServer
from ivr.store import IvrStore
from screenpop import health
from screenpop.app import create_app
from screenpop.auth import Accounts
from screenpop.cards import PopBook
from screenpop.dispositions import Dispositions
from screenpop.followups_api import FollowupDesk
from screenpop.hub import Hub
from screenpop.metrics import Metrics, TimedStore
from screenpop.metrics import add_routes as add_metrics
from screenpop.pipeline import PopService

log = logging.getLogger(__name__)
WORK_EVERY = 30.0  # seconds between two reads of the store's figures for the wallboard


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Ready:
    """Where the running stack can be reached."""

    agent_page: str | None  # the agent page's URL; None without accounts
    agi: tuple[str, int] | None  # the IVR's FastAGI address; None without menus


def freeze_startup_heap() -> None:
    """Move what start-up made (modules, settings, accounts, the app) out of the collector's
    reach. None of it is ever garbage, yet every full collection would walk it again: about
    100,000 objects, 45 ms of a stopped process per collection on this machine kind, paid by
    the cards on their way at that moment."""
    gc.collect()
    gc.freeze()


async def run_stack(
    settings: Settings,
    *,
    accounts: Accounts | None,
    sinks: Sequence[EventSink] = (),
    on_ready: Callable[[Ready], None] = lambda ready: None,
) -> None:
    """Run until cancelled; ``on_ready`` is told where to reach it once it listens.

    Raises SettingsError-like errors from the dispositions file, MenuError from the IVR
    menus and SegmentRulesError from the segment rules. A PBX that fails (refused login, a
    peer that is not Asterisk, an outage) is that PBX's client's to retry: it ends nothing.
    """
    rules = rules_from(settings.segments.rules_file)
    await asyncio.to_thread(upgrade, settings.store.database_url)
    engine = create_engine(settings.store.database_url)
    phones = PhoneNormalizer(settings.store.default_region)
    metrics = Metrics()
    store = TimedStore(engine, phones, metrics)
    followups = Followups(store.sessions, settings.followups)
    pop = PopService(
        PopBook(),
        Hub(),
        store,
        clock=utc_now,
        budget=settings.store.lookup_budget,
        followups=followups,
    )
    board = Board(settings.wallboard, settings.agents)
    pop.callers = board  # the wallboard shows each caller's tier
    pop.missing = board  # and each agent's outcomes missing past the longest wrap-up
    state_sinks: list[StateSink] = [board, pop.links]  # the wallboard, the agents' pages
    service = CtiService(settings, [*sinks, pop, metrics, board], state_sinks)
    pop.behind = service.behind  # overload: lookups are skipped, cards still go out
    metrics.followers = service.followers
    metrics.pop = pop
    work_changed = asyncio.Event()
    refresher = asyncio.create_task(refresh_work(board, WorkFigures(engine), work_changed, utc_now))
    segmenter = asyncio.create_task(keep_segments(store.sessions, rules, clock=utc_now))
    relay = _relay(settings, store)
    clients = {f.settings.name: f.client for f in service.followers}
    trackers = {f.settings.name: f.tracker for f in service.followers}

    def leg(pbx: str, call_id: str, agent: str) -> Leg | None:
        tracker = trackers.get(pbx)
        return tracker.leg(call_id, agent) if tracker is not None else None

    wrapup = QueuePauseWrapup(
        clients,
        settings.agents,
        max_seconds=settings.wrapup.max_seconds,
        expired=pop.wrapup_expired,  # the pop forgets the hold, then releases it
    )
    state_sinks.append(wrapup)  # the followers share the list: each resync reconciles pauses
    runner: web.AppRunner | None = None
    agi: AgiServer | None = None
    try:
        url = None
        address = None
        if settings.ivr.menus_dir:
            peers = await _agi_peers(settings)
            ivr_store = IvrStore(engine, store, phones, clock=utc_now)
            calls = TrackedCalls(trackers)
            agi = _agi_server(settings, ivr_store, pop, peers, calls)
            address = await agi.start(settings.ivr.host, settings.ivr.port)
        if accounts is not None:
            dispositions = Dispositions.load(settings.web.dispositions_file)
            if dispositions.require_outcome:
                # agents owing an outcome are paused in their queues
                pop.wrapup = metrics.holding(wrapup)
            app = create_app(
                pop=pop,
                accounts=accounts,
                dispositions=dispositions,
                store=store,
                now=utc_now,
                secure_cookies=settings.web.secure_cookies,
                board=board,
                controls=MemberControls(clients, settings.agents),
                call_controls=CallControls(
                    clients,
                    settings.pbxs,
                    settings.agents,
                    leg,
                    board.queue_names,
                ),
                work_changed=work_changed.set,
                crm_token=settings.crm.inbound_token,
                followups=FollowupDesk(
                    followups,
                    CallbackDialer(clients, settings.agents, settings.followups),
                    board.queues_of,
                ),
            )
            health.add_routes(app, health.Readiness(health.store_answers(engine), clients))
            add_metrics(app, metrics, Outbox(store.sessions))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, settings.web.host, settings.web.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}/"
        if accounts is not None:  # the agents' pages: their owed wrap-ups come back
            await pop.restore_wrapups(utc_now() - timedelta(seconds=settings.wrapup.max_seconds))
        freeze_startup_heap()
        on_ready(Ready(url, address))
        await service.run()
    finally:
        refresher.cancel()
        segmenter.cancel()
        if relay is not None:
            relay.cancel()
        await asyncio.gather(
            refresher, segmenter, *([relay] if relay else []), return_exceptions=True
        )
        if agi is not None:
            await agi.stop()
        await service.close()
        if runner is not None:
            await runner.cleanup()
        await pop.close()
        await wrapup.close()
        await engine.dispose()


async def refresh_work(
    board: Board,
    figures: WorkFigures,
    wake: asyncio.Event,
    clock: Callable[[], datetime],
    every: float = WORK_EVERY,
) -> None:
    """Feed the board what only the store knows (follow-ups, CSAT, FCR, ratings), every
    ``every`` s or as soon as ``wake`` is set (a rating was saved, a follow-up changed); a
    store that does not answer leaves the last figures up and is tried again."""
    while True:
        wake.clear()
        try:
            now = clock().astimezone(board.rules.timezone)
            todo = await figures.followups(now)
            board.set_callbacks(
                {q: n for q, (n, _) in todo.queues.items()},
                {q: late for q, (_, late) in todo.queues.items()},
            )
            board.set_followups(todo.agents)
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            work = await figures.agents(midnight, now)
            for agent in set(board.agent_ids()) | work.keys():
                done = work.get(agent)
                board.set_quality(
                    agent,
                    Quality(done.fcr, done.csat, done.rating) if done is not None else Quality(),
                )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("wallboard: store figures not refreshed: %s", exc)
        await wait_set(wake, every)


def _relay(settings: Settings, store: CustomerStore) -> asyncio.Task[None] | None:
    """Deliver the outbox to the CRM's webhook; without one, rows wait in the outbox."""
    crm = settings.crm
    if not crm.webhook_url:
        log.info("crm: no webhook_url; changes for the CRM wait in the outbox")
        return None
    policy = RelayPolicy(
        url=crm.webhook_url,
        secret=crm.secret,
        timeout=crm.timeout,
        max_attempts=crm.max_attempts,
        backoff_initial=crm.backoff_initial,
        backoff_max=crm.backoff_max,
        concurrency=crm.concurrency,
        batch=crm.batch,
    )
    task = asyncio.create_task(Relay(Outbox(store.sessions), policy).run())
    task.add_done_callback(_relay_stopped)
    return task


def _relay_stopped(task: asyncio.Task[None]) -> None:
    """A relay that died of a bug says so at once (its rows stay in the outbox)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("crm: the relay stopped; changes wait in the outbox", exc_info=task.exception())


async def _agi_peers(settings: Settings) -> PeerAllowList:
    """``[ivr] allowed_peers`` (default: loopback and the PBXs' hosts); a PBX given by host
    name is resolved now, and one that does not resolve is left out, with a warning."""
    entries = settings.ivr.allowed_peers or (
        *LOOPBACK, *(pbx.host for pbx in settings.pbxs)
    )  # fmt: skip
    addresses: list[str] = []
    for entry in dict.fromkeys(entries):
        if is_network(entry):
            addresses.append(entry)
            continue
        try:
            infos = await asyncio.to_thread(socket.getaddrinfo, entry, None)
        except OSError as exc:
            log.warning("[ivr] allowed_peers: PBX host %r not resolved (%s); left out", entry, exc)
            continue
        addresses += dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos)  # no scope
    return PeerAllowList(addresses)


def _agi_server(
    settings: Settings, store: IvrStore, pop: PopService, peers: PeerAllowList, calls: TrackedCalls
) -> AgiServer:
    """One route per menu file; findings go to the pop, survey scores to the agent who
    last had the call and its customer. Only ``peers`` may connect, with the secret if one is
    set; PIN guesses are limited across every menu; findings go only to calls AMI follows."""
    names = frozenset(p.name for p in settings.pbxs)
    only = next(iter(names)) if len(names) == 1 else None

    def agent_for(pbx: str, call_id: str) -> str | None:
        handled = pop.book.handled_by(pbx, call_id)
        return handled[-1] if handled else None

    def customer_for(pbx: str, call_id: str) -> int | None:
        lookup = pop.lookup_for(pbx, call_id)
        return lookup.cards[0].id if lookup is not None and len(lookup.cards) == 1 else None

    ivr = settings.ivr
    server = AgiServer(peers=peers, secret=ivr.secret)
    pins = PinLimiter(failures=ivr.pin_failures, window=ivr.pin_window, lockout=ivr.pin_lockout)
    for name, menu in load_menus(settings.ivr.menus_dir).items():
        handler = MenuHandler(
            menu,
            store,
            pop,
            pbx_for=pbx_from_query(only, names),
            agent_for=agent_for,
            customer_for=customer_for,
            pins=pins,
            calls=calls,
            call_wait=ivr.call_wait,
        )
        server.add_route(name, handler)
    return server
