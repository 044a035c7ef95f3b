"""IVR menu files: the shipped ones load as intended, and every mistake is a MenuError that
names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.menus import (
    CallbackStep,
    IdentifyStep,
    LeaveStep,
    MenuError,
    MenuStep,
    Pin,
    PlayStep,
    Prompt,
    RateStep,
    RouteStep,
    Routing,
    SayStep,
    load_menu,
    load_menus,
)

CONFIG = Path(__file__).parent.parent.parent / "config" / "ivr"

# A small menu with every step type; each bad case below changes one line of it.
BASE = """\
name = "m"
start = "hello"
languages = ["en", "zh"]
fallback = "bye"

[steps.hello]
type = "play"
prompts = ["ivr/hello"]
next = "who"

[steps.who]
type = "identify"
prompt = "ivr/number"
max_digits = 8
timeout = 5
retries = 1
invalid_prompt = "ivr/invalid"
found = "ask"
not_found = "queue"

[steps.ask]
type = "menu"
prompt = { en = "ivr/en/menu", zh = "ivr/zh/menu" }
options = { 1 = "tell", 2 = "call", "#" = "queue", 3 = "ask" }
timeout = 5.5
retries = 1
invalid_prompt = "ivr/invalid"

[steps.tell]
type = "say"
figure = "balance"
prompt = "ivr/balance"
next = "ask"

[steps.call]
type = "callback"
queue = "support"
prompt = "ivr/ok"
next = "score"

[steps.score]
type = "rate"
name = "nps"
prompt = "ivr/rate"
min = 1
max = 5
timeout = 5
retries = 0
invalid_prompt = "ivr/invalid"
next = "bye"

[steps.queue]
type = "route"
queue = "support"

