"""AMI event sequences for one call, shaped like what Asterisk 22 really sends.

Theory of operation
-------------------
The template is the lab recorded in ``tests/fixtures/capture_*.txt`` (Asterisk 22.10): the
caller is a Local pair ``Local/s@incoming-0000000a;1``/``;2`` made by an AMI Originate, the
``;2`` half runs the dialplan (IVR over FastAGI, then ``Queue()``), queue members are Local
interfaces ``Local/1001@agents/n`` rung through their own ``;1``/``;2`` pairs. A scenario
function walks one call through that dialplan and returns ``(offset_seconds, event)`` pairs:
offsets are relative to the call start, events are ``dict[str, str]`` in Asterisk's header
order with ``Privilege`` and ``SystemName`` but without ``Timestamp`` (the emitter stamps it).

Everything here is pure: no sockets, no clock. What must stay coherent between calls (the
shared Uniqueid and Local-channel counters, member CallsTaken/LastCall, queue statistics,
the round-robin pointer of an ``rrmemory`` queue) lives in a :class:`Pbx` passed in, and every
choice left open by the captures (where ``OriginateResponse`` lands, whether ``AgentComplete``
still carries channel blocks, ...) is drawn from the ``random.Random`` passed in, so a seed
reproduces a stream exactly.

Identifiers are allocated when a scenario is *built*, so two overlapping calls have counters
that are unique but, unlike a real Asterisk, not ordered by creation time across calls.

Calls whose shapes were not captured (queue exits other than hang-up, transfers) are marked
where they are built and say which reference notes they follow.

Scenario functions raise ValueError for an unknown queue or too few agents for the scenario.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal, Protocol

from cti.codec import escape

Event = dict[str, str]
TimedEvent = tuple[float, Event]

UNKNOWN = "<unknown>"
STATE_DESC = MappingProxyType({0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"})
CAUSE_TXT = MappingProxyType(
    {
        0: "Unknown",
        16: "Normal Clearing",
        17: "User busy",
        19: "User alerting, no answer",
        26: "Answered elsewhere",
    }
)
CID_PRES = "0 (Presentation Allowed, Not Screened)"
AGI_URL = "agi://127.0.0.1:4573/ivr"


@dataclass(frozen=True, slots=True)
class Agent:
    """A queue member as the lab configures it: a Local interface named after its extension."""

    exten: str
    name: str
    queues: tuple[str, ...]

    @property
    def interface(self) -> str:
        return f"Local/{self.exten}@agents/n"

    @property
    def device(self) -> str:
        return f"Local/{self.exten}@agents"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    strategy: str
    servicelevel: int = 20
    weight: int = 0
    maxlen: int = 0
    wrapuptime: int = 0  # seconds after a queue call before the member is rung again


# The lab's queues, with a short wrap-up (the lab itself had wrapuptime=0) so that the
# simulated members breathe between calls as real agents do.
QUEUES = (
    QueueSpec("support", "rrmemory", wrapuptime=5),
    QueueSpec("sales", "ringall", wrapuptime=5),
)
AGENTS = (
    Agent("1001", "Alice", ("support",)),
    Agent("1002", "Bob", ("support",)),
    Agent("1003", "Carol", ("support", "sales")),
    Agent("1004", "Dave", ("support", "sales")),
    Agent("1005", "Eve", ("sales",)),
)


@dataclass(frozen=True, slots=True)
class Timings:
    """Durations in seconds. ``ring=0`` answers at once, as the lab's agents do."""

    ivr: float = 0.5
    wait: float = 0.0
    ring: float = 0.0
    talk: float = 4.0
    ring_timeout: float = 15.0
    retry: float = 1.0
    patience: float = 4.0
    queue_timeout: float = 60.0
    consult: float = 3.0
    after_exit: float = 2.0


@dataclass(slots=True)
class MemberStats:
    calls: int = 0
    last_call: int = 0


@dataclass(slots=True)
class QueueStats:
    completed: int = 0
    abandoned: int = 0
    in_sl: int = 0
    holdtime: int = 0
    talktime: int = 0
    rr_next: int = 0


class Pbx:
    """What one simulated Asterisk shares between calls: counters and queue statistics."""

    def __init__(
        self,
        system_name: str = "sim",
        *,
        agents: Sequence[Agent] = AGENTS,
        queues: Sequence[QueueSpec] = QUEUES,
        login_time: int = 0,
        run: str = "5a17c0de",
    ) -> None:
        self.system_name = system_name
        self.agents = tuple(agents)
        self.queues = {q.name: q for q in queues}
        self.login_time = login_time
        self.run = run
        self.members = {a.name: MemberStats() for a in self.agents}
        self.queue_stats = {name: QueueStats() for name in self.queues}
        self._next_uid = 0
        self._next_local = 0
        self._next_pjsip = 0
        self._next_originate = 0

    def uniqueid(self, at: float) -> tuple[str, int]:
        """A new ``<system>-<epoch>.<n>`` and its ``n`` (one counter for every channel)."""
        n = self._next_uid
        self._next_uid += 1
        return f"{self.system_name}-{int(at)}.{n}", n

    def local_seq(self) -> str:
        seq = self._next_local
        self._next_local += 1
        return f"{seq:08x}"

    def pjsip_seq(self) -> str:
        seq = self._next_pjsip
        self._next_pjsip += 1
        return f"{seq:08x}"

    def originate_seq(self) -> int:
        self._next_originate += 1
        return self._next_originate

    def agents_of(self, queue: str) -> list[Agent]:
        return [a for a in self.agents if queue in a.queues]

    def next_agents(self, queue: str, count: int) -> list[Agent]:
        """Members to ring next: round-robin memory for ``rrmemory``, all for ``ringall``."""
        members = self.agents_of(queue)
        if not members:
            raise ValueError(f"queue {queue!r} has no members")
        stats = self.queue_stats[queue]
        start = stats.rr_next % len(members)
        stats.rr_next += 1
        rotated = members[start:] + members[:start]
        return rotated[: max(1, min(count, len(rotated)))]


@dataclass(slots=True)
class _Chan:
    """A channel's current snapshot, as ast_manager_build_channel_state_string renders it."""

    name: str
    state: int
    context: str
    exten: str
    uniqueid: str
    linkedid: str
    seq: int
    created: float
    priority: int = 1
    cid_num: str | None = None
    cid_name: str | None = None
    conn_num: str | None = None
    conn_name: str | None = None
    answered: float | None = None

    def block(self, prefix: str = "") -> Event:
        return {
            f"{prefix}Channel": self.name,
            f"{prefix}ChannelState": str(self.state),
            f"{prefix}ChannelStateDesc": STATE_DESC[self.state],
            f"{prefix}CallerIDNum": self.cid_num or UNKNOWN,
            f"{prefix}CallerIDName": escape(self.cid_name) if self.cid_name else UNKNOWN,
            f"{prefix}ConnectedLineNum": self.conn_num or UNKNOWN,
            f"{prefix}ConnectedLineName": escape(self.conn_name) if self.conn_name else UNKNOWN,
            f"{prefix}Language": "en",
            f"{prefix}AccountCode": "",
            f"{prefix}Context": self.context,
            f"{prefix}Exten": self.exten,
            f"{prefix}Priority": str(self.priority),
            f"{prefix}Uniqueid": self.uniqueid,
            f"{prefix}Linkedid": self.linkedid,
        }


@dataclass(slots=True)
class _Bridge:
    uniqueid: str
    members: list[_Chan] = field(default_factory=list)

    def block(self, prefix: str = "") -> Event:
        return {
            f"{prefix}BridgeUniqueid": self.uniqueid,
            f"{prefix}BridgeType": "basic",
            f"{prefix}BridgeTechnology": "simple_bridge",
            f"{prefix}BridgeCreator": UNKNOWN,
            f"{prefix}BridgeName": UNKNOWN,
            f"{prefix}BridgeNumChannels": str(len(self.members)),
            f"{prefix}BridgeVideoSourceMode": "none",
        }


@dataclass(slots=True)
class _Leg:
    """One ring attempt at a member: the Local pair ``Local/1001@agents-0000000b;1``/``;2``."""

    agent: Agent
    one: _Chan
    two: _Chan
    called: float
    app: str = "AppQueue"
    prio: int = 1
    ringing: bool = False


def _cdr_time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _clid(num: str | None, name: str | None) -> str:
    if num and name:
        return f'"{name}" <{num}>'
    return num or name or ""


def _avg(old: int, new: int) -> int:
    """app_queue's boxcar filter for hold and talk time averages (first sample taken as is)."""
    return new if old == 0 else (3 * old + new) // 4


