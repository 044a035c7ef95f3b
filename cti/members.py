"""Queue members and queues of one PBX: AMI messages in, state events out. Sans-IO.

Asterisk tells member state in ``QueueMemberStatus`` (a device state change, once per queue
the member is in), ``QueueMemberPause``, ``QueueMemberAdded`` / ``QueueMemberRemoved``, and,
answering ``QueueStatus`` at every (re)login, ``QueueParams`` and ``QueueMember`` items (whose
fields are named ``Name``/``Location`` instead of ``MemberName``/``Interface``). Each gives
the member's whole state, so every message becomes one :class:`MemberUpdated` and nothing is
merged. A member the resync snapshot does not show any more was removed while we were away.
"""

from __future__ import annotations

from cti.agents import AgentDirectory, interface_key
from cti.codec import Message
from cti.events import MemberRemoved, MemberUpdated, QueueDefined, StateEvent

_UPDATES = frozenset({"QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded", "QueueMember"})


class MemberTracker:
    """Follows the queue members of one PBX. Feed it every AMI message with :meth:`on_event`."""

    def __init__(self, pbx: str, agents: AgentDirectory) -> None:
        self.pbx = pbx
        self.agents = agents
        self._members: dict[tuple[str, str], MemberUpdated] = {}  # (queue, device key)
        self._unconfirmed: set[tuple[str, str]] | None = None

    def on_event(self, msg: Message, at: float | None) -> list[StateEvent]:
        name = msg.get("Event")
        if name in _UPDATES:
            return self._update(msg, at)
        if name == "QueueMemberRemoved":
            return self._remove(msg, at)
        if name == "QueueParams":
            level = _float(msg.get("ServiceLevel"))
            return [QueueDefined(self.pbx, at, msg.get("Queue", ""), level or None)]
        return []

    def begin_resync(self) -> None:
        """A new AMI session: every member is unconfirmed until QueueStatus shows it again."""
        self._unconfirmed = set(self._members)

    def end_resync(self, at: float | None, complete: bool = True) -> list[StateEvent]:
        """Members the (complete) snapshot did not show have left their queues."""
        unconfirmed, self._unconfirmed = self._unconfirmed or set(), None
        if not complete:
            return []
        return [self._drop(key, at) for key in sorted(unconfirmed) if key in self._members]

    def members(self) -> list[MemberUpdated]:
        return list(self._members.values())

    def _update(self, msg: Message, at: float | None) -> list[StateEvent]:
        queue = msg.get("Queue", "")
        member = msg.get("MemberName") or msg.get("Name", "")
        interface = msg.get("Interface") or msg.get("Location", "")
        if not queue or not interface:
            return []
        self.agents.learn(member, interface)
        self.agents.learn(member, msg.get("StateInterface", ""))
        event = MemberUpdated(
            self.pbx,
            at,
            queue,
            self.agents.resolve(member, interface),
            member,
            interface,
            int(_float(msg.get("Status")) or 0),
            msg.get("Paused", "0") == "1",
            msg.get("PausedReason", ""),
            msg.get("InCall", "0") == "1",
            _float(msg.get("Wrapuptime")) or 0.0,
        )
        key = (queue, interface_key(interface))
        self._members[key] = event
        if self._unconfirmed is not None:
            self._unconfirmed.discard(key)
        return [event]

    def _remove(self, msg: Message, at: float | None) -> list[StateEvent]:
        key = (msg.get("Queue", ""), interface_key(msg.get("Interface", "")))
        return [self._drop(key, at)] if key in self._members else []

    def _drop(self, key: tuple[str, str], at: float | None) -> MemberRemoved:
        member = self._members.pop(key)
        return MemberRemoved(self.pbx, at, member.queue, member.agent, member.interface)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
