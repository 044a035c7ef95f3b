"""IVR menus as data: one TOML file per menu (config/ivr/<name>.toml), loaded and checked here.

Everything a walk needs is settled at load time, so :mod:`ivr.walk` never meets a bad menu:
every key is typed and range-checked, every step a key names exists, defaults (``on_fail``,
``on_error``, ``unidentified``) are resolved to step ids, and keys nobody reads are rejected,
so a typo fails at start-up instead of silently changing what callers hear. Cycles are allowed:
menus loop back on purpose, and the walker bounds how long a walk may run.

Every step may carry a ``label``: what the agent reads on the pop card for it ("Account
number", not ``acct``); without one, the step id stands in, made readable. :meth:`Menu.terms`
hands the labels, what each step's outcomes mean and the survey scales to the pop.

A prompt is an Asterisk sound name without extension (``ivr/main-menu``) or a table of them by
language (``{ en = "ivr/en/main-menu", zh = "ivr/zh/main-menu" }``) that must cover the menu's
default language, the first of ``languages``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, TypeGuard, get_args

from crm_sync.models import LIFECYCLES

Figure: TypeAlias = Literal["balance", "last_order", "open_tickets"]
FIGURES: Final = frozenset(get_args(Figure))
DTMF: Final = "0123456789*#"
MAX_TIMEOUT: Final = 60.0
MAX_RETRIES: Final = 10
MAX_PRIORITY: Final = 1000

# Sound names go into AGI command lines: no spaces, and no extension (Asterisk picks the format).
_SOUND = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_/-]*")
_NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_LABEL: Final = 80
MAX_MESSAGE: Final = 300  # characters of a key or a problem an error message quotes


class MenuError(ValueError):
    """A menu file is unreadable or invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """A sound, possibly one per language; ``default`` is the menu's default language's."""

    default: str
    by_language: tuple[tuple[str, str], ...] = ()

    def resolve(self, language: str) -> str:
        """The sound for ``language``, or the default one when the menu has none for it."""
        return dict(self.by_language).get(language, self.default)


@dataclass(frozen=True, slots=True)
class Routing:
    """How the identified customer adjusts a route step: VIPs jump the queue, an account owner
    gets their own customers first, lapsed or lost customers are flagged for a win-back offer."""

    vip_priority: int = 0
    owner_first: bool = False
    winback_lifecycles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PlayStep:
    prompts: tuple[Prompt, ...]
    next: str
    skippable: bool = False


@dataclass(frozen=True, slots=True)
class Pin:
    prompt: Prompt
    digits: int


@dataclass(frozen=True, slots=True)
class IdentifyStep:
    """Caller ID first; otherwise ask for the customer number (and a PIN, when ``pin`` is set:
    an account number is easy to learn, the phone the customer registered is not)."""

    prompt: Prompt
    max_digits: int
    timeout: float
    retries: int
    invalid_prompt: Prompt
    found: str
    not_found: str
    pin: Pin | None = None
    skip_digit: str | None = None


@dataclass(frozen=True, slots=True)
class MenuStep:
    prompt: Prompt
    options: Mapping[str, str]
    timeout: float
    retries: int
    invalid_prompt: Prompt
    on_fail: str
    timeout_prompt: Prompt | None = None


@dataclass(frozen=True, slots=True)
class SayStep:
    figure: Figure
    prompt: Prompt
    next: str
    unidentified: str
    on_error: str


@dataclass(frozen=True, slots=True)
class RouteStep:
    queue: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class CallbackStep:
    queue: str
    prompt: Prompt
    next: str
    on_error: str


@dataclass(frozen=True, slots=True)
class RateStep:
    prompt: Prompt
    name: str
    min: int
    max: int
    timeout: float
    retries: int
    invalid_prompt: Prompt
    next: str
    on_fail: str
    labels: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class LeaveStep:
    prompt: Prompt | None = None


Step: TypeAlias = (
    PlayStep | IdentifyStep | MenuStep | SayStep | RouteStep | CallbackStep | RateStep | LeaveStep
)


