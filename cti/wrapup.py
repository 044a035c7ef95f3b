"""Wrap-up through Asterisk: an agent who owes an outcome is paused in their queues.

When the dispositions config says an outcome is required, the pop pipeline calls
:meth:`QueuePauseWrapup.hold` as the agent's card enters wrap-up and :meth:`release` when the
saved outcome closes it. Asterisk does the holding (``QueuePause`` with reason ``wrap-up``,
every queue of the member's interface), so no call is offered meanwhile and supervisors see
the reason. An agent's interfaces are the members with a ``/`` in ``[[agents]]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from cti.ami import AmiClient, AmiError
from cti.settings import AgentSettings

log = logging.getLogger(__name__)
REASON = "wrap-up"


class QueuePauseWrapup:
    def __init__(self, clients: Mapping[str, AmiClient], agents: Sequence[AgentSettings]) -> None:
        self._clients = clients
        self._interfaces = {a.id: [m for m in a.members if "/" in m] for a in agents}
        self._tasks: set[asyncio.Task[None]] = set()

    def hold(self, pbx: str, agent: str) -> None:
        self._pause(pbx, agent, True)

    def release(self, pbx: str, agent: str) -> None:
        self._pause(pbx, agent, False)

    def _pause(self, pbx: str, agent: str, paused: bool) -> None:
        client = self._clients.get(pbx)
        interfaces = self._interfaces.get(agent, [])
        if client is None or not interfaces:
            log.info("wrap-up of %s on PBX %s not held: no interface configured", agent, pbx)
            return
        for interface in interfaces:
            task = asyncio.create_task(self._send(client, interface, paused))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, client: AmiClient, interface: str, paused: bool) -> None:
        action = {
            "Action": "QueuePause",
            "Interface": interface,
            "Paused": "true" if paused else "false",
            "Reason": REASON,
        }
        try:
            reply = await client.send_action(action, timeout=5.0)
        except AmiError as exc:
            log.warning("QueuePause %s paused=%s failed: %s", interface, paused, exc)
            return
        first = reply[0] if isinstance(reply, list) else reply
        if first.get("Response") != "Success":
            log.warning("QueuePause %s refused: %s", interface, first.get("Message", ""))

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
