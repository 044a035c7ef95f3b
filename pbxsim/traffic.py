"""Call traffic for the simulator: played live on an :class:`AmiServer`, or rendered into one
AMI byte stream for benchmarks.

Both use one planner on a virtual clock: calls start at exponential intervals, each gets a
scenario drawn from the mix, a caller (number formats from E.164 to national, names in many
scripts, some anonymous), realistic timings and members that are free at that moment (a
member stays busy until the call that used it ends, so nobody takes two calls at once).
When a queue has nobody free, the call becomes an abandon or a timeout instead.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from cti.codec import encode
from cti.waits import wait_set
from pbxsim.scenarios import SCENARIOS, Agent, Pbx, TimedEvent, Timings, with_timestamp
from pbxsim.server import AmiServer

DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {
        "answered": 0.44,
        "abandoned": 0.12,
        "ring_no_answer": 0.1,
        "ring_all": 0.1,
        "blind_transfer": 0.05,
        "blind_transfer_to_queue": 0.03,
        "attended_transfer": 0.05,
        "timeout": 0.02,
        "leave_empty": 0.02,
        "exit_key": 0.03,
        "redirect": 0.02,
        "withdraw": 0.02,
    }
)
NAMES = (
    "张伟",
    "李娜",
    "王芳",
    "José Núñez",
    "O'Brien",
    "Zoë Ashworth",
    "Jürgen Groß",
    'Dwayne "Rock" Jones',
    "佐藤 健",
    "Émilie Dubois",
    "Анна Иванова",
    "محمد علي",
    "Ana 😀",
    "Alice Customer",
    "Bob Buyer",
)


def random_caller(rng: random.Random) -> tuple[str | None, str | None]:
    """A caller as Asterisk would see it: several number formats, names in many scripts."""
    if rng.random() < 0.05:
        return None, None  # anonymous: CallerIDNum/CallerIDName <unknown>
    digits = "".join(rng.choice("0123456789") for _ in range(8))
    number = rng.choice(
        (
            f"+86138{digits}",
            f"0086138{digits}",
            f"138{digits}",
            f"0207946{digits[:4]}",
            f"+1555010{digits[:4]}",
            f"+4930{digits}",
        )
    )
    name = None if rng.random() < 0.05 else rng.choice(NAMES)
    return number, name


def random_timings(rng: random.Random) -> Timings:
    return Timings(
        ivr=rng.uniform(0.3, 3.0),
        wait=rng.uniform(0.0, 8.0),
        ring=rng.choice((0.0, rng.uniform(1.0, 6.0))),
        talk=rng.uniform(5.0, 40.0),
        ring_timeout=15.0,
        retry=1.0,
        patience=rng.uniform(3.0, 25.0),
        queue_timeout=rng.choice((30.0, 60.0)),
        consult=rng.uniform(2.0, 10.0),
        after_exit=rng.uniform(1.0, 4.0),
    )


class _Planner:
    """Chooses and builds the next call; pure apart from the state it keeps."""

    def __init__(
        self,
        pbx: Pbx,
        rng: random.Random,
        mix: Mapping[str, float] | None,
        paused: Callable[[str, Agent], bool] = lambda _queue, _agent: False,
    ) -> None:
        mix = DEFAULT_MIX if mix is None else mix
        unknown = set(mix) - set(SCENARIOS)
        if unknown or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
            raise ValueError(f"bad traffic mix {dict(mix)!r} (unknown: {sorted(unknown)})")
        self.pbx = pbx
        self.rng = rng
        self.kinds = list(mix)
        self.weights = [mix[k] for k in self.kinds]
        self.busy_until = {a.name: 0.0 for a in pbx.agents}
        self.paused = paused  # Asterisk never rings a member paused in the queue
        self.in_queue: dict[str, list[tuple[float, float]]] = {q: [] for q in pbx.queues}

    def free(self, queue: str, at: float, exclude: tuple[Agent, ...] = ()) -> list[Agent]:
        members = self.pbx.agents_of(queue)
        if not members:
            return []
        # rotate like rrmemory so that the load spreads over the members
        rotated = self.pbx.next_agents(queue, len(members))
        return [
            a
            for a in rotated
            if self.busy_until[a.name] <= at and a not in exclude and not self.paused(queue, a)
        ]

    def position(self, queue: str, at: float) -> int:
        spans = [s for s in self.in_queue[queue] if s[1] > at - 120.0]
        self.in_queue[queue] = spans
        return 1 + sum(1 for join, leave in spans if join <= at < leave)

    def pick_agents(self, kind: str, queue: str, start: float) -> list[Agent] | None:
        """Members for this call; None when there are not enough free ones."""
        free = self.free(queue, start)
        if kind == "ring_all":
            return free or None
        if kind == "blind_transfer_to_queue":
            target = self.free(list(self.pbx.queues)[-1], start, exclude=tuple(free[:1]))
            return free[:1] + target[:1] if free and target else None
        if kind in ("blind_transfer", "attended_transfer"):
            others = [
                a for a in self.pbx.agents if a not in free[:1] and self.busy_until[a.name] <= start
            ]
            return free[:1] + others[:1] if free and others else None
        if kind == "ring_no_answer":
            return free[:2] if len(free) >= 2 else None
        if kind == "answered":
            return free[:1] or None
        if kind == "abandoned" and self.rng.random() < 0.4:
            return free[:1]
        return []  # the queue exits: nobody rings

    def next_call(self, start: float) -> list[TimedEvent]:
        rng = self.rng
        kind = rng.choices(self.kinds, self.weights)[0]
        queues = list(self.pbx.queues)
        if kind == "ring_all":
            queue = queues[-1]
        elif kind == "blind_transfer_to_queue":
            queue = queues[0]
        else:
            queue = rng.choice(queues[:1] * 3 + queues)
        picked = self.pick_agents(kind, queue, start)
        if picked is None:
            kind = "abandoned" if rng.random() < 0.8 else "timeout"
        agents = picked or []
        number, name = random_caller(rng)
        extra: dict[str, bool] = {}
        if kind == "abandoned":
            extra["while_ringing"] = bool(agents)
        events = SCENARIOS[kind](
            self.pbx,
            rng,
            start=start,
            number=number,
            name=name,
            queue=queue,
            agents=agents or None,
            timings=random_timings(rng),
            position=self.position(queue, start + 1.0),
            agi_ok=rng.random() > 0.02,
            **extra,
        )
        self._note_busy(start, events)
        self._note_queue_spans(start, events)
        return events

    def _note_busy(self, start: float, events: list[TimedEvent]) -> None:
        """A member is busy until its last channel of this call hangs up."""
        by_exten = {a.exten: a.name for a in self.pbx.agents}
        for offset, event in events:
            if event["Event"] != "Hangup":
                continue
            exten = event["Channel"].partition("/")[2].partition("@")[0].partition("-")[0]
            if exten in by_exten:
                name = by_exten[exten]
                self.busy_until[name] = max(self.busy_until[name], start + offset)

    def _note_queue_spans(self, start: float, events: list[TimedEvent]) -> None:
        joined: dict[str, float] = {}
        for offset, event in events:
            name = event["Event"]
            if name == "QueueCallerJoin":
                joined[event["Queue"]] = start + offset
            elif name == "QueueCallerLeave" and event["Queue"] in joined:
                span = (joined.pop(event["Queue"]), start + offset)
                self.in_queue[event["Queue"]].append(span)


async def run_traffic(
    server: AmiServer,
    *,
    rate_per_minute: float,
    seed: int,
    stop: asyncio.Event | None = None,
    mix: Mapping[str, float] | None = None,
    speed: float = 1.0,
) -> None:
    """Start calls on ``server`` at ``rate_per_minute`` (Poisson arrivals) until ``stop``.

    Calls overlap; each is played by its own task. ``speed`` divides every delay (0: no
    sleeping at all). On stop, calls still in progress are cut short. Raises ValueError on a
    rate <= 0 or a mix naming unknown scenarios.
    """
    if rate_per_minute <= 0:
        raise ValueError("rate_per_minute must be positive")
    rng = random.Random(seed)
    stop = asyncio.Event() if stop is None else stop
    planner = _Planner(server.pbx, rng, mix, server.member_paused)
    clock = time.time()  # a virtual clock: gaps are added unscaled, slept scaled
    tasks: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            if planner.pbx is not server.pbx:  # the server restarted: counters start over
                planner = _Planner(server.pbx, rng, mix, server.member_paused)
                clock = max(clock, time.time())
            task = asyncio.create_task(server.play(planner.next_call(clock), speed))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            gap = rng.expovariate(rate_per_minute / 60.0)
            clock += gap
            if speed > 0:
                await wait_set(stop, gap / speed)
            else:
                await asyncio.sleep(0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def generate_stream(n_calls: int, seed: int, *, system_name: str = "sim") -> bytes:
    """``n_calls`` calls as one AMI byte stream, as a client would receive it: banner, login
    response, FullyBooted, then the calls' events interleaved in time (CRLF line ends).

    Deterministic for a seed. Calls start about nine seconds apart and last tens of seconds,
    so several are in flight, with the lab's five members mostly busy.
    """
    rng = random.Random(seed)
    boot = 1_800_000_000.0
    pbx = Pbx(system_name, login_time=int(boot), run=f"{rng.getrandbits(32):08x}")
    planner = _Planner(pbx, rng, None)
    out = [
        b"Asterisk Call Manager/11.0.0\r\n",
        encode(
            {"Response": "Success", "ActionID": "bench-login", "Message": "Authentication accepted"}
        ),
        encode(
            {
                "Event": "FullyBooted",
                "Privilege": "system,all",
                "Uptime": "60",
                "LastReload": "60",
                "Status": "Fully Booted",
            }
        ),
    ]
    # Build calls lazily in start order and merge by time: memory follows calls in flight.
    heap: list[tuple[float, int, int]] = []
    calls: dict[int, tuple[float, list[TimedEvent]]] = {}
    start = boot + 60.0
    built = 0
    while built < n_calls or heap:
        if built < n_calls and (not heap or start <= heap[0][0]):
            events = planner.next_call(start)
            calls[built] = (start, events)
            heapq.heappush(heap, (start + events[0][0], built, 0))
            built += 1
            start += rng.expovariate(1 / 9)
            continue
        at, call, index = heapq.heappop(heap)
        begin, events = calls[call]
        out.append(encode(with_timestamp(events[index][1], at, system_name)))
        if index + 1 < len(events):
            heapq.heappush(heap, (begin + events[index + 1][0], call, index + 1))
        else:
            del calls[call]
    return b"".join(out)