class _Call:
    """Low-level emitter: keeps the time cursor, the snapshots and the event list of one call."""

    def __init__(self, pbx: Pbx, rng: random.Random, start: float) -> None:
        self.pbx = pbx
        self.rng = rng
        self.start = start
        self.t = 0.0
        self.out: list[TimedEvent] = []
        self.busy: set[str] = set()  # members whose device this call made in use

    # -- time and raw events ---------------------------------------------------------------
    def now(self) -> float:
        return self.start + self.t

    def wait(self, seconds: float) -> None:
        self.t += max(0.0, seconds)

    def emit(self, name: str, cls: str, *parts: Mapping[str, str]) -> Event:
        # Events of one burst are tens of microseconds apart in the captures.
        self.t += self.rng.uniform(0.00002, 0.0004)
        event: Event = {
            "Event": name,
            "Privilege": f"{cls},all",
            "SystemName": self.pbx.system_name,
        }
        for part in parts:
            event.update(part)
        self.out.append((self.t, event))
        return event

    # -- channels --------------------------------------------------------------------------
    def chan(self, name: str, state: int, context: str, exten: str, linkedid: str = "") -> _Chan:
        uid, seq = self.pbx.uniqueid(self.now())
        return _Chan(name, state, context, exten, uid, linkedid or uid, seq, self.now())

    def newchannel(self, ch: _Chan) -> None:
        self.emit("Newchannel", "call", ch.block())

    def newexten(
        self, ch: _Chan, app: str, data: str, *, context: str = "", exten: str = "", prio: int = 0
    ) -> None:
        ch.context = context or ch.context
        ch.exten = exten or ch.exten
        ch.priority = prio or ch.priority
        self.emit(
            "Newexten",
            "dialplan",
            ch.block(),
            {"Extension": ch.exten, "Application": app, "AppData": data},
        )

    def varset(self, ch: _Chan, variable: str, value: str) -> None:
        self.emit("VarSet", "dialplan", ch.block(), {"Variable": variable, "Value": value})

    def newstate(self, ch: _Chan, state: int) -> None:
        ch.state = state
        if state == 6 and ch.answered is None:
            ch.answered = self.now()
        self.emit("Newstate", "call", ch.block())

    def callerid(self, ch: _Chan, num: str | None, name: str | None) -> None:
        """NewCallerid only when something changes, as Asterisk publishes it."""
        if (ch.cid_num, ch.cid_name) == (num, name):
            return
        ch.cid_num, ch.cid_name = num, name
        self.emit("NewCallerid", "call", ch.block(), {"CID-CallingPres": CID_PRES})

    def connected(self, ch: _Chan, num: str | None, name: str | None) -> None:
        if (ch.conn_num, ch.conn_name) == (num, name):
            return
        ch.conn_num, ch.conn_name = num, name
        self.emit("NewConnectedLine", "call", ch.block())

    def hangup_request(self, ch: _Chan, cause: int) -> None:
        self.emit("HangupRequest", "call", ch.block(), {"Cause": str(cause)})

    def soft_hangup(self, ch: _Chan, cause: int = 16) -> None:
        self.emit("SoftHangupRequest", "call", ch.block(), {"Cause": str(cause)})

    def hangup(self, ch: _Chan, cause: int = 16) -> None:
        self.emit(
            "Hangup", "call", ch.block(), {"Cause": str(cause), "Cause-txt": CAUSE_TXT[cause]}
        )

    def local_bridge(self, one: _Chan, two: _Chan, context: str, exten: str, opt: bool) -> None:
        self.emit(
            "LocalBridge",
            "call",
            one.block("LocalOne"),
            two.block("LocalTwo"),
            {"Context": context, "Exten": exten, "LocalOptimization": "Yes" if opt else "No"},
        )

    def dial(self, kind: str, caller: _Chan | None, dest: _Chan, extra: Mapping[str, str]) -> None:
        parts = ([caller.block()] if caller else []) + [dest.block("Dest"), dict(extra)]
        self.emit(kind, "call", *parts)

    def device(self, device: str, state: str) -> None:
        self.emit("DeviceStateChange", "call", {"Device": device, "State": state})

    # -- bridges ---------------------------------------------------------------------------
    def bridge_create(self) -> _Bridge:
        bridge = _Bridge(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))
        self.emit("BridgeCreate", "call", bridge.block())
        return bridge

    def bridge_enter(self, bridge: _Bridge, ch: _Chan) -> None:
        bridge.members.append(ch)
        self.emit("BridgeEnter", "call", bridge.block(), ch.block())

    def bridge_leave(self, bridge: _Bridge, ch: _Chan) -> None:
        bridge.members.remove(ch)
        self.emit("BridgeLeave", "call", bridge.block(), ch.block())

    def bridge_destroy(self, bridge: _Bridge) -> None:
        self.emit("BridgeDestroy", "call", bridge.block())

    def cdr(
        self,
        ch: _Chan,
        *,
        src: _Chan,
        destination: str,
        dest_context: str,
        dest_channel: str,
        app: str,
        data: str,
        disposition: str = "",
    ) -> None:
        end = self.now()
        answer = ch.answered
        disposition = disposition or ("ANSWERED" if answer is not None else "NO ANSWER")
        self.emit(
            "Cdr",
            "cdr",
            {
                "AccountCode": "",
                "Source": src.cid_num or "",
                "Destination": destination,
                "DestinationContext": dest_context,
                "CallerID": _clid(src.cid_num, src.cid_name),
                "Channel": ch.name,
                "DestinationChannel": dest_channel,
                "LastApplication": app,
                "LastData": data,
                "StartTime": _cdr_time(ch.created),
                "AnswerTime": _cdr_time(answer),
                "EndTime": _cdr_time(end),
                "Duration": str(int(end - ch.created)),
                "BillableSeconds": str(int(end - answer) if answer is not None else 0),
                "Disposition": disposition,
                "AMAFlags": "DOCUMENTATION",
                "UniqueID": ch.uniqueid,
                "UserField": "",
                "LinkedID": ch.linkedid,
                "Sequence": str(ch.seq),
            },
        )

    # -- queue members ---------------------------------------------------------------------
    def member_status(self, agent: Agent, status: int, in_call: bool) -> None:
        """One QueueMemberStatus per queue the member is in (a device state change)."""
        stats = self.pbx.members[agent.name]
        for queue in agent.queues:
            spec = self.pbx.queues.get(queue)
            self.emit(
                "QueueMemberStatus",
                "agent",
                {
                    "Queue": queue,
                    "MemberName": agent.name,
                    "Interface": agent.interface,
                    "StateInterface": agent.interface,
                    "Membership": "static",
                    "Penalty": "0",
                    "CallsTaken": str(stats.calls),
                    "LastCall": str(stats.last_call),
                    "LastPause": "0",
                    "LoginTime": str(self.pbx.login_time),
                    "InCall": "1" if in_call else "0",
                    "Status": str(status),
                    "Paused": "0",
                    "PausedReason": "",
                    "Ringinuse": "0",
                    "Wrapuptime": str(spec.wrapuptime if spec else 0),
                },
            )

    # -- member legs (a queue's or a Dial's) -------------------------------------------------
    def identify(self, ch: _Chan, num: str | None, name: str | None) -> None:
        """A Local ``;2`` half gets caller and connected line at once, then both events."""
        if (num, name) == (ch.cid_num, ch.cid_name):
            return
        ch.cid_num, ch.cid_name, ch.conn_num, ch.conn_name = num, name, num, name
        self.emit("NewCallerid", "call", ch.block(), {"CID-CallingPres": CID_PRES})
        self.emit("NewConnectedLine", "call", ch.block())

    def agent_busy(self, agent: Agent, *, in_call: bool) -> None:
        if agent.name in self.busy:
            return
        self.busy.add(agent.name)
        self.device(agent.device, "INUSE")
        self.member_status(agent, 2, in_call)

    def agent_free(self, agent: Agent) -> None:
        self.busy.discard(agent.name)
        self.member_status(agent, 1, False)
        self.device(f"Queue:{agent.queues[0]}_avail", "NOT_INUSE")
        self.device(agent.device, "NOT_INUSE")

    def agent_cdr(self, leg: _Leg, app: str, data: str) -> None:
        self.cdr(
            leg.two,
            src=leg.two,
            destination=leg.agent.exten,
            dest_context="agents",
            dest_channel="",
            app=app,
            data=data,
        )

    def start_ringing(self, leg: _Leg, src: _Chan, *, dial_state: bool) -> None:
        """The member's ``;2`` runs Ringing(): its ``;1`` goes to state 5."""
        one, two = leg.one, leg.two
        leg.prio += 1
        self.newexten(two, "Ringing", "", prio=leg.prio)
        self.answering_half(leg, src, 5)
        if dial_state:
            self.dial("DialState", src, one, {"DialStatus": "RINGING"})
        leg.ringing = True
        self.agent_busy(leg.agent, in_call=False)

    def offer(self, leg: _Leg, src: _Chan) -> None:
        self.newexten(
            leg.two,
            "NoOp",
            f'Agent {leg.agent.exten} takes call from "{src.cid_name or ""}" <{src.cid_num or ""}>',
            prio=1,
        )

    def pick_up(self, leg: _Leg, src: _Chan, ring: float) -> None:
        """The member answers: Answer() on ``;2``, both halves Up, DialEnd ANSWER."""
        one, two = leg.one, leg.two
        self.offer(leg, src)
        if ring > 0:
            self.start_ringing(leg, src, dial_state=self.rng.random() < 0.5)
            self.wait(ring)
        leg.prio += 1
        self.newexten(two, "Answer", "", prio=leg.prio)
        self.newstate(two, 6)
        if leg.ringing:
            self.newstate(one, 6)
        else:
            self.answering_half(leg, src, 6)
        self.dial("DialEnd", src, one, {"DialStatus": "ANSWER"})

    def answering_half(self, leg: _Leg, src: _Chan, state: int) -> None:
        """The ``;1`` half follows its ``;2``: the snapshot already carries the connected
        line when its NewConnectedLine is published (as captured)."""
        one = leg.one
        one.exten = "s"
        changed = (one.conn_num, one.conn_name) != (src.cid_num, src.cid_name)
        one.conn_num, one.conn_name = src.cid_num, src.cid_name
        self.newstate(one, state)
        self.newexten(one, leg.app, "(Outgoing Line)")
        if changed:
            self.emit("NewConnectedLine", "call", one.block())

    def dial_agent(self, src: _Chan, agent: Agent, linkedid: str) -> _Leg:
        """A plain Dial(Local/<exten>@agents/n) from ``src`` (no queue involved)."""
        base = f"Local/{agent.exten}@agents-{self.pbx.local_seq()}"
        one = self.chan(base + ";1", 0, "agents", agent.exten, linkedid)
        two = self.chan(base + ";2", 4, "agents", agent.exten, linkedid)
        self.newchannel(one)
        self.newchannel(two)
        num, name = src.cid_num, src.cid_name
        one.cid_num, one.cid_name = num, name
        self.newexten(one, "AppDial", "(Outgoing Line)")
        if (num, name) != (None, None):
            self.emit("NewCallerid", "call", one.block(), {"CID-CallingPres": CID_PRES})
        self.identify(two, num, name)
        self.local_bridge(one, two, "agents", agent.exten, False)
        self.dial("DialBegin", src, one, {"DialString": f"{agent.exten}@agents/n"})
        return _Leg(agent, one, two, self.t, app="AppDial")

    def bridge_pair(self, src: _Chan, leg: _Leg) -> _Bridge:
        bridge = self.bridge_create()
        self.bridge_enter(bridge, leg.one)
        self.bridge_enter(bridge, src)
        self.varset(leg.one, "BRIDGEPEER", src.name)
        self.varset(src, "BRIDGEPEER", leg.one.name)
        return bridge


