"""Customer segments by rules: value tier, lifecycle stage, satisfaction/loyalty quadrant. Pure.

Theory of operation
-------------------
:func:`segment` turns one customer's facts (orders, survey answers, when they became a
customer) and a time into a :class:`Segment`; it reads no database and no clock, so the
same facts and time always give the same answer, and every rule can be tested with a handful
of dataclasses. The rules are data (:class:`Rules`, read from ``config/segments.toml`` by
:func:`load_rules`); docs/segments.md explains each one.

- Value tier: recency (days since the last order), frequency (orders in the window) and
  monetary value (spent in the window) are each scored 1..5 against four thresholds. A
  customer whose scores meet every minimum of ``[tiers.vip]`` is VIP; one whose scores stay
  under every maximum of ``[tiers.low]`` is low; everyone else is regular. A customer
  without any order gets ``[tiers] no_orders``.
- Lifecycle: prospect (no order), lost or lapsed (the last order is older than
  ``lost_days`` / ``lapsed_days``), new (the first order is recent), won back (ordered again,
  recently, after a gap longer than ``lapsed_days``), else active.
- Quadrant: the mean of the recent answers to the satisfaction questions against how many
  orders the window holds: satisfied repeat buyers are loyal, unsatisfied ones hostages,
  satisfied one-off buyers mercenaries, unsatisfied ones defecting. No answers, no quadrant.

Cancelled and returned orders (``[orders] not_counted``) are no purchase. Amounts are
compared as stored, whatever the currency. The reasons (``Segment.why``) are short sentences
an agent reads on the card; relative times in them are coarse ("3 months ago"), so that a
daily recompute rewrites only the customers whose reasons really moved.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

from crm_sync.customers import ORDER_STATUSES
from crm_sync.models import TIERS

TIER_LABELS: Mapping[str, str] = {"vip": "VIP", "regular": "Regular", "low": "Low"}
LIFECYCLE_LABELS: Mapping[str, str] = {
    "prospect": "Prospect",
    "new": "New",
    "active": "Active",
    "lapsed": "Lapsed",
    "lost": "Lost",
    "won_back": "Won back",
}
QUADRANT_LABELS: Mapping[str, str] = {
    "loyal": "Loyal",
    "hostage": "Hostage",
    "mercenary": "Mercenary",
    "defecting": "Defecting",
}
SCORE_MIN, SCORE_MAX = 1, 5  # a survey answer's scale (the IVR's rate steps)
_SYMBOLS = {"CNY": "¥", "JPY": "¥", "USD": "$", "EUR": "€", "GBP": "£"}


class SegmentRulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the key."""


# -- the facts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    at: datetime
    amount: Decimal | None
    status: str | None = None  # an order's own state (crm_sync.customers.ORDER_STATUSES)


