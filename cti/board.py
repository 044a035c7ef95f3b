"""The wallboard: queue and agent figures from the call model's events, in memory. Sans-IO.

Theory of operation
-------------------
:class:`Board` is fed domain events (:meth:`Board.publish`) and member/queue/link state
(:meth:`Board.observe`); it never asks Asterisk anything (monitoring tools that poll have made
PBXs unresponsive), and it has no clock: every time comes from the events or from the ``now``
given to :meth:`Board.snapshot`. Figure definitions are in docs/wallboard.md.

A queue attempt counts once, in the minute it *left* the queue: answered, abandoned (short
or not), or another exit. Each queue keeps per-minute counters for the last hour, and running
sums: the 15-minute and one-hour windows drop the minutes leaving them, today's only adds; so
a snapshot costs the same whatever the traffic, and the board does not grow through the day.
"Today" starts at midnight in the board's time zone.

Handle time is talk plus wrap-up. Wrap-up is the pause with the wrap-up reason that follows
the call (the service's own outcome hold, :mod:`cti.wrapup`); when none starts within
``wrapup_grace`` seconds it is the queue's ``wrapuptime``. A call's handle time is counted
when its wrap-up ends.

A snapshot hands out every queue view and agent row but builds only those whose inputs
changed: a queue after its callers (or their tiers), counts or callbacks changed, or a
member's place in it (state, pause reason: ``_place``), when a wait crosses an alert
threshold or a gap begins, and at each minute roll; an agent's row after the agent (or the
tier of its call) changed, and every ``ROW_REFRESH`` seconds if the clock alone moves its
score. One that comes out as the last one did is kept with its ``rev``, so a push
(``screenpop.wallboard``) sends only what a page would show differently.

A lost AMI link is a gap: minutes while it was down have no trend point, and each window
lists the gaps inside it, so a dip to zero is never drawn where there was no data. Live state
(waiting callers, members) is rebuilt by the resync that follows a reconnect.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import reduce
from typing import Any, cast

from cti.events import (
    AgentRinging,
    AgentRingStopped,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallerIdentified,
    CallMerged,
    CallQueued,
    CallStarted,
    CallTransferred,
    DomainEvent,
    FeedStatus,
    MemberRemoved,
    MemberUpdated,
    QueueDefined,
    StateEvent,
)
from cti.settings import AgentSettings, BoardRules
from cti.wrapup import REASON as WRAPUP_REASON

Gap = tuple[float, float | None]  # the AMI link was down from .. to (None: still down)
Place = tuple[str, str | None] | None  # a member's state in a queue, with the pause reason;
# None: not logged in there
# counters per minute: indexes into a list of floats (plain lists add fastest)
OFFERED, ANSWERED, IN_SL, ABANDONED, SHORT, OTHER, HOLD, HANDLED, HANDLE = range(9)
_WIDTH = 9
_UNAVAILABLE = frozenset({4, 5})  # device invalid / unavailable: not logged in (QueueSummary)
_TREND_MINUTES = 60
_WINDOWS = (("15m", "last 15 min", 15), ("1h", "last hour", 60))
_KEYS = (*(key for key, _, _ in _WINDOWS), "today")
_WIDEST = max(_WINDOWS, key=lambda w: w[2])[0]
ROW_REFRESH = 60.0  # seconds an unchanged agent's row (and score) may be reused
_SL_ALERT_MIN_CALLS = 5  # a service level over fewer calls is noise, not an alert
_PLACES = ("logged_in", "available", "on_call", "ringing", "wrap_up", "paused")
_WORKING = frozenset({"on_call", "ringing", "wrap_up", "available"})


@dataclass(frozen=True, slots=True)
class Quality:
    """What the store knows of an agent's work (read by an I/O edge, not by the board)."""

    fcr: float | None = None  # 0..1
    csat: float | None = None  # 1..5
    rating: float | None = None  # 1..5


class _Counts:
    """Per-minute counters of one queue, and running sums over the windows and today. Only
    the minutes still inside a window are kept: an older one is never read again (today's sum
    has it already, and the next day begins after it)."""

    __slots__ = ("changes", "day", "minutes", "starts", "today", "windows")

    def __init__(self) -> None:
        self.minutes: dict[int, list[float]] = {}
        self.today = [0.0] * _WIDTH
        self.windows = {key: [0.0] * _WIDTH for key, _, _ in _WINDOWS}
        self.starts = {key: 0 for key, _, _ in _WINDOWS}  # first minute in each window
        self.day = -1
        self.changes = {key: 0 for key in _KEYS}  # bumped whenever that window's sums change

    def row(self, key: str) -> list[float]:
        return self.today if key == "today" else self.windows[key]

    def add(self, minute: int, index: int, value: float = 1.0) -> None:
        if minute >= self.starts[_WIDEST]:
            row = self.minutes.get(minute)
            if row is None:
                row = self.minutes[minute] = [0.0] * _WIDTH
            row[index] += value
        changes = self.changes
        if minute >= self.day:
            self.today[index] += value
            changes["today"] += 1
        for key in self.windows:
            if minute >= self.starts[key]:
                self.windows[key][index] += value
                changes[key] += 1

    def advance(self, minute: int, day_start: int) -> None:
        """Move the windows so they end at ``minute``; a new day starts afresh."""
        if day_start != self.day:
            self.day = day_start
            self.changes["today"] += 1
            self.minutes = {m: r for m, r in self.minutes.items() if m >= day_start - 60}
            self.today = [0.0] * _WIDTH
            for m, row in self.minutes.items():
                if m >= day_start:
                    _add_into(self.today, row)
        for key, _, span in _WINDOWS:
            start, total = self.starts[key], self.windows[key]
            first = minute - span + 1
            if first - start > span:  # long idle: recount instead of dropping minute by minute
                self.windows[key] = total = [0.0] * _WIDTH
                self.changes[key] += 1
                for m, row in self.minutes.items():
                    if first <= m:
                        _add_into(total, row)
                if key == _WIDEST:
                    self.minutes = {m: r for m, r in self.minutes.items() if m >= first}
            else:
                drop = self.minutes.pop if key == _WIDEST else self.minutes.get
                for m in range(start, first):
                    leaving = drop(m, None)
                    if leaving is not None:
                        _sub_from(total, leaving)
                        self.changes[key] += 1
            self.starts[key] = max(start, first)


