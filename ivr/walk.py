"""The sans-IO menu walker: results in, actions out. No sockets, no store, no clock, no await.

Theory of operation
-------------------
A :class:`Walk` runs one caller through one :class:`~ivr.menus.Menu`. It never does anything
itself: it returns an *action* (play these sounds, collect digits, find a customer, route...)
and waits for the edge to execute it and hand back the matching *result*::

    action = walk.start()
    while not isinstance(action, Done):
        action = walk.send(await execute(action))

Each action class lists the results it accepts in ``expects``; anything else is a bug in the
edge and raises :class:`WalkError`, as does sending after the walk is done. What the caller
types is a different matter: the edge hands over whatever the peer sent, and the walker treats
non-digits, too many digits or nothing at all as invalid input, with the step's retries.

Internally the walker keeps one pending action and the continuation that handles its result;
each step type has a small starter, chosen by ``match`` on the step's class. Store actions
carry a :class:`StoreBudget`: past ``seconds`` the edge plays the holding prompt and keeps
waiting up to its own limit, then reports ``StoreFailed("timeout")``.

A walk makes at most ``max_moves`` moves (a move is entering a step or emitting an action), so a
menu that loops back, or a caller who keeps choosing the same option, cannot hold the channel
forever: past the bound the path gets ``too-many-steps`` and the walk is done, and the
dialplan goes on to ``Queue()``.

:attr:`Walk.findings` is a frozen snapshot of what was learned (who, how identified, language,
every choice and outcome, route, callback, survey scores), meant for the pop and the bus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypeAlias

from ivr.menus import (
    DTMF,
    CallbackStep,
    Figure,
    IdentifyStep,
    LeaveStep,
    Menu,
    MenuStep,
    Pin,
    PlayStep,
    Prompt,
    RateStep,
    RouteStep,
    SayStep,
    Step,
)

MAX_MOVES: Final = 200
VIP_TIER: Final = "vip"
IdentifiedBy: TypeAlias = Literal["caller_id", "account", "none"]

# Sounds the walker itself names when it says a figure; they live in Asterisk's per-language
# sound folders (sounds/<lang>/ivr/...), which CHANNEL(language) selects.
MINUS_SOUND: Final = "ivr/minus"
POINT_SOUND: Final = "ivr/point"
CURRENCY_SOUND: Final = "ivr/currency-{code}"  # lower-case ISO 4217, e.g. ivr/currency-cny
TEXT_SOUND: Final[Mapping[Figure, str]] = MappingProxyType(
    {
        "balance": "ivr/balance-{value}",
        "last_order": "ivr/order-{value}",
        "open_tickets": "ivr/tickets-{value}",
    }
)
_AMOUNT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9-]*")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


class WalkError(Exception):
    """The edge misused the walker (wrong result kind, send after done): a bug, not a caller."""


# --- what the edge tells the walker -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallerInfo:
    """From the AGI environment: ``agi_callerid`` (None when withheld or ``unknown``) and
    ``agi_language``, the channel's language."""

    caller_number: str | None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    """The part of a store card the IVR needs (same names as ``crm_sync.store.CustomerCard``)."""

    id: int
    name: str
    tier: str
    lifecycle: str
    language: str | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Played:
    """A prompt finished; ``digit`` is the key that interrupted it ('' if none)."""

    digit: str = ""


@dataclass(frozen=True, slots=True)
class Collected:
    """What the caller typed, as received; ``timed_out`` when no terminator came in time."""

    digits: str
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class CustomersFound:
    customers: tuple[CustomerInfo, ...]


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """The store did not answer in time (``timeout``) or failed (``error``)."""

    reason: Literal["timeout", "error"]


@dataclass(frozen=True, slots=True)
class PinChecked:
    ok: bool


@dataclass(frozen=True, slots=True)
class PinRefused:
    """Too many PIN attempts for this customer lately (across calls): nothing was checked."""


