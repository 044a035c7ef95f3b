"""Prometheus metrics on ``/metrics``, kept by the official client (prometheus-client): the
text exposition format and the histograms' buckets and sums are its to get right.

Each :class:`Metrics` has its own registry, never the process-wide default one: one running
stack has one, and tests build many in a process. What other objects already count is read
when Prometheus scrapes (:class:`_Live`): each PBX's link state, events and reconnects, the
WebSocket clients, the wrap-up holds, and the outbox (read from the store, within a short
timeout). Only pops and the two latencies are counted as they happen, each in O(1): the
metrics are an event sink placed right after the pop (the card is pushed by then), and the
pop's store times its own lookups (:class:`TimedStore`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.outbox import Counts, Outbox
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore, Lookup
from cti.events import AgentRinging, DomainEvent
from cti.service import PbxFollower
from screenpop.health import PROBE_TIMEOUT, within
from screenpop.keys import SESSIONS
from screenpop.pipeline import PopService, WrapupControl

log = logging.getLogger(__name__)
# seconds; pops are milliseconds when all is well, the lookups' budget is 0.3 s by default
POP_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
LOOKUP_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
UNQUERIED = frozenset({"internal", "invalid"})  # lookups answered without the store


class Metrics:
    """The registry of one running stack, and the EventSink that counts pops.

    ``clock`` is wall-clock time, the clock of the events' ``at`` (the AMI Timestamp of the
    ring, or the moment its frame was read when Asterisk sends none): a pop's latency is
    from then to the card's push, so it includes the wait in the PBX's queue and any skew
    between the PBX's clock and ours."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self.clock = clock
        self.pops = Counter(
            "cti_pops", "Cards popped: an agent's phone rang", registry=self.registry
        )
        self.pop_latency = Histogram(
            "cti_pop_latency_seconds",
            "From the ring's AMI event to the card's push to the agent's mailbox",
            buckets=POP_BUCKETS,
            registry=self.registry,
        )
        self.lookup_latency = Histogram(
            "cti_lookup_latency_seconds",
            "Customer lookups by caller number, up to their budget (timeouts included)",
            buckets=LOOKUP_BUCKETS,
            registry=self.registry,
        )
        self.followers: Sequence[PbxFollower] = ()
        self.pop: PopService | None = None
        self.held: set[tuple[str, str]] = set()  # (pbx, agent) paused for an owed outcome
        self.sockets: Callable[[], int] = lambda: 0
        self.outbox: Outbox | None = None
        self._outbox_counts: Counts | None = None
        self.registry.register(_Live(self))

    def publish(self, event: DomainEvent) -> None:
        """EventSink, after the pop: a ring is a card just pushed."""
        if isinstance(event, AgentRinging):
            self.pops.inc()
            if event.at is not None:
                self.pop_latency.observe(max(0.0, self.clock() - event.at))

    def holding(self, wrapup: WrapupControl) -> WrapupControl:
        """``wrapup``, with its holds counted for ``cti_wrapups_held``."""
        return _CountedHolds(wrapup, self.held)

    async def scrape(self) -> bytes:
        """The exposition text, with the outbox read now (left out if the store is slow)."""
        self._outbox_counts = None
        if self.outbox is not None:
            try:
                self._outbox_counts = await within(PROBE_TIMEOUT, self.outbox.counts)
            except Exception as exc:  # whatever the store's trouble, the rest is still served
                log.warning("metrics: outbox not read: %s", exc)
        return generate_latest(self.registry)


class _CountedHolds:
    def __init__(self, inner: WrapupControl, held: set[tuple[str, str]]) -> None:
        self._inner = inner
        self._held = held

    def hold(self, pbx: str, agent: str) -> None:
        self._held.add((pbx, agent))
        self._inner.hold(pbx, agent)

    def release(self, pbx: str, agent: str) -> None:
        self._held.discard((pbx, agent))
        self._inner.release(pbx, agent)

    def adopt(self, pbx: str, agent: str) -> None:
        self._held.add((pbx, agent))
        self._inner.adopt(pbx, agent)


class _Live(Collector):
    """What the service's objects count already, read at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        up = GaugeMetricFamily(
            "cti_ami_link_up", "1 while the PBX's AMI session is logged in", labels=["pbx"]
        )
        events = CounterMetricFamily(
            "cti_ami_events", "AMI events applied to the call model", labels=["pbx"]
        )
        reconnects = CounterMetricFamily(
            "cti_ami_reconnects",
            "Reconnect attempts to the PBX (each backoff pause)",
            labels=["pbx"],
        )
        lag = GaugeMetricFamily(
            "cti_ami_lag_seconds",
            "How long the latest AMI event taken had waited behind the others",
            labels=["pbx"],
        )
        waiting = GaugeMetricFamily(
            "cti_ami_events_waiting", "AMI events read and not yet applied", labels=["pbx"]
        )
        for follower in m.followers:
            name = [follower.settings.name]
            up.add_metric(name, 1.0 if follower.client.connected else 0.0)
            events.add_metric(name, follower.events_in)
            reconnects.add_metric(name, follower.client.reconnects)
            lag.add_metric(name, follower.lag)
            waiting.add_metric(name, follower.queue.qsize())
        yield from (up, events, reconnects, lag, waiting)
        if m.pop is not None:
            yield CounterMetricFamily(
                "cti_lookups_skipped",
                "Customer lookups skipped because the service was behind its PBX",
                m.pop.lookups_skipped,
            )
        yield GaugeMetricFamily(
            "cti_websocket_clients", "Open WebSockets: agent pages and wallboards", m.sockets()
        )
        yield GaugeMetricFamily(
            "cti_wrapups_held", "Agents paused until they give a call's outcome", len(m.held)
        )
        counts = m._outbox_counts
        if counts is not None:
            yield GaugeMetricFamily(
                "cti_outbox_pending", "Changes waiting for the CRM", counts.pending
            )
            oldest = counts.oldest_pending
            age = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
            yield GaugeMetricFamily(
                "cti_outbox_oldest_pending_age_seconds",
                "Age of the oldest change waiting for the CRM (0: none waits)",
                max(0.0, age),
            )


class TimedStore(CustomerStore):
    """The customer store whose lookups feed ``cti_lookup_latency_seconds`` (the time the
    store measured itself; numbers it answers without a query are not counted)."""

    def __init__(self, engine: AsyncEngine, phones: PhoneNormalizer, metrics: Metrics) -> None:
        super().__init__(engine, phones)
        self._latency = metrics.lookup_latency

    async def lookup(self, raw: str, *, now: datetime, budget: float = 0.3) -> Lookup:
        found = await super().lookup(raw, now=now, budget=budget)
        if found.status not in UNQUERIED:
            self._latency.observe(found.elapsed_ms / 1000)
        return found


METRICS = web.AppKey("metrics", Metrics)


def add_routes(app: web.Application, metrics: Metrics, outbox: Outbox | None) -> None:
    """``/metrics`` without a login (scrapers have none; no customer data in it)."""
    metrics.outbox = outbox
    metrics.sockets = lambda: len(app[SESSIONS].sockets())
    app[METRICS] = metrics
    app.router.add_get("/metrics", scrape, name="metrics")


async def scrape(request: web.Request) -> web.Response:
    body = await request.app[METRICS].scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