@dataclass(slots=True)
class _Queue:
    pbx: str
    name: str
    asterisk_sl: float | None = None
    waiting: dict[str, float] = field(default_factory=dict)  # call id -> joined at
    counts: _Counts = field(default_factory=_Counts)
    trend: deque[tuple[int, int | None, float | None]] = field(
        default_factory=lambda: deque(maxlen=_TREND_MINUTES)
    )
    peak: int = 0  # most callers waiting at once in the current minute
    callbacks: int = 0
    callbacks_overdue: int = 0
    alerts: dict[str, float] = field(default_factory=dict)  # kind -> since
    members: dict[str, _Agent] = field(default_factory=dict)  # agent id -> agent
    trend_view: list[dict[str, Any]] = field(default_factory=list)  # moves on once a minute
    view: dict[str, Any] | None = None  # the last view; None once anything changed
    view_until: float = math.inf  # when the clock alone changes its level or alerts
    shown: dict[str, Any] | None = None  # the last view with a new rev (kept while the same)
    # logged-in members by state, counted as each one's place changes (_place)
    tally: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_PLACES, 0))
    # parts of the view kept while what they come from stands:
    places: tuple[dict[str, int], dict[str, int]] | None = None  # agents, paused reasons
    reasons: dict[str, int] | None = None  # paused members by reason; None: to be recounted
    figures: dict[str, tuple[int, float, list[Gap], dict[str, Any]]] = field(default_factory=dict)


@dataclass(slots=True)
class _Wrap:
    """A call the agent finished whose wrap-up has not ended yet."""

    queue: tuple[str, str] | None
    ended_at: float
    talk: float
    paused_at: float | None = None
    wrapup: float = 0.0  # the queue's wrapuptime for this member


@dataclass(slots=True, eq=False)  # compared and hashed by identity (kept in sets)
class _Agent:
    pbx: str
    id: str
    name: str
    members: dict[str, MemberUpdated] = field(default_factory=dict)  # queue -> last state
    call: tuple[str, str | None, str, float] | None = None  # call id, queue, caller, since
    ringing: dict[str, float] = field(default_factory=dict)
    wrap: _Wrap | None = None
    state: str = "logged_out"
    since: float = 0.0
    handled: int = 0
    handle_n: int = 0
    handle_sum: float = 0.0
    working: float = 0.0  # seconds today logged in and not paused (wrap-up is work)
    paused: float = 0.0
    day: int = -1
    quality: Quality = Quality()
    followups: tuple[int, int] = (0, 0)  # its own follow-ups to do, of which overdue
    outcomes_missing: int = 0  # calls released past the longest wrap-up, outcome still owed
    row: dict[str, Any] | None = None  # the last view of it (Board._dirty: to be redone)
    row_at: float = 0.0  # when the row was last redone
    index: int = -1  # its position in the board's agent order
    places: dict[str, Place] = field(default_factory=dict)  # queue -> what it counts there
    counted: Place = None  # what it counts in all queues' total: its state (and pause reason)


@dataclass(slots=True)
class _Call:
    caller: str
    queue: str | None = None  # the queue it waits in now
    answered: tuple[str, str | None, float] | None = None  # agent, queue, at
    tier: str | None = None  # the caller's value tier (set_caller), if one customer is known


