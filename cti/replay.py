"""The file runner: a recorded AMI stream through the same decoder and call model as live.

A recording may hold several AMI sessions (the connection's recorder appends each new session,
banner first). Every session after the first is a reconnect: it starts a resync and the
snapshot lists in it (``CoreShowChannels``, ``QueueStatus``) end it, as the live client does.
Messages without a ``Timestamp`` (snapshot items) take the last time seen in the stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cti.agents import AgentDirectory
from cti.calls import CallTracker, frame_filter
from cti.codec import AmiDecoder, DecodeProblem
from cti.events import CallEnded, CallRecord, DomainEvent

_BANNER = re.compile(rb"^Asterisk Call Manager/[^\r\n]*\r?\n", re.MULTILINE)
_SYSTEM_NAME = re.compile(rb"^SystemName: ([^\r\n]+)", re.MULTILINE)
_CHUNK = 64 * 1024
_SNAPSHOT_DONE = ("CoreShowChannelsComplete", "QueueStatusComplete")


@dataclass
class ReplayResult:
    records: list[CallRecord] = field(default_factory=list)
    events: list[DomainEvent] = field(default_factory=list)
    problems: list[DecodeProblem] = field(default_factory=list)
    unfinished: int = 0


def sessions(data: bytes) -> Iterator[bytes]:
    """Split a recording into AMI sessions at each banner line."""
    starts = [m.start() for m in _BANNER.finditer(data)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    for begin, end in zip(starts, [*starts[1:], len(data)], strict=True):
        if begin != end:
            yield data[begin:end]


def replay(
    data: bytes, pbx: str | None = None, agents: AgentDirectory | None = None
) -> ReplayResult:
    """Run a whole recording through a fresh model; return finished calls in end order.

    The PBX name defaults to the stream's ``SystemName`` (or ``default``).
    """
    if pbx is None:
        found = _SYSTEM_NAME.search(data)
        pbx = found.group(1).decode("utf-8", "replace") if found else "default"
    tracker = CallTracker(pbx, agents)
    result = ReplayResult()
    last_at: float | None = None
    for index, session in enumerate(sessions(data)):
        decoder = AmiDecoder(frame_filter=frame_filter)
        resyncing = index > 0
        done: set[str] = set()
        if resyncing:
            tracker.begin_resync()
        for offset in range(0, len(session), _CHUNK):
            for message in decoder.feed(session[offset : offset + _CHUNK]):
                stamp = message.get("Timestamp")
                if stamp:
                    last_at = float(stamp)
                result.events += tracker.on_event(message, last_at)
                event = message.get("Event", "")
                if resyncing and event in _SNAPSHOT_DONE:
                    done.add(event)
                    if len(done) == len(_SNAPSHOT_DONE):
                        result.events += tracker.end_resync(last_at)
                        resyncing = False
        decoder.eof()
        result.problems += decoder.take_problems()
        if resyncing:
            result.events += tracker.end_resync(last_at, complete=False)
    result.events += tracker.flush()
    result.records = [e.record for e in result.events if isinstance(e, CallEnded)]
    result.unfinished = len(tracker.active_calls())
    return result


def replay_file(path: str | Path, pbx: str | None = None) -> ReplayResult:
    """Replay a capture file (LF or CRLF line ends). Raises OSError if it cannot be read."""
    return replay(Path(path).read_bytes(), pbx)


def summary_line(record: CallRecord, *, with_id: bool = True) -> str:
    """One human line per call, for support triage."""
    who = record.answered_by or "-"
    queues = ",".join(record.queues) or "-"
    name = f' "{record.caller_name}"' if record.caller_name else ""
    parts = [
        f"{record.caller_number or 'unknown'}{name}",
        f"queues={queues}",
        f"agent={who}",
        f"outcome={record.outcome or 'unknown'}",
    ]
    if record.hold_seconds is not None:
        parts.append(f"hold={record.hold_seconds:g}s")
    if record.talk_seconds is not None:
        parts.append(f"talk={record.talk_seconds:g}s")
    for transfer in record.transfers:
        parts.append(f"{transfer.type}:{transfer.from_agent or '?'}->{transfer.to}")
    if record.flags:
        parts.append("flags=" + ",".join(record.flags))
    return " ".join([record.call_id, *parts] if with_id else parts)
