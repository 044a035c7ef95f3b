"""The call model: AMI messages (dicts) in, domain events out. Sans-IO: no sockets, no clock.

Theory of operation
-------------------
Channels are keyed by ``Uniqueid``. A call is the group of channels sharing a ``Linkedid``;
its id is the first Linkedid it was seen with and never changes. When Asterisk re-keys a
channel's Linkedid (bridges merge to the oldest one) the new Linkedid becomes an alias of the
channel's call, or, if it already names another call, the two calls merge (``CallMerged``).
Local channel pairs (``;1``/``;2``) and every agent leg share the caller's Linkedid, so they
belong to one call without extra bookkeeping.

Each handler updates state and appends domain events; no handler awaits, so the event loop is
the only lock. Events for channels never seen (we attached mid-call) adopt the channel; odd
sequences (duplicate ``DialEnd CANCEL``, ``OriginateResponse`` before ``Newchannel``, a late
``AgentComplete`` without any channel block) are no-ops or are matched by queue and member.

Queue exits: ``QueueCallerAbandon`` is sent for caller hang-up *and* timeout, leave-empty,
withdraw and redirect; a hang-up is the one preceded by a hang-up request on the caller's side.
The others are told apart by the ``QUEUESTATUS`` VarSet that follows ``QueueCallerLeave``
(set for timeout, leave-empty and withdraw; a Redirect sets none, and its soft hang-up is not
published). ``QUEUEPOSITION``, set at every leave, shows that dialplan events are visible; when
they are not, the reason is inferred and the record says so (``exit_reason_inferred``). A key
exit sends ``QueueCallerLeave`` with neither an abandon nor an answered agent leg.

A call whose channels are all gone but whose queue agent has no ``AgentComplete`` yet is
*closing*: Asterisk sends that event after the hang-ups. It ends when the event comes, or when
:meth:`CallTracker.expire` (fed the time by the caller) finds it older than ``close_grace``.

Calls whose hang-ups never come (a lost ``Hangup``, a PBX that stopped talking about a call)
would be kept forever: a call with no event for ``max_call_age`` is ended as ``expired``,
with no end time and no invented outcome, and its channels and aliases are let go. Each event
only stamps its call; the calls are looked over at most once every ``_IDLE_CHECK_EVERY``
seconds of stream time (a few milliseconds for 20,000 calls), so they end in batches (one
summary line each, not a line per call).

Resync after a (re)connect: :meth:`begin_resync` marks every channel unconfirmed; any event or
``CoreShowChannel`` confirms one; :meth:`end_resync` closes what is left as ended while
disconnected, with what is known and nothing invented.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cti.agents import AgentDirectory, interface_key
from cti.codec import Message, unescape
from cti.events import (
    AgentRinging,
    AgentRingStopped,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallerIdentified,
    CallMerged,
    CallQueued,
    CallRecord,
    CallStarted,
    CallTransferred,
    DomainEvent,
    Outcome,
    QueueExit,
    RingStop,
    Transfer,
)

log = logging.getLogger(__name__)

_GONE_MAX = 50_000
DEFAULT_MAX_CALL_AGE = 4 * 3600.0  # seconds without an event before a call is expired
_IDLE_CHECK_EVERY = 60.0  # seconds of stream time between two looks for expired calls
_UNKNOWN = frozenset({"", "<unknown>", "unknown"})
_QUEUESTATUS: dict[str, QueueExit] = {
    "TIMEOUT": "timeout",
    "LEAVEEMPTY": "leave_empty",
    "LEAVEUNAVAIL": "leave_empty",
    "WITHDRAW": "withdrawn",
}
_DIAL_STOP: dict[str, RingStop] = {
    "NOANSWER": "ring_no_answer",
    "BUSY": "busy",
    "CHANUNAVAIL": "failed",
    "CONGESTION": "failed",
}
# Events that show a channel has left the queue application and gone on in the dialplan
_MOVED_ON = frozenset(
    {
        "Newexten",
        "Newstate",
        "DialBegin",
        "QueueCallerJoin",
        "BridgeEnter",
        "HangupRequest",
        "SoftHangupRequest",
        "Hangup",
        "AGIExecStart",
        "UserEvent",
    }
)
# Events the model never reads: skipped as raw bytes, before any decoding (hot path).
_IGNORED_EVENTS = (
    b"Newexten",
    b"DeviceStateChange",
    b"AGIExecStart",
    b"AGIExecEnd",
    b"MusicOnHoldStart",
    b"MusicOnHoldStop",
    b"HangupHandlerPush",
    b"HangupHandlerRun",
    b"HangupHandlerPop",
    b"RTCPSent",
    b"RTCPReceived",
    b"Cdr",
    b"CEL",
    b"SuccessfulAuth",
    b"ChallengeSent",
    b"DTMFBegin",
    b"DTMFEnd",
    b"Registry",
    b"PeerStatus",
    b"ContactStatus",
)
_IGNORED_PREFIXES = tuple(b"Event: " + name + b"\r" for name in _IGNORED_EVENTS) + tuple(
    b"Event: " + name + b"\n" for name in _IGNORED_EVENTS
)


def frame_filter(frame: bytes) -> bool:
    """True for the raw AMI frames the model reads (VarSet only for queue exit reasons)."""
    if frame.startswith(_IGNORED_PREFIXES):
        return False
    if frame.startswith(b"Event: VarSet"):
        return (
            b"Variable: QUEUESTATUS" in frame
            or b"Variable: QUEUE_WITHDRAW_INFO" in frame
            or b"Variable: QUEUEPOSITION" in frame
        )
    return True


@dataclass(slots=True)
class _Ring:
    leg: str
    agent: str
    member_name: str
    interface: str
    queue: str | None
    done: bool = False
    answered: bool = False


@dataclass(slots=True)
class _Segment:
    """One agent holding the customer; ``talk`` is set when the segment ends."""

    agent: str
    member_name: str
    queue: str | None
    leg: str
    started_at: float | None
    talk: float | None = None
    ended: bool = False


@dataclass(slots=True)
class _PendingExit:
    queue: str
    hold: float | None
    position: int | None
    at: float | None
    left: bool = False
    dialplan_visible: bool = False  # QUEUEPOSITION seen: QUEUESTATUS would be too


@dataclass(slots=True)
class _Call:
    call_id: str
    origin: str
    started_at: float | None
    dialed: str = ""
    caller_number: str = ""
    caller_name: str = ""
    channels: set[str] = field(default_factory=set)
    linkedids: set[str] = field(default_factory=set)
    flags: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    queued_at: float | None = None
    queue: str | None = None
    queue_channel: str | None = None
    joined_at: float | None = None
    rings: dict[str, _Ring] = field(default_factory=dict)
    agents_rung: list[str] = field(default_factory=list)
    answering_leg: str | None = None
    answered_by: str | None = None
    answered_at: float | None = None
    hold_seconds: float | None = None
    segments: list[_Segment] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    exits: list[QueueExit] = field(default_factory=list)
    pending_exit: _PendingExit | None = None
    caller_hungup: bool = False
    withdraw_info: bool = False
    dial_results: list[str] = field(default_factory=list)
    closing_at: float | None = None
    last_at: float | None = None  # the time of its latest event (None: none had a time)

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)

    def open_segments(self) -> list[_Segment]:
        return [s for s in self.segments if not s.ended]


@dataclass(slots=True)
class _Channel:
    uniqueid: str
    name: str
    linkedid: str
    call: _Call
    agent: str | None = None
    bridge: str = ""
    confirmed: bool = True
    ringing: bool = False  # ChannelState 5 in the latest resync snapshot (CoreShowChannel)
    queue: str | None = None  # the queue it last joined as a caller


@dataclass(frozen=True, slots=True)
class Leg:
    """An agent's side of a live call, as the channels Asterisk knows it by."""

    agent_channel: str  # bridged with the caller (or the consult's other party)
    other_channel: str