@dataclass(frozen=True, slots=True)
class _Spec:
    number: str | None
    name: str | None
    queue: str
    position: int
    agi_ok: bool
    timings: Timings


ExitReason = Literal["timeout", "leave_empty", "exit_key", "redirect", "withdraw"]
Variant = Literal["full", "no_dest", "bare"]
_QUEUESTATUS: Mapping[str, str] = MappingProxyType(
    {"timeout": "TIMEOUT", "leave_empty": "LEAVEEMPTY", "withdraw": "WITHDRAW"}
)


class _QueueCall(_Call):
    """The lab's dialplan, step by step: originate, IVR, queue, ring, connect, hang up."""

    def __init__(self, pbx: Pbx, rng: random.Random, start: float, spec: _Spec) -> None:
        super().__init__(pbx, rng, start)
        if spec.queue not in pbx.queues:
            raise ValueError(f"unknown queue {spec.queue!r}")
        self.spec = spec
        self.tm = spec.timings
        self.queue = spec.queue
        self.first_queue = spec.queue
        self.exten = "s" if spec.queue == next(iter(pbx.queues)) else spec.queue
        seq = pbx.local_seq()
        self.c1 = self.chan(f"Local/{self.exten}@incoming-{seq};1", 0, "incoming", self.exten)
        self.c2 = self.chan(
            f"Local/{self.exten}@incoming-{seq};2", 4, "incoming", self.exten, self.c1.linkedid
        )
        self.linkedid = self.c1.linkedid
        self.agi_status = "SUCCESS" if spec.agi_ok else "FAILURE"
        self.patience = 30
        self.originate_no = 0
        self.c1_waiting = 0.0
        self.joined = 0.0
        self.queue_status = ""
        self.member: Agent | None = None
        self.legs: list[_Leg] = []
        self.bridge: _Bridge | None = None
        self.connected_at = 0.0

    # -- helpers ---------------------------------------------------------------------------
    def secs(self, since: float) -> int:
        """Whole-second difference the way app_queue computes it: time(NULL) - start."""
        return int(self.start + self.t) - int(self.start + since)

    def who(self) -> str:
        return f'"{self.spec.name or ""}" <{self.spec.number or ""}>'

    def agi(self, command: str, var: tuple[str, str] | None = None) -> None:
        cid = {"CommandId": str(self.rng.randrange(10**8, 2**31)), "Command": command}
        self.emit("AGIExecStart", "agi", self.c2.block(), cid)
        if var is not None:
            self.varset(self.c2, *var)
        self.emit(
            "AGIExecEnd", "agi", self.c2.block(), cid, {"ResultCode": "200", "Result": "Success"}
        )

    def queue_vars(self, ch: _Chan) -> None:
        spec = self.pbx.queues[self.queue]
        st = self.pbx.queue_stats[self.queue]
        perf = 100.0 * st.in_sl / st.completed if st.completed else 0.0
        for var, value in (
            ("QUEUENAME", self.queue),
            ("QUEUEMAX", str(spec.maxlen)),
            ("QUEUESTRATEGY", spec.strategy),
            ("QUEUECALLS", str(self.spec.position)),
            ("QUEUEHOLDTIME", str(st.holdtime)),
            ("QUEUETALKTIME", str(st.talktime)),
            ("QUEUECOMPLETED", str(st.completed)),
            ("QUEUEABANDONED", str(st.abandoned)),
            ("QUEUESRVLEVEL", str(spec.servicelevel)),
            ("QUEUESRVLEVELPERF", f"{perf:.1f}"),
        ):
            self.varset(ch, var, value)

    def time_vars(self, *, answered: bool) -> None:
        """The *TIME/QUEUEWAIT variables Asterisk 22.9+ sets when Queue() ends."""
        c2, held = self.c2, self.t - self.joined
        if answered:
            talk = self.t - self.connected_at
            pairs = [
                ("ANSWEREDTIME", str(int(talk))),
                ("ANSWEREDTIME_MS", str(int(talk * 1000))),
                ("DIALEDTIME", str(int(held))),
                ("DIALEDTIME_MS", str(int(held * 1000))),
            ]
        else:
            pairs = [
                ("QUEUEWAIT", str(self.secs(self.joined))),
                ("QUEUEWAIT_MS", str(int(held * 1000))),
                ("DIALEDTIME", str(int(held))),
                ("DIALEDTIME_MS", str(int(held * 1000))),
                ("ANSWEREDTIME", "0"),
                ("ANSWEREDTIME_MS", "0"),
            ]
        for var, value in pairs:
            self.varset(c2, var, value)

    def variant(self, *choices: Variant) -> Variant:
        """Where AgentComplete lands: with both blocks, without Dest*, or with no channel."""
        weights = {"full": 6, "no_dest": 2, "bare": 2}
        return self.rng.choices(choices, [weights[c] for c in choices])[0]

    # -- the caller's side ------------------------------------------------------------------
    def originate_response(self) -> None:
        self.emit(
            "OriginateResponse",
            "call",
            {
                "ActionID": f"gen-{self.pbx.run}-{self.originate_no:04d}",
                "Response": "Success",
                "Channel": self.c1.name,
                "Context": "caller",
                "Exten": "s",
                "Reason": "4",
                "Uniqueid": self.c1.uniqueid,
                "CallerIDNum": self.spec.number or UNKNOWN,
                "CallerIDName": self.spec.name or UNKNOWN,
            },
        )

    def originate(self, patience: int, *, hangs_up: bool = False) -> None:
        """AMI Originate of the caller pair, up to the customer leg waiting in ``caller,s,2``.

        ``hangs_up``: the lab's generator passes CALLER_PATIENCE to callers who will hang
        up on their own (capture_extra).
        """
        c1, c2, spec = self.c1, self.c2, self.spec
        self.patience = patience
        self.originate_no = self.pbx.originate_seq()
        seq = str(self.originate_no)
        where = self.rng.choice(("first", "before_dialend", "after_dialend"))
        if where == "first":
            self.originate_response()
        self.newchannel(c1)
        self.newchannel(c2)
        self.newexten(c1, "AppDial2", "(Outgoing Line)")
        self.varset(c1, "GEN_SEQ", seq)
        self.varset(c1, "GEN_RUN", self.pbx.run)
        if hangs_up:
            self.varset(c1, "CALLER_PATIENCE", str(patience))
        self.callerid(c1, spec.number, spec.name)
        self.connected(c1, spec.number, spec.name)
        if hangs_up:
            self.varset(c2, "CALLER_PATIENCE", str(patience))
        self.varset(c2, "GEN_RUN", self.pbx.run)
        self.varset(c2, "GEN_SEQ", seq)
        self.identify(c2, spec.number, spec.name)
        self.local_bridge(c1, c2, "incoming", self.exten, True)
        self.dial("DialBegin", None, c1, {"DialString": f"{self.exten}@incoming"})
        if self.exten != "s":
            self.newexten(c2, "Set", f"TARGET_QUEUE={self.queue}")
            self.varset(c2, "TARGET_QUEUE", self.queue)
            self.newexten(c2, "Goto", "s,1", prio=2)
        self.newexten(c2, "NoOp", f"Incoming call {c2.name} from {self.who()}", exten="s", prio=1)
        self.newexten(c2, "Set", "CHANNEL(hangup_handler_push)=outcome,report,1", prio=2)
        self.emit("HangupHandlerPush", "dialplan", c2.block(), {"Handler": "outcome,report,1"})
        self.newexten(c2, "Set", f"TARGET_QUEUE={self.queue}", prio=3)
        self.varset(c2, "TARGET_QUEUE", self.queue)
        self.newexten(c2, "Answer", "", prio=4)
        for ch in (c2, c1) if self.rng.random() < 0.8 else (c1, c2):
            self.newstate(ch, 6)
        if where == "before_dialend":
            self.originate_response()
        self.dial("DialEnd", None, c1, {"DialStatus": "ANSWER"})
        if where == "after_dialend":
            self.originate_response()
        self.newexten(
            c1, "NoOp", f"Customer leg {c1.name} {self.who()}", context="caller", exten="s"
        )
        self.newexten(c1, "Wait", str(patience), prio=2)
        self.c1_waiting = self.t
        self.device(f"Local/{self.exten}@incoming", "INUSE")
        self.device(f"Local/{self.exten}@incoming", "INUSE")

    def ivr(self) -> None:
        """The FastAGI step; with the IVR server down only AGISTATUS=FAILURE remains."""
        c2 = self.c2
        self.wait(self.tm.ivr)
        self.newexten(c2, "Set", "CHANNEL(language)=en", prio=5)
        self.newexten(c2, "AGI", AGI_URL, prio=6)
        choice = ""
        if self.spec.agi_ok:
            choice = self.rng.choice("123")
            self.agi(f'VERBOSE "IVR: {c2.name} from {self.spec.number or "unknown"}" 1')
            self.agi(f"SET VARIABLE IVR_CHOICE {choice}", ("IVR_CHOICE", choice))
            self.agi('SET VARIABLE IVR_SCRIPT "ivr"', ("IVR_SCRIPT", "ivr"))
        self.varset(c2, "AGISTATUS", self.agi_status)
        self.newexten(c2, "NoOp", f"AGISTATUS={self.agi_status} IVR_CHOICE={choice}", prio=7)

    def join(self, *, context: str = "", exten: str = "", prio: int = 8) -> None:
        c2, pos = self.c2, self.spec.position
        data = f"{self.queue},,,,{int(self.tm.queue_timeout)}"
        self.newexten(c2, "Queue", data, context=context, exten=exten, prio=prio)
        for var in (
            "ANSWEREDTIME",
            "ANSWEREDTIME_MS",
            "DIALEDTIME",
            "DIALEDTIME_MS",
            "QUEUEWAIT",
            "QUEUEWAIT_MS",
        ):
            self.varset(c2, var, "")
        self.device(f"Queue:{self.queue}", "RINGING")
        self.joined = self.t
        body = {"Queue": self.queue, "Position": str(pos), "Count": str(pos)}
        self.emit("QueueCallerJoin", "agent", c2.block(), body)
        self.emit("MusicOnHoldStart", "call", c2.block(), {"Class": "default"})

    def caller_gives_up(self) -> None:
        """The customer leg's ``Wait(patience)`` ends and ``caller,s,3`` hangs up."""
        self.t = max(self.t, self.c1_waiting + self.patience)
        c1, c2 = self.c1, self.c2
        self.newexten(c1, "Hangup", "", prio=3)
        self.soft_hangup(c1)
        self.hangup_request(c2, 16)
        self.hangup(c1)

    def hangup_handler(self) -> None:
        """The lab's ``outcome,report`` Gosub: its ``UserEvent: CallOutcome``."""
        c2 = self.c2
        where = (c2.context, c2.exten, c2.priority)
        self.soft_hangup(c2)
        self.emit("HangupHandlerRun", "dialplan", c2.block(), {"Handler": "outcome,report,1"})
        self.varset(c2, "LOCAL(ARGC)", "0")
        member = self.member
        fields = {
            "Queue": self.first_queue,
            "QueueStatus": self.queue_status,
            "AgiStatus": self.agi_status,
            "MemberName": member.name if member else "",
            "MemberInterface": member.interface if member else "",
            "HangupCause": "16",
        }
        data = ",".join(["CallOutcome", *(f"{k}: {v}" for k, v in fields.items())])
        self.newexten(c2, "UserEvent", data, context="outcome", exten="report", prio=1)
        self.emit("UserEvent", "user", c2.block(), {"UserEvent": "CallOutcome"}, fields)
        self.newexten(c2, "Return", "", prio=2)
        self.varset(c2, "ARGC", "")
        self.varset(c2, "GOSUB_RETVAL", "")
        c2.context, c2.exten, c2.priority = where

    def caller_cdrs(self, *, c1_app: str) -> None:
        c1, c2 = self.c1, self.c2
        data = f"{self.queue},,,,{int(self.tm.queue_timeout)}"
        attempts: list[_Leg | None] = [*self.legs] or [None]
        for leg in attempts:
            dest = leg.one.name if leg else ""
            won = leg is not None and leg.one.answered is not None
            self.cdr(
                c2,
                src=c2,
                destination="s",
                dest_context="incoming",
                dest_channel=dest,
                app="Queue",
                data=data,
                disposition="ANSWERED" if won or leg is None else "NO ANSWER",
            )
        self.cdr(
            c1,
            src=c1,
            destination="s",
            dest_context="caller",
            dest_channel="",
            app=c1_app,
            data="" if c1_app == "Hangup" else str(self.patience),
        )

    # -- ringing members ---------------------------------------------------------------------
    def ring(self, agents: Sequence[Agent]) -> list[_Leg]:
        """AgentCalled + DialBegin for each member, each through a fresh Local pair."""
        legs = []
        num, name = self.spec.number, self.spec.name
        for agent in agents:
            base = f"Local/{agent.exten}@agents-{self.pbx.local_seq()}"
            one = self.chan(base + ";1", 0, "agents", agent.exten, self.linkedid)
            two = self.chan(base + ";2", 4, "agents", agent.exten, self.linkedid)
            self.newchannel(one)
            self.newchannel(two)
            changed = (num, name) != (None, None)
            one.cid_num, one.cid_name = num, name
            self.newexten(one, "AppQueue", "(Outgoing Line)")
            if changed:
                self.emit("NewCallerid", "call", one.block(), {"CID-CallingPres": CID_PRES})
            self.varset(one, "DIALEDPEERNUMBER", f"{agent.exten}@agents/n")
            self.varset(two, "DIALEDPEERNUMBER", f"{agent.exten}@agents/n")
            self.identify(two, num, name)
            self.local_bridge(one, two, "agents", agent.exten, False)
            # AgentCalled is built from a later snapshot than DialBegin (as captured).
            later = replace(one, exten="s", conn_num=num, conn_name=name)
            member = {"Queue": self.queue, "Interface": agent.interface, "MemberName": agent.name}
            self.emit("AgentCalled", "agent", self.c2.block(), later.block("Dest"), member)
            self.dial("DialBegin", self.c2, one, {"DialString": agent.interface})
            legs.append(_Leg(agent, one, two, self.t))
        self.legs.extend(legs)
        return legs

    def ring_and_wait(self, leg: _Leg, *, dial_state: bool) -> None:
        """A member who will not answer (or not in time): Ringing() then Wait()."""
        self.offer(leg, self.c2)
        self.start_ringing(leg, self.c2, dial_state=dial_state)
        leg.prio += 1
        self.newexten(leg.two, "Wait", "60", prio=leg.prio)

    def drop_leg(self, leg: _Leg, cause: int) -> None:
        """A rung member's Local pair torn down (cause 0 after no answer, 26 answered elsewhere)."""
        self.hangup_request(leg.two, cause)
        if self.rng.random() < 0.5:
            self.soft_hangup(leg.two)
            self.hangup(leg.one, cause)
        else:
            self.hangup(leg.one, cause)
            self.soft_hangup(leg.two)
        self.agent_cdr(leg, "Wait", "60")
        self.hangup(leg.two, cause)
        self.agent_free(leg.agent)

    def cancel(self, leg: _Leg, cause: int) -> None:
        """app_queue's hangupcalls: the second DialEnd CANCEL, then the pair goes."""
        self.dial("DialEnd", self.c2, leg.one, {"DialStatus": "CANCEL"})
        self.drop_leg(leg, cause)

    def no_answer(self, leg: _Leg) -> None:
        """AgentRingNoAnswer (RingTime in ms), DialEnd NOANSWER then CANCEL."""
        member = {
            "Queue": self.queue,
            "Interface": leg.agent.interface,
            "MemberName": leg.agent.name,
            "RingTime": str(int(self.tm.ring_timeout * 1000)),
        }
        self.emit("AgentRingNoAnswer", "agent", self.c2.block(), leg.one.block("Dest"), member)
        self.dial("DialEnd", self.c2, leg.one, {"DialStatus": "NOANSWER"})
        self.dial("DialEnd", self.c2, leg.one, {"DialStatus": "CANCEL"})
        self.drop_leg(leg, 0)

    # -- connected ------------------------------------------------------------------------
    def connect(self, leg: _Leg, *, moh_stop: bool = True) -> None:
        """Member variables, QueueCallerLeave, AgentConnect, then the two-party bridge."""
        c2, one, agent, pos = self.c2, leg.one, leg.agent, self.spec.position
        if moh_stop:
            self.emit("MusicOnHoldStop", "call", c2.block())
        stats = self.pbx.members[agent.name]
        member_vars = (
            ("MEMBERINTERFACE", agent.interface),
            ("MEMBERNAME", agent.name),
            ("MEMBERCALLS", str(stats.calls)),
            ("MEMBERLASTCALL", str(stats.last_call)),
            ("MEMBERPENALTY", "0"),
            ("MEMBERDYNAMIC", "0"),
            ("MEMBERREALTIME", "0"),
        )
        for ch in (c2, one):
            for var, value in member_vars:
                self.varset(ch, var, value)
        hold = self.secs(self.joined)
        for ch in (c2, one):
            self.varset(ch, "QEHOLDTIME", str(hold))
            self.varset(ch, "QEORIGINALPOS", str(pos))
        self.queue_vars(c2)
        self.queue_vars(one)
        self.device(f"Queue:{self.queue}", "NOT_INUSE")
        left = {"Queue": self.queue, "Position": str(pos), "Count": str(pos - 1)}
        self.emit("QueueCallerLeave", "agent", c2.block(), left)
        self.varset(c2, "QUEUEPOSITION", str(pos))
        self.varset(c2, "QUEUEWAIT", str(hold))
        self.varset(c2, "QUEUEWAIT_MS", str(int((self.t - self.joined) * 1000)))
        member = {"Queue": self.queue, "Interface": agent.interface, "MemberName": agent.name}
        times = {"HoldTime": str(hold), "RingTime": str(self.secs(leg.called))}
        self.emit("AgentConnect", "agent", c2.block(), one.block("Dest"), member, times)
        st = self.pbx.queue_stats[self.queue]
        st.holdtime = _avg(st.holdtime, hold)
        if hold <= self.pbx.queues[self.queue].servicelevel:
            st.in_sl += 1
        self.member, self.connected_at = agent, self.t
        steps: list[Callable[[], None]] = [
            lambda: self.agent_busy(agent, in_call=True),
            lambda: self.device(f"Queue:{self.queue}_avail", "NOT_INUSE"),
        ]
        self.rng.shuffle(steps)
        steps.insert(self.rng.randrange(len(steps) + 1), self.open_bridge)
        for step in steps:
            step()
        bridge = self.bridge
        if bridge is not None:
            self.bridge_enter(bridge, one)
            self.bridge_enter(bridge, c2)
        self.varset(one, "BRIDGEPEER", c2.name)
        self.varset(c2, "BRIDGEPEER", one.name)

    def open_bridge(self) -> None:
        self.bridge = self.bridge_create()

    def agent_talks(self, leg: _Leg, seconds: float, *, limit: float = 0.0) -> None:
        """The member's ``;2`` runs Wait(limit or talk) while the caller is bridged."""
        self.wait(min(0.5, seconds))
        leg.prio += 1
        self.newexten(leg.two, "Wait", str(int(limit or seconds)), prio=leg.prio)
        self.wait(max(0.0, seconds - 0.5))

    def agent_complete(self, leg: _Leg, reason: str, variant: Variant) -> None:
        hold = self.secs(self.joined) - self.secs(self.connected_at)
        talk = self.secs(self.connected_at)
        parts: list[Mapping[str, str]] = []
        if variant != "bare":
            parts.append(self.c2.block())
        if variant == "full":
            parts.append(leg.one.block("Dest"))
        agent = leg.agent
        body = {
            "Queue": self.queue,
            "Interface": agent.interface,
            "MemberName": agent.name,
            "HoldTime": str(hold),
            "TalkTime": str(talk),
            "Reason": reason,
        }
        self.emit("AgentComplete", "agent", *parts, body)
        stats = self.pbx.members[agent.name]
        stats.calls += 1
        stats.last_call = int(self.now())
        st = self.pbx.queue_stats[self.queue]
        st.completed += 1
        st.talktime = _avg(st.talktime, talk)

    def end_caller(self, bridge: _Bridge | None) -> None:
        """The caller pair after the queue: handler, ``;1`` asked to hang up, both gone."""
        self.hangup_handler()
        self.hangup_request(self.c1, 16)
        self.hangup(self.c2)
        self.soft_hangup(self.c1)
        if bridge is not None:
            self.bridge_destroy(bridge)
        self.hangup(self.c1)
        self.device(f"Local/{self.exten}@incoming", "NOT_INUSE")

    def agent_hangs_up(self, leg: _Leg) -> None:
        """As captured (Reason agent): the member's dialplan runs Hangup()."""
        c2, one, two, bridge = self.c2, leg.one, leg.two, self.bridge
        variant = self.variant("full", "no_dest", "bare")
        leg.prio += 1
        self.newexten(two, "Hangup", "", prio=leg.prio)
        self.soft_hangup(two)
        self.hangup_request(one, 16)
        self.agent_cdr(leg, "Hangup", "")
        self.hangup(two)
        if variant == "full":
            self.agent_complete(leg, "agent", variant)
        self.caller_cdrs(c1_app="Wait")
        self.varset(one, "BRIDGEPEER", "")
        self.varset(c2, "BRIDGEPEER", "")
        self.agent_free(leg.agent)
        if bridge is not None:
            self.bridge_leave(bridge, one)
            self.bridge_leave(bridge, c2)
        self.queue_vars(c2)
        self.time_vars(answered=True)
        self.hangup(one)
        if variant == "no_dest":
            self.agent_complete(leg, "agent", variant)
        self.queue_vars(c2)
        self.end_caller(bridge)
        if variant == "bare":
            self.agent_complete(leg, "agent", variant)

    def caller_hangs_up(self, leg: _Leg) -> None:
        """As captured in capture_extra (Reason caller): the customer leg's Wait() ends."""
        c2, one, two, bridge = self.c2, leg.one, leg.two, self.bridge
        variant = self.variant("full", "bare")
        self.caller_gives_up()
        if variant == "full":
            self.agent_complete(leg, "caller", variant)
        self.caller_cdrs(c1_app="Hangup")
        self.varset(c2, "BRIDGEPEER", "")
        self.varset(one, "BRIDGEPEER", "")
        if bridge is not None:
            self.bridge_leave(bridge, c2)
        self.queue_vars(c2)
        self.time_vars(answered=True)
        self.queue_vars(c2)
        self.hangup_handler()
        self.hangup(c2)
        if bridge is not None:
            self.bridge_leave(bridge, one)
            self.bridge_destroy(bridge)
        self.hangup_request(two, 16)
        self.hangup(one)
        self.soft_hangup(two)
        self.agent_cdr(leg, "Wait", str(int(self.tm.talk)))
        self.hangup(two)
        if variant == "bare":
            self.agent_complete(leg, "caller", variant)
        self.agent_free(leg.agent)
        self.device(f"Local/{self.exten}@incoming", "NOT_INUSE")

    # -- leaving the queue without an agent --------------------------------------------------
    def record_abandoned(self) -> None:
        c2, pos = self.c2, self.spec.position
        self.varset(c2, "ABANDONED", "TRUE")
        self.queue_vars(c2)
        body = {
            "Queue": self.queue,
            "Position": str(pos),
            "OriginalPosition": str(pos),
            "HoldTime": str(self.secs(self.joined)),
        }
        self.emit("QueueCallerAbandon", "agent", c2.block(), body)
        self.pbx.queue_stats[self.queue].abandoned += 1

    def leave_queue(self) -> None:
        c2, pos = self.c2, self.spec.position
        self.queue_vars(c2)
        left = {"Queue": self.queue, "Position": str(pos), "Count": str(pos - 1)}
        self.emit("QueueCallerLeave", "agent", c2.block(), left)
        self.varset(c2, "QUEUEPOSITION", str(pos))
        self.device(f"Queue:{self.queue}", "NOT_INUSE")

    def abandon(self, ringing: Sequence[_Leg]) -> None:
        """Caller hangs up while queued (captured), possibly while members ring (ref. §2.5)."""
        self.caller_gives_up()
        for leg in ringing:
            self.dial("DialEnd", self.c2, leg.one, {"DialStatus": "CANCEL"})
        for leg in ringing:
            self.cancel(leg, 0)
        self.emit("MusicOnHoldStop", "call", self.c2.block())
        self.time_vars(answered=False)
        self.record_abandoned()
        self.leave_queue()
        self.caller_cdrs(c1_app="Hangup")
        self.hangup_handler()
        self.hangup(self.c2)
        self.device(f"Local/{self.exten}@incoming", "NOT_INUSE")

    def exit_queue(self, reason: ExitReason, *, digit: str, info: str) -> None:
        """Queue exits other than answer/hang-up.

        Built from app_queue.c per reference notes §2.5, not captured: record_abandoned()
        (ABANDONED=TRUE, QueueCallerAbandon) runs for timeout, leaveempty, withdraw and a
        Redirect out of the queue, never for an exit key; QUEUESTATUS is set by
        set_queue_result() after leave_queue(); the caller then goes on in the dialplan.
        """
        c2 = self.c2
        if reason == "exit_key":
            self.emit("DTMFBegin", "dtmf", c2.block(), {"Digit": digit, "Direction": "Received"})
            self.wait(0.12)
            end = {"Digit": digit, "DurationMs": "120", "Direction": "Received"}
            self.emit("DTMFEnd", "dtmf", c2.block(), end)
        self.time_vars(answered=False)
        if reason != "exit_key":
            self.record_abandoned()
        if reason == "withdraw":
            self.varset(c2, "QUEUE_WITHDRAW_INFO", info)
        if reason != "redirect":
            self.emit("MusicOnHoldStop", "call", c2.block())
        self.leave_queue()
        status = _QUEUESTATUS.get(reason, "")
        if status:
            self.varset(c2, "QUEUESTATUS", status)
            self.queue_status = status
        if reason == "redirect":
            self.emit("MusicOnHoldStop", "call", c2.block())
        self.after_queue(reason, digit)

    def after_queue(self, reason: ExitReason, digit: str) -> None:
        """The caller goes on in another context, then the dialplan hangs up."""
        c2 = self.c2
        if reason == "exit_key":
            note, context, exten = f"Caller left the queue with {digit}", "queue-exit", digit
        elif reason == "redirect":
            note, context, exten = "Redirected out of the queue", "after-redirect", "s"
        else:
            self.newexten(c2, "Goto", "queue-fallback,s,1", prio=c2.priority + 1)
            note, context, exten = f"Queue left: {self.queue_status}", "queue-fallback", "s"
        self.newexten(c2, "NoOp", note, context=context, exten=exten, prio=1)
        self.newexten(c2, "Playback", "vm-nobodyavail", prio=2)
        self.wait(self.tm.after_exit)
        self.newexten(c2, "Hangup", "", prio=3)
        self.caller_cdrs(c1_app="Wait")
        self.end_caller(None)

    # -- transfers: built from reference notes §2.6, not captured ----------------------------
    def member_leg_goes(self, leg: _Leg) -> None:
        """The transferring member's Local pair hangs up (its bridge was left already)."""
        self.soft_hangup(leg.one)
        self.hangup_request(leg.two, 16)
        self.hangup(leg.one)
        self.soft_hangup(leg.two)
        self.agent_cdr(leg, "Wait", str(int(self.tm.talk)))
        self.hangup(leg.two)
        self.agent_free(leg.agent)

    def callee_hangs_up(self, leg: _Leg, bridge: _Bridge) -> None:
        c2, one, two = self.c2, leg.one, leg.two
        leg.prio += 1
        self.newexten(two, "Hangup", "", prio=leg.prio)
        self.soft_hangup(two)
        self.hangup_request(one, 16)
        self.agent_cdr(leg, "Hangup", "")
        self.hangup(two)
        self.varset(one, "BRIDGEPEER", "")
        self.varset(c2, "BRIDGEPEER", "")
        self.bridge_leave(bridge, one)
        self.hangup(one)
        self.bridge_leave(bridge, c2)
        self.agent_free(leg.agent)

    def blind_transfer(self, leg: _Leg, context: str, exten: str) -> None:
        """BlindTransfer by the member's leg (DTMF feature / AMI: IsExternal No), then
        AgentComplete Reason transfer; the member leg leaves and hangs up, the caller leaves
        the queue bridge and goes to ``context,exten,1``."""
        c2, one, bridge = self.c2, leg.one, self.bridge
        if bridge is None:
            raise ValueError("blind transfer needs a connected call")
        self.emit(
            "BlindTransfer",
            "call",
            {"Result": "Success"},
            one.block("Transferer"),
            c2.block("Transferee"),
            bridge.block(),
            {"IsExternal": "No", "Context": context, "Extension": exten},
        )
        self.agent_complete(leg, "transfer", "full")
        self.bridge_leave(bridge, one)
        self.varset(one, "BRIDGEPEER", "")
        self.member_leg_goes(leg)
        self.bridge_leave(bridge, c2)
        self.bridge_destroy(bridge)
        self.varset(c2, "BRIDGEPEER", "")
        self.bridge = None
        self.queue_vars(c2)
        self.time_vars(answered=True)

    def attended_transfer(self, leg: _Leg, target: Agent) -> None:
        """Hold, a consultation call from the member's phone (new Linkedid), then the merge.

        Order per reference notes §2.6: BridgeLeave of both transferer legs, BridgeEnter of
        the target into the caller's bridge, AttendedTransfer DestType Bridge (the target
        block still shows its old Linkedid), the target's next event shows the caller's
        Linkedid, then the transferers hang up.
        """
        c2, one, b1, agent, tm = self.c2, leg.one, self.bridge, leg.agent, self.tm
        if b1 is None:
            raise ValueError("attended transfer needs a connected call")
        self.emit("Hold", "call", one.block(), {"MusicClass": "default"})
        self.emit("MusicOnHoldStart", "call", c2.block(), {"Class": "default"})
        self.wait(1.0)
        phone = self.chan(f"PJSIP/{agent.exten}-{self.pbx.pjsip_seq()}", 4, "phones", target.exten)
        phone.cid_num, phone.cid_name = agent.exten, agent.name
        self.newchannel(phone)
        self.newexten(phone, "Dial", f"Local/{target.exten}@agents/n,30")
        self.device(f"PJSIP/{agent.exten}", "INUSE")
        consult = self.dial_agent(phone, target, phone.linkedid)
        self.pick_up(consult, phone, tm.ring)
        self.newstate(phone, 6)
        self.agent_busy(target, in_call=False)
        b2 = self.bridge_pair(phone, consult)
        self.wait(tm.consult)
        self.bridge_leave(b1, one)
        self.bridge_leave(b2, phone)
        self.bridge_leave(b2, consult.one)
        self.bridge_enter(b1, consult.one)
        self.emit(
            "AttendedTransfer",
            "call",
            {"Result": "Success"},
            one.block("OrigTransferer"),
            b1.block("Orig"),
            phone.block("SecondTransferer"),
            b2.block("Second"),
            c2.block("Transferee"),
            consult.one.block("TransferTarget"),
            {"IsExternal": "Yes", "DestType": "Bridge", "DestBridgeUniqueid": b1.uniqueid},
        )
        consult.one.linkedid = self.linkedid
        self.agent_complete(leg, "transfer", "full")
        self.emit("MusicOnHoldStop", "call", c2.block())
        self.connected(consult.one, c2.cid_num, c2.cid_name)
        self.varset(consult.one, "BRIDGEPEER", c2.name)
        self.varset(c2, "BRIDGEPEER", consult.one.name)
        self.bridge_destroy(b2)
        self.member_leg_goes(leg)
        self.soft_hangup(phone)
        self.hangup(phone)
        self.device(f"PJSIP/{agent.exten}", "NOT_INUSE")
        self.agent_talks(consult, tm.talk)
        self.callee_hangs_up(consult, b1)
        self.queue_vars(c2)
        self.time_vars(answered=True)
        self.queue_vars(c2)
        self.caller_cdrs(c1_app="Wait")
        self.end_caller(b1)


