"""The service: for each configured PBX one AMI client, one queue and one call model.

The AMI client only enqueues; one consumer task per PBX drains the queue into the model in
arrival order, so the model needs no lock and a slow sink never stalls the socket reader.
Domain events go to every sink (console, the screen pop); queue member and link state
(:mod:`cti.members`) goes to every state sink (the wallboard).
The model has no clock: the consumer gives it one that follows the stream's own Timestamps,
advanced by the monotonic time since the last event, so a skewed PBX clock cannot expire a
call early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from cti.agents import AgentDirectory
from cti.ami import (
    AmiClient,
    AmiEvent,
    AttemptFailed,
    Disconnected,
    Item,
    ResyncBegin,
    ResyncEnd,
)
from cti.calls import CallTracker, frame_filter
from cti.console import closed_summaries
from cti.events import DomainEvent, FeedStatus, StateEvent
from cti.members import MemberTracker
from cti.settings import PbxSettings, Settings

log = logging.getLogger(__name__)

EXPIRE_EVERY = 1.0
SLICE = 0.005  # seconds of model work before the loop is given back
BEHIND = 0.25  # seconds an event waited: the service sheds lookups until it catches up


class EventSink(Protocol):
    """Receives every domain event; must not block (hand slow work to a task or queue)."""

    def publish(self, event: DomainEvent) -> None: ...


class StateSink(Protocol):
    """Receives queue member, queue and AMI link state; must not block either."""

    def observe(self, event: StateEvent) -> None: ...


class StreamClock:
    """The PBX's time as seen through its event Timestamps, advanced by our monotonic clock."""

    def __init__(self) -> None:
        self._stream: float | None = None
        self._mono = 0.0

    def saw(self, stream_time: float | None) -> None:
        if stream_time is not None:
            self._stream, self._mono = stream_time, time.monotonic()

    def now(self) -> float | None:
        if self._stream is None:
            return None
        return self._stream + (time.monotonic() - self._mono)