Handler = Callable[[Message, float | None, list[DomainEvent]], None]


class CallTracker:
    """Follows the calls of one PBX. Feed it every AMI message with :meth:`on_event`."""

    def __init__(
        self,
        pbx: str = "default",
        agents: AgentDirectory | None = None,
        *,
        close_grace: float = 2.0,
        max_call_age: float = DEFAULT_MAX_CALL_AGE,
    ) -> None:
        if max_call_age <= 0:
            raise ValueError(f"max_call_age must be positive, not {max_call_age}")
        self.pbx = pbx
        self.agents = agents or AgentDirectory()
        self.close_grace = close_grace
        self.max_call_age = max_call_age
        self.anomalies: Counter[str] = Counter()
        self._channels: dict[str, _Channel] = {}
        self._calls: dict[str, _Call] = {}
        self._by_linkedid: dict[str, _Call] = {}
        self._connected: dict[tuple[str, str], _Call] = {}
        self._closing: dict[str, _Call] = {}
        self._idle_check_at = float("-inf")  # stream time of the next look for expired calls
        # Uniqueids of hung-up channels and Linkedids of ended calls, oldest first
        self._gone: dict[str, None] = {}
        self._handlers: dict[str, Handler] = {
            "Hangup": self._on_hangup,
            "HangupRequest": self._on_hangup_request,
            "SoftHangupRequest": self._on_hangup_request,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_queue_leave,
            "QueueCallerAbandon": self._on_queue_abandon,
            "AgentCalled": self._on_agent_called,
            "AgentRingNoAnswer": self._on_ring_no_answer,
            "AgentConnect": self._on_agent_connect,
            "AgentComplete": self._on_agent_complete,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "VarSet": self._on_varset,
            "QueueEntry": self._on_queue_entry,
            "QueueMember": self._on_queue_member,
            "QueueMemberStatus": self._on_queue_member,
            "QueueMemberAdded": self._on_queue_member,
            "CoreShowChannel": self._on_core_show_channel,
        }

    # ---------------------------------------------------------------- public API

    def on_event(self, msg: Message, received_at: float | None = None) -> list[DomainEvent]:
        """Apply one AMI message. ``received_at`` is used when it has no ``Timestamp``."""
        name = msg.get("Event")
        if name is None:
            return []
        at = _timestamp(msg, received_at)
        out: list[DomainEvent] = []
        if self._closing and at is not None:
            self._expire_closing(at, out)
        if name != "Hangup":
            self._touch(msg, "", at, out)
            if "DestUniqueid" in msg:
                self._touch(msg, "Dest", at, out)
        handler = self._handlers.get(name)
        if handler is not None:
            handler(msg, at, out)
        self._resolve_exit_on_activity(msg, at, out)
        if at is not None and at >= self._idle_check_at:
            self._expire_idle(at, out)  # after the message: it may be the call's sign of life
        return out

    def expire(self, now: float) -> list[DomainEvent]:
        """End closing calls older than ``close_grace``, and calls with no event for
        ``max_call_age`` (the service calls this when the PBX has been quiet for a second;
        :meth:`on_event` does the same with each event's time)."""
        out: list[DomainEvent] = []
        self._expire_closing(now, out)
        if now >= self._idle_check_at:
            self._expire_idle(now, out)
        return out

    def flush(self) -> list[DomainEvent]:
        """End of a recorded stream: end every closing call now."""
        out: list[DomainEvent] = []
        for call in list(self._closing.values()):
            self._finish(call, call.closing_at, out)
        return out

    def begin_resync(self) -> None:
        """A new AMI session: every channel is unconfirmed until Asterisk shows it again."""
        for channel in self._channels.values():
            channel.confirmed = False

    def end_resync(self, at: float | None, complete: bool = True) -> list[DomainEvent]:
        """The snapshot is in: close what Asterisk no longer has (if the snapshot is complete)."""
        out: list[DomainEvent] = []
        if not complete:
            for channel in self._channels.values():
                channel.confirmed = True
            return out
        gone = [c for c in self._channels.values() if not c.confirmed]
        for channel in gone:
            call = channel.call
            call.flag("ended_while_disconnected")
            self._drop_channel(channel, None, out, ended_unseen=True)
        for call in list(self._calls.values()):
            self._infer_answer_from_bridges(call, at, out)
            self._infer_ringing(call, at, out)
        return out

    def active_calls(self) -> list[CallRecord]:
        """Snapshots of the calls in progress (for a new browser or an API call)."""
        return [self._record(call, None) for call in self._calls.values()]

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def has_channel(self, call_id: str, uniqueid: str, name: str) -> bool:
        """Whether ``call_id`` (a linkedid) is a live call and the channel ``uniqueid`` named
        ``name`` is one of its own (the IVR's check that a FastAGI session is on that call)."""
        call = self._by_linkedid.get(call_id)
        if call is None or uniqueid not in call.channels:
            return False
        channel = self._channels.get(uniqueid)
        return channel is not None and channel.name == name

    def leg(self, call_id: str, agent: str) -> Leg | None:
        """The agent's side of the live call ``call_id``: the agent's channel in a bridge with
        a channel that is not the agent's (the one AMI's ``BlindTransfer``, ``Atxfer`` and
        ``Hangup`` act on for that agent: a member's ``Local/…;1`` or its device channel), and
        that other channel. None when the agent is not talking on the call now."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        channels = [c for uid in call.channels if (c := self._channels.get(uid)) is not None]
        for mine in channels:
            if mine.agent != agent or not mine.bridge:
                continue
            for other in channels:
                if other.bridge == mine.bridge and other.agent != agent:
                    return Leg(mine.name, other.name)
        return None

    # ---------------------------------------------------------------- channels and calls

    def _touch(
        self, msg: Message, prefix: str, at: float | None, out: list[DomainEvent]
    ) -> _Channel | None:
        uid = msg.get(prefix + "Uniqueid")
        if not uid:
            return None
        linked = msg.get(prefix + "Linkedid", "")
        channel = self._channels.get(uid)
        if channel is None:
            if not linked or uid in self._gone or linked in self._gone:
                return None  # late events of a hung-up channel or ended call (DialEnd CANCEL)
            channel = self._new_channel(uid, msg.get(prefix + "Channel", ""), linked, msg, at, out)
        else:
            channel.confirmed = True
            name = msg.get(prefix + "Channel")
            if name:
                channel.name = name
            if linked and linked != channel.linkedid:
                self._rekey(channel, linked, at, out)
        if at is not None:
            channel.call.last_at = at
        if channel.agent is None:
            self._update_caller(channel, msg, prefix, at, out)
        return channel

    def _new_channel(
        self,
        uid: str,
        name: str,
        linked: str,
        msg: Message,
        at: float | None,
        out: list[DomainEvent],
    ) -> _Channel:
        call = self._by_linkedid.get(linked)
        if call is None:
            call = _Call(call_id=linked, origin=uid, started_at=at, dialed=msg.get("Exten", ""))
            call.linkedids.add(linked)
            if uid != linked or msg.get("Event") != "Newchannel":
                call.flag("joined_mid_call")
                self.anomalies["joined_mid_call"] += 1
            self._calls[call.call_id] = call
            self._by_linkedid[linked] = call
            out.append(CallStarted(self.pbx, call.call_id, at, "", "", call.dialed))
        channel = _Channel(uid, name, linked, call)
        channel.agent = self._partner_agent(call, name)
        self._channels[uid] = channel
        call.channels.add(uid)
        return channel

    def _partner_agent(self, call: _Call, name: str) -> str | None:
        """A Local half inherits the agent of its other half."""
        if not name.startswith("Local/") or name[-2:] not in (";1", ";2"):
            return None
        base = name[:-2]
        for uid in call.channels:
            other = self._channels.get(uid)
            if other is not None and other.agent and other.name[:-2] == base:
                return other.agent
        return None

    def _mark_agent(self, channel: _Channel, agent: str) -> None:
        channel.agent = agent
        if channel.name.startswith("Local/") and channel.name[-2:] in (";1", ";2"):
            base = channel.name[:-2]
            for uid in channel.call.channels:
                other = self._channels.get(uid)
                if other is not None and other.name[:-2] == base:
                    other.agent = agent

    def _update_caller(
        self, channel: _Channel, msg: Message, prefix: str, at: float | None, out: list[DomainEvent]
    ) -> None:
        call = channel.call
        number = msg.get(prefix + "CallerIDNum", "")
        name = msg.get(prefix + "CallerIDName", "")
        authoritative = channel.uniqueid in (call.origin, call.queue_channel)
        changed = False
        if (
            number not in _UNKNOWN
            and number != call.caller_number
            and (authoritative or not call.caller_number)
        ):
            call.caller_number = number
            changed = True
        if name not in _UNKNOWN:
            name = unescape(name)
            if name != call.caller_name and (authoritative or not call.caller_name):
                call.caller_name = name
                changed = True
        if changed:
            out.append(
                CallerIdentified(self.pbx, call.call_id, at, call.caller_number, call.caller_name)
            )

    def _rekey(
        self, channel: _Channel, linked: str, at: float | None, out: list[DomainEvent]
    ) -> None:
        channel.linkedid = linked
        current = channel.call
        owner = self._by_linkedid.get(linked)
        if owner is None:
            self._by_linkedid[linked] = current
            current.linkedids.add(linked)
        elif owner is not current:
            self._merge(current, owner, at, out)

    def _merge(
        self, absorbed: _Call, into: _Call, at: float | None, out: list[DomainEvent]
    ) -> None:
        """Move every channel and ring of ``absorbed`` into ``into``; its ids become aliases."""
        for uid in absorbed.channels:
            channel = self._channels.get(uid)
            if channel is not None:
                channel.call = into
                into.channels.add(uid)
        for leg, ring in absorbed.rings.items():
            into.rings.setdefault(leg, ring)
            if ring.agent not in into.agents_rung:
                into.agents_rung.append(ring.agent)
        for linked in absorbed.linkedids:
            self._by_linkedid[linked] = into
            into.linkedids.add(linked)
        for key, call in list(self._connected.items()):
            if call is absorbed:
                del self._connected[key]
        self._calls.pop(absorbed.call_id, None)
        self._closing.pop(absorbed.call_id, None)
        if at is not None:
            into.last_at = at
        into.flag("merged")
        out.append(CallMerged(self.pbx, into.call_id, at, absorbed.call_id))

    def _channel_call(self, msg: Message, prefix: str = "") -> _Call | None:
        channel = self._channels.get(msg.get(prefix + "Uniqueid", ""))
        return channel.call if channel is not None else None

    # ---------------------------------------------------------------- hang-ups

    def _on_hangup_request(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        channel = self._channels.get(msg.get("Uniqueid", ""))
        if channel is None or channel.agent is not None:
            return
        channel.call.caller_hungup = True

    def _on_hangup(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        channel = self._channels.get(msg.get("Uniqueid", ""))
        if channel is None:
            self.anomalies["hangup_unknown_channel"] += 1
            return
        if at is not None:
            channel.call.last_at = at
        self._drop_channel(channel, at, out)

    def _drop_channel(
        self,
        channel: _Channel,
        at: float | None,
        out: list[DomainEvent],
        *,
        ended_unseen: bool = False,
    ) -> None:
        call = channel.call
        del self._channels[channel.uniqueid]
        self._bury(channel.uniqueid)
        call.channels.discard(channel.uniqueid)
        ring = call.rings.get(channel.uniqueid)
        if ring is not None and not ring.done and not ring.answered:
            self._stop_ring(call, ring, self._cancel_reason(call, ring), at, out)
        if channel.agent is None:
            call.caller_hungup = call.caller_hungup or not ended_unseen
        for segment in call.open_segments():
            if segment.leg == channel.uniqueid and segment.queue is None:
                self._end_segment(segment, at)
        if call.channels:
            return
        if ended_unseen:
            self._finish(call, None, out)
        elif any(s.queue is not None for s in call.open_segments()):
            call.closing_at = at
            self._closing[call.call_id] = call
        else:
            self._finish(call, at, out)

    def _bury(self, uid: str) -> None:
        self._gone[uid] = None
        if len(self._gone) > _GONE_MAX:
            del self._gone[next(iter(self._gone))]

    def _expire_closing(self, now: float, out: list[DomainEvent]) -> None:
        for call in list(self._closing.values()):
            if call.closing_at is None or now - call.closing_at >= self.close_grace:
                call.flag("agent_complete_missing")
                self._finish(call, call.closing_at, out)

    def _expire_idle(self, now: float, out: list[DomainEvent]) -> None:
        """End the calls with no event for ``max_call_age``: their hang-ups never came."""
        self._idle_check_at = now + _IDLE_CHECK_EVERY
        horizon = now - self.max_call_age
        stale = []
        for call in self._calls.values():
            if call.last_at is None:  # never seen with a time: its age counts from now
                call.last_at = now
            elif call.last_at <= horizon:
                stale.append(call)
        for call in stale:
            call.flag("expired")
            self.anomalies["call_expired"] += 1
            if not call.channels:  # closing, with a close_grace longer than max_call_age
                self._finish(call, None, out)
            for uid in list(call.channels):
                self._drop_channel(self._channels[uid], None, out, ended_unseen=True)

    # ---------------------------------------------------------------- dialling and ringing

    def _on_dial_begin(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        dest = self._channels.get(msg.get("DestUniqueid", ""))
        if dest is None:
            return
        call = dest.call
        if dest.uniqueid in call.rings:
            return
        caller = self._channels.get(msg.get("Uniqueid", ""))
        agent = self.agents.agent_for_device(msg.get("DialString", "")) or (
            self.agents.agent_for_device(dest.name)
        )
        if caller is not None and caller.agent is not None and caller.name.endswith(";2"):
            # the Local half of an agent leg dialling the agent's phone: same ring attempt
            self._mark_agent(dest, caller.agent)
            return
        if agent is None:
            return
        self._mark_agent(dest, agent)
        ring = _Ring(dest.uniqueid, agent, agent, msg.get("DialString", ""), None)
        self._start_ring(call, ring, at, out)

    def _on_agent_called(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        call = self._channel_call(msg)
        dest = self._channels.get(msg.get("DestUniqueid", ""))
        if call is None or dest is None or dest.uniqueid in call.rings:
            return
        member, interface = msg.get("MemberName", ""), msg.get("Interface", "")
        self.agents.learn(member, interface)
        agent = self.agents.resolve(member, interface)
        self._mark_agent(dest, agent)
        ring = _Ring(dest.uniqueid, agent, member, interface, msg.get("Queue") or None)
        self._start_ring(call, ring, at, out)

    def _start_ring(
        self, call: _Call, ring: _Ring, at: float | None, out: list[DomainEvent]
    ) -> None:
        call.rings[ring.leg] = ring
        if ring.agent not in call.agents_rung:
            call.agents_rung.append(ring.agent)
        out.append(
            AgentRinging(
                self.pbx,
                call.call_id,
                at,
                ring.agent,
                ring.member_name,
                ring.interface,
                ring.queue,
                call.caller_number,
                call.caller_name,
            )
        )

    def _on_dial_end(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        dest = self._channels.get(msg.get("DestUniqueid", ""))
        if dest is None:
            return
        call = dest.call
        status = msg.get("DialStatus", "")
        ring = call.rings.get(dest.uniqueid)
        if ring is None:
            if status and status != "ANSWER" and "Uniqueid" in msg:
                call.dial_results.append(status)
            return
        if ring.done or ring.answered:
            return
        if status == "ANSWER":
            ring.answered = True
            call.answering_leg = ring.leg
            if ring.queue is None:
                ring.done = True
                self._answer(call, ring, at, None, None, out)
            return
        if status in _DIAL_STOP:
            call.dial_results.append(status)
            self._stop_ring(call, ring, _DIAL_STOP[status], at, out)
        else:
            self._stop_ring(call, ring, self._cancel_reason(call, ring), at, out)

    def _on_ring_no_answer(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        call = self._channel_call(msg)
        ring = call.rings.get(msg.get("DestUniqueid", "")) if call is not None else None
        if call is not None and ring is not None and not ring.done:
            self._stop_ring(call, ring, "ring_no_answer", at, out)

    def _cancel_reason(self, call: _Call, ring: _Ring) -> RingStop:
        if call.answering_leg not in (None, ring.leg):
            return "answered_elsewhere"
        if any(s.leg != ring.leg for s in call.open_segments()):
            return "answered_elsewhere"
        return "canceled"

    def _stop_ring(
        self, call: _Call, ring: _Ring, reason: RingStop, at: float | None, out: list[DomainEvent]
    ) -> None:
        ring.done = True
        out.append(AgentRingStopped(self.pbx, call.call_id, at, ring.agent, ring.queue, reason))

    # ---------------------------------------------------------------- answering

    def _on_agent_connect(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        call = self._channel_call(msg)
        leg = msg.get("DestUniqueid", "")
        if call is None:
            return
        member, interface = msg.get("MemberName", ""), msg.get("Interface", "")
        ring = call.rings.get(leg)
        if ring is None:  # attached after AgentCalled
            ring = _Ring(leg, self.agents.resolve(member, interface), member, interface, None)
            call.rings[leg] = ring
            if ring.agent not in call.agents_rung:
                call.agents_rung.append(ring.agent)
        if any(s.leg == leg for s in call.segments):
            return
        ring.done = True
        ring.queue = msg.get("Queue") or ring.queue
        self._answer(call, ring, at, _float(msg.get("HoldTime")), _float(msg.get("RingTime")), out)

    def _answer(
        self,
        call: _Call,
        ring: _Ring,
        at: float | None,
        hold: float | None,
        ring_seconds: float | None,
        out: list[DomainEvent],
    ) -> None:
        call.answering_leg = None
        if call.answered_by is None:
            call.answered_by = ring.agent
            call.answered_at = at
            call.hold_seconds = hold
        segment = _Segment(ring.agent, ring.member_name, ring.queue, ring.leg, at)
        call.segments.append(segment)
        if ring.queue is not None:
            self._connected[(ring.queue, ring.member_name)] = call
        out.append(
            CallAnswered(self.pbx, call.call_id, at, ring.agent, ring.queue, hold, ring_seconds)
        )

    def _on_agent_complete(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        queue, member = msg.get("Queue", ""), msg.get("MemberName", "")
        call = self._channel_call(msg) or self._connected.get((queue, member))
        if call is None:
            self.anomalies["agent_complete_unknown_call"] += 1
            return
        for segment in reversed(call.segments):
            if not segment.ended and segment.queue == queue and segment.member_name == member:
                segment.ended = True
                segment.talk = _float(msg.get("TalkTime"))
                break
        if self._connected.get((queue, member)) is call:
            del self._connected[(queue, member)]
        if call.closing_at is not None and not any(
            s.queue is not None for s in call.open_segments()
        ):
            self._finish(call, call.closing_at, out)

    def _end_segment(self, segment: _Segment, at: float | None) -> None:
        segment.ended = True
        if segment.talk is None and segment.started_at is not None and at is not None:
            segment.talk = round(at - segment.started_at, 3)

    def _on_bridge_enter(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        channel = self._channels.get(msg.get("Uniqueid", ""))
        if channel is None:
            return
        channel.bridge = msg.get("BridgeUniqueid", "")
        swapped = self._channels.get(msg.get("SwapUniqueid", ""))
        if swapped is not None and swapped.agent and channel.agent is None:
            self._mark_agent(channel, swapped.agent)

    def _on_bridge_leave(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        channel = self._channels.get(msg.get("Uniqueid", ""))
        if channel is not None:
            channel.bridge = ""

    # ---------------------------------------------------------------- queues

    def _on_queue_join(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        call = self._channel_call(msg)
        queue = msg.get("Queue", "")
        if call is None or not queue:
            return
        uid = msg["Uniqueid"]
        if call.queue == queue and call.queue_channel == uid:
            return  # duplicate join
        self._resolve_pending_exit(call, None, at, out)
        call.queue, call.queue_channel, call.joined_at = queue, uid, at
        call.queued_at = call.queued_at if call.queued_at is not None else at
        call.queues.append(queue)
        call.caller_hungup = call.withdraw_info = False
        channel = self._channels[uid]
        channel.queue = queue
        self._update_caller(channel, msg, "", at, out)
        out.append(
            CallQueued(
                self.pbx,
                call.call_id,
                at,
                queue,
                _int(msg.get("Position")) or 0,
                call.caller_number,
                call.caller_name,
            )
        )

    def _on_queue_abandon(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        call = self._channel_call(msg)
        queue = msg.get("Queue", "")
        if call is None or call.queue != queue:
            return
        hold, position = _float(msg.get("HoldTime")), _int(msg.get("Position"))
        if call.caller_hungup:
            self._exit(call, queue, "abandoned", hold, position, at, out)
        elif call.withdraw_info:
            self._exit(call, queue, "withdrawn", hold, position, at, out)
        else:
            call.pending_exit = _PendingExit(queue, hold, position, at)
        call.queue = None

    def _on_queue_leave(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        call = self._channel_call(msg)
        queue = msg.get("Queue", "")
        if call is None:
            return
        if call.pending_exit is not None and call.pending_exit.queue == queue:
            call.pending_exit.left = True
            return
        if call.queue != queue:
            return
        call.queue = None
        if call.answering_leg is None:
            wait = (
                round(at - call.joined_at, 3)
                if at is not None and call.joined_at is not None
                else None
            )
            self._exit(call, queue, "exit_key", wait, _int(msg.get("Position")), at, out)

    def _on_varset(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        call = self._channel_call(msg)
        if call is None:
            return
        variable, value = msg.get("Variable", ""), msg.get("Value", "")
        if variable == "QUEUE_WITHDRAW_INFO":
            call.withdraw_info = True
        elif variable == "QUEUEPOSITION" and call.pending_exit is not None:
            call.pending_exit.dialplan_visible = True
        elif variable == "QUEUESTATUS" and call.pending_exit is not None:
            reason = _QUEUESTATUS.get(value)
            if reason is None:
                self._resolve_pending_exit(call, None, at, out)
            else:
                pending = call.pending_exit
                call.pending_exit = None
                self._exit(call, pending.queue, reason, pending.hold, pending.position, at, out)

    def _resolve_exit_on_activity(
        self, msg: Message, at: float | None, out: list[DomainEvent]
    ) -> None:
        """After QueueCallerLeave, the caller's channel doing anything else settles the reason."""
        uid = msg.get("Uniqueid")
        if not uid or msg["Event"] not in _MOVED_ON:
            return
        channel = self._channels.get(uid)
        if channel is None:
            return
        pending = channel.call.pending_exit
        if pending is not None and pending.left and channel.uniqueid == channel.call.queue_channel:
            self._resolve_pending_exit(channel.call, None, at, out)

    def _resolve_pending_exit(
        self, call: _Call, reason: QueueExit | None, at: float | None, out: list[DomainEvent]
    ) -> None:
        pending = call.pending_exit
        if pending is None:
            return
        call.pending_exit = None
        if reason is None:
            # app_queue sets QUEUESTATUS for timeout, leave-empty and withdraw, not for a
            # Redirect; without dialplan events we cannot see either and say so
            reason = "redirected" if pending.dialplan_visible else "timeout"
            if not pending.dialplan_visible:
                call.flag("exit_reason_inferred")
        self._exit(call, pending.queue, reason, pending.hold, pending.position, pending.at, out)

    def _exit(
        self,
        call: _Call,
        queue: str,
        reason: QueueExit,
        hold: float | None,
        position: int | None,
        at: float | None,
        out: list[DomainEvent],
    ) -> None:
        call.exits.append(reason)
        if call.answered_by is None and call.hold_seconds is None:
            call.hold_seconds = hold
        out.append(CallAbandoned(self.pbx, call.call_id, at, queue, reason, hold, position))

    # ---------------------------------------------------------------- transfers

    def _on_blind_transfer(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        if msg.get("Result") != "Success":
            return
        call = self._channel_call(msg, "Transferee") or self._channel_call(msg, "Transferer")
        if call is None:
            return
        transferer = self._channels.get(msg.get("TransfererUniqueid", ""))
        from_agent = transferer.agent if transferer is not None else None
        target = msg.get("Extension", "")
        transfer = Transfer("blind", from_agent or self._current_agent(call), target, at)
        call.transfers.append(transfer)
        out.append(CallTransferred(self.pbx, call.call_id, at, transfer))

    def _on_attended_transfer(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        if msg.get("Result") != "Success":
            return
        call = self._channel_call(msg, "Transferee") or self._channel_call(msg, "OrigTransferer")
        if call is None:
            return
        orig = self._channels.get(msg.get("OrigTransfererUniqueid", ""))
        target = self._channels.get(msg.get("TransferTargetUniqueid", ""))
        consult = target.call if target is not None else self._channel_call(msg, "SecondTransferer")
        if consult is not None and consult is not call:
            self._merge(consult, call, at, out)
        from_agent = (orig.agent if orig is not None else None) or self._current_agent(call)
        to_agent = target.agent if target is not None else None
        if to_agent is None and target is not None:
            to_agent = self.agents.agent_for_device(target.name)
        # what the consult dialled: a queue (its Local leg joined it), an agent, a number
        to = (
            self._queue_behind(target)
            or to_agent
            or _known(msg.get("TransferTargetCallerIDNum"))
            or _known(msg.get("TransferTargetExten"))
            or msg.get("DestApp", "")
        )
        transfer = Transfer("attended", from_agent, to, at)
        call.transfers.append(transfer)
        out.append(CallTransferred(self.pbx, call.call_id, at, transfer))
        for segment in call.open_segments():
            if segment.agent == from_agent and segment.queue is None:
                self._end_segment(segment, at)
        if to_agent is not None and target is not None:
            ring = _Ring(
                target.uniqueid, to_agent, to_agent, interface_key(target.name), None, True
            )
            self._answer(call, ring, at, None, None, out)

    def _queue_behind(self, target: _Channel | None) -> str | None:
        """The queue a consult leg joined: the target's own, or its Local other half's
        (``Local/600@xfer;1`` is the target, its ``;2`` runs ``Queue(sales)``)."""
        if target is None or target.queue:
            return target.queue if target is not None else None
        if not target.name.startswith("Local/") or target.name[-2:] not in (";1", ";2"):
            return None
        base = target.name[:-2]
        for uid in target.call.channels:
            other = self._channels.get(uid)
            if other is not None and other is not target and other.name[:-2] == base:
                return other.queue
        return None

    def _current_agent(self, call: _Call) -> str | None:
        segments = call.open_segments() or call.segments
        return segments[-1].agent if segments else None

    # ---------------------------------------------------------------- resync snapshot items

    def _on_core_show_channel(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        channel = self._channels.get(msg.get("Uniqueid", ""))
        if channel is None:
            return
        channel.bridge = msg.get("BridgeId", "")
        channel.ringing = msg.get("ChannelState") == "5"
        if channel.agent is None:
            agent = self.agents.agent_for_device(channel.name)
            if agent is not None:
                self._mark_agent(channel, agent)

    def _on_queue_entry(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        channel = self._channels.get(msg.get("Uniqueid", ""))
        queue = msg.get("Queue", "")
        if channel is None or not queue:
            return
        call = channel.call
        if call.queue == queue:
            return
        wait = _float(msg.get("Wait"))
        joined = at - wait if at is not None and wait is not None else at
        call.queue, call.queue_channel, call.joined_at = queue, channel.uniqueid, joined
        call.queued_at = call.queued_at if call.queued_at is not None else joined
        call.queues.append(queue)
        call.flag("state_from_resync")
        out.append(
            CallQueued(
                self.pbx,
                call.call_id,
                joined,
                queue,
                _int(msg.get("Position")) or 0,
                call.caller_number,
                call.caller_name,
            )
        )

    def _on_queue_member(self, msg: Message, at: float | None, out: list[DomainEvent]) -> None:
        """QueueMember* events (QueueStatus names them Name/Location) tell who a device is."""
        member = msg.get("MemberName") or msg.get("Name", "")
        self.agents.learn(member, msg.get("Interface") or msg.get("Location", ""))
        self.agents.learn(member, msg.get("StateInterface", ""))

    def _infer_answer_from_bridges(
        self, call: _Call, at: float | None, out: list[DomainEvent]
    ) -> None:
        """A call bridged to an agent's device while we were away is answered by that agent."""
        if call.open_segments():
            return
        members = [self._channels[u] for u in call.channels if u in self._channels]
        customer_bridges = {c.bridge for c in members if c.agent is None and c.bridge}
        for channel in members:
            if channel.agent is not None and channel.bridge in customer_bridges:
                call.flag("state_from_resync")
                ring = _Ring(channel.uniqueid, channel.agent, channel.agent, "", None, True)
                self._answer(call, ring, at, None, None, out)
                return

    def _infer_ringing(self, call: _Call, at: float | None, out: list[DomainEvent]) -> None:
        """An agent's device ringing (state 5) for a call nobody answered, a ring we did not
        see begin (a start or reconnect while it rang): that agent is rung, once."""
        if call.open_segments() or call.answering_leg is not None:
            return
        ringing = {r.agent for r in call.rings.values() if not r.done and not r.answered}
        for uid in list(call.channels):
            channel = self._channels.get(uid)
            if (
                channel is None
                or channel.agent is None
                or not channel.ringing
                or uid in call.rings
                or channel.agent in ringing
            ):
                continue
            call.flag("state_from_resync")
            ring = _Ring(uid, channel.agent, channel.agent, "", call.queue or None)
            self._start_ring(call, ring, at, out)
            ringing.add(channel.agent)

    # ---------------------------------------------------------------- ending

    def _finish(self, call: _Call, at: float | None, out: list[DomainEvent]) -> None:
        self._resolve_pending_exit(call, None, at, out)
        for ring in call.rings.values():
            if not ring.done and not ring.answered:
                self._stop_ring(call, ring, "canceled", at, out)
        for segment in call.open_segments():
            if segment.queue is not None and segment.talk is None:
                call.flag("talk_time_estimated")
            self._end_segment(segment, at)
        for linked in call.linkedids:
            if self._by_linkedid.get(linked) is call:
                del self._by_linkedid[linked]
            self._bury(linked)
        for key, connected in list(self._connected.items()):
            if connected is call:
                del self._connected[key]
        self._calls.pop(call.call_id, None)
        self._closing.pop(call.call_id, None)
        for uid in list(call.channels):
            self._channels.pop(uid, None)
            self._bury(uid)
        out.append(CallEnded(self.pbx, call.call_id, at, self._record(call, at, final=True)))

    def _record(self, call: _Call, ended_at: float | None, *, final: bool = False) -> CallRecord:
        talks = [s.talk for s in call.segments if s.talk is not None]
        handled: list[str] = []
        for segment in call.segments:
            if not handled or handled[-1] != segment.agent:
                handled.append(segment.agent)
        return CallRecord(
            call_id=call.call_id,
            pbx=self.pbx,
            caller_number=call.caller_number,
            caller_name=call.caller_name,
            dialed=call.dialed,
            queues=tuple(call.queues),
            agents_rung=tuple(call.agents_rung),
            answered_by=call.answered_by,
            handled_by=tuple(handled),
            transfers=tuple(call.transfers),
            outcome=_outcome(call) if final else None,
            started_at=call.started_at,
            queued_at=call.queued_at,
            answered_at=call.answered_at,
            ended_at=ended_at,
            hold_seconds=call.hold_seconds,
            talk_seconds=round(sum(talks), 3) if talks else None,
            flags=tuple(call.flags),
        )


def _outcome(call: _Call) -> Outcome | None:
    """The call's final outcome; None when it ended unseen before anything decided it."""
    if call.answered_by is not None:
        return "answered"
    if call.exits:
        return call.exits[-1]
    if "ended_while_disconnected" in call.flags or "expired" in call.flags:
        return None
    if "BUSY" in call.dial_results:
        return "busy"
    if "CHANUNAVAIL" in call.dial_results or "CONGESTION" in call.dial_results:
        return "failed"
    return "unanswered"


MAX_STAMP = 1e11  # seconds since 1970: the year 5138; past it a Timestamp is no time at all
MAX_SKEW = 86_400.0  # a Timestamp further than this from when it was read is not believed


def _timestamp(msg: Message, received_at: float | None) -> float | None:
    """The message's own time, else ``received_at``. A ``Timestamp`` that is not a finite
    number is no time at all: ``inf`` would stop the idle check for good, ``nan`` never ages.
    Nor is one absurdly far off (past :data:`MAX_STAMP`, or :data:`MAX_SKEW` from when it was
    read): one such event would move the model's clock ahead, expire every call at once and
    hold the idle check back until real time caught up."""
    stamp = _float(msg.get("Timestamp"))
    if stamp is None or not 0 <= stamp < MAX_STAMP:
        return received_at
    if received_at is not None and abs(stamp - received_at) > MAX_SKEW:
        return received_at
    return stamp


def _float(value: str | None) -> float | None:
    """A finite number, or None (``float()`` also reads ``nan`` and ``inf``)."""
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _known(value: str | None) -> str | None:
    """A field's value unless Asterisk's word for nothing (``<unknown>``, empty)."""
    return value if value is not None and value.strip().lower() not in _UNKNOWN else None