@dataclass(frozen=True, slots=True)
class FigureValue:
    """A figure from the store: ``amount`` is a decimal string ("-12.50") with an optional ISO
    currency, ``number`` an integer string, ``text`` a status code ("shipped"), ``none`` that
    there is nothing to tell (no orders yet); ``value`` is then ignored."""

    kind: Literal["amount", "number", "text", "none"]
    value: str = ""
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackCreated:
    id: str


@dataclass(frozen=True, slots=True)
class Ack:
    """The action was carried out; nothing to report."""


Result: TypeAlias = (
    Played
    | Collected
    | CustomersFound
    | StoreFailed
    | PinChecked
    | PinRefused
    | FigureValue
    | CallbackCreated
    | Ack
)


# --- what the walker asks the edge to do --------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreBudget:
    """Past ``seconds``, play ``holding_prompt`` (if any) while the store call goes on."""

    seconds: float
    holding_prompt: str | None


@dataclass(frozen=True, slots=True)
class Play:
    """STREAM FILE each prompt in turn; a key in ``interrupt`` stops playback."""

    expects: ClassVar[tuple[type, ...]] = (Played,)
    prompts: tuple[str, ...]
    interrupt: str = ""


@dataclass(frozen=True, slots=True)
class Collect:
    """Play ``prompt`` and read up to ``max_digits`` keys, waiting ``timeout_s`` for input.
    ``terminator`` ends the input and is not part of it; '' means every key is input (one-key
    choices, where '#' may be an option: GET DATA stops at '#' with an empty result, which the
    edge then reports as digits '#')."""

    expects: ClassVar[tuple[type, ...]] = (Collected,)
    prompt: str
    max_digits: int
    timeout_s: float
    terminator: str = "#"


@dataclass(frozen=True, slots=True)
class FindCustomer:
    """Look customers up by caller number (E.164 normalisation is the store's) or by account
    number."""

    expects: ClassVar[tuple[type, ...]] = (CustomersFound, StoreFailed)
    by: Literal["phone", "account"]
    value: str
    budget: StoreBudget


@dataclass(frozen=True, slots=True)
class VerifyPin:
    """Check a PIN; the edge may refuse (PinRefused) a customer locked out of guessing, and
    the caller then goes on unidentified, as after a wrong PIN."""

    expects: ClassVar[tuple[type, ...]] = (PinChecked, PinRefused, StoreFailed)
    customer_id: int
    pin: str
    budget: StoreBudget


@dataclass(frozen=True, slots=True)
class FetchFigure:
    expects: ClassVar[tuple[type, ...]] = (FigureValue, StoreFailed)
    figure: Figure
    customer_id: int
    budget: StoreBudget


@dataclass(frozen=True, slots=True)
class SaySound:
    """STREAM FILE name."""

    name: str


@dataclass(frozen=True, slots=True)
class SayNumber:
    """SAY NUMBER value (never negative: a minus is its own sound before it)."""

    value: int


@dataclass(frozen=True, slots=True)
class SayDigits:
    """SAY DIGITS value (one digit after the other)."""

    value: str


SayPart: TypeAlias = SaySound | SayNumber | SayDigits


@dataclass(frozen=True, slots=True)
class Say:
    """Say a figure: execute the parts in order, not interruptible."""

    expects: ClassVar[tuple[type, ...]] = (Played,)
    parts: tuple[SayPart, ...]


@dataclass(frozen=True, slots=True)
class SetLanguage:
    """Set CHANNEL(language): the identified customer speaks a language the menu has."""

    expects: ClassVar[tuple[type, ...]] = (Ack,)
    language: str


@dataclass(frozen=True, slots=True)
class Route:
    """Set the queue, priority (QUEUE_PRIO), preferred owner and win-back flag for the
    dialplan's Queue(); after the Ack the walk is done."""

    expects: ClassVar[tuple[type, ...]] = (Ack,)
    queue: str
    priority: int
    owner: str | None
    winback: bool