@dataclass(frozen=True, slots=True)
class Menu:
    name: str
    start: str
    languages: tuple[str, ...]
    fallback: str
    steps: Mapping[str, Step]
    store_budget: float = 1.0
    holding_prompt: Prompt | None = None
    routing: Routing = Routing()
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def default_language(self) -> str:
        return self.languages[0]

    def label(self, step_id: str) -> str:
        """What the agent reads for a step: its ``label``, else its id made readable."""
        return self.labels.get(step_id) or step_id.replace("_", " ").replace("-", " ").capitalize()

    def terms(self) -> dict[str, Any]:
        """The menu as the pop needs it to put findings in words (JSON types only): per step its
        label and type, plus what its outcomes refer to (a menu's options, the figure a say step
        tells, whether an identify step asks a PIN, the score a rate step sets); per score its
        question's label and scale. Step ids and outcomes alone mean nothing to an agent."""
        steps: dict[str, dict[str, Any]] = {}
        scores: dict[str, dict[str, Any]] = {}
        for step_id, step in self.steps.items():
            entry: dict[str, Any] = {"label": self.label(step_id), "type": _KINDS[type(step)]}
            match step:
                case MenuStep():
                    entry["options"] = dict(step.options)
                case SayStep():
                    entry["figure"] = step.figure
                case IdentifyStep():
                    entry["pin"] = step.pin is not None
                case RateStep():
                    entry["score"] = step.name
                    scores[step.name] = {
                        "label": entry["label"],
                        "min": step.min,
                        "max": step.max,
                        "labels": {str(score): text for score, text in step.labels.items()},
                    }
            steps[step_id] = entry
        return {"steps": steps, "scores": scores}


