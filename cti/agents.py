"""Who an agent is: queue member names and device interfaces mapped to agent accounts.

Asterisk names an agent in several ways: ``MemberName`` (``Alice``), the member ``Interface``
(``Local/1001@agents/n``, ``PJSIP/1001``), ``StateInterface``, and the channels rung for it
(``Local/1001@agents-0000000b;1``, ``PJSIP/1001-00000002``). Configured accounts list the
names/interfaces that mean them; pairs seen on the wire (AgentCalled, QueueMember*) are learnt
so a direct dial to a member's interface is still recognised as that agent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cti.settings import AgentSettings

_CHANNEL_SUFFIX = re.compile(r"-[0-9a-f]{8}(;[12])?$")


def interface_key(name: str) -> str:
    """Reduce an interface, dial string or channel name to a device key.

    ``Local/1001@agents/n`` and ``Local/1001@agents-0000000b;1`` both give ``local/1001@agents``;
    ``PJSIP/1001-00000002`` gives ``pjsip/1001``.
    """
    name = name.strip()
    if name.lower().startswith("local/") and name.endswith("/n"):
        name = name[:-2]
    name = _CHANNEL_SUFFIX.sub("", name)
    return name.lower()


class AgentDirectory:
    """Resolves member names and interfaces to agent ids (pure lookups, no I/O)."""

    def __init__(self, accounts: Iterable[AgentSettings] = ()) -> None:
        self._by_name: dict[str, str] = {}
        self._by_interface: dict[str, str] = {}
        self._learned: dict[str, str] = {}
        for account in accounts:
            for member in (account.id, *account.members):
                if "/" in member:
                    self._by_interface[interface_key(member)] = account.id
                else:
                    self._by_name[member.lower()] = account.id

    def learn(self, member_name: str, interface: str) -> None:
        """Remember that this interface is this queue member (from AgentCalled etc.)."""
        if member_name and interface:
            self._learned[interface_key(interface)] = member_name

    def resolve(self, member_name: str, interface: str = "") -> str:
        """The agent id for a queue member; unknown members are named by MemberName."""
        key = interface_key(interface) if interface else ""
        if key in self._by_interface:
            return self._by_interface[key]
        if member_name.lower() in self._by_name:
            return self._by_name[member_name.lower()]
        if member_name:
            return member_name
        return self._learned.get(key, interface)

    def agent_for_device(self, name: str) -> str | None:
        """The agent whose device this dial string or channel is, if known."""
        key = interface_key(name)
        if key in self._by_interface:
            return self._by_interface[key]
        learned = self._learned.get(key)
        return self.resolve(learned, name) if learned else None