class PbxFollower:
    """One PBX: its client, its queue, its model, and the task that feeds the model."""

    def __init__(
        self,
        settings: PbxSettings,
        agents: AgentDirectory,
        sinks: Sequence[EventSink],
        state_sinks: Sequence[StateSink] = (),
    ):
        self.settings = settings
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.client = AmiClient(settings, self.queue, frame_filter=frame_filter)
        self.tracker = CallTracker(settings.name, agents, max_call_age=settings.max_call_age)
        self.members = MemberTracker(settings.name, agents)
        self.sinks = sinks
        self.state_sinks = state_sinks
        self.clock = StreamClock()
        self.events_in = 0
        self.closing = False
        self.lag = 0.0  # seconds the latest event taken had waited in the queue
        self.behind = False  # lag >= BEHIND: work that can wait (lookups) is shed

    async def consume(self) -> None:
        """Drain the queue into the model forever (cancel to stop).

        Items are applied in slices of at most SLICE seconds, then the loop is given back:
        ``Queue.get`` does not yield while items wait, so a backlog (a burst, a resync)
        drained in one go would starve the socket readers, the browsers' writers and the
        lookups for as long as it lasts, and a PBX whose writes we stop reading drops us.
        """
        loop = asyncio.get_running_loop()
        expired_at = loop.time()
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races with a queue item, and the service would never stop
                async with asyncio.timeout(EXPIRE_EVERY):
                    item = await self.queue.get()
            except TimeoutError:
                item = None
            if item is not None:
                self._note_lag(item)
                until = loop.time() + SLICE
                while True:
                    self._apply_one(item)
                    if self.queue.empty() or loop.time() >= until:
                        break
                    item = self.queue.get_nowait()
            if loop.time() - expired_at >= EXPIRE_EVERY:  # also while events never stop
                expired_at = loop.time()
                now = self.clock.now()
                if now is not None:
                    self._emit(self.tracker.expire(now))
            await asyncio.sleep(0)  # the readers and writers' turn

    def _apply_one(self, item: Item) -> None:
        try:
            events = self.apply(item)
        except Exception:
            # a model bug on one odd message must not stop following the PBX
            log.exception("PBX %s: could not apply %s", self.settings.name, _describe(item))
            return
        self._emit(events)

    def _note_lag(self, item: Item) -> None:
        """How long the item now taken waited (0 when the queue was empty): the service is
        behind the PBX by that much. Crossing BEHIND is logged once each way."""
        waited = max(0.0, time.time() - item.received_at) if isinstance(item, AmiEvent) else 0.0
        self.lag = waited
        behind = waited >= BEHIND or (self.behind and waited >= BEHIND / 5)  # no flapping
        if behind != self.behind:
            self.behind = behind
            if behind:
                log.warning(
                    "PBX %s: %.1f s behind its events (%d waiting): customer lookups are "
                    "skipped until it catches up; cards still go out",
                    self.settings.name,
                    self.lag,
                    self.queue.qsize(),
                )
            else:
                log.info("PBX %s: caught up with its events", self.settings.name)

    def apply(self, item: Item) -> list[DomainEvent]:
        if isinstance(item, AmiEvent):
            self.events_in += 1
            self.clock.saw(_stamp(item.message.get("Timestamp")) or item.received_at)
            now = self.clock.now()
            self._observe(self.members.on_event(item.message, now))
            return self.tracker.on_event(item.message, now)
        if isinstance(item, ResyncBegin):
            log.info("PBX %s: logged in, rebuilding state from Asterisk", item.pbx)
            self.tracker.begin_resync()
            self.members.begin_resync()
            return []
        if isinstance(item, ResyncEnd):
            at = self.clock.now() or item.at
            events = self.tracker.end_resync(at, item.complete)
            self._observe(self.members.end_resync(at, item.complete))
            self._observe([FeedStatus(item.pbx, at, True)])
            log.info(
                "PBX %s: state rebuilt (%d calls in progress%s)",
                item.pbx,
                len(self.tracker.active_calls()),
                "" if item.complete else ", snapshot incomplete",
            )
            return events
        if isinstance(item, Disconnected) and not self.closing:
            log.warning("PBX %s: disconnected (%s); resync follows", item.pbx, item.reason)
            at = self.clock.now() or item.at
            self._observe([FeedStatus(item.pbx, at, False, item.reason)])
        if isinstance(item, AttemptFailed) and not self.closing:
            # the client logged why; a PBX down since start-up is shown down all the same
            at = self.clock.now() or item.at
            self._observe([FeedStatus(item.pbx, at, False, item.reason)])
        return []

    def _observe(self, events: list[StateEvent]) -> None:
        for event in events:
            for sink in self.state_sinks:
                try:
                    sink.observe(event)
                except Exception:
                    log.exception("state sink %r failed on %s", sink, type(event).__name__)

    def _emit(self, events: list[DomainEvent]) -> None:
        for event in events:
            for sink in self.sinks:
                try:
                    sink.publish(event)
                except Exception:
                    log.exception(
                        "sink %r failed on %s",
                        sink,
                        type(event).__name__,
                        extra={"call_id": event.call_id, "pbx": event.pbx},
                    )
        if events:  # calls closed unseen (resync, expiry): one line for the batch, not each
            for line in closed_summaries(events, self.tracker.max_call_age):
                log.info("PBX %s: %s", self.settings.name, line)


def _stamp(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _describe(item: Item) -> str:
    if isinstance(item, AmiEvent):
        return f"{item.message.get('Event', 'message')} event"
    return type(item).__name__


class CtiService:
    """Follows every configured PBX until cancelled; a PBX that fails (refused login, foreign
    peer, outage) is retried by its own client and stops no other."""

    def __init__(
        self,
        settings: Settings,
        sinks: Sequence[EventSink] = (),
        state_sinks: Sequence[StateSink] = (),
    ) -> None:
        agents = AgentDirectory(settings.agents)
        self.followers = [PbxFollower(pbx, agents, sinks, state_sinks) for pbx in settings.pbxs]

    def behind(self, pbx: str) -> bool:
        """Whether the service is behind this PBX's events (see PbxFollower.lag)."""
        return any(f.behind for f in self.followers if f.settings.name == pbx)

    async def run(self) -> None:
        """Run until cancelled; the clients never raise for a PBX's failure."""
        async with asyncio.TaskGroup() as group:
            for follower in self.followers:
                group.create_task(follower.client.run())
                group.create_task(follower.consume())

    async def close(self) -> None:
        for follower in self.followers:
            follower.closing = True
            await follower.client.close()