def load_menus(folder: str | Path) -> dict[str, Menu]:
    """Every ``*.toml`` menu in ``folder`` by name. Raises MenuError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MenuError(f"{folder}: not a folder of IVR menus")
    menus = (load_menu(path) for path in sorted(folder.glob("*.toml")))
    return {menu.name: menu for menu in menus}


def load_menu(path: str | Path) -> Menu:
    """Read and check one menu file. Raises MenuError naming the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MenuError(f"{path}: cannot read menu: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per level of nested arrays/tables
        raise MenuError(f"{path}: cannot read menu: values nested too deeply") from exc
    return _menu(path, raw)


@dataclass
class _Scope:
    """What keys are checked against: the file (for messages), languages and step ids."""

    file: Path
    languages: tuple[str, ...] = ()
    step_ids: frozenset[str] = frozenset()


class _Table:
    """One TOML table being read. Keys taken are ticked off, so :meth:`finish` can reject the
    rest as unknown; every error names the file and the dotted key."""

    def __init__(self, scope: _Scope, where: str, body: Mapping[str, Any]) -> None:
        self.scope = scope
        self.where = where
        self._body = body
        self._taken: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._body

    def __iter__(self) -> Iterator[str]:
        return iter(self._body)

    def fail(self, key: str, problem: str) -> MenuError:
        """The error for ``key``; a huge value quoted in ``problem`` is cut (a log line each)."""
        dotted = f"{self.where}.{key}" if self.where else key
        return MenuError(f"{self.scope.file}: key {_cut(repr(dotted))}: {_cut(problem)}")

    def finish(self) -> None:
        unknown = sorted(set(self._body) - self._taken)
        if unknown:
            known = ", ".join(sorted(self._taken))
            raise self.fail(unknown[0], f"unknown key (known here: {known})")

    def ticked(self, key: str) -> None:
        """Accept ``key`` here: another reader takes it."""
        self._taken.add(key)

    def _value(self, key: str, default: object) -> object:
        self._taken.add(key)
        if key in self._body:
            return self._body[key]
        if default is None:
            raise self.fail(key, "missing required key")
        return default

    def text(self, key: str, default: str | None = None) -> str:
        value = self._value(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, not {value!r}")
        return value

    def name(self, key: str) -> str:
        value = self.text(key)
        if not _NAME.fullmatch(value):
            raise self.fail(key, f"{value!r} may hold only letters, digits, '_' and '-'")
        return value

    def integer(self, key: str, lo: int, hi: int, default: int | None = None) -> int:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, not {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"must be between {lo} and {hi}, not {value}")
        return value

    def seconds(self, key: str, default: float | None = None) -> float:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number of seconds, not {value!r}")
        if not 0 < value <= MAX_TIMEOUT:
            raise self.fail(key, f"must be more than 0 and at most {MAX_TIMEOUT:g}, not {value}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self._value(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {value!r}")
        return value

    def strings(self, key: str, *, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self._value(key, None)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"must be a list of non-empty strings, not {value!r}")
        if len(set(value)) != len(value):
            raise self.fail(key, f"lists an entry twice: {value!r}")
        for item in value:
            if allowed is not None and item not in allowed:
                raise self.fail(key, f"{item!r} is not one of {', '.join(allowed)}")
        return tuple(value)

    def digit(self, key: str) -> str:
        value = self.text(key)
        if len(value) != 1 or value not in DTMF:
            raise self.fail(key, f"must be one DTMF key of {DTMF}, not {value!r}")
        return value

    def ref(self, key: str, default: str | None = None) -> str:
        """A step id that must exist in the menu (cycles are fine)."""
        value = self.text(key, default)
        if value not in self.scope.step_ids:
            known = ", ".join(sorted(self.scope.step_ids))
            raise self.fail(key, f"names no step {value!r} (steps: {known})")
        return value

    def table(self, key: str) -> _Table:
        value = self._value(key, None)
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, not {value!r}")
        return _Table(self.scope, f"{self.where}.{key}" if self.where else key, value)

    def prompt(self, key: str) -> Prompt:
        return self._prompt(key, self._value(key, None))

    def optional_prompt(self, key: str) -> Prompt | None:
        return self.prompt(key) if key in self else None

    def prompts(self, key: str) -> tuple[Prompt, ...]:
        value = self._value(key, None)
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"must be a non-empty list of prompts, not {value!r}")
        return tuple(self._prompt(key, item) for item in value)

    def _prompt(self, key: str, value: object) -> Prompt:
        if isinstance(value, str):
            return Prompt(self._sound(key, value))
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a sound name or a table by language, not {value!r}")
        languages = self.scope.languages
        for language in value:
            if language not in languages:
                raise self.fail(key, f"language {language!r} is not in languages {languages}")
        if languages[0] not in value:
            raise self.fail(key, f"has no sound for the default language {languages[0]!r}")
        pairs = tuple((language, self._sound(key, sound)) for language, sound in value.items())
        return Prompt(dict(pairs)[languages[0]], pairs)

    def _sound(self, key: str, value: object) -> str:
        if not isinstance(value, str) or not _SOUND.fullmatch(value):
            raise self.fail(key, f"{value!r} is not a sound name like 'ivr/main-menu'")
        return value


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else f"{text[:MAX_MESSAGE]}... ({len(text)} characters)"


def _menu(file: Path, raw: Mapping[str, Any]) -> Menu:
    top = _Table(_Scope(file), "", raw)
    name = top.text("name")
    if name != file.stem:
        raise top.fail("name", f"{name!r} does not match the file name {file.stem!r}")
    languages = top.strings("languages")
    if not languages:
        raise top.fail("languages", "must name at least one language (the first is the default)")
    for language in languages:
        if not _NAME.fullmatch(language):
            raise top.fail("languages", f"{language!r} is not a language code like 'en'")
    steps_table = top.table("steps")
    step_ids = frozenset(steps_table)
    if not step_ids:
        raise top.fail("steps", "must hold at least one step")
    top.scope.languages, top.scope.step_ids = languages, step_ids  # shared by every sub-table
    fallback = top.ref("fallback")
    menu = Menu(
        name=name,
        start=top.ref("start"),
        languages=languages,
        fallback=fallback,
        steps=MappingProxyType(_steps(steps_table, fallback)),
        store_budget=top.seconds("store_budget", 1.0),
        holding_prompt=top.optional_prompt("holding_prompt"),
        routing=_routing(top.table("routing")) if "routing" in top else Routing(),
        labels=MappingProxyType(_step_labels(steps_table)),
    )
    top.finish()
    return menu


def _steps(steps: _Table, fallback: str) -> dict[str, Step]:
    parsed: dict[str, Step] = {}
    scores: dict[str, str] = {}
    for step_id in steps:
        if not _NAME.fullmatch(step_id):
            raise steps.fail(step_id, "a step id may hold only letters, digits, '_' and '-'")
        table = steps.table(step_id)
        table.ticked("label")  # read by _step_labels
        kind = table.text("type")
        reader = _READERS.get(kind)
        if reader is None:
            raise table.fail("type", f"unknown step type {kind!r} (one of: {', '.join(_READERS)})")
        step = reader(table, fallback)
        table.finish()
        if isinstance(step, RateStep):
            if step.name in scores:
                raise table.fail("name", f"score {step.name!r} is also set by {scores[step.name]}")
            scores[step.name] = step_id
        parsed[step_id] = step
    return parsed


def _step_labels(steps: _Table) -> dict[str, str]:
    """Each step's optional ``label`` (any text: the card shows it as text, never markup)."""
    labels: dict[str, str] = {}
    for step_id in steps:
        table = steps.table(step_id)
        if "label" in table:
            label = table.text("label").strip()
            if len(label) > MAX_LABEL:
                raise table.fail("label", f"must be at most {MAX_LABEL} characters")
            labels[step_id] = label
    return labels


def _routing(table: _Table) -> Routing:
    routing = Routing(
        vip_priority=table.integer("vip_priority", 0, MAX_PRIORITY, 0),
        owner_first=table.flag("owner_first", False),
        winback_lifecycles=table.strings("winback_lifecycles", allowed=LIFECYCLES)
        if "winback_lifecycles" in table
        else (),
    )
    table.finish()
    return routing


def _play(table: _Table, fallback: str) -> PlayStep:
    return PlayStep(
        prompts=table.prompts("prompts"),
        next=table.ref("next"),
        skippable=table.flag("skippable", False),
    )


def _identify(table: _Table, fallback: str) -> IdentifyStep:
    pin = table.flag("pin", False)
    if not pin:
        for key in ("pin_prompt", "pin_digits"):
            if key in table:
                raise table.fail(key, "is set but pin is not true")
    return IdentifyStep(
        prompt=table.prompt("prompt"),
        max_digits=table.integer("max_digits", 1, 32),
        timeout=table.seconds("timeout"),
        retries=table.integer("retries", 0, MAX_RETRIES),
        invalid_prompt=table.prompt("invalid_prompt"),
        found=table.ref("found"),
        not_found=table.ref("not_found"),
        pin=Pin(table.prompt("pin_prompt"), table.integer("pin_digits", 1, 32)) if pin else None,
        skip_digit=table.digit("skip_digit") if "skip_digit" in table else None,
    )


def _menu_step(table: _Table, fallback: str) -> MenuStep:
    options = table.table("options")
    choices: dict[str, str] = {}
    for digit in options:
        if len(digit) != 1 or digit not in DTMF:
            raise options.fail(digit, f"an option must be one DTMF key of {DTMF}")
        choices[digit] = options.ref(digit)
    if not choices:
        raise table.fail("options", "must offer at least one option")
    return MenuStep(
        prompt=table.prompt("prompt"),
        options=MappingProxyType(choices),
        timeout=table.seconds("timeout"),
        retries=table.integer("retries", 0, MAX_RETRIES),
        invalid_prompt=table.prompt("invalid_prompt"),
        on_fail=table.ref("on_fail", fallback),
        timeout_prompt=table.optional_prompt("timeout_prompt"),
    )


def _say(table: _Table, fallback: str) -> SayStep:
    figure = table.text("figure")
    if not _is_figure(figure):
        raise table.fail("figure", f"{figure!r} is not one of {', '.join(sorted(FIGURES))}")
    after = table.ref("next")
    return SayStep(
        figure=figure,
        prompt=table.prompt("prompt"),
        next=after,
        unidentified=table.ref("unidentified", after),
        on_error=table.ref("on_error", after),
    )


def _is_figure(value: str) -> TypeGuard[Figure]:
    return value in FIGURES


def _route(table: _Table, fallback: str) -> RouteStep:
    return RouteStep(
        queue=table.name("queue"), priority=table.integer("priority", 0, MAX_PRIORITY, 0)
    )


def _callback(table: _Table, fallback: str) -> CallbackStep:
    return CallbackStep(
        queue=table.name("queue"),
        prompt=table.prompt("prompt"),
        next=table.ref("next"),
        on_error=table.ref("on_error", fallback),
    )


def _rate(table: _Table, fallback: str) -> RateStep:
    low, high = table.integer("min", 0, 9), table.integer("max", 0, 9)
    if low > high:
        raise table.fail("min", f"min {low} is above max {high}")
    return RateStep(
        prompt=table.prompt("prompt"),
        name=table.name("name"),
        min=low,
        max=high,
        timeout=table.seconds("timeout"),
        retries=table.integer("retries", 0, MAX_RETRIES),
        invalid_prompt=table.prompt("invalid_prompt"),
        next=table.ref("next"),
        on_fail=table.ref("on_fail", fallback),
        labels=_labels(table.table("labels"), low, high)
        if "labels" in table
        else MappingProxyType({}),
    )


def _labels(table: _Table, low: int, high: int) -> Mapping[int, str]:
    labels: dict[int, str] = {}
    for key in table:
        if not (key.isascii() and key.isdigit() and low <= int(key) <= high):
            raise table.fail(key, f"a label must be for a score from {low} to {high}")
        labels[int(key)] = table.name(key)
    return MappingProxyType(labels)


def _leave(table: _Table, fallback: str) -> LeaveStep:
    return LeaveStep(prompt=table.optional_prompt("prompt"))


_KINDS: Final[Mapping[type, str]] = MappingProxyType(
    {
        PlayStep: "play",
        IdentifyStep: "identify",
        MenuStep: "menu",
        SayStep: "say",
        RouteStep: "route",
        CallbackStep: "callback",
        RateStep: "rate",
        LeaveStep: "leave",
    }
)

_READERS: Final[dict[str, Callable[[_Table, str], Step]]] = {
    "play": _play,
    "identify": _identify,
    "menu": _menu_step,
    "say": _say,
    "route": _route,
    "callback": _callback,
    "rate": _rate,
    "leave": _leave,
}