class Board:
    """Live queues and agents of every PBX the service follows."""

    def __init__(
        self, rules: BoardRules | None = None, agents: Sequence[AgentSettings] = ()
    ) -> None:
        self.rules = rules or BoardRules()
        self.version = 0
        self._names = {a.id: a.name or a.id for a in agents}
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._agents: dict[tuple[str, str], _Agent] = {}
        self._calls: dict[tuple[str, str], _Call] = {}
        self._engaged: dict[tuple[str, str], set[_Agent]] = {}  # call -> agents ringing or on it
        self._wrapping: dict[_Agent, None] = {}  # agents whose wrap-up has not ended, in order
        self._agent_order: list[_Agent] = []  # by id, then PBX
        self._queue_order: list[_Queue] = []  # by PBX, then name
        self._rows: list[dict[str, Any] | None] = []  # each agent's row, in agent order
        self._dirty: set[_Agent] = set()  # agents whose row must be redone
        self._row_times: deque[tuple[float, _Agent]] = deque()  # (row_at, agent), oldest first
        self._rev = 0  # numbers each distinct queue view and agent row: a push sends new ones
        # logged-in agents by state for all queues' total: each agent once (its ``counted``)
        self._tally: dict[str, int] = dict.fromkeys(_PLACES, 0)
        self._reasons: dict[str, int] = {}  # paused agents by reason, for the total
        self._feeds: dict[str, tuple[bool, float, str]] = {}  # pbx: up, since, why down
        self._gaps: dict[str, list[Gap]] = {}
        self._now = 0.0
        self._minute = -1
        self._day_for = (-1, -1)  # (minute, the minute its day began)

    # ---------------------------------------------------------------- input

    def publish(self, event: DomainEvent) -> None:
        """EventSink: a call event."""
        self.version += 1
        at = self._clock(event.at)
        key = (event.pbx, event.call_id)
        if isinstance(event, CallStarted | CallerIdentified):
            self._call(key).caller = event.caller_number
        elif isinstance(event, CallQueued):
            self._on_queued(key, event, at)
        elif isinstance(event, AgentRinging):
            agent = self._agent(event.pbx, event.agent)
            agent.ringing[event.call_id] = at
            self._engaged.setdefault(key, set()).add(agent)
            self._restate(agent, at)
        elif isinstance(event, AgentRingStopped):
            agent = self._agent(event.pbx, event.agent)
            agent.ringing.pop(event.call_id, None)
            self._restate(agent, at)
        elif isinstance(event, CallAnswered):
            self._on_answered(key, event, at)
        elif isinstance(event, CallAbandoned):
            self._on_abandoned(key, event, at)
        elif isinstance(event, CallTransferred):
            self._on_transferred(key, event, at)
        elif isinstance(event, CallMerged):
            self._on_merged(key, event, at)
        elif isinstance(event, CallEnded):
            self._on_ended(key, event, at)

    def observe(self, event: StateEvent) -> None:
        """StateSink: queue members, queues, the AMI link."""
        self.version += 1
        at = self._clock(event.at)
        if isinstance(event, MemberUpdated):
            self._on_member(event, at)
        elif isinstance(event, MemberRemoved):
            agent = self._agent(event.pbx, event.agent)
            agent.members.pop(event.queue, None)
            self._queue(event.pbx, event.queue, changed=False).members.pop(agent.id, None)
            self._restate(agent, at)  # the queue is redone if the member counted there
        elif isinstance(event, QueueDefined):
            self._queue(event.pbx, event.queue).asterisk_sl = event.service_level
        elif isinstance(event, FeedStatus):
            self._on_feed(event, at)

    def set_callbacks(
        self, pending: Mapping[str, int], overdue: Mapping[str, int] | None = None
    ) -> None:
        """Callbacks pending per queue name (follow-ups owned by ``queue:<name>``), and how
        many of them are past due."""
        self.version += 1
        late = overdue or {}
        for queue in self._queues.values():
            counts = (pending.get(queue.name, 0), late.get(queue.name, 0))
            if (queue.callbacks, queue.callbacks_overdue) != counts:
                queue.callbacks, queue.callbacks_overdue = counts
                queue.view = None

    def set_followups(self, per_agent: Mapping[str, tuple[int, int]]) -> None:
        """Each agent's own follow-ups to do and how many are past due (absent: none)."""
        self.version += 1
        for agent in self._agents.values():
            load = per_agent.get(agent.id, (0, 0))
            if agent.followups != load:
                agent.followups = load
                self._dirty.add(agent)

    def set_outcomes_missing(self, pbx: str, agent_id: str, count: int) -> None:
        """How many calls' outcomes the agent still owes past the longest wrap-up (the pop's
        count: the service released them, the outcome is still missing)."""
        for agent in self._agents.values():
            if agent.pbx == pbx and agent.id == agent_id and agent.outcomes_missing != count:
                self.version += 1
                agent.outcomes_missing = count
                self._dirty.add(agent)

    def queues_of(self, agent_id: str) -> frozenset[str]:
        """The queues ``agent_id`` is a member of on any PBX, as Asterisk last said."""
        return frozenset(q for a in self._agents.values() if a.id == agent_id for q in a.members)

    def queue_names(self, pbx: str) -> list[str]:
        """The queues of ``pbx`` the board has seen (status, members or calls), by name."""
        return sorted(name for at, name in self._queues if at == pbx)

    def set_quality(self, agent_id: str, quality: Quality) -> None:
        """FCR, survey score and supervisor rating of an agent, on every PBX."""
        self.version += 1
        for agent in self._agents.values():
            if agent.id == agent_id and agent.quality != quality:
                agent.quality = quality
                self._dirty.add(agent)

    def set_caller(self, pbx: str, call_id: str, tier: str | None) -> None:
        """The caller's value tier, from the pop's customer lookup (None: not one known
        customer): counted in the queue it waits in, shown with the agent who has it. A call
        the board does not follow (over, or never seen) is left alone."""
        call = self._calls.get((pbx, call_id))
        if call is None or call.tier == tier:
            return
        self.version += 1
        call.tier = tier
        if call.queue is not None:
            self._queue(pbx, call.queue)  # its VIP count changed: the view is redone
        for agent in self._engaged.get((pbx, call_id), ()):
            if agent.call is not None and agent.call[0] == call_id:
                self._dirty.add(agent)

    def agent_ids(self) -> list[str]:
        return sorted({a.id for a in self._agents.values()} | set(self._names))

    # ---------------------------------------------------------------- output

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything the wallboard shows, JSON-ready (schema in docs/wallboard.md)."""
        now = self._clock(now)
        day = self._day_start(now)
        for agent in list(self._wrapping):
            wrap = agent.wrap
            if wrap is not None and wrap.paused_at is not None and agent.day == day:
                continue  # held by the wrap-up pause: only its end (an event) ends it
            self._settle_wrap(agent, now)  # the clock alone may end it
            if agent.wrap is None or agent.day != day or self._state_of(agent, now) != agent.state:
                self._restate(agent, now)  # else nothing of it changed: views and rows stand
        windows = self._window_marks(now)
        queues = [self._queue_view(q, now, windows) for q in self._sorted_queues()]
        total = self._total_view(queues, now, windows)
        alerts = [
            {"pbx": q["pbx"], "queue": q["name"], **alert} for q in queues for alert in q["alerts"]
        ]
        alerts.sort(key=lambda a: a["since"])
        return {
            "at": now,
            "windows": [
                {"key": key, "label": label, "since": since} for key, label, since in windows
            ],
            "queues": queues,
            "total": total,
            "agents": self._agent_rows(now),
            "alerts": alerts,
            "feed": [
                {"pbx": pbx, "connected": up, "since": since, "reason": why}
                for pbx, (up, since, why) in sorted(self._feeds.items())
            ],
            "settings": {
                "short_abandon": self.rules.short_abandon,
                "weights": self.rules.weights.as_dict(),
            },
        }

    # ---------------------------------------------------------------- calls

    def _on_queued(self, key: tuple[str, str], event: CallQueued, at: float) -> None:
        call = self._call(key)
        call.caller = event.caller_number or call.caller
        queue = self._queue(event.pbx, event.queue)
        if call.queue is not None and call.queue != event.queue:
            self._queue(event.pbx, call.queue).waiting.pop(event.call_id, None)
        call.queue = event.queue
        queue.waiting.setdefault(event.call_id, at)
        queue.peak = max(queue.peak, len(queue.waiting))

    def _on_answered(self, key: tuple[str, str], event: CallAnswered, at: float) -> None:
        call = self._call(key)
        if event.queue is not None:
            queue = self._queue(event.pbx, event.queue)
            joined = queue.waiting.pop(event.call_id, None)
            hold = event.hold_seconds
            if hold is None:
                hold = at - joined if joined is not None else 0.0
            minute = _minute(at)
            queue.counts.add(minute, OFFERED)
            queue.counts.add(minute, ANSWERED)
            queue.counts.add(minute, HOLD, hold)
            if hold <= self._sl_threshold(queue):
                queue.counts.add(minute, IN_SL)
        call.queue = None
        call.answered = (event.agent, event.queue, at)
        agent = self._agent(event.pbx, event.agent)
        self._settle_wrap(agent, at, interrupted=True)
        agent.ringing.pop(event.call_id, None)
        agent.call = (event.call_id, event.queue, call.caller, at)
        self._engaged.setdefault(key, set()).add(agent)
        self._restate(agent, at)

    def _on_abandoned(self, key: tuple[str, str], event: CallAbandoned, at: float) -> None:
        queue = self._queue(event.pbx, event.queue)
        joined = queue.waiting.pop(event.call_id, None)
        hold = event.hold_seconds
        if hold is None:
            hold = at - joined if joined is not None else 0.0
        minute = _minute(at)
        queue.counts.add(minute, OFFERED)
        if event.reason != "abandoned":
            queue.counts.add(minute, OTHER)
        elif hold < self.rules.short_abandon:
            queue.counts.add(minute, SHORT)
        else:
            queue.counts.add(minute, ABANDONED)
        call = self._calls.get(key)
        if call is not None and call.queue == event.queue:
            call.queue = None

    def _on_transferred(self, key: tuple[str, str], event: CallTransferred, at: float) -> None:
        """The transferring agent is done with the call (their wrap-up starts now)."""
        left = event.transfer.from_agent
        if left is None:
            return
        agent = self._agents.get((event.pbx, left))
        if agent is not None and agent.call is not None and agent.call[0] == event.call_id:
            self._finish_call(agent, at)

    def _on_merged(self, key: tuple[str, str], event: CallMerged, at: float) -> None:
        """The absorbed id is gone for good: its agents are followed under the call's id."""
        absorbed = (event.pbx, event.absorbed_call_id)
        call = self._calls.pop(absorbed, None)
        if call is not None and call.queue is not None:
            self._queue(event.pbx, call.queue).waiting.pop(event.absorbed_call_id, None)
        for agent in self._engaged.pop(absorbed, ()):
            self._engaged.setdefault(key, set()).add(agent)
            since = agent.ringing.pop(event.absorbed_call_id, None)
            if since is not None:
                agent.ringing.setdefault(event.call_id, since)
            if agent.call is not None and agent.call[0] == event.absorbed_call_id:
                agent.call = (event.call_id, *agent.call[1:])
            self._dirty.add(agent)

    def _on_ended(self, key: tuple[str, str], event: CallEnded, at: float) -> None:
        call = self._calls.pop(key, None)
        if call is not None and call.queue is not None:  # ended unseen while it waited
            self._queue(event.pbx, call.queue).waiting.pop(event.call_id, None)
        for agent in self._engaged.pop(key, ()):
            if agent.ringing.pop(event.call_id, None) is not None:
                self._restate(agent, at)
            if agent.call is not None and agent.call[0] == event.call_id:
                record = event.record
                if "expired" in record.flags:
                    # nobody saw it end, maybe hours ago: no talk or wrap-up time is made up
                    agent.call = None
                    self._restate(agent, at)
                    continue
                alone = record.handled_by == (agent.id,) and record.talk_seconds is not None
                self._finish_call(agent, at, record.talk_seconds if alone else None)

    def _finish_call(self, agent: _Agent, at: float, talk: float | None = None) -> None:
        """``talk``: Asterisk's own TalkTime when the agent had the call alone."""
        assert agent.call is not None
        _, queue, _, since = agent.call
        agent.call = None
        agent.handled += 1
        member = agent.members.get(queue) if queue is not None else None
        agent.wrap = _Wrap(
            (agent.pbx, queue) if queue is not None else None,
            at,
            talk if talk is not None else max(0.0, at - since),
            wrapup=member.wrapup if member is not None else 0.0,
        )
        if _wrapup_paused(agent):
            agent.wrap.paused_at = at
        self._wrapping[agent] = None
        self._restate(agent, at)

    # ---------------------------------------------------------------- members and feed

    def _on_member(self, event: MemberUpdated, at: float) -> None:
        agent = self._agent(event.pbx, event.agent)
        before = _wrapup_paused(agent)
        agent.members[event.queue] = event
        # the queue is redone if the member's place there changed (_restate)
        self._queue(event.pbx, event.queue, changed=False).members[agent.id] = agent
        after = _wrapup_paused(agent)
        wrap = agent.wrap
        if wrap is not None:
            if after and not before and wrap.paused_at is None:
                wrap.paused_at = at
            elif before and not after and wrap.paused_at is not None:
                self._end_wrap(agent, at, at - wrap.ended_at)
        self._restate(agent, at)

    def _on_feed(self, event: FeedStatus, at: float) -> None:
        was = self._feeds.get(event.pbx)
        if was is not None and was[0] == event.connected:
            if not event.connected and event.reason:  # still down: the latest try's reason
                self._feeds[event.pbx] = (False, was[1], event.reason)
            return
        self._feeds[event.pbx] = (event.connected, at, event.reason)
        for queue in self._queues.values():
            if queue.pbx == event.pbx:
                queue.view = None
        gaps = self._gaps.setdefault(event.pbx, [])
        if not event.connected:
            gaps.append((at, None))
        elif gaps and gaps[-1][1] is None:
            gaps[-1] = (gaps[-1][0], at)

    # ---------------------------------------------------------------- wrap-up and states

    def _settle_wrap(self, agent: _Agent, now: float, *, interrupted: bool = False) -> None:
        """End a wrap-up that no pause is holding once the queue's wrapuptime (and the grace
        for a wrap-up pause to begin) has passed; or at once when the agent takes a call."""
        wrap = agent.wrap
        if wrap is None:
            return
        elapsed = max(0.0, now - wrap.ended_at)
        if wrap.paused_at is not None:
            if interrupted:
                self._end_wrap(agent, now, elapsed)
        elif interrupted:
            self._end_wrap(agent, now, min(elapsed, wrap.wrapup))
        elif elapsed >= max(self.rules.wrapup_grace, wrap.wrapup):
            self._end_wrap(agent, now, wrap.wrapup)

    def _end_wrap(self, agent: _Agent, at: float, wrapup: float) -> None:
        wrap = agent.wrap
        assert wrap is not None
        agent.wrap = None
        self._wrapping.pop(agent, None)
        handle = wrap.talk + wrapup
        agent.handle_n += 1
        agent.handle_sum += handle
        if wrap.queue is not None:
            counts = self._queue(*wrap.queue).counts
            counts.add(_minute(at), HANDLED)
            counts.add(_minute(at), HANDLE, handle)

    def _restate(self, agent: _Agent, at: float) -> None:
        """Called after every change to an agent: its state; its row redrawn, and the queues
        where its place changed."""
        self._dirty.add(agent)
        day = self._day_start(at)
        if agent.day != day:  # a new day: today's figures start from nothing
            if agent.day >= 0:
                agent.handled = agent.handle_n = 0
                agent.handle_sum = agent.working = agent.paused = 0.0
                agent.since = max(agent.since, day * 60.0)
            agent.day = day
        state = self._state_of(agent, at)
        if state != agent.state:
            spent = max(0.0, at - agent.since)
            if agent.state in _WORKING:
                agent.working += spent
            elif agent.state == "paused":
                agent.paused += spent
            agent.state, agent.since = state, at
        places = agent.places
        for name, member in agent.members.items():
            place = _place(agent, member)
            if places.get(name) != place:
                self._move(self._queue(agent.pbx, name), places.get(name), place)
                places[name] = place
        for name in [name for name in places if name not in agent.members]:
            self._move(self._queue(agent.pbx, name), places.pop(name), None)
        counted = _counted(agent)
        if counted != agent.counted:
            _retally(self._tally, self._reasons, agent.counted, counted)
            agent.counted = counted

    def _move(self, queue: _Queue, was: Place, place: Place) -> None:
        """A member's place in ``queue`` changed (the queue is redone at the next snapshot)."""
        _retally(queue.tally, None, was, place)
        if (was is not None and was[1] is not None) or (place is not None and place[1] is not None):
            queue.reasons = None
        queue.places = None

    def _state_of(self, agent: _Agent, now: float) -> str:
        if agent.call is not None:
            return "on_call"
        if agent.ringing:
            return "ringing"
        members = agent.members.values()
        wrap = agent.wrap
        if _wrapup_paused(agent) or (
            wrap is not None
            and now - wrap.ended_at < max(wrap.wrapup, self.rules.wrapup_grace)
            and members
        ):
            return "wrap_up"
        logged_in = [m for m in members if m.status not in _UNAVAILABLE]
        if not logged_in:
            return "logged_out"
        if all(m.paused for m in logged_in):
            return "paused"
        return "available"

    # ---------------------------------------------------------------- views

    def _window_marks(self, now: float) -> list[tuple[str, str, float]]:
        minute = _minute(now)
        day = self._day_start(now)
        if minute != self._minute:
            self._roll(minute, day)
        marks = [(key, label, (minute - span + 1) * 60.0) for key, label, span in _WINDOWS]
        return [*marks, ("today", "today", day * 60.0)]

    def _roll(self, minute: int, day: int) -> None:
        """A new minute: a trend point for the one that ended, windows moved on."""
        for queue in self._queues.values():
            if self._minute >= 0:
                gap = self._gap_in(queue.pbx, self._minute * 60.0, (self._minute + 1) * 60.0)
                if gap:
                    point: tuple[int, int | None, float | None] = (self._minute, None, None)
                else:
                    sl = _service_level(queue.counts.windows["15m"])
                    point = (self._minute, queue.peak, _round(sl))
                queue.trend.append(point)
                m, w, sl = point
                shown = {"at": m * 60.0, "waiting": w, "service_level": sl}
                # the points of queue.trend: the oldest dropped as the deque drops it
                queue.trend_view = [*queue.trend_view[1 - _TREND_MINUTES :], shown]
            queue.peak = len(queue.waiting)
            queue.counts.advance(minute, day)
            queue.view = None
        self._minute = minute

    def _queue_view(
        self, queue: _Queue, now: float, windows: list[tuple[str, str, float]]
    ) -> dict[str, Any]:
        """The queue's last view while nothing changed it, with its longest wait brought up to
        ``now``; redone after a change, or when the wait crosses a threshold."""
        view = queue.view
        if view is None or now >= queue.view_until:
            view, shown = self._build_queue_view(queue, now, windows), queue.shown
            if shown is not None and _same(shown, view, "longest_wait"):  # brought up to now below
                view = shown
            else:
                self._rev += 1
                view["rev"] = self._rev
                queue.shown = view
            queue.view = view
        if queue.waiting:
            view = {**view, "longest_wait": now - min(queue.waiting.values())}
        return view

    def _build_queue_view(
        self, queue: _Queue, now: float, windows: list[tuple[str, str, float]]
    ) -> dict[str, Any]:
        threshold = self._sl_threshold(queue)
        counts, kept = queue.counts, queue.figures
        figures = {}
        for key, _, since in windows:
            gaps = self._gaps_between(queue.pbx, since, now)
            change = counts.changes[key]
            was = kept.get(key)
            if was is not None and was[0] == change and was[1] == threshold and was[2] == gaps:
                figures[key] = was[3]  # the same sums, threshold and gaps: the same figures
            else:
                figures[key] = _figures(counts.row(key), threshold, gaps)
                kept[key] = (change, threshold, gaps, figures[key])
        longest = now - min(queue.waiting.values()) if queue.waiting else None
        if queue.places is None:
            queue.places = self._places(queue)
        agents, reasons = queue.places
        calls = self._calls
        vip = sum(
            1
            for call_id in queue.waiting
            if (call := calls.get((queue.pbx, call_id))) is not None and call.tier == "vip"
        )
        view: dict[str, Any] = {
            "pbx": queue.pbx,
            "name": queue.name,
            "waiting": len(queue.waiting),
            "vip_waiting": vip,
            "longest_wait": longest,
            "oldest_since": min(queue.waiting.values()) if queue.waiting else None,
            "agents": agents,
            "paused_reasons": reasons,
            "callbacks": queue.callbacks,
            "callbacks_overdue": queue.callbacks_overdue,
            "figures": figures,
            "trend": queue.trend_view,
        }
        self._alerts(queue, view, now)
        return view

    def _places(self, queue: _Queue) -> tuple[dict[str, int], dict[str, int]]:
        """The queue's logged-in members by state, and the paused ones by reason (in the
        order of the members)."""
        agents = {k: n for k, n in queue.tally.items() if n or k in _PLACES}
        if queue.reasons is None:
            queue.reasons = {}
            for agent in queue.members.values():
                place = agent.places.get(queue.name)
                if place is not None and place[1] is not None:
                    queue.reasons[place[1]] = queue.reasons.get(place[1], 0) + 1
        return agents, queue.reasons

    def _alerts(self, queue: _Queue, view: dict[str, Any], now: float) -> None:
        rules = self.rules.for_queue(queue.name)
        longest = view["longest_wait"]
        recent = view["figures"]["15m"]
        sl = recent["service_level"]
        counted = recent["offered"] - recent["short_abandoned"]
        found: dict[str, tuple[str, float]] = {}
        if longest is not None and longest > rules.alert_longest_wait:
            since = min(queue.waiting.values()) + rules.alert_longest_wait
            text = f"A caller has waited over {rules.alert_longest_wait:g} s"  # the tile: how long
            found["longest_wait"] = (text, since)
        if sl is not None and counted >= _SL_ALERT_MIN_CALLS and sl < rules.alert_service_level:
            text = f"Service level {sl:.0f}% in 15 min, under {rules.alert_service_level:g}%"
            found["service_level"] = (text, now)
        if rules.alert_waiting is not None and view["waiting"] >= rules.alert_waiting:
            text = f"{view['waiting']} callers waiting, limit {rules.alert_waiting}"
            found["waiting"] = (text, now)
        for kind in list(queue.alerts):
            if kind not in found:
                del queue.alerts[kind]
        for kind, (_, since) in found.items():
            queue.alerts.setdefault(kind, since)
        view["alerts"] = [
            {"kind": kind, "text": text, "since": queue.alerts[kind]}
            for kind, (text, _) in found.items()
        ]
        warn = (longest is not None and longest > rules.alert_longest_wait / 2) or (
            sl is not None and counted >= _SL_ALERT_MIN_CALLS and sl < rules.alert_service_level + 5
        )
        view["level"] = "alert" if found else "warn" if warn else "ok"
        queue.view_until = math.inf
        if queue.waiting:
            oldest = min(queue.waiting.values())
            limit = rules.alert_longest_wait
            crossings = (oldest + limit / 2 + 0.001, oldest + limit + 0.001)  # just past each
            queue.view_until = min((t for t in crossings if t > now), default=math.inf)
        for start, _ in self._gaps.get(queue.pbx, ()):
            if start >= now:  # a gap counts once it has begun: redone just after it did
                queue.view_until = min(queue.view_until, math.nextafter(start, math.inf))

    def _total_view(
        self, queues: list[dict[str, Any]], now: float, windows: list[tuple[str, str, float]]
    ) -> dict[str, Any]:
        counts = [q.counts for q in self._queues.values()]
        rows = {key: [c.windows[key] for c in counts] for key, _, _ in _WINDOWS}
        rows["today"] = [c.today for c in counts]
        totals = {key: _column_sums(rows[key]) for key, _, _ in windows}
        # each call counted against its own queue's threshold: one only when all queues agree
        thresholds = {self._sl_threshold(q) for q in self._queues.values()}
        threshold = next(iter(thresholds)) if len(thresholds) == 1 else None
        figures = {}
        for key, _, since in windows:
            gaps = sorted(
                (g for pbx in self._gaps for g in self._gaps_between(pbx, since, now)),
                key=lambda g: g[0],
            )
            figures[key] = _figures(totals[key], threshold, gaps)
        waits = [q["longest_wait"] for q in queues if q["longest_wait"] is not None]
        agents = {name: self._tally.get(name, 0) for name in _PLACES}
        reasons = dict(self._reasons)
        levels = {q["level"] for q in queues}
        return {
            "pbx": "",
            "name": "all queues",
            "waiting": sum(q["waiting"] for q in queues),
            "vip_waiting": sum(q["vip_waiting"] for q in queues),
            "longest_wait": max(waits) if waits else None,
            "agents": agents,  # each agent once, in its state (not its places in queues)
            "paused_reasons": reasons,
            "callbacks": sum(q["callbacks"] for q in queues),
            "callbacks_overdue": sum(q["callbacks_overdue"] for q in queues),
            "figures": figures,
            "trend": [],
            "level": "alert" if "alert" in levels else "warn" if "warn" in levels else "ok",
            "alerts": [],
        }

    def _agent_rows(self, now: float) -> list[dict[str, Any]]:
        """Every agent's row: redone when the agent changed, else every ``ROW_REFRESH`` s
        (only the availability part of the score moves with the clock alone); kept otherwise."""
        agents = self._sorted_agents()
        if len(self._rows) != len(agents):  # new agents (dirty since made): places moved
            self._rows = [agent.row for agent in agents]
        redo, times = self._dirty, self._row_times
        while times and now - times[0][0] >= ROW_REFRESH:
            at, agent = times.popleft()
            if agent.row_at == at and self._moves_with_clock(agent):  # not redone since
                redo.add(agent)  # (the others would come out the same: their row stands)
        for agent in sorted(redo, key=lambda a: a.index):
            self._rows[agent.index] = self._agent_row(agent, now)
        redo.clear()
        return cast(list[dict[str, Any]], self._rows.copy())  # every row is made by now

    def _agent_row(self, agent: _Agent, now: float) -> dict[str, Any]:
        row, shown = self._agent_view(agent, now), agent.row
        if shown is not None and _same(shown, row):
            row = shown
        else:
            self._rev += 1
            row["rev"] = self._rev
            agent.row = row
        agent.row_at = now
        self._row_times.append((now, agent))
        return row

    def _moves_with_clock(self, agent: _Agent) -> bool:
        """Whether the clock alone moves the agent's score from what its row says: the
        availability share while a state lasts, unless it is 100 % (never paused) or 0 %."""
        if self.rules.weights.availability <= 0:
            return False
        spent = max(0.0, agent.row_at - agent.since)
        if agent.state in _WORKING:
            return agent.paused > 0 or agent.working + spent <= 0
        if agent.state == "paused":
            return agent.working > 0 or agent.paused + spent <= 0
        return False

    def _agent_view(self, agent: _Agent, now: float) -> dict[str, Any]:
        call = None
        if agent.call is not None:
            call_id, queue, caller, since = agent.call
            known = self._calls.get((agent.pbx, call_id))
            call = {
                "pbx": agent.pbx,
                "call_id": call_id,
                "queue": queue,
                "caller": caller,
                "tier": known.tier if known is not None else None,
                "since": since,
            }
        paused = [m.reason for m in agent.members.values() if m.paused and m.reason]
        quality = agent.quality
        return {
            "id": agent.id,
            "name": agent.name,
            "pbx": agent.pbx,
            "state": agent.state,
            "since": agent.since,
            "reason": paused[0] if agent.state in ("paused", "wrap_up") and paused else None,
            # held by the service's wrap-up pause (cti.wrapup), whatever its state: releasable
            "wrapup_paused": _wrapup_paused(agent),
            "outcomes_missing": agent.outcomes_missing,
            "queues": sorted(agent.members),
            "call": call,
            "handled_today": agent.handled,
            "aht_today": agent.handle_sum / agent.handle_n if agent.handle_n else None,
            "fcr": quality.fcr,
            "csat": quality.csat,
            "supervisor_rating": quality.rating,
            "followups": agent.followups[0],
            "followups_overdue": agent.followups[1],
            "score": self._score(agent, now),
        }

    def _score(self, agent: _Agent, now: float) -> float | None:
        """Weighted mean of the parts that are known, each on 0..100."""
        spent = max(0.0, now - agent.since)
        working = agent.working + (spent if agent.state in _WORKING else 0.0)
        paused = agent.paused + (spent if agent.state == "paused" else 0.0)
        q = agent.quality
        weights = self.rules.weights
        parts = [
            (weights.availability, _share(working, working + paused)),
            (weights.customer_rating, None if q.csat is None else (q.csat - 1) / 4 * 100),
            (weights.supervisor_rating, None if q.rating is None else (q.rating - 1) / 4 * 100),
            (weights.resolution, None if q.fcr is None else q.fcr * 100),
        ]
        known = [(w, v) for w, v in parts if v is not None and w > 0]
        total = sum(w for w, _ in known)
        if not known or total <= 0:
            return None
        return round(sum(w * v for w, v in known) / total, 1)

    # ---------------------------------------------------------------- helpers

    def _clock(self, at: float | None) -> float:
        """Time only moves forward (PBX stamps and the caller's ``now`` may differ a little)."""
        if at is not None and at > self._now:
            self._now = at
        return self._now

    def _day_start(self, at: float) -> int:
        """The minute today began, in the board's time zone (worked out once a minute)."""
        minute = _minute(at)
        if minute != self._day_for[0]:
            local = datetime.fromtimestamp(minute * 60.0, self.rules.timezone)
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            self._day_for = (minute, math.floor(midnight.timestamp() / 60))
        return self._day_for[1]

    def _sl_threshold(self, queue: _Queue) -> float:
        configured = self.rules.for_queue(queue.name).service_level
        if configured is not None:
            return configured
        return queue.asterisk_sl if queue.asterisk_sl is not None else 20.0

    def _gaps_between(self, pbx: str, since: float, now: float) -> list[Gap]:
        return [
            (start, end)
            for start, end in self._gaps.get(pbx, [])
            if start < now and (end is None or end > since)
        ]

    def _gap_in(self, pbx: str, start: float, end: float) -> bool:
        return bool(self._gaps_between(pbx, start, end))

    def _queue(self, pbx: str, name: str, *, changed: bool = True) -> _Queue:
        """The queue, to be changed: its view is redone at the next snapshot (unless not
        ``changed``: for what redoes it only if needed)."""
        queue = self._queues.get((pbx, name))
        if queue is not None:
            if changed:
                queue.view = None
        else:
            queue = self._queues[(pbx, name)] = _Queue(pbx, name)
            if self._minute >= 0:
                queue.counts.advance(self._minute, self._day_start(self._minute * 60.0))
        return queue

    def _agent(self, pbx: str, agent_id: str) -> _Agent:
        agent = self._agents.get((pbx, agent_id))
        if agent is None:
            name = self._names.get(agent_id, agent_id)
            agent = self._agents[(pbx, agent_id)] = _Agent(pbx, agent_id, name, since=self._now)
            self._dirty.add(agent)
        return agent

    def _call(self, key: tuple[str, str]) -> _Call:
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _Call("")
        return call

    def _sorted_queues(self) -> Iterable[_Queue]:
        if len(self._queue_order) != len(self._queues):  # queues are never removed
            self._queue_order = [self._queues[k] for k in sorted(self._queues)]
        return self._queue_order

    def _sorted_agents(self) -> list[_Agent]:
        if len(self._agent_order) != len(self._agents):  # agents are never removed
            order = sorted(self._agents, key=lambda k: (k[1], k[0]))
            self._agent_order = [self._agents[k] for k in order]
            for index, agent in enumerate(self._agent_order):
                agent.index = index
        return self._agent_order


