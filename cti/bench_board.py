"""``cti bench`` wallboard figures: the cost of one full recompute at 200 queues / 2,000 agents.

A :class:`cti.board.Board` is filled as a big center's day would leave it, through the same
events the service feeds it: 2,000 agents, each a member of two of 200 queues; a day of
traffic (``calls`` answered and abandoned queue calls spread over the ten hours before
``now``, each agent's calls ending with a wrap-up pause); then, live, a caller waiting in every
queue, 1,200 agents on a call, 200 ringing and 100 paused. One recompute is
:meth:`~cti.board.Board.snapshot` (every queue's live state, figures over three windows,
trend and alerts; every agent's row) plus its JSON encoding, which the page's push sends.
Between two recomputes 50 events arrive (a busy second's worth), so nothing is cached stale.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass

from cti.bench import Figure
from cti.board import Board
from cti.events import (
    AgentRinging,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallQueued,
    CallRecord,
    FeedStatus,
    MemberUpdated,
)
from cti.settings import BoardRules

QUEUES = 200
AGENTS = 2_000
CALLS = 60_000
SAMPLES = 200
PBX = "bench"


@dataclass
class BoardFigure(Figure):
    """Recomputes timed over ``samples`` runs; ``json_ms`` is the encoding's share of p50."""

    queues: int = 0
    agents: int = 0
    json_ms: float = 0.0
    size_kb: float = 0.0
    unit: str = "recomputes/s"

    def line(self) -> str:
        return (
            f"{super().line()}\n{'':<26} {self.queues} queues, {self.agents:,} agents; "
            f"JSON encoding {self.json_ms:.2f} ms of it, {self.size_kb:,.0f} kB per push"
        )


def _record(call_id: str, agent: str, talk: float, ended: float) -> CallRecord:
    return CallRecord(
        call_id, PBX, "+8613800000000", "", "", (), (), agent, (agent,), (), None,
        None, None, None, ended, None, talk, (),
    )  # fmt: skip


def _member(
    at: float, queue: str, agent: str, *, paused: bool = False, reason: str = ""
) -> MemberUpdated:
    interface = f"PJSIP/{agent}"
    return MemberUpdated(PBX, at, queue, agent, agent, interface, 1, paused, reason, False, 0.0)


def filled_board(now: float, queues: int, agents: int, calls: int, seed: int = 1) -> Board:
    """A board as a ``queues``/``agents`` center's day leaves it at ``now``."""
    rng = random.Random(seed)
    board = Board(BoardRules())
    board.observe(FeedStatus(PBX, now - 36_000, True))
    names = [f"q{n:03d}" for n in range(queues)]
    people = [f"agent{n:04d}" for n in range(agents)]
    home = {a: (names[i % queues], names[(i * 7 + 1) % queues]) for i, a in enumerate(people)}
    for agent in people:
        for queue in home[agent]:
            board.observe(_member(now - 36_000, queue, agent))
    moments = sorted(now - rng.uniform(60, 36_000) for _ in range(calls))
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
            continue
        talk = rng.uniform(30, 400)
        board.publish(CallAnswered(PBX, call, at, agent, queue, hold, 3.0))
        board.publish(CallEnded(PBX, call, at + talk, _record(call, agent, talk, at + talk)))
        for q in home[agent]:
            board.observe(_member(at + talk + 1, q, agent, paused=True, reason="wrap-up"))
        for q in home[agent]:
            board.observe(_member(at + talk + 40, q, agent))
    _live(board, now, names, people, home)
    return board


def _live(
    board: Board,
    now: float,
    names: list[str],
    people: list[str],
    home: dict[str, tuple[str, str]],
) -> None:
    for n, queue in enumerate(names):
        board.publish(CallQueued(PBX, f"wait-{n}", now - 30 - n % 90, queue, 1, "+8613", ""))
    for n, agent in enumerate(people[:1_200]):
        call = f"live-{n}"
        queue = home[agent][0]
        board.publish(CallQueued(PBX, call, now - 200, queue, 2, "+8613", ""))
        board.publish(CallAnswered(PBX, call, now - 190, agent, queue, 10.0, 2.0))
    for n, agent in enumerate(people[1_200:1_400]):
        args = (agent, agent, f"PJSIP/{agent}", home[agent][0], "+8613", "")
        board.publish(AgentRinging(PBX, f"ring-{n}", now - 5, *args))
    for agent in people[1_400:1_500]:
        for queue in home[agent]:
            board.observe(_member(now - 600, queue, agent, paused=True, reason="lunch"))


def measure_board(
    queues: int = QUEUES, agents: int = AGENTS, calls: int = CALLS, samples: int = SAMPLES
) -> BoardFigure:
    now = time.time()
    board = filled_board(now, queues, agents, calls)
    rng = random.Random(2)
    timings: list[float] = []
    encodings: list[float] = []
    size = 0
    began = time.perf_counter()
    for n in range(samples):
        for k in range(50):  # a busy second: queue events between two recomputes
            queue = f"q{rng.randrange(queues):03d}"
            board.publish(CallQueued(PBX, f"s{n}-{k}", now + n, queue, 1, "+8613", ""))
        started = time.perf_counter()
        snap = board.snapshot(now + n)
        built = time.perf_counter()
        text = json.dumps(snap, separators=(",", ":"))
        done = time.perf_counter()
        timings.append((done - started) * 1000)
        encodings.append((done - built) * 1000)
        size = len(text)
    elapsed = time.perf_counter() - began
    ordered = sorted(timings)
    return BoardFigure(
        f"wallboard {queues} q / {agents:,} agents",
        samples,
        elapsed,
        statistics.median(ordered),
        ordered[int(len(ordered) * 0.99) - 1],
        queues=queues,
        agents=agents,
        json_ms=statistics.median(encodings),
        size_kb=size / 1000,
    )


def run_board() -> list[Figure]:
    print(
        f"wallboard: one recompute (snapshot + JSON) with {QUEUES} queues and {AGENTS:,} "
        f"agents after a day of {CALLS:,} queue calls; 50 events between recomputes"
    )
    figure = measure_board()
    print(figure.line())
    return [figure]