@dataclass(frozen=True, slots=True)
class RequestCallback:
    """Create a follow-up owned by ``queue``: call ``number`` back (``customer_id`` if known)."""

    expects: ClassVar[tuple[type, ...]] = (CallbackCreated, StoreFailed)
    queue: str
    number: str
    customer_id: int | None
    budget: StoreBudget


@dataclass(frozen=True, slots=True)
class Hangup:
    expects: ClassVar[tuple[type, ...]] = (Ack,)


@dataclass(frozen=True, slots=True)
class Findings:
    """What the IVR learned about the call, for the pop. ``path`` holds (step id, choice or
    outcome) in order; ``ended_at_step`` is the step the walk ended at (or is at, mid-walk)."""

    menu: str
    customer_id: int | None
    customer_name: str | None
    tier: str | None
    lifecycle: str | None
    identified_by: IdentifiedBy
    language: str
    path: tuple[tuple[str, str], ...]
    callback: str | None
    route: Route | None
    scores: Mapping[str, int]
    hung_up: bool
    ended_at_step: str
    told: Mapping[str, tuple[Figure, FigureValue]] = field(default_factory=dict)  # by step id
    terms: Mapping[str, Any] = field(default_factory=dict)  # Menu.terms(), for the pop

    def to_json(self) -> dict[str, Any]:
        """A dict of JSON types only (ready for ``json.dumps``)."""
        route = self.route
        return {
            "menu": self.menu,
            "customer_id": self.customer_id,
            "customer_name": self.customer_name,
            "tier": self.tier,
            "lifecycle": self.lifecycle,
            "identified_by": self.identified_by,
            "language": self.language,
            "path": [[step, outcome] for step, outcome in self.path],
            "callback": self.callback,
            "route": None
            if route is None
            else {
                "queue": route.queue,
                "priority": route.priority,
                "owner": route.owner,
                "winback": route.winback,
            },
            "scores": dict(self.scores),
            "hung_up": self.hung_up,
            "ended_at_step": self.ended_at_step,
            "told": {
                step: {"figure": f, "kind": v.kind, "value": v.value, "currency": v.currency}
                for step, (f, v) in self.told.items()
            },
            "terms": dict(self.terms),
        }


@dataclass(frozen=True, slots=True)
class Done:
    """The walk is over: the AGI script ends and the dialplan goes on."""

    findings: Findings


Pending: TypeAlias = (
    Play
    | Collect
    | FindCustomer
    | VerifyPin
    | FetchFigure
    | Say
    | SetLanguage
    | Route
    | RequestCallback
    | Hangup
)
Action: TypeAlias = Pending | Done
Then: TypeAlias = Callable[[Any], Action]  # gets a result already checked against `expects`


# --- the walker ---------------------------------------------------------------------------


