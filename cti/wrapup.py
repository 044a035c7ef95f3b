"""Wrap-up through Asterisk: an agent who owes an outcome is paused in their queues.

When the dispositions config says an outcome is required, the pop pipeline calls
:meth:`QueuePauseWrapup.hold` as the agent's card enters wrap-up and :meth:`release` when the
saved outcome closes it. Asterisk does the holding (``QueuePause`` with reason ``wrap-up``,
every queue of the member's interface), so no call is offered meanwhile and supervisors see
the reason. The pause is the supervisors' own control (:class:`cti.controls.MemberControls`),
sent in the background: the pipeline never waits for Asterisk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from cti.ami import AmiClient
from cti.controls import ControlError, MemberControls
from cti.settings import AgentSettings

log = logging.getLogger(__name__)
REASON = "wrap-up"


class QueuePauseWrapup:
    def __init__(self, clients: Mapping[str, AmiClient], agents: Sequence[AgentSettings]) -> None:
        self._clients = clients
        self._controls = MemberControls(clients, agents)
        self._tasks: set[asyncio.Task[None]] = set()

    def hold(self, pbx: str, agent: str) -> None:
        self._pause(pbx, agent, True)

    def release(self, pbx: str, agent: str) -> None:
        self._pause(pbx, agent, False)

    def _pause(self, pbx: str, agent: str, paused: bool) -> None:
        if pbx not in self._clients or not self._controls.interfaces(agent):
            log.info("wrap-up of %s on PBX %s not held: no interface configured", agent, pbx)
            return
        task = asyncio.create_task(self._send(pbx, agent, paused))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, pbx: str, agent: str, paused: bool) -> None:
        try:
            await self._controls.pause(pbx, agent, paused, REASON)
        except ControlError as exc:
            log.warning("QueuePause of %s paused=%s failed: %s", agent, paused, exc)

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
