"""A sink that prints one readable line per domain event (``cti serve`` and ``cti demo``)."""

from __future__ import annotations

import sys
import time
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
from cti.replay import summary_line


def describe(event: DomainEvent) -> str | None:
    """One line for the event, or None for events not worth a line of their own."""
    match event:
        case CallQueued():
            return f"queued in {event.queue} (position {event.position}): {_who(event)}"
        case AgentRinging():
            where = f" from {event.queue}" if event.queue else ""
            return f"ringing {event.agent}{where}: {_who(event)}"
        case AgentRingStopped():
            return f"{event.agent} stopped ringing ({event.reason})"
        case CallAnswered():
            hold = f" after {event.hold_seconds:g}s" if event.hold_seconds is not None else ""
            return f"answered by {event.agent}{hold}"
        case CallTransferred():
            t = event.transfer
            return f"{t.type} transfer {t.from_agent or '?'} -> {t.to}"
        case CallAbandoned():
            return f"left {event.queue} without an agent ({event.reason})"
        case CallMerged():
            return f"merged with call {event.absorbed_call_id}"
        case CallEnded():
            return "ended: " + summary_line(event.record, with_id=False)
        case CallStarted() | CallerIdentified():
            return None
    return None


def _who(event: AgentRinging | CallQueued) -> str:
    name = f' "{event.caller_name}"' if event.caller_name else ""
    return f"{event.caller_number or 'unknown number'}{name}"


class ConsoleSink:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    def publish(self, event: DomainEvent) -> None:
        line = describe(event)
        if line is not None:
            clock = time.strftime("%H:%M:%S", time.localtime(event.at)) if event.at else "--:--:--"
            print(f"{clock} [{event.pbx}] {event.call_id}  {line}", file=self.out, flush=True)
