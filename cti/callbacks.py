"""Calling a customer back for an agent: one AMI ``Originate``, and what its answer means.

Theory of operation
-------------------
The customer is called first: the Originate's channel is ``Local/<number>@<dial_context>``,
whose ``;2`` half runs that context, where the center's dialplan dials the number out (a trunk,
a prefix, the center's own caller ID: docs/follow-ups.md). Asterisk counts the originated
channel as answered when that ``Dial()`` is answered, i.e. when the customer picks up; only
then does it run the Originate's application on it, ``Dial(<agent's device>)``, which rings
the agent who asked. So ``OriginateResponse`` *is* the customer's answer: ``Success`` is
reached; ``Failure`` carries the control frame that ended the ringing in ``Reason``
(3 rang out, 5 busy, 8 congestion, 1 hung up, 0 could not be called).

The Originate is async (the AMI answers "successfully queued" at once and sends the
``OriginateResponse`` with the same ActionID when the ringing ends), so :meth:`place` waits
up to ``ring_seconds`` plus the action timeout. ``ChannelId`` gives the ``;1`` channel its
Uniqueid: it is the Linkedid of every channel of the call, hence the call id the call model
will report for the callback. ``CallerID`` is the customer, which the agent's phone shows.

Not confirmed on a real PBX: that Asterisk 22 still answers a Local channel's ``;1`` only once
the ``;2`` side's Dial is answered (a dialplan that answers early, e.g. with Playback, would
make every callback look reached), and that the ``;2`` half then gets ``<ChannelId>;2``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from cti.ami import AmiActionTimeout, AmiClient, AmiError
from cti.controls import ACTION_TIMEOUT, ControlError, check_text, pick_pbx
from cti.settings import AgentSettings, FollowupSettings, SettingsError

DialResult = Literal["reached", "no_answer", "busy", "failed", "unknown", "not_placed"]
AGENT_RING = 20  # seconds the agent's phone rings once the customer answered
_CONTEXT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_FAILURES: dict[str, tuple[DialResult, str]] = {  # OriginateResponse Failure Reason
    "0": ("failed", "the number could not be called"),
    "1": ("no_answer", "the customer hung up before answering"),
    "3": ("no_answer", "no answer"),
    "5": ("busy", "the line is busy"),
    "8": ("failed", "the network is congested"),
}


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """How a callback ended, and Asterisk's reason in words."""

    result: DialResult
    detail: str


def originate_action(
    *,
    number: str,
    device: str,
    context: str,
    call_id: str,
    caller_name: str,
    ring_seconds: float,
    followup_id: int | None,
) -> dict[str, str]:
    """The Originate of one callback (``followup_id``: the follow-up it works, None for a call
    placed from a customer's page). Raises ControlError (invalid) for anything that cannot go
    into an AMI header as it is."""
    if not _E164.fullmatch(number):
        raise ControlError.invalid("number", "an E.164 number")
    shown = re.sub(r'["<>\\]', "", "".join(c for c in caller_name if c.isprintable()))[:40]
    action = {
        "Action": "Originate",
        "Channel": f"Local/{number}@{context}",
        "Application": "Dial",
        "Data": f"{check_text('device', device)},{AGENT_RING}",
        "CallerID": f'"{shown.strip()}" <{number}>',
        "Timeout": str(int(ring_seconds * 1000)),
        "ChannelId": check_text("call id", call_id),
        "Async": "true",
    }
    if followup_id is not None:
        action["Variable"] = f"CTI_FOLLOWUP={followup_id}"
    return action


def outcome_of(replies: Sequence[Mapping[str, str]]) -> DialOutcome:
    """What the Originate's answer and its ``OriginateResponse`` say about the customer."""
    first = replies[0] if replies else {}
    if first.get("Response") != "Success":
        return DialOutcome("not_placed", first.get("Message", "") or "Originate refused")
    response = next((r for r in replies[1:] if r.get("Event") == "OriginateResponse"), None)
    if response is None:
        return DialOutcome("unknown", "Asterisk did not report how the call ended")
    if response.get("Response") == "Success":
        return DialOutcome("reached", "the customer answered")
    reason = response.get("Reason", "")
    result, text = _FAILURES.get(reason, ("failed", f"reason {reason or 'unknown'}"))
    return DialOutcome(result, text)


class CallbackDialer:
    """Places callbacks on the configured PBXs, from the agent's own phone."""

    def __init__(
        self,
        clients: Mapping[str, AmiClient],
        agents: Sequence[AgentSettings],
        settings: FollowupSettings,
        *,
        timeout: float = ACTION_TIMEOUT,
    ) -> None:
        """Raises SettingsError for a ``dial_context`` that cannot name a context."""
        if not _CONTEXT.fullmatch(settings.dial_context):
            raise SettingsError(
                f"[followups]: dial_context {settings.dial_context!r} is not a context name"
            )
        self._clients = clients
        self._agents = {a.id: a for a in agents}
        self.settings = settings
        self.timeout = timeout

    def pbx_for(self, requested: str | None) -> str:
        """The PBX named, or the only one. Raises ControlError (invalid)."""
        return pick_pbx(self._clients, requested)

    def device_for(self, agent: str) -> str | None:
        """The phone a queue rings for ``agent``: its first configured member interface."""
        settings = self._agents.get(agent)
        if settings is None:
            return None
        return next((m for m in settings.members if "/" in m), None)

    async def place(
        self,
        pbx: str,
        *,
        number: str,
        device: str,
        call_id: str,
        caller_name: str,
        followup_id: int | None,
    ) -> DialOutcome:
        """Call ``number``, then ``device``; returns once the customer answered or not. Never
        raises for the PBX: a call that could not be asked for is ``not_placed``, one whose
        end was not heard ``unknown``. Raises ControlError (invalid) for bad input."""
        client = self._clients.get(pbx)
        if client is None:
            raise ControlError.invalid("pbx", f"no PBX named {pbx!r}")
        action = originate_action(
            number=number,
            device=device,
            context=self.settings.dial_context,
            call_id=call_id,
            caller_name=caller_name,
            ring_seconds=self.settings.ring_seconds,
            followup_id=followup_id,
        )
        if not client.connected:
            return DialOutcome("not_placed", f"PBX {pbx}: not connected")
        try:
            reply = await client.send_action(
                action, timeout=self.settings.ring_seconds + self.timeout
            )
        except AmiActionTimeout:
            return DialOutcome("unknown", "Asterisk did not report how the call ended")
        except AmiError as exc:  # sent, then the link went: the phone may be ringing
            return DialOutcome("unknown", str(exc))
        return outcome_of(reply if isinstance(reply, list) else [reply])
