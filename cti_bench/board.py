"""``cti bench`` wallboard figures: what one push costs at 200 queues / 2,000 agents.

A :class:`cti.board.Board` (its day in UTC) is filled as a big center's day would leave it at
``NOW``, a fixed evening, through the same events the service feeds it: 2,000 agents, each a
member of two of 200 queues; a day of traffic (``calls`` answered and abandoned queue calls
over the ten hours before, all over by ``NOW``, each agent's calls ending with a wrap-up
pause); then, live, a caller waiting in every queue, 1,200 agents on a call, 200 ringing and
100 paused.

Then the center goes on working (:class:`_Center`: calls queue, ring a free agent, are
answered and end, the agent pauses for wrap-up and comes back; with nobody free a caller waits
and hangs up) and pushes are timed as :class:`screenpop.wallboard.WallboardFeed` makes them,
through the feed's own code: every 0.5 s of board time (the feed's interval), after about 25
events (50 a second: a busy center of this size), one push is the board's
:meth:`~cti.board.Board.snapshot`, the feed's view of it (each current call's customer; no
lookups here, so none found), the delta (only queue views and agent rows with a new ``rev``)
and its JSON. A minute rolls every 120 pushes, as it does live. A page that connects gets the
whole board instead; its encoding is timed apart. The collector runs as in the service.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from cti.board import Board
from cti.events import (
    AgentRinging,
    AgentRingStopped,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallQueued,
    CallRecord,
    DomainEvent,
    FeedStatus,
    MemberUpdated,
)
from cti.settings import BoardRules
from cti_bench.run import Figure
from screenpop.pipeline import PopService
from screenpop.wallboard import WallboardFeed

QUEUES = 200
AGENTS = 2_000
CALLS = 60_000
SAMPLES = 1_200  # ten minutes of pushes: ten minute rolls
INTERVAL = 0.5  # seconds of board time between two recomputes (WallboardFeed's interval)
EVENTS = 25  # between two recomputes: 50 a second, a busy center of this size
PBX = "bench"
NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC).timestamp()  # a whole minute, late in the day


@dataclass
class BoardFigure(Figure):
    """Pushes timed over ``events`` recomputes; ``seconds`` is the time spent in them (not in
    feeding the events between them). ``p50_ms``/``p99_ms``: the whole push."""

    queues: int = 0
    agents: int = 0
    events_per_push: float = 0.0  # mean events fed between two pushes
    snapshot_p50: float = 0.0  # Board.snapshot
    snapshot_p99: float = 0.0
    delta_p50: float = 0.0  # the rest: the feed's view (customers), the delta and its JSON
    delta_p99: float = 0.0
    max_ms: float = 0.0
    rolls: int = 0  # pushes whose snapshot rolled a minute
    roll_max_ms: float = 0.0
    delta_kb: float = 0.0  # median
    delta_kb_max: float = 0.0
    full_collections: int = 0  # the collector's full (generation 2) runs inside the pushes
    full_ms: float = 0.0  # median pause of one of them
    p99_without_gc: float = 0.0  # the pushes' p99 with every collector pause taken out
    whole_ms: float = 0.0  # JSON of the whole board, as a page that connects gets it
    whole_kb: float = 0.0
    unit: str = "pushes/s"

    def line(self) -> str:
        pad = " " * 27
        return (
            f"{super().line()}  max {self.max_ms:.3f} ms\n"
            f"{pad}{self.queues} queues, {self.agents:,} agents,"
            f" {self.events_per_push:.1f} events between pushes\n"
            f"{pad}snapshot p50 {self.snapshot_p50:.3f} ms  p99 {self.snapshot_p99:.3f} ms\n"
            f"{pad}delta build + JSON p50 {self.delta_p50:.3f} ms  p99 {self.delta_p99:.3f} ms;"
            f" {self.delta_kb:,.1f} kB a push (median), {self.delta_kb_max:,.0f} kB at most\n"
            f"{pad}{self.rolls} minute rolls among them, the slowest {self.roll_max_ms:.3f} ms\n"
            f"{pad}{self.full_collections} full collections inside pushes"
            f" ({self.full_ms:.1f} ms each, median); p99 without the collector's pauses"
            f" {self.p99_without_gc:.3f} ms\n"
            f"{pad}whole board for a page that connects: JSON {self.whole_ms:.1f} ms,"
            f" {self.whole_kb:,.0f} kB"
        )


def _record(call_id: str, agent: str | None, talk: float | None, ended: float) -> CallRecord:
    handled = (agent,) if agent is not None else ()
    return CallRecord(
        call_id, PBX, "+8613800000000", "", "", (), (), agent, handled, (), None,
        None, None, None, ended, None, talk, (),
    )  # fmt: skip


def _hang_up(call: str, at: float) -> CallEnded:
    """The end of a call nobody answered (the call model ends every call)."""
    return CallEnded(PBX, call, at, _record(call, None, None, at))


def _member(
    at: float, queue: str, agent: str, *, paused: bool = False, reason: str = ""
) -> MemberUpdated:
    interface = f"PJSIP/{agent}"
    return MemberUpdated(PBX, at, queue, agent, agent, interface, 1, paused, reason, False, 0.0)


Event = DomainEvent | MemberUpdated


@dataclass
class _Center:
    """The center after the fill, going on working: who is free, and what happens when."""

    board: Board
    names: list[str]  # the queues
    home: dict[str, tuple[str, str]]  # agent -> its two queues
    rng: random.Random
    free: list[str] = field(default_factory=list)
    due: list[tuple[float, int, Event, str | None]] = field(default_factory=list)
    order: itertools.count[int] = field(default_factory=itertools.count)
    calls: itertools.count[int] = field(default_factory=itertools.count)

    def later(self, at: float, event: Event, frees: str | None = None) -> None:
        """``event`` at ``at``; ``frees``: the agent is free again after it."""
        heapq.heappush(self.due, (at, next(self.order), event, frees))

    def step(self, at: float, events: int) -> int:
        """What happened up to ``at``, topped up to ``events`` with callers arriving then."""
        sent = 0
        while self.due and self.due[0][0] <= at:
            _, _, event, frees = heapq.heappop(self.due)
            self._send(event)
            sent += 1
            if frees is not None:
                self.free.append(frees)
        while sent < events:
            self._arrive(at)
            sent += 1
        return sent

    def wrap_up(self, agent: str, ended: float) -> None:
        """The agent pauses for wrap-up after a call, and is free 30 s later."""
        first, second = self.home[agent]
        for queue in (first, second):
            self.later(ended + 1, _member(ended + 1, queue, agent, paused=True, reason="wrap-up"))
        self.later(ended + 31, _member(ended + 31, first, agent))
        self.later(ended + 31, _member(ended + 31, second, agent), frees=agent)

    def _send(self, event: Event) -> None:
        if isinstance(event, MemberUpdated):
            self.board.observe(event)
        else:
            self.board.publish(event)

    def _arrive(self, at: float) -> None:
        rng = self.rng
        call = f"call-{next(self.calls)}"
        if not self.free:  # nobody free: the caller waits, then hangs up
            queue = rng.choice(self.names)
            self._send(CallQueued(PBX, call, at, queue, 1, "+8613", ""))
            hold = rng.uniform(10, 60)
            self.later(at + hold, CallAbandoned(PBX, call, at + hold, queue, "abandoned", hold, 1))
            self.later(at + hold, _hang_up(call, at + hold))
            return
        agent = self.free.pop(rng.randrange(len(self.free)))
        queue = self.home[agent][rng.randrange(2)]
        hold, talk = rng.uniform(3, 40), rng.uniform(30, 300)
        answered, ended = at + hold, at + hold + talk
        self._send(CallQueued(PBX, call, at, queue, 1, "+8613", ""))
        args = (agent, agent, f"PJSIP/{agent}", queue, "+8613", "")
        self.later(answered - 2, AgentRinging(PBX, call, answered - 2, *args))
        self.later(answered, CallAnswered(PBX, call, answered, agent, queue, hold, 2.0))
        self.later(ended, CallEnded(PBX, call, ended, _record(call, agent, talk, ended)))
        self.wrap_up(agent, ended)


def filled_board(now: float, queues: int, agents: int, calls: int, seed: int = 1) -> Board:
    """A board as a ``queues``/``agents`` center's day leaves it at ``now``."""
    return _filled(now, queues, agents, calls, seed).board


