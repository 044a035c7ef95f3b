"""Call traffic for the simulator: played live on an :class:`AmiServer`, or rendered into one
AMI byte stream for benchmarks.

Both use one planner on a virtual clock, following app_queue's rules: calls start at
exponential intervals, go through the IVR and join a queue; a caller waits there until a
member is available (not paused, not on a call, and past the queue's ``wrapuptime`` since
their last queue call), and then that member's phone rings for a few seconds before the
answer. Some rings go unanswered (``AgentRingNoAnswer`` after the ring timeout, then the
next member). A caller whose patience runs out before that hangs up (an abandon, maybe while
a member already rings); one still waiting at the queue's timeout leaves with TIMEOUT. A few
calls take the other exits (exit key, redirect, withdraw, leave-empty) or are transferred.
Each call also gets a caller (number formats from E.164 to national, names in many scripts,
some anonymous).

Calls are planned whole when they start. Played live, a call is checked again at the moment
its first member would ring (:func:`_play_call`): a member paused since, on a call the plan
did not know (a callback the server plays, or a call re-planned this way) or still in
wrap-up is not rung; another free member is, or the caller keeps waiting (until patience or
the queue's timeout), as app_queue does. The rest of the call is then built again, with the
caller's channels it already has and a random stream of its own, so the calls planned after
it draw what they would have drawn. A re-planned call is answered by one member (or rung
to all free members of a ringall queue): the transfer or ring-out it was planned with is
dropped, and its first plan's queue statistics stay counted in the variables it shows.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from types import MappingProxyType

from cti.codec import frame
from cti.waits import wait_set
from pbxsim.scenarios import SCENARIOS, Agent, Pbx, TimedEvent, Timings, with_timestamp
from pbxsim.server import AmiServer

# Abandons and queue timeouts are not drawn: they follow from the wait (the load).
DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {
        "answered": 0.62,
        "ring_no_answer": 0.08,
        "ring_all": 0.1,
        "blind_transfer": 0.04,
        "blind_transfer_to_queue": 0.03,
        "attended_transfer": 0.04,
        "abandoned": 0.02,
        "leave_empty": 0.01,
        "exit_key": 0.03,
        "redirect": 0.01,
        "withdraw": 0.02,
    }
)
_EXITS = frozenset({"timeout", "leave_empty", "exit_key", "redirect", "withdraw"})
_TRANSFERS = frozenset({"blind_transfer", "attended_transfer", "blind_transfer_to_queue"})
JOIN_LAG = 0.05  # from the end of the IVR to QueueCallerJoin (a few dialplan steps)
SLACK = 0.1  # how far a call's real ring time may be from the planned one (JOIN_LAG's error)
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
    """One call's durations. ``wait`` is left to the planner; ``patience`` is how long this
    caller stays in the queue (most callers wait a minute or more, a few give up fast)."""
    return Timings(
        ivr=rng.uniform(0.3, 3.0),
        wait=0.0,
        ring=rng.uniform(2.0, 8.0),  # a phone rings a few seconds before a person answers
        talk=rng.uniform(8.0, 45.0),
        ring_timeout=15.0,
        retry=1.0,
        patience=rng.uniform(3.0, 20.0) if rng.random() < 0.05 else rng.expovariate(1 / 150),
        queue_timeout=rng.choice((60.0, 90.0)),
        consult=rng.uniform(2.0, 10.0),
        after_exit=rng.uniform(1.0, 4.0),
    )


@dataclass(slots=True)
class _Plan:
    """One call as planned when it started, and what re-planning it at its ringing needs."""

    start: float
    kind: str
    queue: str
    drawn: Timings  # before the planner set the wait
    number: str | None
    name: str | None
    position: int
    agi_ok: bool
    agents: list[Agent]
    events: list[TimedEvent] = dataclass_field(default_factory=list)

    def ringing(self) -> list[Agent]:
        """The members rung first (all of them in a ringall call)."""
        return self.agents if self.kind == "ring_all" else self.agents[:1]


def _ring_index(events: Sequence[TimedEvent]) -> int:
    """Where a queue call's plan goes on after the caller joined the queue (the event after
    the first MusicOnHoldStart): ringing, or leaving."""
    joined = False
    for index, (_offset, event) in enumerate(events):
        if event["Event"] == "QueueCallerJoin":
            joined = True
        elif joined and event["Event"] == "MusicOnHoldStart":
            return index + 1
    raise ValueError("not a queue call")


class _SameCaller(Pbx):
    """The PBX a call is re-planned on: its first identifiers are the ones the call's caller
    already has (Local pair, GEN_SEQ), every later one is new from the real PBX."""

    def __init__(self, real: Pbx, planned: Sequence[TimedEvent]) -> None:
        self.__dict__.update(real.__dict__)  # agents, queues, statistics: the real ones
        self._real = real
        pair = [e for _o, e in planned if e["Event"] == "Newchannel"][:2]
        self._uids = [(e["Uniqueid"], int(e["Uniqueid"].rpartition(".")[2])) for e in pair]
        self._locals = [pair[0]["Channel"].rpartition("-")[2].partition(";")[0]]
        seq = next(e["Value"] for _o, e in planned if e.get("Variable") == "GEN_SEQ")
        self._originates = [int(seq)]

    def uniqueid(self, at: float) -> tuple[str, int]:
        return self._uids.pop(0) if self._uids else self._real.uniqueid(at)

    def local_seq(self) -> str:
        return self._locals.pop(0) if self._locals else self._real.local_seq()

    def pjsip_seq(self) -> str:
        return self._real.pjsip_seq()

    def originate_seq(self) -> int:
        return self._originates.pop(0) if self._originates else self._real.originate_seq()


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
        # when each member may be rung again: end of their last call, plus wrap-up after a
        # queue call (app_queue: now - lastcall < wrapuptime makes a member unavailable)
        self.busy_until = {a.name: 0.0 for a in pbx.agents}
        self.paused = paused  # Asterisk never rings a member paused in the queue
        self.in_queue: dict[str, list[tuple[float, float]]] = {q: [] for q in pbx.queues}

    def available(
        self, queue: str, at: float, exclude: Sequence[Agent] = ()
    ) -> list[tuple[float, Agent]]:
        """Members of ``queue`` that may be rung, each with the earliest time from ``at``,
        soonest first (ties in rrmemory order, so the load spreads over the members)."""
        members = self.pbx.agents_of(queue)
        if not members:
            return []
        rotated = self.pbx.next_agents(queue, len(members))
        found = [
            (max(at, self.busy_until[a.name]), a)
            for a in rotated
            if a not in exclude and not self.paused(queue, a)
        ]
        return sorted(found, key=lambda pair: pair[0])

    def free_at(self, at: float, exclude: Sequence[Agent]) -> Agent | None:
        """Any member free at ``at`` (a colleague to transfer to: a phone, not a queue)."""
        free = [a for a in self.pbx.agents if a not in exclude and self.busy_until[a.name] <= at]
        return self.rng.choice(free) if free else None

    def position(self, queue: str, at: float) -> int:
        spans = [s for s in self.in_queue[queue] if s[1] > at - 600.0]
        self.in_queue[queue] = spans
        return 1 + sum(1 for join, leave in spans if join <= at < leave)

    def route(
        self, kind: str, queue: str, start: float, tm: Timings
    ) -> tuple[str, list[Agent], Timings, dict[str, bool]]:
        """What the queue does with this caller: who rings after how long, or how the
        caller leaves without a member (patience or the queue's timeout first)."""
        join = start + tm.ivr + JOIN_LAG
        members = self.available(queue, join)
        patience = tm.patience  # in the queue; the scenarios count it from the call start
        stay = min(patience, tm.queue_timeout)
        if kind in _EXITS:  # the caller leaves on their own, unless a member is free first
            stay = min(stay, self.rng.uniform(5.0, 30.0))
            if not members or members[0][0] - join > stay:
                return kind, [], replace(tm, patience=stay), {}
            kind = "answered"
        gives_up = replace(tm, patience=join - start + patience)
        if not members or members[0][0] - join > stay:
            if patience <= tm.queue_timeout:
                return "abandoned", [], gives_up, {"while_ringing": False}
            return "timeout", [], tm, {}
        at, first = members[0]
        tm = replace(tm, wait=at - join)
        if at - join + tm.ring > patience:  # the caller hangs up while the member rings
            return "abandoned", [first], replace(gives_up, wait=at - join), {"while_ringing": True}
        if kind == "abandoned":
            kind = "answered"
        if kind == "ring_all":
            return kind, [a for t, a in members if t <= at], tm, {}
        if kind == "ring_no_answer":
            again = at + tm.ring_timeout + tm.retry
            ready = [a for t, a in members[1:] if t <= again]
            if ready and again - join + tm.ring <= patience:
                return kind, [first, ready[0]], tm, {}
            return "answered", [first], tm, {}
        if kind in _TRANSFERS:
            handover = at + tm.ring + tm.talk / 2
            if kind == "blind_transfer_to_queue":
                target_queue = list(self.pbx.queues)[-1]
                ready = [a for t, a in self.available(target_queue, handover, (first,))]
                ready = [a for a in ready if self.busy_until[a.name] <= handover]
                target = ready[0] if ready else None
            else:
                target = self.free_at(handover, (first,))
            if target is not None:
                return kind, [first, target], tm, {}
        return "answered", [first], tm, {}

    def next_call(self, start: float) -> list[TimedEvent]:
        return self.plan(start).events

    def plan(self, start: float) -> _Plan:
        """The next call, starting at ``start``, planned whole."""
        rng = self.rng
        kind = rng.choices(self.kinds, self.weights)[0]
        queues = list(self.pbx.queues)
        if kind == "ring_all":
            queue = queues[-1]
        elif kind == "blind_transfer_to_queue":
            queue = queues[0]
        else:
            queue = rng.choice(queues[:1] * 2 + queues)
        drawn = random_timings(rng)
        kind, agents, timings, extra = self.route(kind, queue, start, drawn)
        number, name = random_caller(rng)
        plan = _Plan(
            start=start,
            kind=kind,
            queue=queue,
            drawn=drawn,
            number=number,
            name=name,
            position=self.position(queue, start + timings.ivr + JOIN_LAG),
            agi_ok=rng.random() > 0.02,
            agents=agents,
        )
        plan.events = SCENARIOS[kind](
            self.pbx,
            rng,
            start=start,
            number=number,
            name=name,
            queue=queue,
            agents=agents or None,
            timings=timings,
            position=plan.position,
            agi_ok=plan.agi_ok,
            **extra,
        )
        self._note_busy(self.busy_until, start, plan.events)
        self._note_queue_spans(start, plan.events)
        return plan

    def replan(self, plan: _Plan, at: float, free: Sequence[Agent]) -> list[TimedEvent] | None:
        """What happens from ``at`` (virtual) on to a caller waiting for a member, with
        ``free`` the members that may be rung now: the rest of the call's events (offsets
        from its start), or None while the caller keeps waiting."""
        tm = plan.drawn
        join = plan.start + tm.ivr + JOIN_LAG
        waited = max(0.0, at - join)
        gives_up = replace(tm, patience=join - plan.start + tm.patience, wait=waited)
        extra: dict[str, bool] = {}
        if not free:
            if waited < min(tm.patience, tm.queue_timeout):
                return None
            kind, agents, timings = "abandoned", [], gives_up
            extra = {"while_ringing": False}
            if tm.patience > tm.queue_timeout:
                kind, timings = "timeout", tm
        elif waited + tm.ring > tm.patience:  # hangs up while the member rings
            kind, agents, timings = "abandoned", [free[0]], gives_up
            extra = {"while_ringing": True}
        elif plan.kind == "ring_all":
            kind, agents, timings = "ring_all", list(free), replace(tm, wait=waited)
        else:
            kind, agents, timings = "answered", [free[0]], replace(tm, wait=waited)
        events = SCENARIOS[kind](
            _SameCaller(self.pbx, plan.events),
            random.Random(plan.start),  # its own stream: later calls draw as planned
            start=plan.start,
            number=plan.number,
            name=plan.name,
            queue=plan.queue,
            agents=agents or None,
            timings=timings,
            position=plan.position,
            agi_ok=plan.agi_ok,
            **extra,
        )
        return events[_ring_index(events) :]

    def _note_busy(
        self, until: dict[str, float], start: float, events: Sequence[TimedEvent]
    ) -> None:
        """A member is busy until its last channel of this call hangs up, and after a queue
        call (AgentComplete) for the queue's wrap-up time too."""
        by_exten = {a.exten: a.name for a in self.pbx.agents}
        wrapup: dict[str, float] = {}
        ended: dict[str, float] = {}
        for offset, event in events:
            if event["Event"] == "AgentComplete":
                spec = self.pbx.queues.get(event["Queue"])
                if spec is not None:
                    wrapup[event["MemberName"]] = float(spec.wrapuptime)
            if event["Event"] != "Hangup":
                continue
            exten = event["Channel"].partition("/")[2].partition("@")[0].partition("-")[0]
            if exten in by_exten:
                ended[by_exten[exten]] = start + offset
        for name, end in ended.items():
            end += wrapup.get(name, 0.0)
            until[name] = max(until.get(name, 0.0), end)

    def _note_queue_spans(self, start: float, events: list[TimedEvent]) -> None:
        joined: dict[str, float] = {}
        for offset, event in events:
            name = event["Event"]
            if name == "QueueCallerJoin":
                joined[event["Queue"]] = start + offset
            elif name == "QueueCallerLeave" and event["Queue"] in joined:
                span = (joined.pop(event["Queue"]), start + offset)
                self.in_queue[event["Queue"]].append(span)


class _Floor:
    """What the live traffic knows at a call's ringing, besides the server's pause state:
    when each member is free from the calls that rang already (their wrap-up included) and
    which channels are the traffic's own (any other channel of a member's phone is a call
    the plan did not know, such as a callback)."""

    def __init__(self) -> None:
        self.free_at: dict[str, float] = {}
        self.ours: set[str] = set()

    def commit(self, planner: _Planner, start: float, events: Sequence[TimedEvent]) -> None:
        planner._note_busy(self.free_at, start, events)
        planner._note_busy(planner.busy_until, start, events)
        self.ours.update(e["Uniqueid"] for _o, e in events if e["Event"] == "Newchannel")

    def forget(self, events: Sequence[TimedEvent]) -> None:
        self.ours.difference_update(e["Uniqueid"] for _o, e in events if e["Event"] == "Newchannel")

    def may_ring(self, server: AmiServer, queue: str, agent: Agent, at: float) -> bool:
        """app_queue's availability check, at virtual time ``at``."""
        if server.member_paused(queue, agent) or self.free_at.get(agent.name, 0.0) > at + SLACK:
            return False
        phone = (f"Local/{agent.exten}@agents-", f"PJSIP/{agent.exten}-")
        return not any(
            chan.snapshot.get("Channel", "").startswith(phone) and uid not in self.ours
            for uid, chan in server.live.channels.items()
        )


async def _play_call(
    server: AmiServer, planner: _Planner, plan: _Plan, floor: _Floor, speed: float
) -> None:
    """Play a call live, deciding again at its first ring who rings (see the module's
    docstring); ``speed`` > 0 (virtual time is start + offset)."""
    events = plan.events
    if not plan.agents:  # leaves the queue without a member: nothing to check
        floor.commit(planner, plan.start, events)
        try:
            await server.play(events, speed)
        finally:
            floor.forget(events)
        return
    split = _ring_index(events)
    prefix, tail = events[:split], events[split:]
    floor.ours.update(e["Uniqueid"] for _o, e in prefix if e["Event"] == "Newchannel")
    try:
        await server.play(prefix, speed)
        at = plan.start + tail[0][0]
        wait = tail[0][0] - prefix[-1][0]
        while True:
            if wait > 0:
                await asyncio.sleep(wait / speed)
            if planner.pbx is not server.pbx:
                return  # the server restarted: this call is gone
            queue = plan.queue
            if all(floor.may_ring(server, queue, a, at) for a in plan.ringing()):
                break
            members = planner.pbx.agents_of(queue)
            free = [a for a in members if floor.may_ring(server, queue, a, at)]
            replanned = planner.replan(plan, at, free)
            if replanned is not None:
                tail = replanned
                break
            wait = plan.drawn.retry  # app_queue tries the members again after retry
            at += wait
        floor.commit(planner, plan.start, tail)
        await server.play([(max(0.0, o - (at - plan.start)), e) for o, e in tail], speed)
    finally:
        floor.forget(events)
        floor.forget(tail)


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
    sleeping at all, and calls are played as planned). On stop, calls still in progress are
    cut short. Raises ValueError on a rate <= 0 or a mix naming unknown scenarios.
    """
    if rate_per_minute <= 0:
        raise ValueError("rate_per_minute must be positive")
    rng = random.Random(seed)
    stop = asyncio.Event() if stop is None else stop
    planner = _Planner(server.pbx, rng, mix, server.member_paused)
    clock = time.time()  # a virtual clock: gaps are added unscaled, slept scaled
    tasks: set[asyncio.Task[None]] = set()
    floor = _Floor()
    try:
        while not stop.is_set():
            if planner.pbx is not server.pbx:  # the server restarted: counters start over
                planner = _Planner(server.pbx, rng, mix, server.member_paused)
                clock = max(clock, time.time())
                floor = _Floor()
            plan = planner.plan(clock)
            if speed > 0:
                task = asyncio.create_task(_play_call(server, planner, plan, floor, speed))
            else:
                task = asyncio.create_task(server.play(plan.events, speed))
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
        frame(
            {"Response": "Success", "ActionID": "bench-login", "Message": "Authentication accepted"}
        ),
        frame(
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
        out.append(frame(with_timestamp(events[index][1], at, system_name)))
        if index + 1 < len(events):
            heapq.heappush(heap, (begin + events[index + 1][0], call, index + 1))
        else:
            del calls[call]
    return b"".join(out)
