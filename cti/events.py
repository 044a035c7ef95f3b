"""Domain events and call records: what the call model tells the rest of the service.

All are frozen: ``screenpop`` and ``crm_sync`` get snapshots, never the model's live objects.
Every event carries the PBX name and the call id (the Linkedid the call was first seen with,
kept for the whole life of the call even when Asterisk re-keys Linkedid), and ``at``: the
AMI ``Timestamp`` of the message that caused it (or the receive time stamped by the I/O edge).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal[
    "answered",
    "abandoned",
    "timeout",
    "leave_empty",
    "exit_key",
    "redirected",
    "withdrawn",
    "unanswered",
    "busy",
    "failed",
]
QueueExit = Literal["abandoned", "timeout", "leave_empty", "exit_key", "redirected", "withdrawn"]
RingStop = Literal["ring_no_answer", "answered_elsewhere", "canceled", "busy", "failed"]


@dataclass(frozen=True, slots=True)
class Transfer:
    """One hand-over of the customer: ``to`` is an agent, a queue or a dialled extension."""

    type: Literal["blind", "attended"]
    from_agent: str | None
    to: str
    at: float | None = None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """The finished (or, in snapshots, current) story of one call."""

    call_id: str
    pbx: str
    caller_number: str
    caller_name: str
    dialed: str
    queues: tuple[str, ...]
    agents_rung: tuple[str, ...]
    answered_by: str | None
    handled_by: tuple[str, ...]
    transfers: tuple[Transfer, ...]
    outcome: Outcome | None
    started_at: float | None
    queued_at: float | None
    answered_at: float | None
    ended_at: float | None
    hold_seconds: float | None
    talk_seconds: float | None
    flags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the `cti replay --json` line format)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CallEvent:
    pbx: str
    call_id: str
    at: float | None


@dataclass(frozen=True, slots=True)
class CallStarted(CallEvent):
    caller_number: str
    caller_name: str
    dialed: str


@dataclass(frozen=True, slots=True)
class CallerIdentified(CallEvent):
    """The caller's number or name became known (or changed) after CallStarted."""

    caller_number: str
    caller_name: str


@dataclass(frozen=True, slots=True)
class CallQueued(CallEvent):
    queue: str
    position: int
    caller_number: str
    caller_name: str


@dataclass(frozen=True, slots=True)
class AgentRinging(CallEvent):
    agent: str
    member_name: str
    interface: str
    queue: str | None
    caller_number: str
    caller_name: str


@dataclass(frozen=True, slots=True)
class AgentRingStopped(CallEvent):
    agent: str
    queue: str | None
    reason: RingStop


@dataclass(frozen=True, slots=True)
class CallAnswered(CallEvent):
    agent: str
    queue: str | None
    hold_seconds: float | None
    ring_seconds: float | None


@dataclass(frozen=True, slots=True)
class CallTransferred(CallEvent):
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class CallAbandoned(CallEvent):
    """The caller left a queue without reaching an agent; ``reason`` says how."""

    queue: str
    reason: QueueExit
    hold_seconds: float | None
    position: int | None


@dataclass(frozen=True, slots=True)
class CallMerged(CallEvent):
    """Another call joined this one (attended transfer, bridge merge); its id is now an alias."""

    absorbed_call_id: str


@dataclass(frozen=True, slots=True)
class CallEnded(CallEvent):
    record: CallRecord = field(repr=False)


DomainEvent = (
    CallStarted
    | CallerIdentified
    | CallQueued
    | AgentRinging
    | AgentRingStopped
    | CallAnswered
    | CallTransferred
    | CallAbandoned
    | CallMerged
    | CallEnded
)


@dataclass(frozen=True, slots=True)
class MemberUpdated:
    """A queue member's state as Asterisk last told it (QueueMember*, or QueueStatus at resync).

    ``status`` is Asterisk's device state (0 unknown, 1 not in use, 2 in use, 3 busy, 4
    invalid, 5 unavailable, 6 ringing, 7 ring+in use, 8 on hold); ``wrapup`` the queue's
    wrap-up time in seconds for this member."""

    pbx: str
    at: float | None
    queue: str
    agent: str
    member_name: str
    interface: str
    status: int
    paused: bool
    reason: str
    in_call: bool
    wrapup: float


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    pbx: str
    at: float | None
    queue: str
    agent: str
    interface: str


@dataclass(frozen=True, slots=True)
class QueueDefined:
    """A queue Asterisk has (QueueParams at resync): shown even before its first call.
    ``service_level`` is queues.conf ``servicelevel`` in seconds (None when 0, i.e. unset)."""

    pbx: str
    at: float | None
    queue: str
    service_level: float | None


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """Our AMI link to a PBX went down (``reason``: why, in words), or is up again with state
    rebuilt."""

    pbx: str
    at: float | None
    connected: bool
    reason: str = ""


StateEvent = MemberUpdated | MemberRemoved | QueueDefined | FeedStatus
