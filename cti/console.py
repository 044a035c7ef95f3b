"""A sink that prints one readable line per domain event (``cti serve`` and ``cti demo``).

Caller names and channel names are the caller's text: each line goes through
:func:`cti.logs.one_line`, so none can break the line, move the cursor or recolour the terminal.

Lines are stamped with the time they are printed, so they read in order: some events are
published after the fact (a redirected caller's "left without an agent" once the redirect is
told apart from a hang-up, CallEnded after its grace), and stamped with their own time they
would land between later lines. Such a line says when it happened instead.

Calls closed unseen (gone at a resync, or expired after ``max_call_age`` without an event)
come thousands at a time after an outage: they get no line each, but one summary line per
batch (:func:`closed_summaries`, logged by the service). Their events still reach every sink.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO

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
)
from cti.logs import one_line
from cti.replay import summary_line

LATE = 1.0  # seconds after the event from which a line says when it happened
SAMPLE = 5  # call ids named in a summary line
# record flags of calls closed unseen, and what their summary line says of them
_CLOSED_UNSEEN = {
    "ended_while_disconnected": "resync: closed {n} ended while disconnected",
    "expired": "expiry: closed {n} with no event for {age}",
}


def describe(event: DomainEvent, happened: str | None = None) -> str | None:
    """One line for the event, or None for events not worth a line of their own;
    ``happened`` (a time of day) is said for an event printed late."""
    match event:
        case CallQueued():
            line = f"queued in {event.queue} (position {event.position}): {_who(event)}"
        case AgentRinging():
            where = f" from {event.queue}" if event.queue else ""
            line = f"ringing {event.agent}{where}: {_who(event)}"
        case AgentRingStopped():
            if event.at is None:  # its call was closed unseen: told by the summary line
                return None
            line = f"{event.agent} stopped ringing ({event.reason})"
        case CallAnswered():
            hold = f" after {event.hold_seconds:g}s" if event.hold_seconds is not None else ""
            line = f"answered by {event.agent}{hold}"
        case CallTransferred():
            t = event.transfer
            line = f"{t.type} transfer {t.from_agent or '?'} -> {t.to}"
        case CallAbandoned():
            at = f" at {happened}" if happened else ""
            return f"left {event.queue}{at} without an agent ({event.reason})"
        case CallMerged():
            line = f"merged with call {event.absorbed_call_id}"
        case CallEnded():
            if any(flag in _CLOSED_UNSEEN for flag in event.record.flags):
                return None
            at = f" at {happened}" if happened else ""
            return f"ended{at}: " + summary_line(event.record, with_id=False)
        case CallStarted() | CallerIdentified():
            return None
        case _:
            return None
    return f"{line} (at {happened})" if happened else line


def closed_summaries(events: Iterable[DomainEvent], max_call_age: float) -> list[str]:
    """One line per kind of unseen closing in ``events`` (a resync's or an expiry's batch):
    how many calls, and a few of their ids to look up."""
    closed: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event, CallEnded):
            for flag in event.record.flags:
                if flag in _CLOSED_UNSEEN:
                    closed.setdefault(flag, []).append(event.call_id)
    lines = []
    for flag, ids in closed.items():
        n = f"{len(ids):,} call{'s' if len(ids) > 1 else ''}"
        more = f" and {len(ids) - SAMPLE:,} more" if len(ids) > SAMPLE else ""
        what = _CLOSED_UNSEEN[flag].format(n=n, age=_duration(max_call_age))
        lines.append(f"{what}: {', '.join(ids[:SAMPLE])}{more}")
    return lines


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g}s"


def _who(event: AgentRinging | CallQueued) -> str:
    name = f' "{event.caller_name}"' if event.caller_name else ""
    return f"{event.caller_number or 'unknown number'}{name}"


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


class ConsoleSink:
    """Prints to ``out``; ``clock`` tells the time of printing (injected in tests)."""

    def __init__(self, out: TextIO = sys.stdout, clock: Callable[[], float] = time.time) -> None:
        self.out = out
        self.clock = clock

    def publish(self, event: DomainEvent) -> None:
        now = self.clock()
        late = event.at is not None and now - event.at >= LATE
        line = describe(event, _clock(event.at) if late and event.at is not None else None)
        if line is not None:
            text = one_line(f"{_clock(now)} [{event.pbx}] {event.call_id}  {line}")
            print(text, file=self.out, flush=True)
