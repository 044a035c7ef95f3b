"""Wrap-up through Asterisk: an agent who owes an outcome is paused in their queues.

When the dispositions config says an outcome is required, the pop pipeline calls
:meth:`QueuePauseWrapup.hold` as the agent's card enters wrap-up and :meth:`release` when the
saved outcome closes it. Asterisk does the holding (``QueuePause`` with reason ``wrap-up``,
every queue of the member's interface), so no call is offered meanwhile and supervisors see
the reason. The pause is the supervisors' own control (:class:`cti.controls.MemberControls`),
sent in the background: the pipeline never waits for Asterisk.

The pauses with that reason are the service's own, and Asterisk keeps them when the service
stops (``kill -9``, SIGTERM, a crash). So the holder is also a state sink of the service: each
time a PBX's state is rebuilt (the first login, every reconnect), it reads ``QueueStatus`` and
unpauses the members paused ``wrap-up`` whose agent it does not hold now
(:meth:`QueuePauseWrapup.reconcile`); an agent whose outcome is still owed after a restart is
held again first (:meth:`adopt`, from the store's call rows), so only those who owe nothing
are released. A pause with any other reason is the agent's or a
supervisor's and is never touched. And no hold outlasts ``max_seconds``: then the agent is
released though the outcome is still owed (``expired`` is told, so the pop forgets the hold).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from cti.ami import AmiClient, AmiError
from cti.controls import ACTION_TIMEOUT, ControlError, MemberControls
from cti.events import FeedStatus, StateEvent
from cti.settings import AgentSettings

log = logging.getLogger(__name__)
REASON = "wrap-up"
MAX_SECONDS = 600.0  # the longest wrap-up the service holds an agent for, by default


class QueuePauseWrapup:
    def __init__(
        self,
        clients: Mapping[str, AmiClient],
        agents: Sequence[AgentSettings],
        *,
        max_seconds: float = MAX_SECONDS,
        expired: Callable[[str, str], None] | None = None,
    ) -> None:
        """``expired(pbx, agent)`` is called when a hold reaches ``max_seconds``; it must
        release the agent (the default: :meth:`release`)."""
        self._clients = clients
        self._controls = MemberControls(clients, agents)
        self._agent_of = {i: a.id for a in agents for i in self._controls.interfaces(a.id)}
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[tuple[str, str], asyncio.TimerHandle] = {}  # (pbx, agent): its limit
        self.max_seconds = max_seconds
        self.expired = expired or self.release

    def hold(self, pbx: str, agent: str) -> None:
        if self._pause(pbx, agent, True):
            self._forget(pbx, agent)  # a new wrap-up: its own longest wrap-up
            limit = asyncio.get_running_loop().call_later(
                self.max_seconds, self._expire, pbx, agent
            )
            self._held[(pbx, agent)] = limit

    def release(self, pbx: str, agent: str) -> None:
        self._forget(pbx, agent)
        self._pause(pbx, agent, False)

    def adopt(self, pbx: str, agent: str) -> None:
        """Own the wrap-up pause an earlier run placed (its outcome is still owed) without
        sending it again: reconcile then keeps it, and the longest wrap-up counts anew from
        now. A pause the agent or a supervisor lifted meanwhile stays lifted."""
        self._forget(pbx, agent)
        limit = asyncio.get_running_loop().call_later(self.max_seconds, self._expire, pbx, agent)
        self._held[(pbx, agent)] = limit

    def holds(self, pbx: str, agent: str) -> bool:
        """Whether this process holds the agent in wrap-up (an outcome is owed)."""
        return (pbx, agent) in self._held

    def observe(self, event: StateEvent) -> None:
        """StateSink: once a PBX's state is rebuilt after a login, reconcile its pauses."""
        if isinstance(event, FeedStatus) and event.connected and event.pbx in self._clients:
            self._spawn(self._reconcile_logged(event.pbx))

    async def reconcile(self, pbx: str) -> list[str]:
        """Unpause the members Asterisk shows paused ``wrap-up`` whose agent this process does
        not hold, in those queues only, and pause the agents it holds whom Asterisk shows
        unpaused (held while the link was down); the agents released, sorted. Raises
        ControlError."""
        client = self._clients[pbx]
        try:
            reply = await client.send_action({"Action": "QueueStatus"}, timeout=ACTION_TIMEOUT)
        except AmiError as exc:
            raise ControlError(str(exc), "failed") from exc
        stale: dict[str, list[tuple[str, str]]] = {}  # agent: (queue, interface) paused
        missing: list[tuple[str, str]] = []  # (agent, interface) held here, not paused there
        for item in reply if isinstance(reply, list) else [reply]:
            agent = self._agent_of.get(item.get("Location", ""))
            if agent is None or item.get("Event") != "QueueMember":
                continue
            if item.get("Paused") == "1" and item.get("PausedReason") == REASON:
                stale.setdefault(agent, []).append((item.get("Queue", ""), item["Location"]))
            elif item.get("Paused") == "0" and self.holds(pbx, agent):
                missing.append((agent, item["Location"]))
        for agent in sorted({agent for agent, _ in missing}):
            # held while the link was down: the pause could not be sent then
            self._spawn(self._send(pbx, agent, True))
        released = []
        for agent, places in sorted(stale.items()):
            for queue, interface in places:
                if self.holds(pbx, agent):
                    break  # held again meanwhile: a new wrap-up owns the pause
                action = {"Action": "QueuePause", "Interface": interface, "Queue": queue}
                action |= {"Paused": "false", "Reason": REASON}
                try:
                    await client.send_action(action, timeout=ACTION_TIMEOUT)
                except AmiError as exc:
                    raise ControlError(str(exc), "failed") from exc
            else:
                released.append(agent)
        return released

    async def _reconcile_logged(self, pbx: str) -> None:
        try:
            released = await self.reconcile(pbx)
        except ControlError as exc:
            log.warning("wrap-up pauses on PBX %s not reconciled: %s", pbx, exc)
            return
        if released:
            log.info(
                "wrap-up: released %d agents paused by an earlier run: %s",
                len(released),
                ", ".join(released),
                extra={"pbx": pbx},
            )

    def _expire(self, pbx: str, agent: str) -> None:
        self._held.pop((pbx, agent), None)
        log.warning(
            "wrap-up of %s on PBX %s released after %s: outcome still missing",
            agent,
            pbx,
            span(self.max_seconds),
            extra={"pbx": pbx},
        )
        self.expired(pbx, agent)

    def _forget(self, pbx: str, agent: str) -> None:
        limit = self._held.pop((pbx, agent), None)
        if limit is not None:
            limit.cancel()

    def _pause(self, pbx: str, agent: str, paused: bool) -> bool:
        """Send the (un)pause in the background; False when it cannot be sent at all."""
        if pbx not in self._clients or not self._controls.interfaces(agent):
            log.info("wrap-up of %s on PBX %s not held: no interface configured", agent, pbx)
            return False
        self._spawn(self._send(pbx, agent, paused))
        return True

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, pbx: str, agent: str, paused: bool) -> None:
        if not self._clients[pbx].connected:
            # no link: the reconcile after the next login pauses whom we hold and releases
            # whom we do not, so nothing is lost by not trying (nor logged per agent)
            log.debug("QueuePause of %s paused=%s left to the next login", agent, paused)
            return
        try:
            await self._controls.pause(pbx, agent, paused, REASON)
        except ControlError as exc:
            log.warning("QueuePause of %s paused=%s failed: %s", agent, paused, exc)

    async def close(self) -> None:
        """Let the pauses in flight be sent; the holds' limits end with the process."""
        for limit in self._held.values():
            limit.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def span(seconds: float) -> str:
    """A wrap-up limit in words: ``10 min``, ``90 s``."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"
