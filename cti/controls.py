"""Queue member controls through AMI: pause, log in to / out of a queue, listen to a call.

Theory of operation
-------------------
An agent's member interfaces are the entries with a ``/`` in its ``[[agents]]`` members
(``Local/1001@agents/n``, ``PJSIP/1001``). Which of them a queue knows is Asterisk's business,
so ``QueuePause`` and ``QueueRemove`` go to every one of them: the control succeeded when
Asterisk accepted it for at least one, it was *refused* when Asterisk refused it for all
(``Interface not found``), and it *failed* when Asterisk could not be asked (not connected,
no answer within the timeout). ``QueueAdd`` adds one interface, the first configured, with
the device state of the first non-Local one.

Listening is an ``Originate`` of the supervisor's own phone into ``ChanSpy``. Asterisk answers
an async Originate at once ("successfully queued") and sends ``OriginateResponse`` only once
the supervisor's phone answered or gave up, so :meth:`MemberControls.listen` waits for both:
the phone rings for ``ring_timeout`` and the action's timeout is that plus ``timeout``. ChanSpy
spies on the first channel whose name starts with its prefix; channel names are the device
followed by ``-`` and a sequence number (``PJSIP/1001-0000002a``), so the prefix ends with
``-`` and ``PJSIP/1001`` never spies on ``PJSIP/10010``.

Every text that becomes an AMI header is checked *as received* (:func:`check_text`): a CR
or LF would start a header of its own, so a control character anywhere in it (U+0000-U+001F,
U+007F-U+009F), a line separator or a lone surrogate refuses the control; only surrounding
spaces are taken off. Then every header of every action is checked once more just before it
is sent (:func:`check_action`), whatever built it, configured interfaces included. Each
control returns the actions it handed to Asterisk (a :class:`ControlError` carries those it
tried), so the audit log can say what was sent rather than what was asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

from cti.ami import AmiClient, AmiError
from cti.codec import header_problem
from cti.settings import AgentSettings

ACTION_TIMEOUT = 5.0  # seconds Asterisk has to answer a control
RING_TIMEOUT = 20.0  # seconds the supervisor's phone rings before a listen gives up
MAX_TEXT = 64
SPY_OPTIONS = {"listen": "qE", "whisper": "qEw", "barge": "qEB"}  # q: no beep, E: end with the call
_LOCAL = re.compile(r"(local/[^/]+)(/[a-z]*)?", re.IGNORECASE)  # Local/1001@agents[/n]
_ORIGINATE_REASONS = {  # OriginateResponse Reason: the control frame that ended the dialling
    "0": "the phone could not be called",
    "1": "the phone hung up",
    "3": "the phone did not answer",
    "5": "the phone is busy",
    "8": "the network is congested",
}

_FIELDS = {  # AMI header -> the name the API knows the value by, for a 422's ``field``
    "Channel": "device",
    "Interface": "interface",
    "MemberName": "member name",
    "StateInterface": "interface",
    "CallerID": "agent",
    "Data": "interface",
}

Failure = Literal["invalid", "refused", "failed"]
Mode = Literal["listen", "whisper", "barge"]
Action = dict[str, str]
Sent = tuple[Action, ...]  # the actions handed to Asterisk, in order


class ControlError(Exception):
    """A control that was not done. ``kind``: ``invalid`` (bad input, nothing sent),
    ``refused`` (Asterisk said no), ``failed`` (Asterisk could not be asked)."""

    def __init__(
        self,
        message: str,
        kind: Failure = "refused",
        field: str | None = None,
        sent: Sent = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.field = field
        self.sent = sent  # what was handed to Asterisk before it said no (none if invalid)

    @classmethod
    def invalid(cls, field: str, expected: str) -> ControlError:
        return cls(f"{field}: {expected}", "invalid", field)


def pick_pbx(clients: Mapping[str, AmiClient], requested: str | None) -> str:
    """The PBX named, or the only one. Raises ControlError (invalid)."""
    if requested:
        if requested not in clients:
            raise ControlError.invalid("pbx", f"no PBX named {requested!r}")
        return requested
    if len(clients) == 1:
        return next(iter(clients))
    if not clients:
        raise ControlError.invalid("pbx", "no PBX is configured")
    raise ControlError.invalid("pbx", "several PBXs are configured, name one")


def client_of(clients: Mapping[str, AmiClient], pbx: str) -> AmiClient:
    """The AMI client of the PBX named. Raises ControlError (invalid)."""
    client = clients.get(pbx)
    if client is None:
        raise ControlError.invalid("pbx", f"no PBX named {pbx!r}")
    return client


def check_text(name: str, value: str, *, required: bool = True) -> str:
    """``value`` without surrounding spaces, if it may go into an AMI header.

    Checked as received, before anything is taken off: a CR/LF at either end is refused like
    one in the middle, never trimmed. Raises ControlError (invalid).
    """
    problem = header_problem(value)
    if problem is None and not value.isprintable():  # U+2028, U+2029, U+00A0, format chars
        problem = f"a character that is not printable (U+{_unprintable(value):04X})"
    if problem is not None:
        raise ControlError.invalid(name, f"holds {problem}; nothing was sent")
    text = value.strip(" ")
    if not text and required:
        raise ControlError.invalid(name, "required")
    if len(text) > MAX_TEXT:
        raise ControlError.invalid(name, f"at most {MAX_TEXT} characters")
    return text


def check_action(action: Mapping[str, str]) -> None:
    """Refuse an action with a header that could break its frame, whoever built it (a
    configured interface or agent name too). Raises ControlError (invalid), naming the field."""
    for key, value in action.items():
        problem = header_problem(key) or header_problem(value)
        if problem is not None:
            raise ControlError.invalid(_FIELDS.get(key, key.lower()), f"holds {problem}")


def _unprintable(text: str) -> int:
    return next(ord(c) for c in text if not c.isprintable())


def spy_prefix(interfaces: Sequence[str]) -> str | None:
    """ChanSpy's channel prefix for these interfaces: the first device that is not a Local
    channel, else the Local channel without its options; None without interfaces."""
    device = next((i for i in interfaces if not i.lower().startswith("local/")), None)
    if device is None and interfaces:
        local = _LOCAL.fullmatch(interfaces[0])
        device = local.group(1) if local else interfaces[0]
    return None if device is None else f"{device}-"


class MemberControls:
    """The controls a supervisor (or an agent, on themselves) may use, for configured agents
    on configured PBXs. Every method returns once Asterisk did it, else raises ControlError."""

    def __init__(
        self,
        clients: Mapping[str, AmiClient],
        agents: Sequence[AgentSettings],
        *,
        timeout: float = ACTION_TIMEOUT,
        ring_timeout: float = RING_TIMEOUT,
    ) -> None:
        self._clients = clients
        self._agents = {a.id: a for a in agents}
        self.timeout = timeout
        self.ring_timeout = ring_timeout

    def pbx_for(self, requested: str | None) -> str:
        """The PBX named, or the only one. Raises ControlError (invalid)."""
        return pick_pbx(self._clients, requested)

    def knows(self, agent: str) -> bool:
        """Whether ``agent`` is a configured agent."""
        return agent in self._agents

    def interfaces(self, agent: str) -> tuple[str, ...]:
        """The configured member interfaces of ``agent`` (none for an unknown agent)."""
        settings = self._agents.get(agent)
        return tuple(m for m in settings.members if "/" in m) if settings is not None else ()

    async def pause(
        self, pbx: str, agent: str, paused: bool, reason: str, queue: str | None = None
    ) -> Sent:
        """Pause (or unpause) the agent in ``queue``, or in all its queues."""
        client = self._client(pbx)
        interfaces = self._interfaces(agent)
        reason = check_text("reason", reason, required=paused)
        queue = check_text("queue", queue) if queue is not None else None
        actions = []
        for interface in interfaces:
            action = {"Action": "QueuePause", "Interface": interface}
            action["Paused"] = "true" if paused else "false"
            if reason:
                action["Reason"] = reason
            if queue:
                action["Queue"] = queue
            actions.append(action)
        return await _to_any(client, actions, self.timeout)

    async def paused_in(self, pbx: str, agent: str) -> dict[str, str | None]:
        """Where the agent is a member, as Asterisk says now (``QueueStatus``): queue name ->
        the pause reason (``""`` when paused without one), or None when not paused. The
        page reads it on load, so a reload shows a pause the service or a supervisor put."""
        client = self._client(pbx)
        interfaces = set(self._interfaces(agent))
        replies = await send_checked(client, {"Action": "QueueStatus"}, self.timeout)
        if replies[0].get("Response") not in (None, "Success"):
            raise ControlError(replies[0].get("Message", "") or "QueueStatus refused")
        return {
            m.get("Queue", ""): (m.get("PausedReason", "") if m.get("Paused") == "1" else None)
            for m in replies
            if m.get("Event") == "QueueMember" and m.get("Location") in interfaces
        }

    async def add(self, pbx: str, agent: str, queue: str, penalty: int | None = None) -> Sent:
        """Log the agent in to ``queue`` (a dynamic member, under its first interface)."""
        client = self._client(pbx)
        interfaces = self._interfaces(agent)
        action = {
            "Action": "QueueAdd",
            "Queue": check_text("queue", queue),
            "Interface": interfaces[0],
            "MemberName": self._member_name(agent),
            "StateInterface": next(
                (i for i in interfaces if not i.lower().startswith("local/")), interfaces[0]
            ),
        }
        if penalty is not None:
            if not 0 <= penalty < 2**31:
                raise ControlError.invalid("penalty", "a whole number from 0")
            action["Penalty"] = str(penalty)
        return await _to_any(client, [action], self.timeout)

    async def remove(self, pbx: str, agent: str, queue: str) -> Sent:
        """Log the agent out of ``queue`` (whichever of its interfaces is the member)."""
        client = self._client(pbx)
        queue = check_text("queue", queue)
        actions = [
            {"Action": "QueueRemove", "Queue": queue, "Interface": interface}
            for interface in self._interfaces(agent)
        ]
        return await _to_any(client, actions, self.timeout)

    async def listen(self, pbx: str, agent: str, device: str, mode: Mode) -> Sent:
        """Ring ``device`` (the supervisor's phone) and, once answered, spy on the agent."""
        client = self._client(pbx)
        prefix = spy_prefix(self._interfaces(agent))
        options = SPY_OPTIONS.get(mode)
        if options is None:
            raise ControlError.invalid("mode", f"one of {', '.join(SPY_OPTIONS)}")
        if "/" not in device:
            raise ControlError("this account has no phone to listen on", "refused")
        shown = re.sub(r'["<>]', "", agent)
        action = {
            "Action": "Originate",
            "Channel": check_text("device", device),
            "Application": "ChanSpy",
            "Data": f"{prefix},{options}",
            "CallerID": f'"Listen {shown}" <{shown}>',
            "Timeout": str(int(self.ring_timeout * 1000)),
            "Async": "true",
        }
        sent = (action,)
        replies = await send_checked(client, action, self.ring_timeout + self.timeout)
        first = replies[0]
        if first.get("Response") != "Success":
            raise ControlError(first.get("Message", "") or "Originate refused", sent=sent)
        outcome = next((r for r in replies[1:] if r.get("Event") == "OriginateResponse"), None)
        if outcome is None:
            message = "Asterisk did not report how the Originate ended"
            raise ControlError(message, "failed", sent=sent)
        if outcome.get("Response") != "Success":
            reason = outcome.get("Reason", "")
            why = _ORIGINATE_REASONS.get(reason, f"reason {reason or 'unknown'}")
            raise ControlError(f"could not call {action['Channel']}: {why}", sent=sent)
        return sent

    def _client(self, pbx: str) -> AmiClient:
        return client_of(self._clients, pbx)

    def _interfaces(self, agent: str) -> tuple[str, ...]:
        if not self.knows(agent):
            raise ControlError.invalid("agent", f"{agent!r} is not a configured agent")
        interfaces = self.interfaces(agent)
        if not interfaces:
            raise ControlError(f"agent {agent!r} has no member interface configured", "refused")
        return interfaces

    def _member_name(self, agent: str) -> str:
        """The queue MemberName the call model knows the agent by: its first plain member."""
        return next((m for m in self._agents[agent].members if "/" not in m), agent)


async def send_checked(
    client: AmiClient,
    action: Action,
    timeout: float,  # noqa: ASYNC109
) -> list[dict[str, str]]:
    """The one way out to Asterisk: every action is checked here, whatever built it."""
    check_action(action)
    try:
        reply = await client.send_action(action, timeout=timeout)
    except AmiError as exc:
        raise ControlError(str(exc), "failed", sent=(action,)) from exc
    except ValueError as exc:  # the client's own check: check_action should have caught it
        raise ControlError(str(exc), "invalid") from exc
    return reply if isinstance(reply, list) else [reply]


# What Asterisk's app_queue and manager answer, in words a person at the page understands;
# Asterisk's own text follows in brackets for whoever sets the PBX up.
_IN_WORDS = {
    "Interface not found": "this phone is not a member of any queue on the PBX",
    "Unable to add interface: Already there": "already logged in to that queue",
    "Unable to add interface to queue: No such queue": "the PBX has no queue of that name",
    "Unable to remove interface: Not there": "not logged in to that queue",
    "Unable to remove interface from queue: No such queue": "the PBX has no queue of that name",
    "Unable to remove interface: Not dynamic": (
        "a member configured in queues.conf cannot be logged out from here"
    ),
    "Permission denied": "the PBX does not let this service do that (manager.conf write=agent)",
}


async def _to_any(
    client: AmiClient,
    actions: Sequence[Action],
    timeout: float,  # noqa: ASYNC109
) -> Sent:
    """Send the actions one after the other; done when Asterisk accepted at least one.
    Every action is checked before the first is sent: a control is done whole or not at all."""
    for action in actions:
        check_action(action)
    refusals: list[str] = []
    said: set[str] = set()
    sent: list[Action] = []
    for action in actions:
        try:
            first = (await send_checked(client, action, timeout))[0]
        except ControlError as exc:
            exc.sent = (*sent, *exc.sent)
            raise
        sent.append(action)
        if first.get("Response") == "Success":
            continue
        message = first.get("Message", "") or "refused"
        said.add(message)
        refusals.append(f"{action.get('Interface', '')}: {message}")
    if len(refusals) == len(actions):
        asterisk = "; ".join(refusals) or "nothing to send"
        words = _IN_WORDS.get(said.pop()) if len(said) == 1 else None
        message = f"{words} (Asterisk: {asterisk})" if words else asterisk
        raise ControlError(message, sent=tuple(sent))
    return tuple(sent)