def _filled(now: float, queues: int, agents: int, calls: int, seed: int) -> _Center:
    rng = random.Random(seed)
    board = Board(BoardRules(timezone=UTC))
    board.observe(FeedStatus(PBX, now - 36_000, True))
    names = [f"q{n:03d}" for n in range(queues)]
    people = [f"agent{n:04d}" for n in range(agents)]
    home = {a: (names[i % queues], names[(i * 7 + 1) % queues]) for i, a in enumerate(people)}
    for agent in people:
        for queue in home[agent]:
            board.observe(_member(now - 36_000, queue, agent))
    moments = sorted(now - rng.uniform(500, 36_000) for _ in range(calls))  # all over by now
    for n, at in enumerate(moments):
        if n % 500 == 0:
            board.snapshot(at)  # minutes roll as the day goes by
        agent = people[n % agents]
        queue = home[agent][n % 2]
        call = f"day-{n}"
        hold = rng.uniform(0, 90)
        board.publish(CallQueued(PBX, call, at - hold, queue, 1, "+861380000", ""))
        if rng.random() < 0.1:
            board.publish(CallAbandoned(PBX, call, at, queue, "abandoned", hold, 1))
            board.publish(_hang_up(call, at))
            continue
        talk = rng.uniform(30, 400)
        board.publish(CallAnswered(PBX, call, at, agent, queue, hold, 3.0))
        board.publish(CallEnded(PBX, call, at + talk, _record(call, agent, talk, at + talk)))
        for q in home[agent]:
            board.observe(_member(at + talk + 1, q, agent, paused=True, reason="wrap-up"))
        for q in home[agent]:
            board.observe(_member(at + talk + 40, q, agent))
    center = _Center(board, names, home, random.Random(seed + 1))
    _live(center, now, people)
    return center