CallbackOutcome = Literal["answer", "busy", "silent"]
CENTER = ("+861012345678", "Example Center")  # what the lab's callbacks context presents
TRUNK_CONTEXT = "from-trunk"  # the trunk endpoint's context (its channels' snapshot)


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """An AMI ``Originate`` of a callback (cti/callbacks.py): Channel ``Local/<number>@<ctx>``,
    Application ``Dial``, Data ``<agent device>,<seconds>``."""

    channel: str
    data: str
    number: str | None
    name: str | None
    channel_id: str
    action_id: str | None
    timeout: float  # the Originate's Timeout, in seconds
    variables: tuple[tuple[str, str], ...] = ()


class _Callback(_Call):
    """What Asterisk 22 sends for a callback Originate, step by step.

    Confirmed in the Asterisk 22 source: ``;2`` gets ``<ChannelId>;2`` (core_unreal.c
    ast_unreal_new_channels); the originate's own DialBegin/DialEnd carry no caller block
    (dial.c, async); ``;1`` goes Ringing when ``;2`` indicates ringing (core_unreal.c
    unreal_queue_frame); ``OriginateResponse`` is sent once ``;1`` is answered or the dial
    ended, with ``Application``/``Data`` and no ``Context``/``Exten``, and on failure the
    requested channel and the ChannelId (manager.c fast_originate); the reason maps as in
    pbx.c pbx_dial_reason (timeout: cause 19, Reason 3; busy: cause 17, Reason 5); at the
    global timeout dial.c hangs ``;1`` up without a DialEnd; the application runs on ``;1``
    through pbx_exec, which changes no context/exten/priority, so no Newexten (the ``;1``
    channel's CEP is its Local one) and ``;1`` stays ``AppDial2`` until then.

    Not confirmed (no capture of a callback): the trunk channel's context/exten, that the
    customer's phone sends 180 before 200 (a busy line answers 486 without ringing), the
    relative order of ``;2``'s bridge events and ``OriginateResponse`` (separate threads),
    the hang-up orders (built like the captured queue calls), and the dialplan of the
    ``callbacks`` context, which is the one docs/follow-ups.md recommends.
    """

    def __init__(
        self, pbx: Pbx, rng: random.Random, start: float, request: CallbackRequest
    ) -> None:
        super().__init__(pbx, rng, start)
        self.request = request
        exten, _, context = request.channel.partition("/")[2].partition("@")
        self.exten, self.context = exten, context
        base = f"{request.channel}-{pbx.local_seq()}"
        uid = request.channel_id
        self.c1 = self.chan(base + ";1", 0, context, exten)
        if uid:
            self.c1.uniqueid = self.c1.linkedid = uid
        self.c2 = self.chan(base + ";2", 4, context, exten, self.c1.linkedid)
        if uid:
            self.c2.uniqueid = f"{uid};2"
        self.linkedid = self.c1.linkedid

    def originate_response(self, answered: bool, reason: int) -> None:
        req = self.request
        self.emit(
            "OriginateResponse",
            "call",
            {"ActionID": req.action_id} if req.action_id is not None else {},
            {
                "Response": "Success" if answered else "Failure",
                "Channel": self.c1.name if answered else req.channel,
                "Application": "Dial",
                "Data": req.data,
                "Reason": str(reason),
                "Uniqueid": self.c1.uniqueid if answered else (req.channel_id or "<unknown>"),
                "CallerIDNum": req.number or UNKNOWN,
                "CallerIDName": req.name or UNKNOWN,
            },
        )

    def call_customer(self) -> _Chan:
        """The Local pair, then ``;2`` runs the callbacks context and dials the trunk."""
        c1, c2, req = self.c1, self.c2, self.request
        self.newchannel(c1)
        self.newchannel(c2)
        self.newexten(c1, "AppDial2", "(Outgoing Line)")
        for name, value in req.variables:
            self.varset(c1, name, value)
        self.callerid(c1, req.number, req.name)
        self.connected(c1, req.number, req.name)
        for name, value in req.variables:
            self.varset(c2, name, value)
        self.identify(c2, req.number, req.name)
        self.local_bridge(c1, c2, self.context, self.exten, True)
        self.dial("DialBegin", None, c1, {"DialString": f"{self.exten}@{self.context}"})
        center_num, center_name = CENTER
        self.newexten(c2, "Set", f'CALLERID(all)="{center_name}" <{center_num}>', prio=1)
        self.callerid(c2, center_num, center_name)
        followup = dict(req.variables).get("CTI_FOLLOWUP", "")
        self.newexten(c2, "Set", f"CDR(userfield)=followup-{followup}", prio=2)
        dialled = f"00{self.exten.lstrip('+')}@trunk"
        self.newexten(c2, "Dial", f"PJSIP/{dialled}", prio=3)
        trunk = self.chan(f"PJSIP/trunk-{self.pbx.pjsip_seq()}", 0, TRUNK_CONTEXT, "s")
        trunk.linkedid = self.linkedid
        self.newchannel(trunk)
        self.newexten(trunk, "AppDial", "(Outgoing Line)")
        self.callerid(trunk, center_num, center_name)
        self.dial("DialBegin", c2, trunk, {"DialString": dialled})
        return trunk

    def customer_rings(self, trunk: _Chan) -> None:
        self.wait(self.rng.uniform(0.1, 0.4))  # 100 Trying, then 180 Ringing
        self.newstate(trunk, 5)
        self.dial("DialState", self.c2, trunk, {"DialStatus": "RINGING"})
        self.newstate(self.c1, 5)

    def customer_answers(self, trunk: _Chan) -> _Bridge:
        c1, c2 = self.c1, self.c2
        self.newstate(trunk, 6)
        self.connected(trunk, c2.cid_num, c2.cid_name)
        self.dial("DialEnd", c2, trunk, {"DialStatus": "ANSWER"})
        self.newstate(c2, 6)
        self.newstate(c1, 6)
        self.dial("DialEnd", None, c1, {"DialStatus": "ANSWER"})
        self.originate_response(True, 4)
        bridge = self.bridge_create()
        self.bridge_enter(bridge, trunk)
        self.bridge_enter(bridge, c2)
        return bridge

    def no_answer(self, trunk: _Chan) -> None:
        """The Originate's timeout: dial.c hangs ``;1`` up (cause 19), app_dial on ``;2``
        cancels the trunk."""
        c1, c2 = self.c1, self.c2
        self.hangup(c1, 19)
        self.hangup_request(c2, 19)
        self.dial("DialEnd", c2, trunk, {"DialStatus": "CANCEL"})
        self.hangup(trunk, 0)
        self.hangup(c2, 19)
        self.originate_response(False, 3)

    def line_busy(self, trunk: _Chan) -> None:
        """486 from the trunk: Dial returns BUSY, the context hangs ``;2`` up (cause 17),
        ``;1`` follows and dial.c reports BUSY."""
        c1, c2 = self.c1, self.c2
        self.dial("DialEnd", c2, trunk, {"DialStatus": "BUSY"})
        self.hangup(trunk, 17)
        self.newexten(c2, "Hangup", "", prio=4)
        self.soft_hangup(c2, 17)
        self.hangup_request(c1, 17)
        self.hangup(c2, 17)
        self.dial("DialEnd", None, c1, {"DialStatus": "BUSY"})
        self.hangup(c1, 17)
        self.originate_response(False, 5)

    def ring_agent(self, agent: Agent, ring: float) -> tuple[_Leg, _Bridge]:
        """``Dial(<agent's Local interface>)`` on ``;1``: the member's pair, ring, answer."""
        leg = self.dial_agent(self.c1, agent, self.linkedid)
        self.pick_up(leg, self.c1, ring)
        return leg, self.bridge_pair(self.c1, leg)

    def customer_hangs_up(self, trunk: _Chan, b1: _Bridge, leg: _Leg, b2: _Bridge) -> None:
        """A BYE from the trunk (no Cause, as captured for a remote BYE); ``;2``'s dialplan
        goes on to Hangup(), ``;1`` is asked to hang up and its Dial drops the member."""
        c1, c2 = self.c1, self.c2
        self.emit("HangupRequest", "call", trunk.block())
        self.bridge_leave(b1, trunk)
        self.hangup(trunk)
        self.bridge_leave(b1, c2)
        self.bridge_destroy(b1)
        self.newexten(c2, "Hangup", "", prio=4)
        self.soft_hangup(c2)
        self.hangup_request(c1, 16)
        self.hangup(c2)
        self.bridge_leave(b2, c1)
        self.bridge_leave(b2, leg.one)
        self.bridge_destroy(b2)
        self.soft_hangup(leg.one)
        self.hangup_request(leg.two, 16)
        self.hangup(leg.one)
        self.soft_hangup(leg.two)
        self.hangup(leg.two)
        self.agent_free(leg.agent)
        self.hangup(c1)

    def agent_hangs_up(self, trunk: _Chan, b1: _Bridge, leg: _Leg, b2: _Bridge) -> None:
        """The member's ``;2`` runs Hangup(); Dial on ``;1`` returns, pbx_outgoing_exec hangs
        ``;1`` up, so ``;2`` is asked to and app_dial on it drops the trunk."""
        c1, c2, one, two = self.c1, self.c2, leg.one, leg.two
        leg.prio += 1
        self.newexten(two, "Hangup", "", prio=leg.prio)
        self.soft_hangup(two)
        self.hangup_request(one, 16)
        self.hangup(two)
        self.bridge_leave(b2, one)
        self.hangup(one)
        self.bridge_leave(b2, c1)
        self.bridge_destroy(b2)
        self.agent_free(leg.agent)
        self.hangup(c1)
        self.hangup_request(c2, 16)
        self.bridge_leave(b1, c2)
        self.bridge_leave(b1, trunk)
        self.bridge_destroy(b1)
        self.soft_hangup(trunk)
        self.hangup(trunk)
        self.hangup(c2)


