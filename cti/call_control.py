"""Call control through AMI: an agent hangs up or blind-transfers the call they are on.

Theory of operation
-------------------
Asterisk acts on a channel, the agent thinks of a call. The call model knows which channel
is the agent's side of a live call (:meth:`cti.calls.CallTracker.leg`): the agent's channel
in a bridge with the caller, a member's ``Local/1004@agents-…;1`` or its device channel. It
is the channel the real recordings' AMI ``BlindTransfer`` named (tests/fixtures). No leg: the
agent is not talking on that call now, and nothing is sent.

``BlindTransfer`` sends the caller to ``Exten`` in ``Context``. Which context holds what is
the dialplan's business, so each PBX says it (``[pbx.NAME]``): ``queue_context`` (a queue's
name is an extension there: the lab's ``incoming``), ``agent_context`` (empty: the context
of the agent's ``Local/<exten>@<context>`` member interface, dialled at that extension) and
``number_context`` (empty: numbers are refused). Asterisk accepts a blind transfer to an
extension that does not exist and the caller is then hung up, so the target is checked here
first: a queue must be one the service has seen, an agent one configured with an extension.

``Hangup`` of the agent's channel ends the agent's part, as putting the handset down does;
the caller goes on in the dialplan after ``Queue()`` (a survey, say) or is hung up.

Every text that becomes a header is checked as received (:func:`cti.controls.check_text`)
and every action again before it is sent (:func:`cti.controls.send_checked`). Asterisk's
answers are put in words a person understands, Asterisk's own text in brackets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from cti.ami import AmiClient
from cti.calls import Leg
from cti.controls import (
    ACTION_TIMEOUT,
    ControlError,
    Sent,
    check_text,
    client_of,
    send_checked,
)
from cti.settings import AgentSettings, PbxSettings

TargetKind = Literal["queue", "agent", "number"]
TARGET_KINDS: tuple[TargetKind, ...] = ("queue", "agent", "number")
_LOCAL = re.compile(r"local/([^@/]+)@([^/]+)(?:/[a-z]*)?", re.IGNORECASE)
_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")

# main/manager.c (action_hangup, action_blind_transfer) -> what the agent is told
_IN_WORDS = {
    "No such channel": "the call is no longer on the PBX",
    "Channel specified does not exist": "the call is no longer on the PBX",
    "Transfer invalid": "the call is not connected to anyone who could be transferred",
    "Transfer not permitted": "the PBX does not allow transferring this call",
    "Transfer failed": "the PBX could not transfer the call",
    "Permission denied": "the PBX does not let this service do that (manager.conf write=call)",
}

Legs = Callable[[str, str, str], Leg | None]  # (pbx, call id, agent) -> the agent's leg


class CallControls:
    """Hang up and blind transfer, for the agent on the call. Every method returns the
    actions Asterisk accepted, or raises ControlError (invalid, refused, failed)."""

    def __init__(
        self,
        clients: Mapping[str, AmiClient],
        pbxs: Sequence[PbxSettings],
        agents: Sequence[AgentSettings],
        legs: Legs,
        queues: Callable[[str], Sequence[str]],
        *,
        timeout: float = ACTION_TIMEOUT,
    ) -> None:
        self._clients = clients
        self._pbxs = {p.name: p for p in pbxs}
        self._agents = {a.id: a for a in agents}
        self._legs = legs
        self._queues = queues  # pbx -> the queues the service has seen (the wallboard's)
        self.timeout = timeout

    def leg(self, pbx: str, call_id: str, agent: str) -> Leg:
        """The agent's side of the call. Raises ControlError (refused) when not on it now."""
        leg = self._legs(pbx, call_id, agent)
        if leg is None:
            raise ControlError(f"{agent} is not talking on this call now", "refused")
        return leg

    async def hangup(self, pbx: str, call_id: str, agent: str) -> Sent:
        """Hang up the agent's channel of the call."""
        client = client_of(self._clients, pbx)
        leg = self.leg(pbx, call_id, agent)
        action = {"Action": "Hangup", "Channel": leg.agent_channel, "Cause": "16"}
        return await self._one(client, action, "not hung up")

    def destination(self, pbx: str, kind: str, target: str) -> tuple[str, str]:
        """(extension, context) a transfer to ``target`` dials. Raises ControlError: invalid
        input, or refused when this PBX has no context for that kind of target."""
        settings = self._pbxs.get(pbx)
        if settings is None:
            raise ControlError.invalid("pbx", f"no PBX named {pbx!r}")
        target = check_text("target", target)
        if kind == "queue":
            if target not in self._queues(pbx):
                raise ControlError.invalid("target", f"no queue named {target!r}")
            return target, check_text("queue_context", settings.queue_context)
        if kind == "agent":
            return self._agent_destination(settings, target)
        if kind == "number":
            if not _NUMBER.fullmatch(target):
                raise ControlError.invalid("target", "a number: digits, * and #, + first")
            if not settings.number_context:
                raise ControlError(
                    f"transfers to numbers are not set up on {pbx} (number_context)", "refused"
                )
            return target, check_text("number_context", settings.number_context)
        raise ControlError.invalid("kind", f"one of {', '.join(TARGET_KINDS)}")

    async def blind_transfer(
        self, pbx: str, call_id: str, agent: str, kind: str, target: str
    ) -> Sent:
        """Send the caller to the target; the agent's part of the call ends."""
        client = client_of(self._clients, pbx)
        exten, context = self.destination(pbx, kind, target)
        leg = self.leg(pbx, call_id, agent)
        action = {
            "Action": "BlindTransfer",
            "Channel": leg.agent_channel,
            "Exten": exten,
            "Context": context,
        }
        return await self._one(client, action, "not transferred")

    def _agent_destination(self, settings: PbxSettings, agent: str) -> tuple[str, str]:
        found = self._agents.get(agent)
        if found is None:
            raise ControlError.invalid("target", f"{agent!r} is not a configured agent")
        for member in found.members:
            local = _LOCAL.fullmatch(member)
            if local is not None:
                context = settings.agent_context or local.group(2)
                return check_text("target", local.group(1)), check_text("agent_context", context)
        device = next((m for m in found.members if "/" in m), None)
        if device is None or not settings.agent_context:
            raise ControlError(
                f"{agent} has no extension to transfer to (a Local member, or agent_context)",
                "refused",
            )
        return check_text("target", device.split("/", 1)[1]), settings.agent_context

    async def _one(self, client: AmiClient, action: dict[str, str], failed: str) -> Sent:
        sent = (action,)
        first = (await send_checked(client, action, self.timeout))[0]
        if first.get("Response") == "Success":
            return sent
        said = first.get("Message", "") or "refused"
        words = _IN_WORDS.get(said)
        message = f"{failed}: {words} (Asterisk: {said})" if words else f"{failed}: {said}"
        raise ControlError(message, sent=sent)