class Walk:
    """One caller's way through one menu. Raises WalkError on misuse (see the module doc)."""

    def __init__(self, menu: Menu, caller: CallerInfo, *, max_moves: int = MAX_MOVES) -> None:
        self.menu = menu
        self.caller = caller
        self.max_moves = max_moves
        self._language = _match_language(caller.language, menu.languages) or menu.default_language
        self._step = menu.start
        self._pending: Pending | None = None
        self._then: Then | None = None
        self._started = False
        self._done = False
        self._hung_up = False
        self._moves = 0
        self._failures = 0
        self._customer: CustomerInfo | None = None
        self._identified_by: IdentifiedBy = "none"
        self._path: list[tuple[str, str]] = []
        self._callback: str | None = None
        self._route: Route | None = None
        self._scores: dict[str, int] = {}
        self._told: dict[str, tuple[Figure, FigureValue]] = {}

    @property
    def done(self) -> bool:
        return self._done

    @property
    def findings(self) -> Findings:
        customer = self._customer
        return Findings(
            menu=self.menu.name,
            customer_id=customer.id if customer else None,
            customer_name=customer.name if customer else None,
            tier=customer.tier if customer else None,
            lifecycle=customer.lifecycle if customer else None,
            identified_by=self._identified_by,
            language=self._language,
            path=tuple(self._path),
            callback=self._callback,
            route=self._route,
            scores=MappingProxyType(dict(self._scores)),
            hung_up=self._hung_up,
            ended_at_step=self._step,
            told=MappingProxyType(dict(self._told)),
            terms=self.menu.terms(),
        )

    def start(self) -> Action:
        """The first action. Raises WalkError when called twice."""
        if self._started:
            raise WalkError("start() called twice")
        self._started = True
        return self._enter(self.menu.start)

    def send(self, result: Result) -> Action:
        """Hand over the pending action's result; get the next action. Raises WalkError when
        nothing is pending (not started, or done) or ``result`` is not what the action expects."""
        pending, then = self._pending, self._then
        if self._done:
            raise WalkError(f"send({result!r}) after the walk is done")
        if pending is None or then is None:
            raise WalkError(f"send({result!r}) before start()")
        if not isinstance(result, pending.expects):
            expected = " or ".join(kind.__name__ for kind in pending.expects)
            raise WalkError(f"{type(pending).__name__} expects {expected}, not {result!r}")
        self._pending = self._then = None
        return then(result)

    def hung_up(self) -> Findings:
        """The caller left: the walk is done; what was learned so far, marked hung_up. Raises
        WalkError after the walk is done."""
        if self._done:
            raise WalkError("hung_up() after the walk is done")
        self._mark("hung-up")
        self._hung_up = True
        self._done = True
        self._pending = self._then = None
        return self.findings

    # moving on ------------------------------------------------------------------------------

    def _emit(self, action: Pending, then: Then) -> Action:
        if not self._move():
            return self._too_many()
        self._pending, self._then = action, then
        return action

    def _enter(self, step_id: str) -> Action:
        if not self._move():
            return self._too_many()
        self._step = step_id
        self._failures = 0
        return self._begin(self.menu.steps[step_id])

    def _move(self) -> bool:
        self._moves += 1
        return self._moves <= self.max_moves

    def _too_many(self) -> Action:
        self._mark("too-many-steps")
        return self._finish()

    def _finish(self) -> Action:
        self._done = True
        return Done(self.findings)

    def _mark(self, outcome: str) -> None:
        self._path.append((self._step, outcome))

    def _advance(self, outcome: str, step_id: str) -> Action:
        self._mark(outcome)
        return self._enter(step_id)

    def _begin(self, step: Step) -> Action:
        match step:
            case PlayStep():
                return self._play_step(step)
            case IdentifyStep():
                return self._identify(step)
            case MenuStep():
                return self._ask_choice(step)
            case SayStep():
                return self._say(step)
            case RouteStep():
                return self._route_to(step)
            case CallbackStep():
                return self._request_callback(step)
            case RateStep():
                return self._ask_rating(step)
            case LeaveStep():
                return self._leave(step)

    # shared pieces --------------------------------------------------------------------------

    def _sound(self, prompt: Prompt) -> str:
        return prompt.resolve(self._language)

    def _budget(self) -> StoreBudget:
        holding = self.menu.holding_prompt
        return StoreBudget(self.menu.store_budget, self._sound(holding) if holding else None)

    def _play(self, prompt: Prompt, then: Callable[[], Action]) -> Action:
        return self._emit(Play((self._sound(prompt),)), lambda _: then())

    def _retry(
        self,
        retries: int,
        outcome: str,
        reprompt: Prompt | None,
        again: Callable[[], Action],
        give_up: str,
    ) -> Action:
        """Count a failed try; ask again (after ``reprompt``) or, when retries are spent, go
        to ``give_up``."""
        self._mark(outcome)
        self._failures += 1
        if self._failures > retries:
            return self._enter(give_up)
        if reprompt is None:
            return again()
        return self._play(reprompt, again)

    def _store_failed(self, failed: StoreFailed, step_id: str) -> Action:
        return self._advance(f"store-{failed.reason}", step_id)

    def _caller_number(self) -> str | None:
        number = self.caller.caller_number
        return number if number and any(c.isdigit() for c in number) else None

    # play -----------------------------------------------------------------------------------

    def _play_step(self, step: PlayStep) -> Action:
        play = Play(tuple(self._sound(p) for p in step.prompts), DTMF if step.skippable else "")
        return self._emit(
            play, lambda got: self._advance("skipped" if got.digit else "played", step.next)
        )

    # identify -------------------------------------------------------------------------------

    def _identify(self, step: IdentifyStep) -> Action:
        number = self._caller_number()
        if number is None:
            return self._ask_account(step)
        find = FindCustomer("phone", number, self._budget())
        return self._emit(find, lambda got: self._by_caller_id(step, got))

    def _by_caller_id(self, step: IdentifyStep, got: CustomersFound | StoreFailed) -> Action:
        if isinstance(got, StoreFailed):
            return self._store_failed(got, step.not_found)
        if len(got.customers) == 1:
            return self._identified(got.customers[0], "caller_id", step.found)
        self._mark("caller-id-several" if got.customers else "caller-id-unknown")
        return self._ask_account(step)

    def _ask_account(self, step: IdentifyStep) -> Action:
        ask = Collect(self._sound(step.prompt), step.max_digits, step.timeout)
        return self._emit(ask, lambda got: self._account_entered(step, got))

    def _account_entered(self, step: IdentifyStep, got: Collected) -> Action:
        if step.skip_digit is not None and got.digits == step.skip_digit:
            return self._advance("skip", step.not_found)
        miss = _miss(got, step.max_digits)
        if miss is not None:
            reprompt = None if miss == "timeout" else step.invalid_prompt
            return self._retry(
                step.retries, miss, reprompt, lambda: self._ask_account(step), step.not_found
            )
        find = FindCustomer("account", got.digits, self._budget())
        return self._emit(find, lambda found: self._account_found(step, found))

    def _account_found(self, step: IdentifyStep, got: CustomersFound | StoreFailed) -> Action:
        if isinstance(got, StoreFailed):
            return self._store_failed(got, step.not_found)
        if len(got.customers) != 1:
            return self._retry(
                step.retries,
                "account-unknown",
                step.invalid_prompt,
                lambda: self._ask_account(step),
                step.not_found,
            )
        if step.pin is None:
            return self._identified(got.customers[0], "account", step.found)
        self._failures = 0  # the PIN gets its own tries
        return self._ask_pin(_PinEntry(step, step.pin, got.customers[0]))

    def _ask_pin(self, entry: _PinEntry) -> Action:
        ask = Collect(self._sound(entry.pin.prompt), entry.pin.digits, entry.step.timeout)
        return self._emit(ask, lambda got: self._pin_entered(entry, got))

    def _pin_entered(self, entry: _PinEntry, got: Collected) -> Action:
        miss = _miss(got, entry.pin.digits)
        if miss is None and len(got.digits) != entry.pin.digits:
            miss = "invalid"
        if miss is not None:
            return self._pin_retry(entry, f"pin-{miss}")
        verify = VerifyPin(entry.customer.id, got.digits, self._budget())
        return self._emit(verify, lambda checked: self._pin_checked(entry, checked))

    def _pin_checked(self, entry: _PinEntry, got: PinChecked | PinRefused | StoreFailed) -> Action:
        if isinstance(got, StoreFailed):
            return self._store_failed(got, entry.step.not_found)
        if isinstance(got, PinRefused):
            return self._advance("pin-locked", entry.step.not_found)
        if got.ok:
            return self._identified(entry.customer, "account", entry.step.found)
        return self._pin_retry(entry, "pin-wrong")

    def _pin_retry(self, entry: _PinEntry, outcome: str) -> Action:
        step = entry.step
        reprompt = None if outcome == "pin-timeout" else step.invalid_prompt
        return self._retry(
            step.retries, outcome, reprompt, lambda: self._ask_pin(entry), step.not_found
        )

    def _identified(self, customer: CustomerInfo, how: IdentifiedBy, step_id: str) -> Action:
        self._customer, self._identified_by = customer, how
        self._mark(how)
        language = _match_language(customer.language, self.menu.languages)
        if language is None or language == self._language:
            return self._enter(step_id)
        return self._emit(SetLanguage(language), lambda _: self._switch(language, step_id))

    def _switch(self, language: str, step_id: str) -> Action:
        self._language = language
        return self._enter(step_id)

    # menu -----------------------------------------------------------------------------------

    def _ask_choice(self, step: MenuStep) -> Action:
        ask = Collect(self._sound(step.prompt), 1, step.timeout, terminator="")
        return self._emit(ask, lambda got: self._chosen(step, got))

    def _chosen(self, step: MenuStep, got: Collected) -> Action:
        target = step.options.get(got.digits)
        if target is not None:
            return self._advance(got.digits, target)
        timed_out = got.timed_out and not got.digits
        outcome, reprompt = (
            ("timeout", step.timeout_prompt) if timed_out else ("invalid", step.invalid_prompt)
        )
        return self._retry(
            step.retries, outcome, reprompt, lambda: self._ask_choice(step), step.on_fail
        )

    # say ------------------------------------------------------------------------------------

    def _say(self, step: SayStep) -> Action:
        if self._customer is None:
            return self._advance("unidentified", step.unidentified)
        fetch = FetchFigure(step.figure, self._customer.id, self._budget())
        return self._emit(fetch, lambda got: self._figure(step, got))

    def _figure(self, step: SayStep, got: FigureValue | StoreFailed) -> Action:
        if isinstance(got, StoreFailed):
            return self._store_failed(got, step.on_error)
        say = Say(speech(step.figure, self._sound(step.prompt), got))
        self._told[self._step] = (step.figure, got)
        return self._emit(say, lambda _: self._advance("said", step.next))

    # route, callback, leave -----------------------------------------------------------------

    def _route_to(self, step: RouteStep) -> Action:
        routing, customer = self.menu.routing, self._customer
        route = Route(step.queue, step.priority, None, False)
        if customer is not None:
            vip = customer.tier == VIP_TIER
            route = Route(
                queue=step.queue,
                priority=step.priority + (routing.vip_priority if vip else 0),
                owner=customer.owner if routing.owner_first else None,
                winback=customer.lifecycle in routing.winback_lifecycles,
            )
        return self._emit(route, lambda _: self._routed(route))

    def _routed(self, route: Route) -> Action:
        self._route = route
        self._mark("routed")
        return self._finish()

    def _request_callback(self, step: CallbackStep) -> Action:
        number = self._caller_number()
        if number is None:
            return self._advance("no-number", step.on_error)
        customer_id = self._customer.id if self._customer else None
        request = RequestCallback(step.queue, number, customer_id, self._budget())
        return self._emit(request, lambda got: self._callback_made(step, got))

    def _callback_made(self, step: CallbackStep, got: CallbackCreated | StoreFailed) -> Action:
        if isinstance(got, StoreFailed):
            return self._store_failed(got, step.on_error)
        self._callback = got.id
        self._mark("created")
        return self._play(step.prompt, lambda: self._enter(step.next))

    def _leave(self, step: LeaveStep) -> Action:
        if step.prompt is None:
            return self._hang_up()
        return self._play(step.prompt, self._hang_up)

    def _hang_up(self) -> Action:
        return self._emit(Hangup(), lambda _: self._hung_up_by_us())

    def _hung_up_by_us(self) -> Action:
        self._mark("hangup")
        return self._finish()

    # rate -----------------------------------------------------------------------------------

    def _ask_rating(self, step: RateStep) -> Action:
        ask = Collect(self._sound(step.prompt), 1, step.timeout, terminator="")
        return self._emit(ask, lambda got: self._rated(step, got))

    def _rated(self, step: RateStep, got: Collected) -> Action:
        score = _single_digit(got.digits)
        if score is not None and step.min <= score <= step.max:
            self._scores[step.name] = score
            return self._advance(step.labels.get(score, str(score)), step.next)
        timed_out = got.timed_out and not got.digits
        outcome, reprompt = ("timeout", None) if timed_out else ("invalid", step.invalid_prompt)
        return self._retry(
            step.retries, outcome, reprompt, lambda: self._ask_rating(step), step.on_fail
        )