def callback(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    request: CallbackRequest,
    outcome: CallbackOutcome = "answer",
) -> list[TimedEvent]:
    """A callback Originate played to its end: the customer's phone rings (2-8 s, within the
    Originate's timeout) and answers, is busy, or never answers (``silent``: Failure after the
    timeout); once answered the agent's phone rings 2-8 s, they talk, one side hangs up.
    Raises ValueError when Data names no member's Local interface."""
    device = request.data.split(",", 1)[0]
    agent = next((a for a in pbx.agents if device in (a.interface, a.device)), None)
    if agent is None:
        raise ValueError(f"no simulated member has the device {device!r}")
    call = _Callback(pbx, rng, start, request)
    trunk = call.call_customer()
    if outcome == "busy":
        call.wait(rng.uniform(0.5, 2.0))
        call.line_busy(trunk)
        return call.out
    call.customer_rings(trunk)
    if outcome == "silent":
        call.wait(max(0.0, request.timeout - call.t))
        call.no_answer(trunk)
        return call.out
    call.wait(min(rng.uniform(2.0, 8.0), 0.9 * request.timeout - call.t))
    b1 = call.customer_answers(trunk)
    leg, b2 = call.ring_agent(agent, rng.uniform(2.0, 8.0))
    call.wait(rng.uniform(20.0, 90.0))
    if rng.random() < 0.5:
        call.customer_hangs_up(trunk, b1, leg, b2)
    else:
        call.agent_hangs_up(trunk, b1, leg, b2)
    return call.out