def _live(center: _Center, now: float, people: list[str]) -> None:
    """A caller waiting in every queue, 1,200 agents on a call, 200 ringing, 100 paused, the
    rest free; and when each of these ends."""
    board, home, rng = center.board, center.home, center.rng
    for n, queue in enumerate(center.names):
        call, joined = f"wait-{n}", now - 30 - n % 90
        board.publish(CallQueued(PBX, call, joined, queue, 1, "+8613", ""))
        left = now + rng.uniform(0, 60)
        center.later(left, CallAbandoned(PBX, call, left, queue, "abandoned", left - joined, 1))
        center.later(left, _hang_up(call, left))
    for n, agent in enumerate(people[:1_200]):
        call = f"live-{n}"
        queue = home[agent][0]
        board.publish(CallQueued(PBX, call, now - 200, queue, 2, "+8613", ""))
        board.publish(CallAnswered(PBX, call, now - 190, agent, queue, 10.0, 2.0))
        ended = now + rng.uniform(0, 200)
        talk = ended - (now - 190)
        center.later(ended, CallEnded(PBX, call, ended, _record(call, agent, talk, ended)))
        center.wrap_up(agent, ended)
    for n, agent in enumerate(people[1_200:1_400]):
        call = f"ring-{n}"
        args = (agent, agent, f"PJSIP/{agent}", home[agent][0], "+8613", "")
        board.publish(AgentRinging(PBX, call, now - 5, *args))
        stopped = now + rng.uniform(0, 15)
        stop = AgentRingStopped(PBX, call, stopped, agent, home[agent][0], "ring_no_answer")
        center.later(stopped, stop, frees=agent)
    for agent in people[1_400:1_500]:
        first, second = home[agent]
        for queue in (first, second):
            board.observe(_member(now - 600, queue, agent, paused=True, reason="lunch"))
        back = now + rng.uniform(0, 600)
        center.later(back, _member(back, first, agent))
        center.later(back, _member(back, second, agent), frees=agent)
    center.free.extend(people[1_500:])


class _NoLookups:
    """The pop service as the feed sees it, with no customer found for any call."""

    def lookup_for(self, pbx: str, call_id: str) -> None:
        return None