@dataclass(frozen=True, slots=True)
class _PinEntry:
    """An identify step waiting for the PIN of the customer its account number found."""

    step: IdentifyStep
    pin: Pin
    customer: CustomerInfo


# --- pure helpers -------------------------------------------------------------------------


def _miss(got: Collected, max_digits: int) -> Literal["timeout", "invalid"] | None:
    """Why an entry of digits is unusable, or None when it is 1..max_digits ASCII digits."""
    if not got.digits:
        return "timeout" if got.timed_out else "invalid"
    ok = len(got.digits) <= max_digits and got.digits.isascii() and got.digits.isdigit()
    return None if ok else "invalid"


def _single_digit(digits: str) -> int | None:
    return int(digits) if len(digits) == 1 and digits.isascii() and digits.isdigit() else None


def _match_language(wanted: str | None, languages: tuple[str, ...]) -> str | None:
    """The menu language for a channel's or customer's language: exact, else by primary
    subtag (a zh-CN customer gets a zh menu), else None."""
    if not wanted:
        return None
    if wanted in languages:
        return wanted
    primary = re.split(r"[-_]", wanted, maxsplit=1)[0].lower()
    return next((lang for lang in languages if lang.lower() == primary), None)


def speech(figure: Figure, prompt: str, value: FigureValue) -> tuple[SayPart, ...]:
    """How a figure is said: the lead-in ``prompt``, then the value. An amount is its integer
    part as a number, then "point" and the significant decimals as digits, then the currency
    ("minus" first if negative): "one hundred twenty-three point four five yuan" reads right in
    English and Chinese alike. Text is a status sound (``ivr/order-shipped``); ``none`` is the
    figure's own "nothing" sound (``ivr/order-none``) without the lead-in.
    Raises WalkError when the value is not what its kind promises (a bug in the edge)."""
    text_sound = TEXT_SOUND[figure]
    match value.kind:
        case "none":
            return (SaySound(text_sound.format(value="none")),)
        case "text":
            token = value.value.strip().lower().replace(" ", "-").replace("_", "-")
            if not _TOKEN.fullmatch(token):
                raise WalkError(f"{figure} text {value.value!r} is not a status code")
            return (SaySound(prompt), SaySound(text_sound.format(value=token)))
        case "number":
            if not _INTEGER.fullmatch(value.value):
                raise WalkError(f"{figure} number {value.value!r} is not a whole number")
            number = int(value.value)
            return (SaySound(prompt), *_signed(number < 0, abs(number), ()))
        case "amount":
            return (SaySound(prompt), *_amount(figure, value))
    raise WalkError(f"{figure}: unknown figure kind {value.kind!r}")


def _amount(figure: Figure, value: FigureValue) -> tuple[SayPart, ...]:
    if not _AMOUNT.fullmatch(value.value):
        raise WalkError(f"{figure} amount {value.value!r} is not a decimal like -12.50")
    if value.currency is not None and not _CURRENCY.fullmatch(value.currency):
        raise WalkError(f"{figure} currency {value.currency!r} is not an ISO 4217 code")
    whole, _, decimals = value.value.lstrip("-").partition(".")
    decimals = decimals.rstrip("0")
    tail: tuple[SayPart, ...] = (SaySound(POINT_SOUND), SayDigits(decimals)) if decimals else ()
    if value.currency is not None:
        tail = (*tail, SaySound(CURRENCY_SOUND.format(code=value.currency.lower())))
    negative = value.value.startswith("-") and (int(whole) > 0 or bool(decimals))
    return _signed(negative, int(whole), tail)


def _signed(negative: bool, whole: int, tail: tuple[SayPart, ...]) -> tuple[SayPart, ...]:
    minus: tuple[SayPart, ...] = (SaySound(MINUS_SOUND),) if negative else ()
    return (*minus, SayNumber(whole), *tail)
