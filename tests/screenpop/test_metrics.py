"""``/metrics`` (screenpop/metrics.py): the exposition as Prometheus parses it, and values
that move when a pop happens, a PBX link drops, an outbox row waits, an agent is held."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.outbox import Outbox, enqueue
from crm_sync.phones import PhoneNormalizer
from cti.agents import AgentDirectory
from cti.ami import AmiEvent
from cti.events import AgentRinging, DomainEvent
from cti.service import PbxFollower
from cti.settings import PbxSettings
from pbxsim import AmiServer
from screenpop.cards import PopBook
from screenpop.hub import Hub
from screenpop.metrics import Metrics, TimedStore, add_routes
from screenpop.pipeline import PopService
from tests.support.screenpop import (
    PBX,
    WEI,
    Calls,
    build_app,
    client_for,
    eventually,
    login,
    new_pop,
    now,
    seed,
)

Client = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scraped(client: Client) -> Samples:
    """Every sample of one scrape, by (name, labels), parsed as Prometheus would."""
    response = await client.get("/metrics")
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(await response.text())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


class Fed(Calls):
    """Calls fed to the pop and then the metrics, in the service's order of sinks."""

    def __init__(self, pop: PopService, metrics: Metrics) -> None:
        super().__init__(pop)
        self.metrics = metrics

    def feed(self, *events: DomainEvent) -> None:
        for event in events:
            self.pop.publish(event)
            self.metrics.publish(event)


async def test_a_pop_counts_and_its_latency_is_observed() -> None:
    metrics = Metrics(clock=lambda: 1_000.25)
    pop = new_pop(None)
    app = build_app(pop, None)
    add_routes(app, metrics, None)
    async with client_for(app) as client:
        before = await scraped(client)
        assert before[("cti_pops_total", ())] == 0
        assert before[("cti_pop_latency_seconds_count", ())] == 0
        ringing = AgentRinging(PBX, "c1", 1_000.0, "Alice", "Alice", "Local/1", "q", "555", "")
        Fed(pop, metrics).feed(ringing)
        after = await scraped(client)
    assert after[("cti_pops_total", ())] == 1
    assert after[("cti_pop_latency_seconds_count", ())] == 1
    assert after[("cti_pop_latency_seconds_sum", ())] == 0.25
    assert after[("cti_pop_latency_seconds_bucket", (("le", "0.2"),))] == 0
    assert after[("cti_pop_latency_seconds_bucket", (("le", "0.5"),))] == 1


async def test_lookups_are_timed_and_pending_outbox_rows_are_read_on_scrape(
    engine: AsyncEngine,
) -> None:
    metrics = Metrics()
    store = TimedStore(engine, PhoneNormalizer("CN"), metrics)
    await seed(store)
    pop = PopService(PopBook(), Hub(), store, clock=now)
    app = build_app(pop, store)
    add_routes(app, metrics, Outbox(store.sessions))
    async with client_for(app) as client:
        before = await scraped(client)
        assert before[("cti_lookup_latency_seconds_count", ())] == 0
        assert before[("cti_outbox_pending", ())] == 0
        assert before[("cti_outbox_oldest_pending_age_seconds", ())] == 0
        Fed(pop, metrics).ring("c1", "Alice", WEI)
        await eventually(lambda: pop.lookup_for(PBX, "c1") is not None)
        async with store.sessions() as session, session.begin():
            enqueue(
                session,
                topic="note.added",
                key="k1",
                customer_id=None,
                data={},
                now=datetime.now(UTC) - timedelta(minutes=5),
            )
        after = await scraped(client)
    await pop.close()
    assert after[("cti_lookup_latency_seconds_count", ())] == 1
    assert after[("cti_pops_total", ())] == 1
    assert after[("cti_outbox_pending", ())] == 1
    assert 299 < after[("cti_outbox_oldest_pending_age_seconds", ())] < 400


async def test_link_events_and_reconnects_per_pbx() -> None:
    server = AmiServer(auth_delay=0.0)
    await server.start()
    settings = PbxSettings(name=PBX, port=server.port, secret=server.secret, backoff_max=0.2)
    follower = PbxFollower(settings, AgentDirectory(()), [])
    tasks = [asyncio.create_task(follower.client.run()), asyncio.create_task(follower.consume())]
    metrics = Metrics()
    metrics.followers = [follower]
    app = build_app(new_pop(None), None)
    add_routes(app, metrics, None)
    labels = (("pbx", PBX),)
    try:
        async with client_for(app) as client:
            await eventually(lambda: follower.client.connected)
            up = await scraped(client)
            assert up[("cti_ami_link_up", labels)] == 1
            events = up[("cti_ami_events_total", labels)]
            server.emit({"Event": "FullyBooted", "Status": "Fully Booted"})
            await eventually(lambda: follower.events_in > events)
            assert (await scraped(client))[("cti_ami_events_total", labels)] == events + 1
            await server.stop()
            await eventually(lambda: follower.client.reconnects > 0)
            down = await scraped(client)
            assert down[("cti_ami_link_up", labels)] == 0
            assert down[("cti_ami_reconnects_total", labels)] >= 1
    finally:
        await follower.client.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()


async def test_wrapups_held_and_websocket_clients() -> None:
    class Holds:
        def hold(self, pbx: str, agent: str) -> None: ...

        def release(self, pbx: str, agent: str) -> None: ...

    metrics = Metrics()
    pop = new_pop(None)
    pop.wrapup = metrics.holding(Holds())
    app = build_app(pop, None)
    add_routes(app, metrics, None)
    async with client_for(app) as client:
        await login(client, "alice")
        socket = await client.ws_connect("/ws")
        calls = Fed(pop, metrics)
        calls.ring("c1", "Alice", "555")
        calls.answer("c1", "Alice")
        calls.end("c1", "Alice", "555")
        held = await scraped(client)
        await socket.close()
        await eventually(lambda: not pop.hub.connected("Alice"))
        gone = await scraped(client)
    assert held[("cti_wrapups_held", ())] == 1
    assert held[("cti_websocket_clients", ())] == 1
    assert gone[("cti_websocket_clients", ())] == 0


async def test_each_instance_has_its_own_registry_and_no_login_is_needed() -> None:
    first, second = Metrics(), Metrics()  # the default registry would refuse the second
    first.pops.inc()
    app = build_app(new_pop(None), None)
    add_routes(app, second, None)
    async with client_for(app) as client:
        started = time.monotonic()
        samples = await scraped(client)
        assert time.monotonic() - started < 1
        assert (await client.get("/api/me", headers={"Accept": "application/json"})).status == 401
    assert samples[("cti_pops_total", ())] == 0


async def test_lag_waiting_events_and_skipped_lookups() -> None:
    follower = PbxFollower(PbxSettings(name=PBX), AgentDirectory(()), [])
    metrics = Metrics()
    metrics.followers = [follower]
    pop = new_pop(None)
    metrics.pop = pop
    app = build_app(pop, None)
    add_routes(app, metrics, None)
    labels = (("pbx", PBX),)
    follower.lag = 1.5
    for n in range(3):
        follower.queue.put_nowait(AmiEvent(PBX, {"Event": "Newchannel", "Uniqueid": str(n)}, 0.0))
    pop.lookups_skipped = 7
    async with client_for(app) as client:
        seen = await scraped(client)
    assert seen[("cti_ami_lag_seconds", labels)] == 1.5
    assert seen[("cti_ami_events_waiting", labels)] == 3
    assert seen[("cti_lookups_skipped_total", ())] == 7