@dataclass(frozen=True, slots=True)
class Answer:
    """One survey answer about the customer's call (a ``call_scores`` row)."""

    question: str
    score: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules look at for one customer (aware times)."""

    created_at: datetime
    orders: tuple[Order, ...] = ()
    answers: tuple[Answer, ...] = ()
    currency: str | None = None  # only for showing amounts in the reasons


@dataclass(frozen=True, slots=True)
class Rfm:
    """Recency, frequency and monetary scores, each 1..5."""

    recency: int
    frequency: int
    monetary: int

    @property
    def total(self) -> int:
        return self.recency + self.frequency + self.monetary


@dataclass(frozen=True, slots=True)
class Segment:
    tier: str
    lifecycle: str
    quadrant: str | None
    why: tuple[str, ...]  # the tier's reason, the lifecycle's, the quadrant's (if any)
    rfm: Rfm | None  # None: no order ever

    def why_json(self) -> dict[str, Any]:
        """What ``customers.segment_why`` keeps (and the card reads back)."""
        rfm = self.rfm
        scores = None
        if rfm is not None:
            scores = {"recency": rfm.recency, "frequency": rfm.frequency, "monetary": rfm.monetary}
        return {"reasons": list(self.why), "rfm": scores}


def reasons(why: Any) -> tuple[str, ...]:
    """The reasons kept in ``customers.segment_why`` (:meth:`Segment.why_json`); none for a
    customer not computed yet, or a value of another shape."""
    found = why.get("reasons") if isinstance(why, Mapping) else None
    if not isinstance(found, list):
        return ()
    return tuple(text for text in found if isinstance(text, str))


# -- the rules ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderRules:
    window_days: int = 365  # frequency, monetary value and repeat purchases count these
    not_counted: tuple[str, ...] = ("cancelled", "returned")


@dataclass(frozen=True, slots=True)
class RfmRules:
    """Four ascending thresholds per score: recency's are maximum days (the first one met
    scores 5), frequency's and monetary's are minimums (each one met adds a point to 1)."""

    recency_days: tuple[int, ...] = (30, 90, 180, 365)
    frequency: tuple[int, ...] = (2, 4, 8, 12)
    monetary: tuple[Decimal, ...] = tuple(Decimal(n) for n in (500, 2000, 8000, 20000))


@dataclass(frozen=True, slots=True)
class Bounds:
    """Bounds on scores; None: not looked at."""

    recency: int | None = None
    frequency: int | None = None
    monetary: int | None = None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class TierRules:
    vip: Bounds = Bounds(recency=3, frequency=3, monetary=4)  # every one at least
    low: Bounds = Bounds(total=5)  # every one at most
    no_orders: str = "regular"


@dataclass(frozen=True, slots=True)
class LifecycleRules:
    new_days: int = 90  # the first order at most this old: new
    won_back_days: int = 90  # the order that ended a lapse at most this old: won back
    lapsed_days: int = 180  # the last order older: lapsed
    lost_days: int = 365  # the last order older: lost


@dataclass(frozen=True, slots=True)
class QuadrantRules:
    questions: tuple[str, ...] = ("attitude",)  # survey questions that measure satisfaction
    satisfied: Decimal = Decimal("4.0")  # mean answer (one decimal) at least this: satisfied
    repeat_orders: int = 2  # orders in the window at least this: a repeat buyer
    survey_days: int = 365  # answers older than this are not counted


@dataclass(frozen=True, slots=True)
class Rules:
    orders: OrderRules = field(default_factory=OrderRules)
    rfm: RfmRules = field(default_factory=RfmRules)
    tiers: TierRules = field(default_factory=TierRules)
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    quadrant: QuadrantRules = field(default_factory=QuadrantRules)


DEFAULT_RULES = Rules()  # what config/segments.toml ships with


# -- the computation ----------------------------------------------------------------------


def segment(facts: Facts, now: datetime, rules: Rules = DEFAULT_RULES) -> Segment:
    """The customer's segments at ``now`` (aware), with the reasons."""
    not_counted = rules.orders.not_counted
    orders = sorted(
        (o for o in facts.orders if (o.status or "") not in not_counted), key=lambda o: o.at
    )
    window = rules.orders.window_days
    since = now - timedelta(days=window)
    recent = [o for o in orders if o.at >= since]
    quadrant, quadrant_why = _quadrant(facts.answers, len(recent), now, rules)
    if not orders:
        tier = rules.tiers.no_orders
        why = (f"{TIER_LABELS[tier]}: no order yet", "Prospect: no order yet")
        return Segment(tier, "prospect", quadrant, (*why, *quadrant_why), None)
    spent = sum((o.amount or Decimal(0) for o in recent), Decimal(0))
    last = _days(now, orders[-1].at)
    r = rules.rfm
    rfm = Rfm(
        recency=_score_down(last, r.recency_days),
        frequency=_score_up(len(recent), r.frequency),
        monetary=_score_up(spent, r.monetary),
    )
    tier = _tier(rfm, rules.tiers)
    if recent:
        figures = f"{_orders(len(recent), window)}, {_money(spent, facts.currency)} spent"
    else:
        figures = f"no order in {_window(window)}"
    tier_why = f"{TIER_LABELS[tier]}: {figures}, last order {_ago(last)}"
    lifecycle, lifecycle_why = _lifecycle(orders, now, rules.lifecycle)
    return Segment(tier, lifecycle, quadrant, (tier_why, lifecycle_why, *quadrant_why), rfm)