_MISSING = object()


def _same(shown: dict[str, Any], view: dict[str, Any], *ignored: str) -> bool:
    """Whether ``view`` says what ``shown`` (the last one numbered, with its ``rev``) said."""
    if len(shown) != len(view) + 1:
        return False
    return all(k in ignored or shown.get(k, _MISSING) == v for k, v in view.items())


def _place(agent: _Agent, member: MemberUpdated) -> Place:
    """Where the member counts in the queue's agents (and the reason, when paused)."""
    if member.status in _UNAVAILABLE:
        return None
    state = agent.state
    if state in ("available", "paused"):
        state = "paused" if member.paused else "available"
    return state, (member.reason or "no reason given") if state == "paused" else None


def _counted(agent: _Agent) -> Place:
    """Where the agent counts in all queues' total: nowhere unless logged in to some queue,
    else once, in its own state (the grid's), with its pause reason when paused."""
    reason = None
    logged_in = False
    for place in agent.places.values():
        if place is not None:
            logged_in = True
            if place[1] is not None:
                reason = place[1]
                break
    if not logged_in:
        return None
    return agent.state, reason if agent.state == "paused" else None


def _retally(tally: dict[str, int], reasons: dict[str, int] | None, was: Place, now: Place) -> None:
    """Count a member or agent out of the place it ``was`` and into the one it is in ``now``
    (and, given ``reasons``, out of and into those by pause reason)."""
    if was is not None:
        tally["logged_in"] -= 1
        tally[was[0]] -= 1
        if reasons is not None and was[1] is not None:
            reasons[was[1]] -= 1
            if not reasons[was[1]]:
                del reasons[was[1]]
    if now is not None:
        tally["logged_in"] += 1
        tally[now[0]] = tally.get(now[0], 0) + 1
        if reasons is not None and now[1] is not None:
            reasons[now[1]] = reasons.get(now[1], 0) + 1


