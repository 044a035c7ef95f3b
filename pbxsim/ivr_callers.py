"""The simulator's res_agi: simulated callers going through the product's IVR over FastAGI.

The simulator's scenarios emit the AMI side of a call entering ``AGI()`` (a ``Newexten``
with ``Application: AGI`` on the Local ``;2`` channel) and of an agent hanging up on a caller
(``AgentComplete`` with ``Reason: agent``, after which the dialplan runs the survey). An
:class:`IvrCallers` watches those events and, for each, connects a real FastAGI client
(:func:`ivr.client.run_agi`) to the IVR, with the channel's own ids and caller number, so
the IVR reports its findings under the call id the AMI side uses.

The callers listen to the prompts and answer what they are asked (a customer number, the
PIN, a menu choice, a rating), at random but reproducibly for a seed and a call; a few hang
up half-way. Audio takes no time here, so a session lasts milliseconds and its findings
reach the pop well before the queue rings an agent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence

from ivr.client import TIMEOUT, AgiCall, CallerScript, run_agi

log = logging.getLogger(__name__)
UNKNOWN = "<unknown>"
DEMO_PIN = "1234"  # the PIN seeded for demo customers


class IvrCallers:
    """Pass to :class:`~pbxsim.AmiServer` as an observer of the events it emits."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        seed: int,
        accounts: Sequence[int] = (),
        menu: str = "main",
        survey: str | None = "survey",
    ) -> None:
        """``accounts``: customer numbers a caller who is asked for one may type."""
        self.address = address
        self.seed = seed
        self.accounts = tuple(accounts)
        self.menu = menu
        self.survey = survey
        self.sessions = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: Mapping[str, str]) -> None:
        kind = event.get("Event")
        if kind == "Newexten" and event.get("Application") == "AGI":
            self._start(event, self.menu)
        elif (
            kind == "AgentComplete"
            and event.get("Reason") == "agent"
            and event.get("Channel")  # some AgentComplete carry no channel: no survey then
            and self.survey
        ):
            self._start(event, self.survey)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, event: Mapping[str, str], script: str) -> None:
        number = event.get("CallerIDNum", "")
        call = AgiCall(
            channel=event.get("Channel", ""),
            uniqueid=event.get("Uniqueid", ""),
            linkedid=event.get("Linkedid", ""),
            callerid_num=None if number in ("", UNKNOWN) else number,
            language=event.get("Language", "en") or "en",
            context=event.get("Context", "incoming"),
            extension=event.get("Exten", "s"),
            script=script,
        )
        rng = random.Random(f"{self.seed}/{call.linkedid}/{script}")
        caller = _Caller(rng, self.accounts)
        hang_up = rng.randrange(1, 8) if rng.random() < 0.05 else None
        script_ = CallerScript(hangup_after=hang_up, listens=caller.answer)
        task = asyncio.create_task(self._run(call, script_))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, call: AgiCall, caller: CallerScript) -> None:
        self.sessions += 1
        transcript = await run_agi(*self.address, call, caller)
        if transcript.agi_status == "FAILURE":
            log.warning("IVR at %s:%s did not answer %s", *self.address, call.channel)


class _Caller:
    """One caller's reactions, by the prompt's name (the part after the language folder)."""

    def __init__(self, rng: random.Random, accounts: Sequence[int]) -> None:
        self.rng = rng
        self.accounts = accounts
        self.choices = 0

    def answer(self, prompt: str) -> str | None:
        rng = self.rng
        match prompt.rsplit("/", 1)[-1]:
            case "welcome":
                return TIMEOUT
            case "enter-customer-number":
                if self.accounts and rng.random() < 0.7:
                    return f"{rng.choice(self.accounts)}#"
                return "0"  # "I don't have it: put me through"
            case "enter-pin":
                return f"{DEMO_PIN}#" if rng.random() < 0.9 else "9999#"
            case "main-menu":
                self.choices += 1
                if self.choices > 1:
                    return rng.choice("03")
                return rng.choices("12390", weights=(3, 3, 3, 1, 2))[0]
            case "rate-attitude":
                return rng.choices("12345", weights=(1, 1, 2, 4, 5))[0]
            case "rate-solved":
                return rng.choice("112")
        return None