class _Timed:
    """The board as the feed sees it, timing each snapshot."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.last = 0.0  # seconds the last snapshot took

    @property
    def version(self) -> int:
        return self.board.version

    @version.setter
    def version(self, value: int) -> None:
        self.board.version = value

    def snapshot(self, now: float) -> dict[str, Any]:
        started = time.perf_counter()
        snap = self.board.snapshot(now)
        self.last = time.perf_counter() - started
        return snap


class _Collections:
    """The collector's pauses while ``on`` (a ``gc.callbacks`` hook)."""

    def __init__(self) -> None:
        self.on = False
        self.ms = 0.0  # pauses since last reset
        self.full: list[float] = []  # each full collection's pause
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = (time.perf_counter() - self._began) * 1000
        self.ms += took
        if info["generation"] == 2:
            self.full.append(took)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def measure_board(
    queues: int = QUEUES,
    agents: int = AGENTS,
    calls: int = CALLS,
    samples: int = SAMPLES,
    events: int = EVENTS,
) -> BoardFigure:
    """``samples`` pushes, one every ``INTERVAL`` s of board time after ``events`` events.

    As the service does once it listens (:func:`cti_app.stack.freeze_startup_heap`), what exists
    before the board (modules, the rest of the process) is out of the collector's reach; the
    board's day is not, as in the service. Collection is left on: a push pays what it pays."""
    gc.collect()
    gc.freeze()
    collections = _Collections()
    gc.callbacks.append(collections)
    try:
        return _measure(queues, agents, calls, samples, events, collections)
    finally:
        gc.callbacks.remove(collections)
        gc.unfreeze()


def _measure(
    queues: int, agents: int, calls: int, samples: int, events: int, collections: _Collections
) -> BoardFigure:
    center = _filled(NOW, queues, agents, calls, seed=1)
    board = _Timed(center.board)
    clock = [NOW]
    feed = WallboardFeed(board, cast(PopService, _NoLookups()), clock=lambda: clock[0])
    wholes = [feed.message()]  # a page connects: the whole board
    feed.delta_message(feed.view())  # the first push after it: every view and row is new
    totals: list[float] = []
    snapshots: list[float] = []
    deltas: list[float] = []
    sizes: list[int] = []
    rolls: list[float] = []
    without_gc: list[float] = []
    fed = 0
    for n in range(1, samples + 1):
        at = NOW + n * INTERVAL
        fed += center.step(at, events)
        clock[0] = at
        collections.ms, collections.on = 0.0, True
        started = time.perf_counter()
        text = feed.delta_message(feed.view())  # what WallboardFeed.run sends
        took = (time.perf_counter() - started) * 1000
        collections.on = False
        totals.append(took)
        without_gc.append(took - collections.ms)
        snapshots.append(board.last * 1000)
        deltas.append(took - board.last * 1000)
        sizes.append(len(text.encode()))
        if math.floor(at / 60) != math.floor((at - INTERVAL) / 60):
            rolls.append(took)
    whole_ms = []
    view = feed.view()
    for _ in range(3):
        started = time.perf_counter()
        wholes.append(feed.message(view))  # what a page that connects gets first
        whole_ms.append((time.perf_counter() - started) * 1000)
    return BoardFigure(
        f"wallboard {queues} q / {agents:,} agents",
        samples,
        sum(totals) / 1000,
        statistics.median(totals),
        _p99(totals),
        queues=queues,
        agents=agents,
        events_per_push=fed / samples,
        snapshot_p50=statistics.median(snapshots),
        snapshot_p99=_p99(snapshots),
        delta_p50=statistics.median(deltas),
        delta_p99=_p99(deltas),
        max_ms=max(totals),
        rolls=len(rolls),
        roll_max_ms=max(rolls, default=0.0),
        delta_kb=statistics.median(sizes) / 1000,
        delta_kb_max=max(sizes) / 1000,
        full_collections=len(collections.full),
        full_ms=statistics.median(collections.full) if collections.full else 0.0,
        p99_without_gc=_p99(without_gc),
        whole_ms=statistics.median(whole_ms),
        whole_kb=len(wholes[-1].encode()) / 1000,
    )


def run_board() -> list[Figure]:
    print(
        f"wallboard: one push (snapshot + delta + JSON) every {INTERVAL:g} s of board time, "
        f"{QUEUES} queues and {AGENTS:,} agents after a day of {CALLS:,} queue calls; "
        f"{EVENTS} events between pushes"
    )
    figure = measure_board()
    print(figure.line())
    return [figure]