class Scenario(Protocol):
    """What :data:`SCENARIOS` holds: every scenario takes these keywords."""

    def __call__(
        self,
        pbx: Pbx,
        rng: random.Random,
        *,
        start: float,
        number: str | None,
        name: str | None,
        queue: str = ...,
        agents: Sequence[Agent] | None = ...,
        timings: Timings = ...,
        position: int = ...,
        agi_ok: bool = ...,
    ) -> list[TimedEvent]: ...


DEFAULT_TIMINGS = Timings()


def _call(
    pbx: Pbx,
    rng: random.Random,
    start: float,
    number: str | None,
    name: str | None,
    queue: str,
    position: int,
    agi_ok: bool,
    timings: Timings,
) -> _QueueCall:
    if position < 1:
        raise ValueError("position starts at 1")
    return _QueueCall(pbx, rng, start, _Spec(number, name, queue, position, agi_ok, timings))


def _members(pbx: Pbx, queue: str, agents: Sequence[Agent] | None, count: int) -> list[Agent]:
    chosen = pbx.next_agents(queue, count) if agents is None else list(agents[:count])
    if len(chosen) < count:
        raise ValueError(f"this scenario needs {count} agents")
    return chosen


def _pair(pbx: Pbx, queue: str, agents: Sequence[Agent] | None, target_queue: str) -> list[Agent]:
    """The answering member, then a different member to transfer to."""
    if agents is not None:
        return _members(pbx, queue, agents, 2)
    (first,) = pbx.next_agents(queue, 1)
    pool = [a for a in pbx.agents_of(target_queue) if a != first] or [
        a for a in pbx.agents if a != first
    ]
    if not pool:
        raise ValueError("a transfer needs a second agent")
    return [first, pool[0]]