[steps.bye]
type = "leave"
"""


SECOND_NPS = """type = "rate"
name = "nps"
prompt = "ivr/rate-again"
min = 1
max = 2
timeout = 1
retries = 0
invalid_prompt = "ivr/invalid"
next = "bye"
"""


def write(tmp_path: Path, text: str, name: str = "m") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def changed(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def test_shipped_menus_load() -> None:
    menus = load_menus(CONFIG)
    assert sorted(menus) == ["main", "survey"]
    main, survey = menus["main"], menus["survey"]
    assert (main.start, main.languages, main.fallback, main.store_budget) == (
        "welcome",
        ("en", "zh"),
        "agent",
        1.0,
    )
    assert main.routing == Routing(10, True, ("lapsed", "lost"))
    assert main.holding_prompt == Prompt(
        "ivr/en/one-moment", (("en", "ivr/en/one-moment"), ("zh", "ivr/zh/one-moment"))
    )
    identify = main.steps["identify"]
    assert isinstance(identify, IdentifyStep)
    assert identify.pin == Pin(
        Prompt("ivr/en/enter-pin", (("en", "ivr/en/enter-pin"), ("zh", "ivr/zh/enter-pin"))), 4
    )
    assert (identify.found, identify.not_found, identify.skip_digit) == ("main", "agent", "0")
    menu = main.steps["main"]
    assert isinstance(menu, MenuStep)
    assert dict(menu.options) == {
        "1": "order",
        "2": "balance",
        "3": "support",
        "9": "callback",
        "0": "agent",
    }
    callback = main.steps["callback"]
    assert isinstance(callback, CallbackStep) and callback.on_error == "agent"  # the fallback
    assert [type(step) for step in survey.steps.values()] == [RateStep, RateStep, LeaveStep]
    solved = survey.steps["solved"]
    assert isinstance(solved, RateStep)
    assert (solved.min, solved.max, dict(solved.labels)) == (1, 2, {1: "yes", 2: "no"})
    assert solved.on_fail == "thanks"
    assert survey.holding_prompt is None


def test_defaults_are_resolved_at_load(tmp_path: Path) -> None:
    menu = load_menu(write(tmp_path, BASE))
    steps = menu.steps
    assert steps["hello"] == PlayStep((Prompt("ivr/hello"),), "who", skippable=False)
    assert steps["ask"] == MenuStep(
        prompt=Prompt("ivr/en/menu", (("en", "ivr/en/menu"), ("zh", "ivr/zh/menu"))),
        options={"1": "tell", "2": "call", "#": "queue", "3": "ask"},
        timeout=5.5,
        retries=1,
        invalid_prompt=Prompt("ivr/invalid"),
        on_fail="bye",
        timeout_prompt=None,
    )
    assert steps["tell"] == SayStep("balance", Prompt("ivr/balance"), "ask", "ask", "ask")
    assert steps["call"] == CallbackStep("support", Prompt("ivr/ok"), "score", on_error="bye")
    score = steps["score"]
    assert isinstance(score, RateStep) and score.on_fail == "bye" and not score.labels
    assert steps["queue"] == RouteStep("support", 0)
    assert steps["bye"] == LeaveStep(None)
    who = steps["who"]
    assert isinstance(who, IdentifyStep) and who.pin is None and who.skip_digit is None
    assert (menu.store_budget, menu.holding_prompt, menu.routing) == (1.0, None, Routing())


def test_load_menus_keys_by_name(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    write(tmp_path, BASE.replace('name = "m"', 'name = "n"'), name="n")
    (tmp_path / "notes.txt").write_text("not a menu", encoding="utf-8")
    assert sorted(load_menus(tmp_path)) == ["m", "n"]


def test_load_menus_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(MenuError, match="not a folder"):
        load_menus(tmp_path / "missing")


def test_a_bad_file_in_the_folder_stops_loading(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    bad = write(tmp_path, BASE.replace('name = "m"', 'name = "x"'), name="n")
    with pytest.raises(MenuError) as caught:
        load_menus(tmp_path)
    assert str(bad) in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ('type = "leave"', 'type = "hangup"', "steps.bye.type", "unknown step type 'hangup'"),
        ('next = "bye"', 'next = "end"', "steps.score.next", "names no step 'end'"),
        ('found = "ask"', 'found = "menu"', "steps.who.found", "names no step 'menu'"),
        ('not_found = "queue"', 'not_found = "q"', "steps.who.not_found", "names no step"),
        ('2 = "call"', '2 = "nowhere"', "steps.ask.options.2", "names no step 'nowhere'"),
        ('2 = "call"', '12 = "call"', "steps.ask.options.12", "one DTMF key"),
        ('2 = "call"', 'A = "call"', "steps.ask.options.A", "one DTMF key"),
        ("options = { 1", "options = {}\nx = { 1", "steps.ask.options", "at least one"),
        ('fallback = "bye"', 'fallback = "b"', "fallback", "names no step 'b'"),
        ('start = "hello"\n', "", "start", "missing required key"),
        ('start = "hello"', 'start = "hi"', "start", "names no step 'hi'"),
        ('name = "m"', 'name = "main"', "name", "does not match the file name 'm'"),
        ('languages = ["en", "zh"]', "languages = []", "languages", "at least one language"),
        ('languages = ["en", "zh"]', 'languages = ["en", "en"]', "languages", "twice"),
        ('languages = ["en", "zh"]', 'languages = "en"', "languages", "list of non-empty"),
        ("retries = 0", "retries = -1", "steps.score.retries", "between 0 and 10, not -1"),
        ("retries = 0", 'retries = "2"', "steps.score.retries", "whole number"),
        ("retries = 0", "retries = true", "steps.score.retries", "whole number"),
        ("timeout = 5.5", "timeout = 0", "steps.ask.timeout", "more than 0 and at most 60"),
        ("timeout = 5.5", "timeout = -3", "steps.ask.timeout", "more than 0"),
        ("timeout = 5.5", "timeout = 61", "steps.ask.timeout", "at most 60, not 61"),
        ("max_digits = 8", "max_digits = 0", "steps.who.max_digits", "between 1 and 32"),
        ("max_digits = 8", "max_digits = 33", "steps.who.max_digits", "between 1 and 32"),
        ("max_digits = 8\n", "", "steps.who.max_digits", "missing required key"),
        ("min = 1", "min = 6", "steps.score.min", "min 6 is above max 5"),
        ("max = 5", "max = 10", "steps.score.max", "between 0 and 9"),
        ('prompt = "ivr/ok"\n', "", "steps.call.prompt", "missing required key"),
        (
            'not_found = "queue"',
            'not_found = "queue"\nskip_digti = "0"',
            "steps.who.skip_digti",
            "unknown key",
        ),
        ('type = "leave"', 'type = "leave"\nprompts = "x"', "steps.bye.prompts", "unknown key"),
        ('fallback = "bye"', 'fallback = "bye"\nstore_budgt = 2', "store_budgt", "unknown key"),
        ('fallback = "bye"', 'fallback = "bye"\nstore_budget = 0', "store_budget", "more than 0"),
        ('figure = "balance"', 'figure = "orders"', "steps.tell.figure", "not one of"),
        (
            'queue = "support"\n\n[steps.bye]',
            'queue = ""\n\n[steps.bye]',
            "steps.queue.queue",
            "non-empty",
        ),
        ('queue = "support"\nprompt', 'queue = "a b"\nprompt', "steps.call.queue", "may hold only"),
        (
            'prompts = ["ivr/hello"]',
            'prompts = ["ivr/hello.wav"]',
            "steps.hello.prompts",
            "not a sound",
        ),
        ('prompts = ["ivr/hello"]', "prompts = []", "steps.hello.prompts", "non-empty list"),
        (
            'prompts = ["ivr/hello"]',
            'prompts = "ivr/hello"',
            "steps.hello.prompts",
            "non-empty list",
        ),
        ('prompt = "ivr/rate"', 'prompt = "ivr/my rate"', "steps.score.prompt", "not a sound name"),
        ('prompt = "ivr/rate"', "prompt = 3", "steps.score.prompt", "table by language"),
        ('en = "ivr/en/menu", ', "", "steps.ask.prompt", "default language 'en'"),
        (
            'zh = "ivr/zh/menu"',
            'fr = "ivr/fr/menu"',
            "steps.ask.prompt",
            "'fr' is not in languages",
        ),
        ('next = "who"', 'next = "who"\nskippable = 1', "steps.hello.skippable", "true or false"),
        (
            'not_found = "queue"',
            'not_found = "queue"\nskip_digit = "00"',
            "steps.who.skip_digit",
            "one DTMF",
        ),
        (
            'not_found = "queue"',
            'not_found = "queue"\npin = true',
            "steps.who.pin_prompt",
            "missing",
        ),
        (
            'not_found = "queue"',
            'not_found = "queue"\npin_digits = 4',
            "steps.who.pin_digits",
            "pin is not true",
        ),
        ("max = 5", 'max = 5\nlabels = { 6 = "x" }', "steps.score.labels.6", "score from 1 to 5"),
        (
            "max = 5",
            'max = 5\nlabels = { 1 = "very good" }',
            "steps.score.labels.1",
            "may hold only",
        ),
        ("[steps.bye]", '[steps."b y"]\ntype = "leave"\n[steps.bye]', "steps.b y", "a step id may"),
        ('type = "leave"', SECOND_NPS, "steps.bye.name", "score 'nps' is also set by score"),
        (
            'fallback = "bye"',
            'fallback = "bye"\n[routing]\nvip_priority = 5\nownr_first = true',
            "routing.ownr_first",
            "unknown key",
        ),
        (
            'fallback = "bye"',
            'fallback = "bye"\n[routing]\nwinback_lifecycles = ["gone"]',
            "routing.winback_lifecycles",
            "'gone' is not one of",
        ),
        ('fallback = "bye"', 'fallback = "bye"\nrouting = 3', "routing", "must be a table"),
    ],
)
def test_bad_menu_names_file_and_key(
    tmp_path: Path, old: str, new: str, key: str, problem: str
) -> None:
    path = write(tmp_path, changed(old, new))
    with pytest.raises(MenuError) as caught:
        load_menu(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: key {key!r}: "), message
    assert problem in message, message


def test_a_menu_without_steps(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'name = "m"\nstart = "a"\nlanguages = ["en"]\nfallback = "a"\nsteps = {}\n'
    )
    with pytest.raises(MenuError, match=r"key 'steps': must hold at least one step"):
        load_menu(path)


@pytest.mark.parametrize("content", [b"name = = 'm'", b"name = '\xff'"])
def test_unreadable_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.toml"
    path.write_bytes(content)
    with pytest.raises(MenuError, match="cannot read menu") as caught:
        load_menu(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MenuError, match="cannot read menu"):
        load_menu(tmp_path / "nothing.toml")