def _tier(rfm: Rfm, tiers: TierRules) -> str:
    if _meets(rfm, tiers.vip, at_least=True):
        return "vip"
    if _meets(rfm, tiers.low, at_least=False):
        return "low"
    return "regular"


def _meets(rfm: Rfm, bounds: Bounds, *, at_least: bool) -> bool:
    pairs = (
        (rfm.recency, bounds.recency),
        (rfm.frequency, bounds.frequency),
        (rfm.monetary, bounds.monetary),
        (rfm.total, bounds.total),
    )
    return all(
        bound is None or (value >= bound if at_least else value <= bound) for value, bound in pairs
    )


def _lifecycle(orders: Sequence[Order], now: datetime, rules: LifecycleRules) -> tuple[str, str]:
    """The stage and its reason; ``orders`` are counted ones, oldest first (at least one)."""
    last = _days(now, orders[-1].at)
    if last > rules.lost_days:
        return "lost", f"Lost: last order {_ago(last)} (lost after {rules.lost_days} days)"
    if last > rules.lapsed_days:
        return "lapsed", f"Lapsed: last order {_ago(last)} (lapses after {rules.lapsed_days} days)"
    first = _days(now, orders[0].at)
    if first <= rules.new_days:
        return "new", f"New: first order {_ago(first)}"
    lapse = timedelta(days=rules.lapsed_days + 1)  # a gap of more than lapsed_days whole days
    for before, after in reversed(list(pairwise(orders))):
        if after.at - before.at >= lapse:  # the latest lapse: was it ended lately?
            back = _days(now, after.at)
            if back <= rules.won_back_days:
                gap = _span(_days(after.at, before.at))
                return (
                    "won_back",
                    f"Won back: ordered again {_ago(back)} after {gap} without an order",
                )
            break
    return "active", f"Active: last order {_ago(last)}"


def _quadrant(
    answers: Sequence[Answer], orders: int, now: datetime, rules: Rules
) -> tuple[str | None, tuple[str, ...]]:
    q = rules.quadrant
    since = now - timedelta(days=q.survey_days)
    scores = [
        a.score
        for a in answers
        if a.question in q.questions and a.at >= since and SCORE_MIN <= a.score <= SCORE_MAX
    ]
    if not scores:
        return None, ()
    mean = (Decimal(sum(scores)) / len(scores)).quantize(Decimal("0.1"), ROUND_HALF_UP)
    satisfied = mean >= q.satisfied
    repeat = orders >= q.repeat_orders
    name = {
        (True, True): "loyal",
        (False, True): "hostage",
        (True, False): "mercenary",
        (False, False): "defecting",
    }[(satisfied, repeat)]
    answered = f"{len(scores)} answer{'' if len(scores) == 1 else 's'}"
    window = rules.orders.window_days
    bought = _orders(orders, window) if orders else f"no order in {_window(window)}"
    link = ", " if satisfied == repeat else " but "
    why = f"{QUADRANT_LABELS[name]}: satisfaction {mean} of {SCORE_MAX} ({answered}){link}{bought}"
    return name, (why,)


def _score_down(value: int, limits: Sequence[int]) -> int:
    """5 when ``value`` is within the first limit, one less for each limit it is over."""
    return SCORE_MAX - sum(1 for limit in limits if value > limit)


def _score_up(value: int | Decimal, limits: Sequence[int | Decimal]) -> int:
    """1, and one more for each limit ``value`` reaches."""
    return SCORE_MIN + sum(1 for limit in limits if value >= limit)