def _caller_budget(tm: Timings, *extra: float) -> int:
    """The customer leg's Wait(): long enough to outlast a call it does not end itself."""
    return max(30, int(tm.ivr + tm.wait + tm.ring + tm.talk + sum(extra)) + 10)


def answered(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
    hangup_by: Literal["agent", "caller"] = "agent",
) -> list[TimedEvent]:
    """One member rung and answering (capture_10calls); either side hangs up."""
    tm = timings
    call = _call(pbx, rng, start, number, name, queue, position, agi_ok, tm)
    (agent,) = _members(pbx, queue, agents, 1)
    if hangup_by == "caller":
        call.originate(patience=max(1, round(tm.ivr + tm.wait + tm.ring + tm.talk)), hangs_up=True)
    else:
        call.originate(patience=_caller_budget(tm))
    call.ivr()
    call.join()
    call.wait(tm.wait)
    (leg,) = call.ring([agent])
    call.pick_up(leg, call.c2, tm.ring)
    call.connect(leg)
    if hangup_by == "caller":
        call.agent_talks(leg, tm.talk, limit=tm.talk + 4)
        call.caller_hangs_up(leg)
    else:
        call.agent_talks(leg, tm.talk)
        call.agent_hangs_up(leg)
    return call.out


def abandoned(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
    while_ringing: bool = False,
) -> list[TimedEvent]:
    """The caller hangs up in the queue (capture_extra), or while a member rings (ref. §2.5)."""
    tm = timings
    call = _call(pbx, rng, start, number, name, queue, position, agi_ok, tm)
    patience = max(1, round(tm.patience))
    call.originate(patience=patience, hangs_up=True)
    call.ivr()
    call.join()
    legs: list[_Leg] = []
    if while_ringing:
        call.wait(min(tm.wait, max(0.0, patience - tm.ivr - 1.0)))
        legs = call.ring(_members(pbx, queue, agents, 1))
        for leg in legs:
            call.ring_and_wait(leg, dial_state=rng.random() < 0.5)
    call.abandon(legs)
    return call.out


