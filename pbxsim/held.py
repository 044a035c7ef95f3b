"""Held calls: answered queue calls that stay up until an AMI action ends or moves them.

Theory of operation
-------------------
A scripted scenario (:mod:`pbxsim.scenarios`) plays a whole call at once. A *held* call is
built with the same machinery (:class:`~pbxsim.scenarios._QueueCall`) but stops once the
member answered: the customer leg waits in ``caller,s,2`` (``Wait``) and the member's
``;2`` in ``Wait``, both for :data:`HELD_WAIT` seconds, and the caller's ``;2`` is bridged with
the member's ``;1``. The call keeps its time cursor (``start`` + ``t``) and its list of
``(t, event)``; to go on, :class:`HeldCalls` moves the cursor to "now" (``t = max(t, now)``),
remembers ``len(out)``, runs the next steps and plays ``out[n:]``. The batches of one call
are played in order, each timed from the call's start (call time = wall time multiplied by
:attr:`AmiServer.speed`; at speed 0 they go out at once).

What the AMI actions do to a held call (:mod:`pbxsim.server` checks them first, with
Asterisk 22's answers):

* ``BlindTransfer`` of the member's ``;1`` (the channel the real recording's AMI transfer
  used): ``Unhold`` and the two ``BLINDTRANSFER`` variables, ``BlindTransfer`` (Result
  Success, ``IsExternal: Yes`` as recorded for an AMI transfer), ``AgentComplete Reason:
  transfer``, the member leg leaves the bridge and hangs up, the caller leaves it and goes to
  ``Context,Exten,1``.

  The sim's dialplan: in the context :data:`QUEUE_CONTEXT` (``incoming``, as in the lab's
  recording: ``Exten: sales, Context: incoming``) each queue of the PBX is an extension that
  sets ``TARGET_QUEUE``, goes to ``s,1`` and runs ``Queue(<queue>)``: the caller joins that
  queue (``QueueCallerJoin`` with the same channel), one of its members (not the one who
  transferred, not paused) is rung and answers after the call's ring time, and the call is
  held again with that member. Any other extension, and every extension of any other
  context, does not exist: the caller pair is hung up with cause 1 (Unallocated) and the
  call ends. (The lab's ``agents,100N`` extensions are not modelled as targets.)
* ``Hangup`` of the member's ``;1`` or ``;2``: the call ends as
  :meth:`~pbxsim.scenarios._QueueCall.agent_hangs_up` scripts it; of the caller's ``;2`` or
  the customer leg ``;1``: as :meth:`~pbxsim.scenarios._QueueCall.caller_hangs_up`. A valid
  ``Cause`` (1-127) is put on that channel's own ``Hangup`` event.

Not simulated: a transfer by the caller's side (its ``;2`` is in the bridge too, but the
server answers "Transfer invalid"), Atxfer, and actions on scripted calls (see the action
handlers in :mod:`pbxsim.server`).

A caller may have a talk limit (``talk``): that long after each member's answer (call time)
they hang up on that member, unless an action moved or ended the call first; a demo's held
calls end so by themselves.

An action that arrives while the events of a transfer are still being played (the new
member is ringing at speed > 0) is applied after them: a hang-up then follows the new
member's answer instead of cancelling the ring.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Literal, Protocol

from pbxsim.scenarios import (
    DEFAULT_TIMINGS,
    Agent,
    Pbx,
    TimedEvent,
    Timings,
    _call,
    _Chan,
    _Leg,
    _QueueCall,
)

QUEUE_CONTEXT = "incoming"  # the context whose extensions are the PBX's queues
HELD_WAIT = 3600  # Wait() of the customer leg and of the member's ;2 while a call is held
DEFAULT_RING = 2.0  # seconds a member rings before answering a held call

# main/channel.c causes[]: the texts of the causes a Hangup action is likely to carry
CAUSE_TEXT = MappingProxyType(
    {
        1: "Unallocated (unassigned) number",
        2: "No route to specified transmit network",
        3: "No route to destination",
        16: "Normal Clearing",
        17: "User busy",
        18: "No user responding",
        19: "User alerting, no answer",
        21: "Call Rejected",
        22: "Number changed",
        26: "Answered elsewhere",
        27: "Destination out of order",
        28: "Invalid number format",
        31: "Normal, unspecified",
        34: "Circuit/channel congestion",
        38: "Network out of order",
        41: "Temporary failure",
        42: "Switching equipment congestion",
    }
)

State = Literal["moving", "held", "ended"]


class Host(Protocol):
    """What held calls use of their :class:`~pbxsim.server.AmiServer`."""

    pbx: Pbx
    rng: random.Random
    speed: float
    _plays: set[asyncio.Task[None]]  # the server's plays, cancelled by its stop()

    def member_paused(self, queue: str, agent: Agent) -> bool: ...

    async def play(
        self, offset_events: Iterable[tuple[float, Mapping[str, str]]], speed: float = ...
    ) -> None: ...


def cause_text(cause: int) -> str:
    """ast_cause2str: "Unknown" for a cause it has no text for."""
    return CAUSE_TEXT.get(cause, "Unknown")


class HeldCall:
    """One held call. Read its channels here; act on it with AMI actions (or
    :class:`HeldCalls`). ``state`` is ``moving`` while events are still to be played
    (the call is being set up or transferred), ``held`` once the current member's answer
    has gone out, ``ended`` once the call's last event has."""

    def __init__(self, call: _QueueCall, leg: _Leg, ring: float, talk: float | None = None) -> None:
        self.call = call
        self.leg = leg
        self.ring = ring
        self.talk = talk  # seconds the caller talks with each member before hanging up
        self.state: State = "moving"
        self.queues: list[str] = [call.queue]
        self._held = asyncio.Event()
        self._ended = asyncio.Event()
        self._last: asyncio.Task[None] | None = None
        self._finished = False  # the ending is built (its events may still be playing)

    @property
    def call_id(self) -> str:
        """The call's Linkedid (the customer leg's Uniqueid)."""
        return self.call.linkedid

    @property
    def agent(self) -> str:
        """The name of the member the caller is (or is about to be) bridged with."""
        return self.leg.agent.name

    @property
    def queue(self) -> str:
        return self.call.queue

    @property
    def agent_channel(self) -> str:
        """The member leg bridged with the caller: ``Local/<exten>@agents-XXXXXXXX;1``."""
        return self.leg.one.name

    @property
    def caller_channel(self) -> str:
        """The caller's channel in the bridge (and in the queue): ``Local/…@incoming-…;2``."""
        return self.call.c2.name

    @property
    def customer_channel(self) -> str:
        """The customer leg ``Local/…@incoming-…;1`` (in ``Wait`` in ``caller,s,2``)."""
        return self.call.c1.name

    @property
    def ended(self) -> asyncio.Event:
        """Set once the call's last event has been emitted."""
        return self._ended

    async def wait_held(self) -> None:
        """Until the current member's answer has been emitted (returns at once if the
        call ended meanwhile)."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._held, self._ended)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def _chans(self) -> tuple[_Chan, ...]:
        return (self.call.c1, self.call.c2, self.leg.one, self.leg.two)


class HeldCalls:
    """The server's held calls, found by the name (any case) or Uniqueid of their channels."""

    def __init__(self, server: Host) -> None:
        self._server = server
        self._by_channel: dict[str, HeldCall] = {}

    # -- registry ----------------------------------------------------------------------------
    def find(self, channel: str) -> HeldCall | None:
        """The held call with this channel (name, case-insensitive, or Uniqueid)."""
        return self._by_channel.get(channel.lower())

    def channel(self, held: HeldCall, channel: str) -> _Chan | None:
        key = channel.lower()
        return next((c for c in held._chans() if key in (c.name.lower(), c.uniqueid.lower())), None)

    def calls(self) -> list[HeldCall]:
        return list(dict.fromkeys(self._by_channel.values()))

    def _register(self, held: HeldCall, *chans: _Chan) -> None:
        for ch in chans:
            self._by_channel[ch.name.lower()] = held
            self._by_channel[ch.uniqueid.lower()] = held

    def _forget(self, *chans: _Chan) -> None:
        for ch in chans:
            self._by_channel.pop(ch.name.lower(), None)
            self._by_channel.pop(ch.uniqueid.lower(), None)

    def clear(self) -> None:
        """A restart: every held call is gone (its channels with it)."""
        for held in self.calls():
            held.state = "ended"
            held._finished = True
            held._ended.set()
        self._by_channel.clear()

    # -- starting ----------------------------------------------------------------------------
    def start(
        self,
        *,
        number: str | None,
        name: str | None,
        queue: str = "support",
        agent: str | None = None,
        ring: float = DEFAULT_RING,
        timings: Timings | None = None,
        position: int = 1,
        talk: float | None = None,
    ) -> HeldCall:
        """A queue call played up to the member's answer, then held (see the module doc);
        ``position``: where the caller joins the queue; ``talk``: seconds (call time) after
        which the caller hangs up on the member who has them, unless an action came first
        (None: never; a demo's callers do not wait forever for the agent to act)."""
        server = self._server
        timings = timings or DEFAULT_TIMINGS
        pbx = server.pbx
        if queue not in pbx.queues:
            raise ValueError(f"unknown queue {queue!r}")
        call = _call(pbx, server.rng, time.time(), number, name, queue, position, True, timings)
        member = self._pick(queue, agent)
        call.originate(patience=HELD_WAIT)
        call.ivr()
        call.join()
        call.wait(timings.wait)
        (leg,) = call.ring([member])
        call.pick_up(leg, call.c2, ring)
        call.connect(leg)
        call.agent_talks(leg, 0.5, limit=HELD_WAIT)
        held = HeldCall(call, leg, ring, talk)
        self._register(held, *held._chans())
        self._play(held, 0, then=lambda: self._now_held(held))
        return held

    def _pick(self, queue: str, name: str | None, *, besides: Agent | None = None) -> Agent:
        pbx = self._server.pbx
        members = pbx.agents_of(queue)
        if name is not None:
            found = next((a for a in members if a.name == name), None)
            if found is None:
                raise ValueError(f"{name!r} is not a member of {queue!r}")
            return found
        rotated = pbx.next_agents(queue, len(members))
        busy = {h.leg.agent for h in self.calls() if h.state != "ended"}
        for avoid in (busy, set()):
            for member in rotated:
                paused = self._server.member_paused(queue, member)
                if member != besides and member not in avoid and not paused:
                    return member
        others = [a for a in rotated if a != besides]
        return (others or rotated)[0]

    # -- actions -----------------------------------------------------------------------------
    def can_transfer(self, held: HeldCall, channel: str) -> bool:
        """Only the member's ``;1`` of a call in its two-party bridge can transfer here."""
        chan = self.channel(held, channel)
        return (
            chan is held.leg.one
            and held.state == "held"
            and not held._finished
            and held.call.bridge is not None
        )

    def blind_transfer(self, held: HeldCall, exten: str, context: str) -> None:
        """The member's ``;1`` blind-transfers the caller to ``context,exten`` (checked by
        :meth:`can_transfer` first)."""
        call, leg = held.call, held.leg
        one, c2 = leg.one, call.c2
        n = self._advance(held)
        held.state = "moving"
        held._held.clear()
        call.emit("Unhold", "call", one.block())
        call.varset(one, "BLINDTRANSFER", c2.name)
        call.varset(c2, "BLINDTRANSFER", one.name)
        at = len(call.out)
        call.blind_transfer(leg, context, exten)
        call.out[at][1]["IsExternal"] = "Yes"  # an AMI transfer, as recorded
        self._forget(one, leg.two)
        pbx = self._server.pbx
        if context == QUEUE_CONTEXT and exten in pbx.queues and pbx.agents_of(exten):
            target = self._pick(exten, None, besides=leg.agent)
            call.queue = exten
            held.queues.append(exten)
            call.newexten(c2, "Set", f"TARGET_QUEUE={exten}", context=context, exten=exten, prio=1)
            call.varset(c2, "TARGET_QUEUE", exten)
            call.newexten(c2, "Goto", "s,1", prio=2)
            call.newexten(c2, "NoOp", f"Incoming call {c2.name} from {call.who()}", exten="s")
            call.newexten(c2, "Set", f"TARGET_QUEUE={exten}", prio=3)
            call.varset(c2, "TARGET_QUEUE", exten)
            call.join(context=context, exten="s", prio=8)
            call.wait(call.tm.wait)
            (second,) = call.ring([target])
            call.pick_up(second, c2, held.ring)
            call.connect(second)
            call.agent_talks(second, 0.5, limit=HELD_WAIT)
            held.leg = second
            self._register(held, second.one, second.two)
            self._play(held, n, then=lambda: self._now_held(held))
            return
        self._unallocated(call)
        self._end(held, n)

    def hangup(self, held: HeldCall, channel: str, cause: int = 0) -> None:
        """AMI Hangup of one of the call's channels; ``cause`` > 0 goes on its Hangup."""
        call, leg = held.call, held.leg
        chan = self.channel(held, channel)
        n = self._advance(held)
        if chan in (leg.one, leg.two):
            call.agent_hangs_up(leg)
        else:
            # the customer leg's Wait() ends now, not after its whole patience
            call.patience = max(0, int(call.t - call.c1_waiting))
            call.caller_hangs_up(leg)
        if chan is not None and 0 < cause <= 127:
            for _t, event in call.out[n:]:
                if event["Event"] == "Hangup" and event.get("Uniqueid") == chan.uniqueid:
                    event["Cause"], event["Cause-txt"] = str(cause), cause_text(cause)
        self._end(held, n)

    # -- building and playing ----------------------------------------------------------------
    def _call_now(self, call: _QueueCall) -> float:
        """Where "now" is on the call's time line (wall time times the server's speed)."""
        elapsed = time.time() - call.start
        speed = self._server.speed
        return elapsed * speed if speed > 0 else elapsed

    def _advance(self, held: HeldCall) -> int:
        """Move the call's cursor to now; the index its next events will start at."""
        call = held.call
        call.t = max(call.t, self._call_now(call))
        return len(call.out)

    def _unallocated(self, call: _QueueCall) -> None:
        """The transfer target does not exist: the caller pair hangs up with cause 1."""
        c1, c2 = call.c1, call.c2
        call.caller_cdrs(c1_app="Wait")
        call.hangup_handler()
        call.hangup_request(c1, 1)
        self._hangup(call, c2, 1)
        call.soft_hangup(c1, 1)
        self._hangup(call, c1, 1)
        call.device(f"Local/{call.exten}@incoming", "NOT_INUSE")

    @staticmethod
    def _hangup(call: _QueueCall, ch: _Chan, cause: int) -> None:
        call.emit(
            "Hangup", "call", ch.block(), {"Cause": str(cause), "Cause-txt": cause_text(cause)}
        )

    def _end(self, held: HeldCall, n: int) -> None:
        held._finished = True
        held._held.clear()
        held.state = "moving"
        self._forget(*held._chans())
        self._play(held, n, then=lambda: self._now_ended(held))

    def _now_held(self, held: HeldCall) -> None:
        if not held._finished and held.state == "moving":
            held.state = "held"
            held._held.set()
            if held.talk is not None:
                speed = self._server.speed
                delay = held.talk / speed if speed > 0 else 0.0
                leg = held.leg
                asyncio.get_running_loop().call_later(delay, self._talked, held, leg)

    def _talked(self, held: HeldCall, leg: _Leg) -> None:
        """The caller's talk with ``leg``'s member is over: they hang up, unless the call
        moved (a transfer: the next member gets their own talk) or ended meanwhile."""
        if held.state == "held" and held.leg is leg and not held._finished:
            self.hangup(held, held.call.c2.name)

    def _now_ended(self, held: HeldCall) -> None:
        held.state = "ended"
        held._ended.set()

    def _play(self, held: HeldCall, n: int, *, then: Callable[[], None]) -> None:
        """Play ``held.call.out[n:]`` after the call's earlier batches, then ``then()``."""
        server = self._server
        batch = held.call.out[n:]
        task = asyncio.create_task(self._run(held, held._last, batch, then))
        held._last = task
        # one of the server's plays: stop() cancels it
        server._plays.add(task)
        task.add_done_callback(server._plays.discard)

    async def _run(
        self,
        held: HeldCall,
        previous: asyncio.Task[None] | None,
        batch: list[TimedEvent],
        then: Callable[[], None],
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if held._ended.is_set():
            return  # the server restarted: this call is gone
        now = self._call_now(held.call)
        await self._server.play([(t - now, event) for t, event in batch], self._server.speed)
        if not held._ended.is_set():
            then()