def _days(later: datetime, earlier: datetime) -> int:
    """Whole days from ``earlier`` to ``later`` (none for a time in the future)."""
    return max(0, (later - earlier) // timedelta(days=1))


# -- the words ----------------------------------------------------------------------------


def _span(days: int) -> str:
    """A length of time as a person says it, coarser as it grows."""
    if days < 14:
        return "1 day" if days == 1 else f"{days} days"
    if days < 56:
        return f"{days // 7} weeks"
    if days < 730:
        months = days * 12 // 365
        return "1 month" if months == 1 else f"{months} months"
    return f"{days // 365} years"


def _ago(days: int) -> str:
    if days == 0:
        return "today"
    if days == 1:
        return "yesterday"
    return f"{_span(days)} ago"


def _window(days: int) -> str:
    if days % 365 == 0:
        return f"{days // 365 * 12} months"
    if days % 30 == 0:
        return "1 month" if days == 30 else f"{days // 30} months"
    return f"{days} days"


def _orders(count: int, window: int) -> str:
    return f"{count} order{'' if count == 1 else 's'} in {_window(window)}"


def _money(amount: Decimal, currency: str | None) -> str:
    whole = int(amount.quantize(Decimal(1), ROUND_HALF_UP))
    sign = "-" if whole < 0 else ""
    symbol = _SYMBOLS.get(currency or "")
    if symbol is not None:
        return f"{sign}{symbol}{abs(whole):,}"
    return f"{whole:,} {currency}" if currency else f"{whole:,}"


# -- reading the rules --------------------------------------------------------------------


SHIPPED_RULES = "config/segments.toml"  # [segments] rules_file by default (cti.settings)


def rules_from(path: str) -> Rules:
    """The rules the settings name. The default file, when it is not there (a command run
    outside the source tree), gives the defaults it ships with; any other file must exist.
    Raises SegmentRulesError."""
    if path == SHIPPED_RULES and not Path(path).exists():
        return DEFAULT_RULES
    return load_rules(path)


def load_rules(path: str | Path) -> Rules:
    """Read the rules file (TOML, ``config/segments.toml``). Raises SegmentRulesError naming
    the file and the key at fault."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SegmentRulesError(f"cannot read segment rules {path}: {exc.strerror or exc}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SegmentRulesError(f"{path}: not valid TOML: {exc}") from exc
    return parse_rules(raw, str(path))


def parse_rules(raw: Mapping[str, Any], source: str = "segment rules") -> Rules:
    """The rules from a parsed TOML document; missing keys keep their defaults. Raises
    SegmentRulesError naming ``source`` and the key."""
    top = _Table(source, "", raw)
    d = DEFAULT_RULES
    orders = top.table("orders")
    order_rules = OrderRules(
        window_days=orders.integer("window_days", d.orders.window_days, 1, 3650),
        not_counted=orders.strings("not_counted", d.orders.not_counted, ORDER_STATUSES),
    )
    rfm = top.table("rfm")
    rfm_rules = RfmRules(
        recency_days=tuple(int(v) for v in rfm.ascending("recency_days", d.rfm.recency_days)),
        frequency=tuple(int(v) for v in rfm.ascending("frequency", d.rfm.frequency)),
        monetary=tuple(rfm.ascending("monetary", d.rfm.monetary, whole=False)),
    )
    tiers = top.table("tiers")
    tier_rules = TierRules(
        vip=_bounds(tiers, "vip", d.tiers.vip),
        low=_bounds(tiers, "low", d.tiers.low),
        no_orders=tiers.choice("no_orders", d.tiers.no_orders, TIERS),
    )
    life = top.table("lifecycle")
    dl = d.lifecycle
    lifecycle_rules = LifecycleRules(
        new_days=life.integer("new_days", dl.new_days, 1, 3650),
        won_back_days=life.integer("won_back_days", dl.won_back_days, 1, 3650),
        lapsed_days=life.integer("lapsed_days", dl.lapsed_days, 1, 3650),
        lost_days=life.integer("lost_days", dl.lost_days, 1, 3650),
    )
    if lifecycle_rules.lost_days <= lifecycle_rules.lapsed_days:
        raise life.fail("lost_days", "must be more than lapsed_days")
    quad = top.table("quadrant")
    dq = d.quadrant
    quadrant_rules = QuadrantRules(
        questions=quad.strings("questions", dq.questions, None),
        satisfied=quad.number("satisfied", dq.satisfied, SCORE_MIN, SCORE_MAX),
        repeat_orders=quad.integer("repeat_orders", dq.repeat_orders, 1, 1000),
        survey_days=quad.integer("survey_days", dq.survey_days, 1, 3650),
    )
    if not quadrant_rules.questions:
        raise quad.fail("questions", "name at least one survey question")
    for table in (orders, rfm, tiers, life, quad, top):
        table.finish()
    return Rules(order_rules, rfm_rules, tier_rules, lifecycle_rules, quadrant_rules)


def _bounds(tiers: _Table, key: str, default: Bounds) -> Bounds:
    """``[tiers.<key>]``: given, it replaces the default rule whole."""
    table = tiers.table(key)
    if key not in tiers.body:
        return default
    bounds = Bounds(
        recency=table.optional_integer("recency", SCORE_MIN, SCORE_MAX),
        frequency=table.optional_integer("frequency", SCORE_MIN, SCORE_MAX),
        monetary=table.optional_integer("monetary", SCORE_MIN, SCORE_MAX),
        total=table.optional_integer("total", 0, 3 * SCORE_MAX),
    )
    table.finish()
    if bounds == Bounds():
        raise SegmentRulesError(
            f"{table.source}: [{table.name}]: give at least one of recency, frequency, "
            "monetary, total"
        )
    return bounds


class _Table:
    """One TOML table being read: each key read is ticked off; :meth:`finish` refuses the
    rest. Errors name the file, the table and the key."""

    def __init__(self, source: str, name: str, body: Any) -> None:
        self.source = source
        self.name = name
        if not isinstance(body, Mapping):
            raise SegmentRulesError(f"{source}: [{name}] must be a table")
        self.body: Mapping[str, Any] = body
        self._read: set[str] = set()

    def fail(self, key: str, problem: str) -> SegmentRulesError:
        where = f"[{self.name}] {key}" if self.name else key
        return SegmentRulesError(f"{self.source}: {where}: {problem}")

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self.body.get(key)

    def table(self, key: str) -> _Table:
        self._read.add(key)
        name = f"{self.name}.{key}" if self.name else key
        return _Table(self.source, name, self.body.get(key, {}))

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.optional_integer(key, low, high)
        return default if value is None else value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, not {value!r}")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, not {value}")
        return value

    def number(self, key: str, default: Decimal, low: int, high: int) -> Decimal:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, not {value!r}")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, not {value}")
        return Decimal(str(value))

    def choice(self, key: str, default: str, allowed: Sequence[str]) -> str:
        value = self._get(key)
        if value is None:
            return default
        if value not in allowed:
            raise self.fail(key, f"{value!r} is not one of {', '.join(allowed)}")
        return str(value)

    def strings(
        self, key: str, default: tuple[str, ...], allowed: Sequence[str] | None
    ) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of names")
        for item in value:
            if allowed is not None and item not in allowed:
                raise self.fail(key, f"{item!r} is not one of {', '.join(allowed)}")
        return tuple(value)

    def ascending(
        self, key: str, default: Sequence[int | Decimal], *, whole: bool = True
    ) -> tuple[Decimal, ...]:
        """Four thresholds, each above the one before (one per score above the lowest)."""
        value = self._get(key)
        if value is None:
            return tuple(Decimal(v) for v in default)
        kinds: tuple[type, ...] = (int,) if whole else (int, float)
        if (
            not isinstance(value, list)
            or len(value) != SCORE_MAX - SCORE_MIN
            or not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value)
        ):
            kind = "whole numbers" if whole else "numbers"
            raise self.fail(key, f"must be a list of {SCORE_MAX - SCORE_MIN} {kind}")
        numbers = tuple(Decimal(str(v)) for v in value)
        if numbers[0] < 0 or any(b <= a for a, b in pairwise(numbers)):
            raise self.fail(key, "must not be negative, and each must be above the one before")
        return numbers

    def finish(self) -> None:
        unknown = sorted(set(self.body) - self._read)
        if unknown:
            where = f"[{self.name}]" if self.name else "the top level"
            raise SegmentRulesError(f"{self.source}: {where}: unknown keys {unknown}")