def ring_no_answer(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
) -> list[TimedEvent]:
    """The first member rings out (AgentRingNoAnswer, like Eve in capture_extra), the next
    one answers after the queue's retry pause."""
    tm = timings
    call = _call(pbx, rng, start, number, name, queue, position, agi_ok, tm)
    first, second = _members(pbx, queue, agents, 2)
    call.originate(patience=_caller_budget(tm, tm.ring_timeout, tm.retry))
    call.ivr()
    call.join()
    call.wait(tm.wait)
    (missed,) = call.ring([first])
    call.ring_and_wait(missed, dial_state=True)
    call.wait(tm.ring_timeout)
    call.no_answer(missed)
    call.wait(tm.retry)
    (leg,) = call.ring([second])
    call.pick_up(leg, call.c2, tm.ring)
    call.connect(leg)
    call.agent_talks(leg, tm.talk)
    call.agent_hangs_up(leg)
    return call.out


def ring_all(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "sales",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
    winner: int | None = None,
) -> list[TimedEvent]:
    """A ``ringall`` queue (capture_extra's first calls): every member gets AgentCalled, one
    DialEnd ANSWER, every other member DialEnd CANCEL twice and hangs up (cause 26)."""
    tm = timings
    call = _call(pbx, rng, start, number, name, queue, position, agi_ok, tm)
    members = list(agents) if agents is not None else pbx.agents_of(queue)
    if not members:
        raise ValueError(f"queue {queue!r} has no members")
    won = members[winner if winner is not None else rng.randrange(len(members))]
    call.originate(patience=_caller_budget(tm))
    call.ivr()
    call.join()
    call.wait(tm.wait)
    legs = call.ring(members)
    others = [leg for leg in legs if leg.agent != won]
    (leg,) = [leg for leg in legs if leg.agent == won]
    for other in others:
        call.ring_and_wait(other, dial_state=False)
    call.pick_up(leg, call.c2, tm.ring)
    for other in others:
        call.dial("DialEnd", call.c2, other.one, {"DialStatus": "CANCEL"})
    for other in others:
        call.cancel(other, 26)
    call.connect(leg)
    call.agent_talks(leg, tm.talk)
    call.agent_hangs_up(leg)
    return call.out


def _queue_exit(
    reason: ExitReason,
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str,
    timings: Timings,
    position: int,
    agi_ok: bool,
    digit: str = "",
    info: str = "",
) -> list[TimedEvent]:
    # Built from app_queue.c per reference notes, not captured.
    tm = timings
    call = _call(pbx, rng, start, number, name, queue, position, agi_ok, tm)
    stay = tm.queue_timeout if reason == "timeout" else tm.patience
    call.originate(patience=_caller_budget(tm, stay, tm.after_exit))
    call.ivr()
    call.join()
    call.wait(stay)
    call.exit_queue(reason, digit=digit, info=info)
    return call.out


def queue_timeout(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
) -> list[TimedEvent]:
    """Queue() timeout expires (QUEUESTATUS=TIMEOUT); built from app_queue.c per reference
    notes, not captured."""
    return _queue_exit(
        "timeout",
        pbx,
        rng,
        start=start,
        number=number,
        name=name,
        queue=queue,
        timings=timings,
        position=position,
        agi_ok=agi_ok,
    )


def leave_empty(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
) -> list[TimedEvent]:
    """``leavewhenempty`` (QUEUESTATUS=LEAVEEMPTY); built from app_queue.c per reference
    notes, not captured. The members' own state changes are not part of this call."""
    return _queue_exit(
        "leave_empty",
        pbx,
        rng,
        start=start,
        number=number,
        name=name,
        queue=queue,
        timings=timings,
        position=position,
        agi_ok=agi_ok,
    )


def exit_key(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
    digit: str = "1",
) -> list[TimedEvent]:
    """The caller presses a key valid in the queue's context (no QueueCallerAbandon); built
    from app_queue.c per reference notes, not captured."""
    return _queue_exit(
        "exit_key",
        pbx,
        rng,
        start=start,
        number=number,
        name=name,
        queue=queue,
        timings=timings,
        position=position,
        agi_ok=agi_ok,
        digit=digit,
    )


def redirected(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
) -> list[TimedEvent]:
    """An AMI Redirect moves the waiting caller to ``after-redirect``; built from app_queue.c
    per reference notes, not captured."""
    return _queue_exit(
        "redirect",
        pbx,
        rng,
        start=start,
        number=number,
        name=name,
        queue=queue,
        timings=timings,
        position=position,
        agi_ok=agi_ok,
    )


def withdrawn(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
    info: str = "callback",
) -> list[TimedEvent]:
    """QueueWithdrawCaller (QUEUESTATUS=WITHDRAW, QUEUE_WITHDRAW_INFO); built from
    app_queue.c per reference notes, not captured."""
    return _queue_exit(
        "withdraw",
        pbx,
        rng,
        start=start,
        number=number,
        name=name,
        queue=queue,
        timings=timings,
        position=position,
        agi_ok=agi_ok,
        info=info,
    )


def blind_transfer(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
) -> list[TimedEvent]:
    """The member blind-transfers the caller to another member's extension: a new Dial from
    the caller's channel with the caller's Linkedid. Built from reference notes §2.6, not
    captured; ``agents`` = (answering member, target)."""
    tm = timings
    call = _call(pbx, rng, start, number, name, queue, position, agi_ok, tm)
    first, target = _pair(pbx, queue, agents, queue)
    call.originate(patience=_caller_budget(tm, tm.talk, tm.ring))
    call.ivr()
    call.join()
    call.wait(tm.wait)
    (leg,) = call.ring([first])
    call.pick_up(leg, call.c2, tm.ring)
    call.connect(leg)
    call.agent_talks(leg, tm.talk / 2, limit=tm.talk)
    call.blind_transfer(leg, "transfer", target.exten)
    c2 = call.c2
    dial_data = f"Local/{target.exten}@agents/n,30"
    call.newexten(c2, "Dial", dial_data, context="transfer", exten=target.exten, prio=1)
    second = call.dial_agent(c2, target, call.linkedid)
    call.pick_up(second, c2, tm.ring)
    call.agent_busy(target, in_call=False)
    bridge = call.bridge_pair(c2, second)
    call.agent_talks(second, tm.talk)
    call.callee_hangs_up(second, bridge)
    call.newexten(c2, "Hangup", "", prio=2)
    call.caller_cdrs(c1_app="Wait")
    call.end_caller(bridge)
    return call.out


def blind_transfer_to_queue(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
    target_queue: str = "sales",
) -> list[TimedEvent]:
    """The member blind-transfers the caller into another queue: a second QueueCallerJoin
    with the same Uniqueid. Built from reference notes §2.6, not captured."""
    tm = timings
    if target_queue not in pbx.queues:
        raise ValueError(f"unknown queue {target_queue!r}")
    call = _call(pbx, rng, start, number, name, queue, position, agi_ok, tm)
    first, target = _pair(pbx, queue, agents, target_queue)
    call.originate(patience=_caller_budget(tm, tm.talk, tm.ring, tm.wait))
    call.ivr()
    call.join()
    call.wait(tm.wait)
    (leg,) = call.ring([first])
    call.pick_up(leg, call.c2, tm.ring)
    call.connect(leg)
    call.agent_talks(leg, tm.talk / 2, limit=tm.talk)
    call.blind_transfer(leg, "transfer", target_queue)
    call.queue = target_queue
    call.join(context="transfer", exten=target_queue, prio=1)
    call.wait(tm.wait)
    (second,) = call.ring([target])
    call.pick_up(second, call.c2, tm.ring)
    call.connect(second)
    call.agent_talks(second, tm.talk)
    call.agent_hangs_up(second)
    return call.out


def attended_transfer(
    pbx: Pbx,
    rng: random.Random,
    *,
    start: float,
    number: str | None,
    name: str | None,
    queue: str = "support",
    agents: Sequence[Agent] | None = None,
    timings: Timings = DEFAULT_TIMINGS,
    position: int = 1,
    agi_ok: bool = True,
) -> list[TimedEvent]:
    """The member consults another member (a new call from the member's phone
    ``PJSIP/<exten>``) and completes the transfer. Built from reference notes §2.6, not
    captured; ``agents`` = (answering member, target)."""
    tm = timings
    call = _call(pbx, rng, start, number, name, queue, position, agi_ok, tm)
    first, target = _pair(pbx, queue, agents, queue)
    call.originate(patience=_caller_budget(tm, tm.talk, tm.ring, tm.consult, 1.0))
    call.ivr()
    call.join()
    call.wait(tm.wait)
    (leg,) = call.ring([first])
    call.pick_up(leg, call.c2, tm.ring)
    call.connect(leg)
    call.agent_talks(leg, tm.talk / 2, limit=tm.talk)
    call.attended_transfer(leg, target)
    return call.out


SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {
        "answered": answered,
        "abandoned": abandoned,
        "ring_no_answer": ring_no_answer,
        "ring_all": ring_all,
        "timeout": queue_timeout,
        "leave_empty": leave_empty,
        "exit_key": exit_key,
        "redirect": redirected,
        "withdraw": withdrawn,
        "blind_transfer": blind_transfer,
        "blind_transfer_to_queue": blind_transfer_to_queue,
        "attended_transfer": attended_transfer,
    }
)


def with_timestamp(event: Mapping[str, str], at: float, system_name: str) -> Event:
    """The event as it goes on the wire: ``Timestamp`` after ``Privilege``, then SystemName."""
    out: Event = {}
    for key, value in event.items():
        if key in ("Timestamp", "SystemName"):
            continue
        out[key] = value
        if key == "Privilege":
            out["Timestamp"] = f"{at:.6f}"
            out["SystemName"] = event.get("SystemName", system_name)
    return out