def _wrapup_paused(agent: _Agent) -> bool:
    return any(m.paused and m.reason == WRAPUP_REASON for m in agent.members.values())


def _minute(at: float) -> int:
    return math.floor(at / 60)


def _column_sums(rows: list[list[float]]) -> list[float]:
    """Column by column, row after row from 0.0: the same sums as adding row by row."""
    if not rows:
        return [0.0] * _WIDTH
    return [reduce(operator.add, column, 0.0) for column in zip(*rows, strict=True)]


def _add_into(total: list[float], row: list[float]) -> None:
    for i in range(_WIDTH):
        total[i] += row[i]


def _sub_from(total: list[float], row: list[float]) -> None:
    for i in range(_WIDTH):
        total[i] -= row[i]


def _share(part: float, whole: float) -> float | None:
    return part / whole * 100 if whole > 0 else None


def _service_level(row: list[float]) -> float | None:
    return _share(row[IN_SL], row[OFFERED] - row[SHORT])


def _figures(row: list[float], threshold: float | None, gaps: list[Gap]) -> dict[str, Any]:
    counted = row[OFFERED] - row[SHORT]
    figures: dict[str, Any] = {
        "offered": round(row[OFFERED]),
        "answered": round(row[ANSWERED]),
        "answered_in_sl": round(row[IN_SL]),
        "abandoned": round(row[ABANDONED]),
        "short_abandoned": round(row[SHORT]),
        "other_exits": round(row[OTHER]),
        "service_level": _share(row[IN_SL], counted),
        "abandon_rate": _share(row[ABANDONED], counted),
        "asa": row[HOLD] / row[ANSWERED] if row[ANSWERED] else None,
        "aht": row[HANDLE] / row[HANDLED] if row[HANDLED] else None,
        "handled": round(row[HANDLED]),
        "gaps": gaps,
    }
    if threshold is not None:
        figures["sl_threshold"] = threshold
    return figures


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
