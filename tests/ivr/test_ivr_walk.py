"""The sans-IO walker driven through the shipped menus with scripted results: every exchange
is checked action by action, and the findings in full."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pytest

from ivr.menus import DTMF, Menu, MenuStep, load_menu
from ivr.walk import (
    Ack,
    Action,
    CallbackCreated,
    CallerInfo,
    Collect,
    Collected,
    CustomerInfo,
    CustomersFound,
    Done,
    FetchFigure,
    FigureValue,
    FindCustomer,
    Findings,
    Hangup,
    PinChecked,
    Play,
    Played,
    RequestCallback,
    Result,
    Route,
    Say,
    SayDigits,
    SayNumber,
    SaySound,
    SetLanguage,
    StoreBudget,
    StoreFailed,
    VerifyPin,
    Walk,
    WalkError,
    speech,
)

CONFIG = Path(__file__).parent.parent.parent / "config" / "ivr"
MAIN = load_menu(CONFIG / "main.toml")
SURVEY = load_menu(CONFIG / "survey.toml")
CALLER = "+8613800138000"

ALICE = CustomerInfo(7, "Alice Chen", "regular", "active", "en")
WANG = CustomerInfo(8, "王芳", "regular", "active", "zh-CN")
PIERRE = CustomerInfo(9, "Pierre Roux", "regular", "active", "fr")
VIP = CustomerInfo(10, "Big Corp", "vip", "active", None, "bob")
LAPSED = CustomerInfo(11, "Old Friend", "low", "lapsed", "en", "carol")

Script = list[tuple[Action, Result]]
Reason = Literal["timeout", "error"]


def sound(name: str, lang: str = "en") -> str:
    return f"ivr/{lang}/{name}"


def play(name: str, lang: str = "en") -> Play:
    return Play((sound(name, lang),))


def budget(lang: str = "en") -> StoreBudget:
    return StoreBudget(1.0, sound("one-moment", lang))


def welcome(lang: str = "en") -> Play:
    return Play((sound("welcome", lang),), DTMF)


def by_phone(lang: str = "en") -> FindCustomer:
    return FindCustomer("phone", CALLER, budget(lang))


def by_account(number: str, lang: str = "en") -> FindCustomer:
    return FindCustomer("account", number, budget(lang))


def ask_number(lang: str = "en") -> Collect:
    return Collect(sound("enter-customer-number", lang), 10, 8.0)


def ask_pin(lang: str = "en") -> Collect:
    return Collect(sound("enter-pin", lang), 4, 8.0)


def main_menu(lang: str = "en") -> Collect:
    return Collect(sound("main-menu", lang), 1, 6.0, terminator="")


def rating(name: str) -> Collect:
    return Collect(sound(name), 1, 6.0, terminator="")


def to_queue(priority: int = 0, owner: str | None = None, winback: bool = False) -> Route:
    return Route("support", priority, owner, winback)


def walk_main(number: str | None = CALLER, language: str | None = "en") -> Walk:
    return Walk(MAIN, CallerInfo(number, language))


def drive(walk: Walk, script: Script) -> Action:
    """Start the walk, check each action against the script, answer with its result."""
    action = walk.start()
    for index, (expected, result) in enumerate(script):
        assert action == expected, f"exchange {index}"
        action = walk.send(result)
    return action


def findings(menu: Menu = MAIN, customer: CustomerInfo | None = None, **changes: Any) -> Findings:
    who: dict[str, Any] = {"customer_id": None, "customer_name": None, "tier": None}
    if customer is not None:
        who = {"customer_id": customer.id, "customer_name": customer.name, "tier": customer.tier}
    base = Findings(
        menu=menu.name,
        lifecycle=customer.lifecycle if customer else None,
        identified_by="none",
        language="en",
        path=(),
        callback=None,
        route=None,
        scores={},
        hung_up=False,
        ended_at_step=menu.start,
        terms=menu.terms(),
        **who,
    )
    return replace(base, **changes)


def identified(customer: CustomerInfo = ALICE) -> Script:
    """Up to the main menu, identified by caller ID."""
    return [(welcome(), Played()), (by_phone(), CustomersFound((customer,)))]


IDENTIFIED_PATH = (("welcome", "played"), ("identify", "caller_id"))


def routed_to_agent() -> Script:
    return [(to_queue(), Ack())]


# --- identification -------------------------------------------------------------------------


def test_one_caller_id_match_hears_balance_then_talks_to_support() -> None:
    walk = walk_main()
    done = drive(
        walk,
        [
            *identified(),
            (main_menu(), Collected("2")),
            (FetchFigure("balance", 7, budget()), FigureValue("amount", "1234.50", "CNY")),
            (
                Say(
                    (
                        SaySound(sound("balance-is")),
                        SayNumber(1234),
                        SaySound("ivr/point"),
                        SayDigits("5"),
                        SaySound("ivr/currency-cny"),
                    )
                ),
                Played(),
            ),
            (main_menu(), Collected("3")),
            (to_queue(), Ack()),
        ],
    )
    expected = findings(
        customer=ALICE,
        identified_by="caller_id",
        path=(
            *IDENTIFIED_PATH,
            ("main", "2"),
            ("balance", "said"),
            ("main", "3"),
            ("support", "routed"),
        ),
        route=to_queue(),
        ended_at_step="support",
        told={"balance": ("balance", FigureValue("amount", "1234.50", "CNY"))},
    )
    assert done == Done(expected)
    assert walk.done and walk.findings == expected
    assert json.loads(json.dumps(expected.to_json())) == {
        "menu": "main",
        "customer_id": 7,
        "customer_name": "Alice Chen",
        "tier": "regular",
        "lifecycle": "active",
        "identified_by": "caller_id",
        "language": "en",
        "path": [[step, outcome] for step, outcome in expected.path],
        "callback": None,
        "route": {"queue": "support", "priority": 0, "owner": None, "winback": False},
        "scores": {},
        "hung_up": False,
        "ended_at_step": "support",
        # what the caller was told, and the menu's words for the pop to read it by
        "told": {
            "balance": {
                "figure": "balance",
                "kind": "amount",
                "value": "1234.50",
                "currency": "CNY",
            }
        },
        "terms": MAIN.terms(),
    }


@pytest.mark.parametrize(
    ("matches", "outcome"),
    [((ALICE, WANG), "caller-id-several"), ((), "caller-id-unknown")],
)
def test_caller_id_not_conclusive_asks_for_number_and_pin(
    matches: tuple[CustomerInfo, ...], outcome: str
) -> None:
    walk = walk_main()
    drive(
        walk,
        [
            (welcome(), Played("5")),
            (by_phone(), CustomersFound(matches)),
            (ask_number(), Collected("1001")),
            (by_account("1001"), CustomersFound((ALICE,))),
            (ask_pin(), Collected("4321")),
            (VerifyPin(7, "4321", budget()), PinChecked(True)),
        ],
    )
    assert walk.findings == findings(
        customer=ALICE,
        identified_by="account",
        path=(("welcome", "skipped"), ("identify", outcome), ("identify", "account")),
        ended_at_step="main",
    )


def test_withheld_number_is_asked_at_once() -> None:
    walk = walk_main(number=None)
    action = drive(walk, [(welcome(), Played()), (ask_number(), Collected("0"))])
    assert action == to_queue()
    assert walk.findings.path == (("welcome", "played"), ("identify", "skip"))


def test_a_number_without_digits_counts_as_withheld() -> None:
    walk = walk_main(number="anonymous")
    assert drive(walk, [(welcome(), Played())]) == ask_number()


def test_digits_typed_without_hash_before_the_timeout_are_used() -> None:
    walk = walk_main(number=None)
    action = drive(walk, [(welcome(), Played()), (ask_number(), Collected("1001", True))])
    assert action == by_account("1001")


def test_wrong_numbers_then_fall_through_to_an_agent() -> None:
    walk = walk_main()
    done = drive(
        walk,
        [
            (welcome(), Played()),
            (by_phone(), CustomersFound(())),
            (ask_number(), Collected("999")),
            (by_account("999"), CustomersFound(())),
            (play("number-not-found"), Played()),
            (ask_number(), Collected("998")),
            (by_account("998"), CustomersFound((ALICE, WANG))),  # ambiguous is no match
            (play("number-not-found"), Played()),
            (ask_number(), Collected("997")),
            (by_account("997"), CustomersFound(())),
            *routed_to_agent(),
        ],
    )
    assert done == Done(
        findings(
            path=(
                ("welcome", "played"),
                ("identify", "caller-id-unknown"),
                ("identify", "account-unknown"),
                ("identify", "account-unknown"),
                ("identify", "account-unknown"),
                ("agent", "routed"),
            ),
            route=to_queue(),
            ended_at_step="agent",
        )
    )


def test_letters_too_many_digits_and_silence_are_invalid_input() -> None:
    walk = walk_main(number=None)
    drive(
        walk,
        [
            (welcome(), Played()),
            (ask_number(), Collected("12ab")),
            (play("number-not-found"), Played()),
            (ask_number(), Collected("12345678901")),  # 11 digits, 10 at most
            (play("number-not-found"), Played()),
            (ask_number(), Collected("", timed_out=True)),  # silence: asked again, no scolding
            *routed_to_agent(),
        ],
    )
    assert walk.findings.path[1:4] == (
        ("identify", "invalid"),
        ("identify", "invalid"),
        ("identify", "timeout"),
    )


@pytest.mark.parametrize("entered", ["", "#", "\uff11\uff12\uff13", "1 2", "*0"])
def test_odd_entries_are_invalid(entered: str) -> None:
    walk = walk_main(number=None)
    action = drive(walk, [(welcome(), Played()), (ask_number(), Collected(entered))])
    assert action == play("number-not-found")


def test_a_timeout_then_a_good_number() -> None:
    walk = walk_main(number=None)
    action = drive(
        walk,
        [
            (welcome(), Played()),
            (ask_number(), Collected("", timed_out=True)),
            (ask_number(), Collected("1001")),
        ],
    )
    assert action == by_account("1001")


def test_wrong_pin_is_asked_again_then_ok() -> None:
    walk = walk_main(number=None)
    action = drive(
        walk,
        [
            (welcome(), Played()),
            (ask_number(), Collected("1001")),
            (by_account("1001"), CustomersFound((ALICE,))),
            (ask_pin(), Collected("1111")),
            (VerifyPin(7, "1111", budget()), PinChecked(False)),
            (play("number-not-found"), Played()),
            (ask_pin(), Collected("4321")),
            (VerifyPin(7, "4321", budget()), PinChecked(True)),
        ],
    )
    assert action == main_menu()
    assert walk.findings.path[1:] == (
        ("identify", "pin-wrong"),
        ("identify", "account"),
    )
    assert walk.findings.identified_by == "account"


def test_pin_failures_leave_the_caller_unidentified() -> None:
    walk = walk_main(number=None)
    done = drive(
        walk,
        [
            (welcome(), Played()),
            (ask_number(), Collected("1001")),
            (by_account("1001"), CustomersFound((ALICE,))),
            (ask_pin(), Collected("12")),  # too short
            (play("number-not-found"), Played()),
            (ask_pin(), Collected("", timed_out=True)),
            (ask_pin(), Collected("9999")),
            (VerifyPin(7, "9999", budget()), PinChecked(False)),
            *routed_to_agent(),
        ],
    )
    assert isinstance(done, Done)
    assert done.findings == findings(
        path=(
            ("welcome", "played"),
            ("identify", "pin-invalid"),
            ("identify", "pin-timeout"),
            ("identify", "pin-wrong"),
            ("agent", "routed"),
        ),
        route=to_queue(),
        ended_at_step="agent",
    )


def test_account_retries_and_pin_retries_are_counted_apart() -> None:
    walk = walk_main(number=None)
    action = drive(
        walk,
        [
            (welcome(), Played()),
            (ask_number(), Collected("1")),
            (by_account("1"), CustomersFound(())),
            (play("number-not-found"), Played()),
            (ask_number(), Collected("2")),
            (by_account("2"), CustomersFound(())),
            (play("number-not-found"), Played()),
            (ask_number(), Collected("1001")),
            (by_account("1001"), CustomersFound((ALICE,))),
            (ask_pin(), Collected("0000")),
            (VerifyPin(7, "0000", budget()), PinChecked(False)),
        ],
    )
    assert action == play("number-not-found")  # a fresh count for the PIN


@pytest.mark.parametrize("reason", ["timeout", "error"])
def test_store_failure_while_identifying_puts_the_caller_through(reason: Reason) -> None:
    failed = StoreFailed(reason)
    scripts: list[Script] = [
        [(welcome(), Played()), (by_phone(), failed)],
        [
            (welcome(), Played()),
            (by_phone(), CustomersFound(())),
            (ask_number(), Collected("1001")),
            (by_account("1001"), failed),
        ],
        [
            (welcome(), Played()),
            (by_phone(), CustomersFound(())),
            (ask_number(), Collected("1001")),
            (by_account("1001"), CustomersFound((ALICE,))),
            (ask_pin(), Collected("4321")),
            (VerifyPin(7, "4321", budget()), failed),
        ],
    ]
    for script in scripts:
        walk = walk_main()
        assert drive(walk, script) == to_queue()
        assert walk.findings.path[-1] == ("identify", f"store-{reason}")
        assert walk.findings.identified_by == "none" and walk.findings.customer_id is None


# --- the main menu --------------------------------------------------------------------------


@pytest.mark.parametrize(("digit", "step"), [("3", "support"), ("0", "agent")])
def test_menu_routes(digit: str, step: str) -> None:
    walk = walk_main()
    done = drive(walk, [*identified(), (main_menu(), Collected(digit)), (to_queue(), Ack())])
    assert isinstance(done, Done)
    assert done.findings.path == (*IDENTIFIED_PATH, ("main", digit), (step, "routed"))
    assert done.findings.ended_at_step == step


def test_invalid_choices_then_exhaustion_go_to_on_fail() -> None:
    walk = walk_main()
    done = drive(
        walk,
        [
            *identified(),
            (main_menu(), Collected("7")),
            (play("invalid-choice"), Played()),
            (main_menu(), Collected("x")),
            (play("invalid-choice"), Played()),
            (main_menu(), Collected("12")),
            *routed_to_agent(),
        ],
    )
    assert isinstance(done, Done)
    assert done.findings.path == (
        *IDENTIFIED_PATH,
        ("main", "invalid"),
        ("main", "invalid"),
        ("main", "invalid"),
        ("agent", "routed"),
    )


def test_menu_timeouts_play_the_timeout_prompt() -> None:
    walk = walk_main()
    action = drive(
        walk,
        [
            *identified(),
            (main_menu(), Collected("", timed_out=True)),
            (play("no-choice"), Played()),
            (main_menu(), Collected("", timed_out=True)),
            (play("no-choice"), Played()),
            (main_menu(), Collected("", timed_out=True)),
        ],
    )
    assert action == to_queue()
    assert walk.findings.path[2:] == (("main", "timeout"),) * 3


def test_menu_timeout_without_timeout_prompt_asks_again() -> None:
    step = MAIN.steps["main"]
    assert isinstance(step, MenuStep)
    menu = replace(
        MAIN, steps=MappingProxyType({**MAIN.steps, "main": replace(step, timeout_prompt=None)})
    )
    walk = Walk(menu, CallerInfo(CALLER, "en"))
    action = drive(walk, [*identified(), (main_menu(), Collected("", timed_out=True))])
    assert action == main_menu()


def test_menu_key_pressed_without_a_timeout_is_invalid() -> None:
    walk = walk_main()
    action = drive(walk, [*identified(), (main_menu(), Collected(""))])
    assert action == play("invalid-choice")


# --- figures --------------------------------------------------------------------------------


def test_last_order_status_is_a_status_sound() -> None:
    walk = walk_main()
    action = drive(
        walk,
        [
            *identified(),
            (main_menu(), Collected("1")),
            (FetchFigure("last_order", 7, budget()), FigureValue("text", "In Transit")),
            (Say((SaySound(sound("last-order-is")), SaySound("ivr/order-in-transit"))), Played()),
        ],
    )
    assert action == main_menu()
    assert walk.findings.path[2:] == (("main", "1"), ("order", "said"))


def test_no_order_yet_says_the_nothing_sound_alone() -> None:
    walk = walk_main()
    action = drive(
        walk,
        [
            *identified(),
            (main_menu(), Collected("1")),
            (FetchFigure("last_order", 7, budget()), FigureValue("none")),
        ],
    )
    assert action == Say((SaySound("ivr/order-none"),))


@pytest.mark.parametrize("reason", ["timeout", "error"])
def test_figure_store_failure_goes_to_on_error(reason: Reason) -> None:
    walk = walk_main()
    action = drive(
        walk,
        [
            *identified(),
            (main_menu(), Collected("2")),
            (FetchFigure("balance", 7, budget()), StoreFailed(reason)),
            (play("info-unavailable"), Played()),
        ],
    )
    assert action == main_menu()
    assert walk.findings.path[2:] == (
        ("main", "2"),
        ("balance", f"store-{reason}"),
        ("unavailable", "played"),
    )


def test_figure_for_nobody_identified() -> None:
    walk = Walk(replace(MAIN, start="balance"), CallerInfo(CALLER, "en"))
    done = drive(walk, [*routed_to_agent()])
    assert done == Done(
        findings(
            path=(("balance", "unidentified"), ("agent", "routed")),
            route=to_queue(),
            ended_at_step="agent",
        )
    )


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        (FigureValue("amount", "12.00", "USD"), (SayNumber(12), SaySound("ivr/currency-usd"))),
        (
            FigureValue("amount", "-0.05"),
            (SaySound("ivr/minus"), SayNumber(0), SaySound("ivr/point"), SayDigits("05")),
        ),
        (FigureValue("amount", "-0.00"), (SayNumber(0),)),
        (FigureValue("number", "3"), (SayNumber(3),)),
        (FigureValue("number", "-2"), (SaySound("ivr/minus"), SayNumber(2))),
        (FigureValue("text", "on_hold"), (SaySound("ivr/tickets-on-hold"),)),
    ],
)
def test_how_figures_are_said(value: FigureValue, parts: tuple[object, ...]) -> None:
    assert speech("open_tickets", "ivr/lead-in", value) == (SaySound("ivr/lead-in"), *parts)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (FigureValue("amount", "12,50"), "not a decimal"),
        (FigureValue("amount", "1e3"), "not a decimal"),
        (FigureValue("amount", "12.50", "€"), "not an ISO 4217"),
        (FigureValue("number", "3.5"), "not a whole number"),
        (FigureValue("text", "已发货"), "not a status code"),
        (FigureValue("text", ""), "not a status code"),
        (FigureValue("words", "x"), "unknown figure kind"),  # type: ignore[arg-type]
    ],
)
def test_malformed_figures_are_an_edge_bug(value: FigureValue, problem: str) -> None:
    with pytest.raises(WalkError, match=problem):
        speech("balance", "ivr/lead-in", value)


def test_malformed_figure_fails_the_send() -> None:
    walk = walk_main()
    drive(walk, [*identified(), (main_menu(), Collected("2"))])
    with pytest.raises(WalkError, match="not a decimal"):
        walk.send(FigureValue("amount", "lots"))


# --- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("customer", "route"),
    [
        (VIP, to_queue(priority=10, owner="bob")),
        (LAPSED, to_queue(owner="carol", winback=True)),
        (replace(LAPSED, lifecycle="lost", owner=None), to_queue(winback=True)),
        (replace(VIP, lifecycle="prospect", owner=None), to_queue(priority=10)),
        (ALICE, to_queue()),
    ],
)
def test_routing_follows_the_customer(customer: CustomerInfo, route: Route) -> None:
    walk = walk_main()
    action = drive(walk, [*identified(customer), (main_menu(), Collected("3"))])
    assert action == route
    done = walk.send(Ack())
    assert isinstance(done, Done) and done.findings.route == route
    assert (done.findings.tier, done.findings.lifecycle) == (customer.tier, customer.lifecycle)


def test_routing_without_a_routing_table_adds_nothing() -> None:
    walk = Walk(
        replace(
            MAIN,
            routing=replace(MAIN.routing, vip_priority=0, owner_first=False, winback_lifecycles=()),
        ),
        CallerInfo(CALLER, "en"),
    )
    action = drive(walk, [*identified(VIP), (main_menu(), Collected("3"))])
    assert action == to_queue()


# --- callback -------------------------------------------------------------------------------


def test_callback_is_created_confirmed_and_the_call_ends() -> None:
    walk = walk_main()
    done = drive(
        walk,
        [
            *identified(),
            (main_menu(), Collected("9")),
            (RequestCallback("support", CALLER, 7, budget()), CallbackCreated("fu-42")),
            (play("callback-confirmed"), Played()),
            (play("goodbye"), Played()),
            (Hangup(), Ack()),
        ],
    )
    assert done == Done(
        findings(
            customer=ALICE,
            identified_by="caller_id",
            path=(*IDENTIFIED_PATH, ("main", "9"), ("callback", "created"), ("bye", "hangup")),
            callback="fu-42",
            ended_at_step="bye",
        )
    )


@pytest.mark.parametrize("reason", ["timeout", "error"])
def test_callback_failure_goes_to_the_fallback(reason: Reason) -> None:
    walk = walk_main()
    action = drive(
        walk,
        [
            *identified(),
            (main_menu(), Collected("9")),
            (RequestCallback("support", CALLER, 7, budget()), StoreFailed(reason)),
        ],
    )
    assert action == to_queue()
    assert walk.findings.path[-1] == ("callback", f"store-{reason}")
    assert walk.findings.callback is None


def test_callback_without_a_number_to_call_goes_to_the_fallback() -> None:
    walk = walk_main(number=None)
    action = drive(
        walk,
        [
            (welcome(), Played()),
            (ask_number(), Collected("1001")),
            (by_account("1001"), CustomersFound((ALICE,))),
            (ask_pin(), Collected("4321")),
            (VerifyPin(7, "4321", budget()), PinChecked(True)),
            (main_menu(), Collected("9")),
        ],
    )
    assert action == to_queue()
    assert walk.findings.path[-1] == ("callback", "no-number")


# --- language -------------------------------------------------------------------------------


def test_a_chinese_customer_switches_the_menu_to_chinese() -> None:
    walk = walk_main()
    action = drive(
        walk,
        [
            (welcome(), Played()),
            (by_phone(), CustomersFound((WANG,))),
            (SetLanguage("zh"), Ack()),
            (main_menu("zh"), Collected("7")),
            (play("invalid-choice", "zh"), Played()),
            (main_menu("zh"), Collected("2")),
        ],
    )
    assert action == FetchFigure("balance", 8, budget("zh"))
    assert walk.findings.language == "zh"


def test_a_language_the_menu_lacks_changes_nothing() -> None:
    walk = walk_main()
    action = drive(walk, [(welcome(), Played()), (by_phone(), CustomersFound((PIERRE,)))])
    assert action == main_menu()
    assert walk.findings.language == "en"


def test_channel_language_is_used_from_the_start() -> None:
    walk = walk_main(language="zh_TW")
    action = drive(walk, [(welcome("zh"), Played()), (by_phone("zh"), CustomersFound((WANG,)))])
    assert action == main_menu("zh")  # already in Chinese: no SetLanguage
    walk = walk_main(language="zh")
    action = drive(walk, [(welcome("zh"), Played()), (by_phone("zh"), CustomersFound((ALICE,)))])
    assert action == SetLanguage("en")


def test_an_unknown_channel_language_uses_the_default() -> None:
    walk = walk_main(language="de")
    assert walk.start() == welcome()
    assert walk.findings.language == "en"


def test_hang_up_before_the_language_is_acknowledged_keeps_the_old_one() -> None:
    walk = walk_main()
    drive(walk, [(welcome(), Played()), (by_phone(), CustomersFound((WANG,)))])
    assert walk.hung_up().language == "en"


# --- survey ---------------------------------------------------------------------------------


def walk_survey() -> Walk:
    return Walk(SURVEY, CallerInfo(CALLER, "en"))


def thanks() -> Script:
    return [(play("thank-you"), Played()), (Hangup(), Ack())]


def test_survey_scores_in_range() -> None:
    walk = walk_survey()
    done = drive(
        walk,
        [
            (rating("rate-attitude"), Collected("4")),
            (rating("rate-solved"), Collected("2")),
            *thanks(),
        ],
    )
    assert done == Done(
        findings(
            SURVEY,
            path=(("attitude", "4"), ("solved", "no"), ("thanks", "hangup")),
            scores={"attitude": 4, "solved": 2},
            ended_at_step="thanks",
        )
    )
    assert isinstance(done, Done)
    assert done.findings.to_json()["scores"] == {"attitude": 4, "solved": 2}


def test_survey_out_of_range_and_timeouts() -> None:
    walk = walk_survey()
    done = drive(
        walk,
        [
            (rating("rate-attitude"), Collected("7")),
            (play("rate-invalid"), Played()),
            (rating("rate-attitude"), Collected("0")),  # retries spent: on to the next question
            (rating("rate-solved"), Collected("", timed_out=True)),
            (rating("rate-solved"), Collected("1")),
            *thanks(),
        ],
    )
    assert isinstance(done, Done)
    assert done.findings.scores == {"solved": 1}
    assert done.findings.path == (
        ("attitude", "invalid"),
        ("attitude", "invalid"),
        ("solved", "timeout"),
        ("solved", "yes"),
        ("thanks", "hangup"),
    )


def test_survey_silence_throughout() -> None:
    walk = walk_survey()
    silence = Collected("", timed_out=True)
    done = drive(
        walk,
        [
            (rating("rate-attitude"), silence),
            (rating("rate-attitude"), silence),
            (rating("rate-solved"), silence),
            (rating("rate-solved"), Collected("12")),
            *thanks(),
        ],
    )
    assert isinstance(done, Done)
    assert done.findings.scores == {}
    assert done.findings.path[-2:] == (("solved", "invalid"), ("thanks", "hangup"))


# --- hang-ups -------------------------------------------------------------------------------

# A long walk through every kind of step; each entry: (step the action belongs to, action,
# result). Hanging up instead of answering any action must keep what was learned before it.
LONG_WALK: list[tuple[str, Action, Result]] = [
    ("welcome", welcome(), Played()),
    ("identify", by_phone(), CustomersFound((ALICE, WANG))),
    ("identify", ask_number(), Collected("9")),
    ("identify", by_account("9"), CustomersFound(())),
    ("identify", play("number-not-found"), Played()),
    ("identify", ask_number(), Collected("1001")),
    ("identify", by_account("1001"), CustomersFound((WANG,))),
    ("identify", ask_pin(), Collected("4321")),
    ("identify", VerifyPin(8, "4321", budget()), PinChecked(True)),
    ("identify", SetLanguage("zh"), Ack()),
    ("main", main_menu("zh"), Collected("", timed_out=True)),
    ("main", play("no-choice", "zh"), Played()),
    ("main", main_menu("zh"), Collected("2")),
    ("balance", FetchFigure("balance", 8, budget("zh")), FigureValue("number", "5")),
    ("balance", Say((SaySound(sound("balance-is", "zh")), SayNumber(5))), Played()),
    ("main", main_menu("zh"), Collected("9")),
    ("callback", RequestCallback("support", CALLER, 8, budget("zh")), CallbackCreated("fu-1")),
    ("callback", play("callback-confirmed", "zh"), Played()),
    ("bye", play("goodbye", "zh"), Played()),
    ("bye", Hangup(), Ack()),
]
IDENTIFIED_AT = 8  # the VerifyPin exchange
LANGUAGE_AT = 9
CALLBACK_AT = 16


@pytest.mark.parametrize("answered", range(len(LONG_WALK)))
def test_hang_up_at_every_step_keeps_what_was_learned(answered: int) -> None:
    walk = walk_main()
    before = drive(walk, [(action, result) for _, action, result in LONG_WALK[:answered]])
    step, pending, _ = LONG_WALK[answered]
    assert before == pending
    path_before = walk.findings.path
    left = walk.hung_up()
    assert left.hung_up and walk.done
    assert left.path == (*path_before, (step, "hung-up"))
    assert left.ended_at_step == step
    assert left.customer_id == (8 if answered > IDENTIFIED_AT else None)
    assert left.identified_by == ("account" if answered > IDENTIFIED_AT else "none")
    assert left.language == ("zh" if answered > LANGUAGE_AT else "en")
    assert left.callback == ("fu-1" if answered > CALLBACK_AT else None)
    assert left.route is None
    assert walk.findings == left
    with pytest.raises(WalkError, match="after the walk is done"):
        walk.send(LONG_WALK[answered][2])


def test_the_long_walk_completes() -> None:
    walk = walk_main()
    done = drive(walk, [(action, result) for _, action, result in LONG_WALK])
    assert isinstance(done, Done)
    assert done.findings == findings(
        customer=WANG,
        identified_by="account",
        language="zh",
        path=(
            ("welcome", "played"),
            ("identify", "caller-id-several"),
            ("identify", "account-unknown"),
            ("identify", "account"),
            ("main", "timeout"),
            ("main", "2"),
            ("balance", "said"),
            ("main", "9"),
            ("callback", "created"),
            ("bye", "hangup"),
        ),
        callback="fu-1",
        ended_at_step="bye",
        told={"balance": ("balance", FigureValue("number", "5"))},
    )


@pytest.mark.parametrize("answered", range(4))
def test_hang_up_during_the_survey_keeps_the_scores(answered: int) -> None:
    script: Script = [
        (rating("rate-attitude"), Collected("5")),
        (rating("rate-solved"), Collected("1")),
        *thanks(),
    ]
    walk = walk_survey()
    drive(walk, script[:answered])
    left = walk.hung_up()
    expected = dict(list({"attitude": 5, "solved": 1}.items())[:answered])
    assert left.scores == expected and left.hung_up
    assert left.path[-1] == (("attitude", "solved", "thanks", "thanks")[answered], "hung-up")


def test_hang_up_before_start() -> None:
    walk = walk_main()
    assert walk.hung_up() == findings(path=(("welcome", "hung-up"),), hung_up=True)


def test_findings_are_snapshots() -> None:
    walk = walk_survey()
    walk.start()
    before = walk.findings
    walk.send(Collected("3"))
    assert before.scores == {} and before.path == ()
    assert walk.findings.scores == {"attitude": 3}
    with pytest.raises(TypeError):
        walk.findings.scores["attitude"] = 1  # type: ignore[index]


# --- the step bound -------------------------------------------------------------------------


def test_a_walk_that_goes_round_forever_is_stopped() -> None:
    walk = walk_main()
    action = drive(walk, identified())
    actions = 2
    while not isinstance(action, Done):
        answers: dict[type, Result] = {
            Collect: Collected("2"),
            FetchFigure: FigureValue("number", "1"),
            Say: Played(),
        }
        action = walk.send(answers[type(action)])
        actions += 1
    assert action.findings.path[-1][1] == "too-many-steps"
    assert action.findings.route is None
    assert 60 < actions < 200


def test_the_bound_counts_steps_and_actions() -> None:
    walk = Walk(SURVEY, CallerInfo(CALLER, "en"), max_moves=3)
    done = drive(walk, [(rating("rate-attitude"), Collected("4"))])
    assert done == Done(
        findings(
            SURVEY,
            path=(("attitude", "4"), ("solved", "too-many-steps")),
            scores={"attitude": 4},
            ended_at_step="solved",
        )
    )


# --- misuse ---------------------------------------------------------------------------------


def test_send_before_start() -> None:
    with pytest.raises(WalkError, match="before start"):
        walk_main().send(Played())


def test_start_twice() -> None:
    walk = walk_main()
    walk.start()
    with pytest.raises(WalkError, match="twice"):
        walk.start()


def test_wrong_result_kind() -> None:
    walk = walk_main()
    walk.start()
    with pytest.raises(WalkError, match="Play expects Played, not Ack"):
        walk.send(Ack())
    walk.send(Played())
    with pytest.raises(WalkError, match="FindCustomer expects CustomersFound or StoreFailed"):
        walk.send(Collected("1"))


def test_send_after_done_and_hang_up_after_done() -> None:
    walk = walk_main()
    drive(walk, [*identified(), (main_menu(), Collected("3")), (to_queue(), Ack())])
    with pytest.raises(WalkError, match="after the walk is done"):
        walk.send(Ack())
    with pytest.raises(WalkError, match="after the walk is done"):
        walk.hung_up()


def test_send_after_hang_up() -> None:
    walk = walk_main()
    walk.start()
    walk.hung_up()
    with pytest.raises(WalkError, match="after the walk is done"):
        walk.send(Played())
