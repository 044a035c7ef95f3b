"""The segment rules (crm_sync.segments), pure: each tier, stage and quadrant, the boundaries
of the thresholds, the reasons' words, and files of rules that must be refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crm_sync.segments import (
    DEFAULT_RULES,
    SHIPPED_RULES,
    Answer,
    Facts,
    Order,
    OrderRules,
    Rfm,
    SegmentRulesError,
    load_rules,
    parse_rules,
    reasons,
    rules_from,
    segment,
)
from cti.settings import SegmentSettings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).parent.parent.parent


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def order(days: float, amount: str | None = "100", status: str | None = "delivered") -> Order:
    return Order(ago(days), None if amount is None else Decimal(amount), status)


def facts(*orders: Order, answers: tuple[Answer, ...] = (), currency: str | None = "CNY") -> Facts:
    return Facts(created_at=ago(1000), orders=orders, answers=answers, currency=currency)


def attitude(*scores: int, days: float = 3, question: str = "attitude") -> tuple[Answer, ...]:
    return tuple(Answer(question, score, ago(days)) for score in scores)


# -- value tier --------------------------------------------------------------------------


def test_a_vip_says_why_in_figures() -> None:
    # 14 orders over the year, 48,200 in all, the last one 6 days ago
    history = [order(6, "10000"), *(order(20 + 25 * i, "2938.46") for i in range(13))]
    result = segment(facts(*history), NOW)
    assert (result.tier, result.lifecycle, result.quadrant) == ("vip", "active", None)
    assert result.rfm == Rfm(recency=5, frequency=5, monetary=5)
    assert result.why == (
        "VIP: 14 orders in 12 months, ¥48,200 spent, last order 6 days ago",
        "Active: last order 6 days ago",
    )


def test_a_customer_who_never_ordered_is_a_prospect_of_the_no_orders_tier() -> None:
    result = segment(facts(), NOW)
    assert (result.tier, result.lifecycle, result.rfm) == ("regular", "prospect", None)
    assert result.why == ("Regular: no order yet", "Prospect: no order yet")
    rules = replace(DEFAULT_RULES, tiers=replace(DEFAULT_RULES.tiers, no_orders="low"))
    assert segment(facts(), NOW, rules).why[0] == "Low: no order yet"


def test_cancelled_and_returned_orders_are_no_purchase() -> None:
    undone = facts(order(3, status="cancelled"), order(5, status="returned"))
    assert segment(undone, NOW).lifecycle == "prospect"
    # an order with no status (from a CRM that keeps none) or no amount still counts
    counted = segment(facts(order(3, status=None), order(5, amount=None)), NOW)
    assert counted.lifecycle == "new"
    assert counted.why[0] == "Regular: 2 orders in 12 months, ¥100 spent, last order 3 days ago"


@pytest.mark.parametrize(
    ("days", "score"), [(0, 5), (30, 5), (31, 4), (90, 4), (91, 3), (180, 3), (365, 2), (366, 1)]
)
def test_recency_scores_by_days_since_the_last_order(days: int, score: int) -> None:
    assert segment(facts(order(days)), NOW).rfm == Rfm(score, 1, 1)


@pytest.mark.parametrize(("count", "score"), [(1, 1), (2, 2), (3, 2), (4, 3), (8, 4), (12, 5)])
def test_frequency_scores_orders_in_the_window(count: int, score: int) -> None:
    history = [order(1 + i, "1") for i in range(count)]
    old = order(400, "1")  # outside the window: recency only
    result = segment(facts(*history, old), NOW)
    assert result.rfm is not None and result.rfm.frequency == score


@pytest.mark.parametrize(
    ("spent", "score"),
    [("499.99", 1), ("500", 2), ("1999.99", 2), ("2000", 3), ("8000", 4), ("20000", 5)],
)
def test_monetary_scores_money_spent_in_the_window(spent: str, score: int) -> None:
    result = segment(facts(order(2, spent), order(500, "99999")), NOW)
    assert result.rfm is not None and result.rfm.monetary == score


def test_vip_needs_every_minimum_and_low_every_maximum() -> None:
    big_but_old = facts(*(order(200 + i, "5000") for i in range(5)))  # R 2, F 3, M 5
    assert segment(big_but_old, NOW).tier == "regular"
    recent = facts(*(order(100 + i, "2000") for i in range(4)))  # R 3, F 3, M 4
    assert segment(recent, NOW).tier == "vip"
    small = segment(facts(order(100, "50")), NOW)  # R 3, F 1, M 1: total 5
    assert (small.tier, small.why[0]) == (
        "low",
        "Low: 1 order in 12 months, ¥50 spent, last order 3 months ago",
    )
    assert segment(facts(order(89, "50")), NOW).tier == "regular"  # R 4: total 6
    gone = segment(facts(order(700, "50000")), NOW)
    assert (gone.tier, gone.why[0]) == (
        "low",
        "Low: no order in 12 months, last order 23 months ago",
    )


# -- lifecycle ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "stage", "reason"),
    [
        (180, "active", "Active: last order 5 months ago"),
        (181, "lapsed", "Lapsed: last order 5 months ago (lapses after 180 days)"),
        (365, "lapsed", "Lapsed: last order 12 months ago (lapses after 180 days)"),
        (366, "lost", "Lost: last order 12 months ago (lost after 365 days)"),
        (800, "lost", "Lost: last order 2 years ago (lost after 365 days)"),
    ],
)
def test_the_last_order_decides_lapsed_and_lost(days: int, stage: str, reason: str) -> None:
    result = segment(facts(order(days), order(days + 300)), NOW)
    assert (result.lifecycle, result.why[1]) == (stage, reason)


def test_a_recent_first_order_is_new() -> None:
    assert segment(facts(order(90), order(2)), NOW).why[1] == "New: first order 2 months ago"
    assert segment(facts(order(91), order(2)), NOW).lifecycle == "active"
    assert segment(facts(order(0)), NOW).why[1] == "New: first order today"


def test_ordering_again_after_a_lapse_is_won_back_for_a_while() -> None:
    back = segment(facts(order(400), order(10)), NOW)
    assert (back.lifecycle, back.why[1]) == (
        "won_back",
        "Won back: ordered again 10 days ago after 12 months without an order",
    )
    assert segment(facts(order(400), order(90)), NOW).lifecycle == "won_back"
    assert segment(facts(order(400), order(91)), NOW).lifecycle == "active"
    # a gap of exactly lapsed_days is no lapse; only the latest gap counts
    assert segment(facts(order(200), order(20)), NOW).lifecycle == "active"
    later = facts(order(900), order(500), order(40), order(5))
    assert segment(later, NOW).lifecycle == "won_back"
    assert segment(facts(order(900), order(600), order(60), order(30)), NOW).lifecycle == "won_back"
    settled = facts(order(900), order(300), order(200), order(130), order(60), order(30))
    assert segment(settled, NOW).lifecycle == "active"


def test_a_future_order_counts_as_today() -> None:
    assert segment(facts(order(-2)), NOW).why[1] == "New: first order today"


# -- quadrant ----------------------------------------------------------------------------


QUADRANTS = [
    ((5, 4), 3, "loyal", "Loyal: satisfaction 4.5 of 5 (2 answers), 3 orders in 12 months"),
    ((2,), 2, "hostage", "Hostage: satisfaction 2.0 of 5 (1 answer) but 2 orders in 12 months"),
    ((5,), 1, "mercenary", "Mercenary: satisfaction 5.0 of 5 (1 answer) but 1 order in 12 months"),
    ((1, 2), 0, "defecting", "Defecting: satisfaction 1.5 of 5 (2 answers), no order in 12 months"),
]


@pytest.mark.parametrize(("scores", "orders", "quadrant", "reason"), QUADRANTS)
def test_satisfaction_against_repeat_purchases(
    scores: tuple[int, ...], orders: int, quadrant: str, reason: str
) -> None:
    history = [order(10 + i) for i in range(orders)] or [order(500)]
    result = segment(facts(*history, answers=attitude(*scores)), NOW)
    assert (result.quadrant, result.why[-1]) == (quadrant, reason)
    assert len(result.why) == 3


def test_only_recent_answers_to_the_satisfaction_questions_count() -> None:
    noise = (*attitude(1, question="solved"), *attitude(1, days=366), *attitude(0, 9))
    assert segment(facts(order(5), answers=noise), NOW).quadrant is None
    kept = segment(facts(order(5), answers=(*noise, *attitude(5, days=365))), NOW)
    assert kept.quadrant == "mercenary"
    # a prospect who answered the survey has a quadrant too
    assert segment(facts(answers=attitude(4)), NOW).quadrant == "mercenary"


def test_the_mean_is_rounded_to_one_decimal_before_the_comparison() -> None:
    answers = attitude(4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3)  # 3.95
    result = segment(facts(order(5), order(8), answers=answers), NOW)
    assert (result.quadrant, result.why[-1]) == (
        "loyal",
        "Loyal: satisfaction 4.0 of 5 (20 answers), 2 orders in 12 months",
    )
    assert segment(facts(order(5), order(8), answers=attitude(4, 4, 3, 4)), NOW).quadrant == (
        "hostage"  # 3.75 → 3.8
    )


# -- words -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "said"),
    [
        (1, "yesterday"),
        (13, "13 days ago"),
        (14, "2 weeks ago"),
        (55, "7 weeks ago"),
        (56, "1 month ago"),
        (729, "23 months ago"),
        (730, "2 years ago"),
    ],
)
def test_times_are_said_coarser_as_they_grow(days: int, said: str) -> None:
    assert segment(facts(order(days)), NOW).why[0].endswith(f"last order {said}")


@pytest.mark.parametrize(
    ("currency", "spent"),
    [
        ("EUR", "€1,235"),
        ("USD", "$1,235"),
        ("GBP", "£1,235"),
        ("CHF", "1,235 CHF"),
        (None, "1,235"),
    ],
)
def test_money_is_shown_in_whole_units_of_the_customers_currency(
    currency: str | None, spent: str
) -> None:
    result = segment(facts(order(5, "1234.50"), currency=currency), NOW)
    assert f", {spent} spent," in result.why[0]


def test_the_window_is_named_as_configured() -> None:
    rules = replace(DEFAULT_RULES, orders=OrderRules(window_days=30))
    assert (
        segment(facts(order(5), order(40)), NOW, rules)
        .why[0]
        .startswith("Regular: 1 order in 1 month")
    )
    rules = replace(DEFAULT_RULES, orders=OrderRules(window_days=45))
    assert "in 45 days" in segment(facts(order(5)), NOW, rules).why[0]


def test_the_stored_reasons_read_back() -> None:
    result = segment(facts(order(5), answers=attitude(5)), NOW)
    stored = result.why_json()
    assert stored == {
        "reasons": list(result.why),
        "rfm": {"recency": 5, "frequency": 1, "monetary": 1},
    }
    assert reasons(stored) == result.why
    assert reasons(None) == reasons({"reasons": "text"}) == reasons([1]) == ()
    assert reasons({"reasons": ["a", 3, "b"]}) == ("a", "b")
    assert segment(facts(), NOW).why_json()["rfm"] is None


# -- the rules file ----------------------------------------------------------------------


def test_the_shipped_file_holds_the_defaults() -> None:
    assert load_rules(ROOT / "config" / "segments.toml") == DEFAULT_RULES
    assert parse_rules({}) == DEFAULT_RULES


def test_a_rules_file_changes_the_outcome(tmp_path: Path) -> None:
    path = tmp_path / "segments.toml"
    path.write_text(
        "[orders]\nnot_counted = []\n"
        "[rfm]\nmonetary = [10, 20, 30, 40.5]\n"
        "[tiers.vip]\nmonetary = 5\n"
        "[lifecycle]\nlapsed_days = 3\nlost_days = 4\n"
        "[quadrant]\nquestions = ['solved']\nsatisfied = 1\n",
        encoding="utf-8",
    )
    rules = load_rules(path)
    customer = facts(order(5, "41", status="cancelled"), answers=attitude(1, question="solved"))
    result = segment(customer, NOW, rules)
    assert (result.tier, result.lifecycle, result.quadrant) == ("vip", "lost", "mercenary")


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("top-level key", {"tier": {}}, "the top level: unknown keys ['tier']"),
    ("not a table", {"orders": 3}, "[orders] must be a table"),
    ("unknown key", {"orders": {"window": 3}}, "[orders]: unknown keys ['window']"),
    ("not a number", {"orders": {"window_days": "a year"}}, "[orders] window_days: must be"),
    ("a bool", {"lifecycle": {"new_days": True}}, "[lifecycle] new_days: must be a whole"),
    ("out of range", {"orders": {"window_days": 0}}, "window_days: must be between 1 and 3650"),
    ("status", {"orders": {"not_counted": ["canceled"]}}, "'canceled' is not one of processing"),
    ("names", {"quadrant": {"questions": "attitude"}}, "[quadrant] questions: must be a list"),
    ("no questions", {"quadrant": {"questions": []}}, "questions: name at least one"),
    ("scale", {"quadrant": {"satisfied": 6}}, "satisfied: must be between 1 and 5, not 6"),
    ("three thresholds", {"rfm": {"frequency": [1, 2, 3]}}, "[rfm] frequency: must be a list of 4"),
    ("descending", {"rfm": {"recency_days": [90, 30, 180, 365]}}, "each must be above"),
    ("negative", {"rfm": {"monetary": [-1, 0, 1, 2]}}, "[rfm] monetary: must not be negative"),
    ("whole days", {"rfm": {"recency_days": [1.5, 30, 180, 365]}}, "4 whole numbers"),
    ("tier", {"tiers": {"no_orders": "gold"}}, "'gold' is not one of vip, regular, low"),
    ("score", {"tiers": {"vip": {"recency": 6}}}, "[tiers.vip] recency: must be between 1 and 5"),
    ("empty rule", {"tiers": {"low": {}}}, "[tiers.low]: give at least one of recency"),
    ("rule key", {"tiers": {"vip": {"spent": 3}}}, "[tiers.vip]: unknown keys ['spent']"),
    ("order", {"lifecycle": {"lapsed_days": 400}}, "[lifecycle] lost_days: must be more than"),
]


@pytest.mark.parametrize(
    ("raw", "message"), [(raw, m) for _, raw, m in BAD], ids=[b[0] for b in BAD]
)
def test_bad_rules_are_refused_naming_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SegmentRulesError) as caught:
        parse_rules(raw, "rules.toml")
    assert str(caught.value).startswith("rules.toml: ")
    assert message in str(caught.value)


def test_an_unreadable_or_broken_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SegmentRulesError, match=r"cannot read segment rules .*missing\.toml"):
        load_rules(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[orders\n", encoding="utf-8")
    with pytest.raises(SegmentRulesError, match=r"broken\.toml: not valid TOML"):
        load_rules(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[lifecycle]\nlost_days = 'soon'\n", encoding="utf-8")
    with pytest.raises(SegmentRulesError, match=r"wrong\.toml: \[lifecycle\] lost_days: must be"):
        load_rules(wrong)


def test_the_default_file_may_be_missing_and_another_may_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SegmentSettings().rules_file == SHIPPED_RULES
    monkeypatch.chdir(tmp_path)  # outside the source tree: no config/segments.toml here
    assert rules_from(SHIPPED_RULES) == DEFAULT_RULES
    with pytest.raises(SegmentRulesError, match=r"cannot read segment rules mine\.toml"):
        rules_from("mine.toml")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "segments.toml").write_text("[orders]\nwindow_days = 30\n")
    assert rules_from(SHIPPED_RULES).orders.window_days == 30  # there, it is read
