"""Per-agent mailboxes: numbered messages, a replay buffer, and bounded subscribers.

Every message for an agent gets the next sequence number of that agent's mailbox. A browser
that reconnects says the last number it saw and gets what it missed, in order, from the buffer;
if that is too old it gets a snapshot instead (cards are full state, so a snapshot is always
right). Each subscriber (a WebSocket, a tab) has its own bounded queue: one that stops reading
is dropped rather than allowed to stall the others, and catches up when it reconnects.

The buffer holds the last ``BUFFER`` messages of the last ``REPLAY_SECONDS``: a page reconnects
within its backoff (15 s at most), and one away longer gets a snapshot. Bounding by age as well
as count keeps a thousand agents' buffers from growing for minutes towards the count bound.

A message is encoded to its JSON text once, when it is published, with its sequence number
in it: every tab and every resume sends those same bytes. Keeping text rather than dicts also
keeps the buffers out of the garbage collector's sight (a ``str`` holds no references), so
hours of buffered cards do not lengthen every full collection of the process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
Item = tuple[int, str]  # (sequence number, the message's JSON text carrying that number)
BUFFER = 100  # per agent; a browser that missed more gets a snapshot
SUBSCRIBER_QUEUE = 50  # below BUFFER: a browser cut off for lagging resumes from the buffer
REPLAY_SECONDS = 60.0  # older messages are not replayed: the browser gets a snapshot


def encode(seq: int, message: Message) -> str:
    """The JSON text a browser receives: the message with its sequence number."""
    return json.dumps({**message, "seq": seq}, separators=(",", ":"))


@dataclass(eq=False)
class Subscription:
    agent: str
    queue: asyncio.Queue[Item] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    overflowed: bool = False


@dataclass
class _Mailbox:
    seq: int = 0
    buffer: deque[Item] = field(default_factory=lambda: deque(maxlen=BUFFER))
    times: deque[float] = field(default_factory=lambda: deque(maxlen=BUFFER))  # of the buffer's
    subscribers: set[Subscription] = field(default_factory=set)


class Hub:
    """Fan-out to agents. ``publish`` never waits: the call path must not block on browsers.
    ``clock`` (monotonic seconds) dates the buffered messages."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._boxes: dict[str, _Mailbox] = {}
        self._clock = clock

    def publish(self, agent: str, message: Message) -> int:
        box = self._boxes.setdefault(agent, _Mailbox())
        box.seq += 1
        item = (box.seq, encode(box.seq, message))
        now = self._clock()
        self._expire(box, now)
        box.buffer.append(item)
        box.times.append(now)
        for sub in list(box.subscribers):
            try:
                sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                sub.overflowed = True  # its reader closes the socket; the browser resumes
                box.subscribers.discard(sub)
        return box.seq

    def last_seq(self, agent: str) -> int:
        box = self._boxes.get(agent)
        return box.seq if box else 0

    def since(self, agent: str, seq: int) -> list[Item] | None:
        """Messages after ``seq`` in order, or None when some are no longer buffered."""
        box = self._boxes.get(agent)
        if box is None or seq >= box.seq:
            return []
        self._expire(box, self._clock())
        if not box.buffer or box.buffer[0][0] > seq + 1:
            return None
        return [item for item in box.buffer if item[0] > seq]

    @staticmethod
    def _expire(box: _Mailbox, now: float) -> None:
        while box.times and now - box.times[0] > REPLAY_SECONDS:
            box.times.popleft()
            box.buffer.popleft()

    def subscribe(self, agent: str) -> Subscription:
        sub = Subscription(agent)
        self._boxes.setdefault(agent, _Mailbox()).subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        box = self._boxes.get(sub.agent)
        if box is not None:
            box.subscribers.discard(sub)

    def agents(self) -> list[str]:
        """Every agent with a mailbox (who has had a message or a page open)."""
        return list(self._boxes)

    def connected(self, agent: str) -> int:
        box = self._boxes.get(agent)
        return len(box.subscribers) if box else 0
