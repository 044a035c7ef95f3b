"""Which PBXs are unreachable, as the agents' pages show it.

A PBX that is down (refused login, foreign peer, no answer) stops nothing else, but its agents
must know why their phone no longer pops: :class:`PbxLinks` is a state sink of the service
(``FeedStatus``) that keeps each PBX that is down, since when and why, puts that in every
page's snapshot, and pushes a ``pbx`` message to every agent's mailbox when it changes.
"""

from __future__ import annotations

from typing import Any

from cti.events import FeedStatus, StateEvent
from screenpop.hub import Hub


class PbxLinks:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._down: dict[str, dict[str, Any]] = {}  # pbx: {name, since, reason}

    def observe(self, event: StateEvent) -> None:
        """StateSink: a link went down (or a try failed), or came back with state rebuilt."""
        if not isinstance(event, FeedStatus):
            return
        before = self._down.get(event.pbx)
        if event.connected:
            if before is None:
                return
            del self._down[event.pbx]
        else:
            since = before["since"] if before is not None else event.at
            now = {"name": event.pbx, "since": since, "reason": event.reason}
            if now == before:
                return
            self._down[event.pbx] = now
        message = {"type": "pbx", "down": self.down()}
        for agent in self._hub.agents():
            self._hub.publish(agent, message)

    def down(self) -> list[dict[str, Any]]:
        """The PBXs down now, by name: ``{"name", "since" (epoch seconds or None), "reason"}``."""
        return [self._down[name] for name in sorted(self._down)]
