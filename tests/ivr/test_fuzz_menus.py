"""Fuzzing the IVR menu loader (ivr/menus.py) with hypothesis, plus a corpus of nasty menu files.

Whatever a menu file holds (any text, any TOML of any types and values, a real menu with values
swapped for random ones), ``load_menu`` returns a Menu or raises MenuError naming the file,
never another exception (KeyError, TypeError, RecursionError...).

Each ``@given`` test runs ``FUZZ_EXAMPLES`` examples (env var, default 300; 3 such tests here).
Hypothesis keeps no database and its caches go to the temp dir; it is derandomized when ``CI``
is set. The files are written to pytest's temp dir, never into the repo.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from ivr.menus import MAX_MESSAGE, Menu, MenuError, load_menu

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cti-hypothesis")  # its caches too
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the temp dir is only written, each time anew
    ],
)
CORPUS = Path(__file__).parent.parent / "fixtures" / "fuzz" / "menus"
MAIN = Path(__file__).parent.parent.parent / "config" / "ivr" / "main.toml"


def outcome(path: Path) -> Menu | MenuError:
    """The menu, or the MenuError; any other exception fails the test as it is."""
    try:
        return load_menu(path)
    except MenuError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        # only the file name, a key and a cut problem: no value quoted in full
        assert len(message) < len(str(path)) + 3 * MAX_MESSAGE, len(message)
        return exc


# --- TOML text from values --------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(text: str) -> str:
    """A TOML basic string: control characters as \\u escapes, the rest as is."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    match value:
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case float():
            if math.isnan(value):
                return "nan"
            return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
        case str():
            return quote(value)
        case dt.datetime() | dt.date() | dt.time():
            return value.isoformat()
        case list():
            return "[" + ", ".join(toml_value(v) for v in value) + "]"
        case dict():
            return "{" + ", ".join(f"{quote(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a TOML value: {value!r}")


def toml_document(table: dict[str, Any]) -> str:
    return "".join(f"{quote(key)} = {toml_value(value)}\n" for key, value in table.items())


# --- strategies -------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
KEYS = st.one_of(
    st.sampled_from(
        [
            "name",
            "start",
            "languages",
            "fallback",
            "steps",
            "type",
            "next",
            "prompt",
            "prompts",
            "options",
            "timeout",
            "retries",
            "routing",
            "label",
            "labels",
            "queue",
            "1",
            "en",
        ]
    ),
    TEXT,
)
LEAVES = st.one_of(
    TEXT,
    st.sampled_from(["m", "en", "zh", "play", "menu", "rate", "ivr/x", "a", "b", "", "\x00"]),
    st.integers(),
    st.integers(-(2**200), 2**200),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
)
TOMLABLE = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=30,
)
REAL = tomllib.loads(MAIN.read_text(encoding="utf-8"))


def paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of nested tables, for picking a place to change."""
    if not isinstance(value, dict):
        return []
    found = []
    for key, child in value.items():
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


REAL_PATHS = paths(REAL)


@st.composite
def mutated_menus(draw: st.DrawFn) -> dict[str, Any]:
    """The shipped main menu with up to 6 keys replaced by random values, deleted, or given a
    random sibling: it gets deep into the loader's checks, where random documents rarely go."""
    menu: dict[str, Any] = tomllib.loads(MAIN.read_text(encoding="utf-8"))
    menu["name"] = "m"
    for _ in range(draw(st.integers(1, 6))):
        *parents, key = draw(st.sampled_from(REAL_PATHS))
        table = menu
        for parent in parents:
            table = table.get(parent) if isinstance(table.get(parent), dict) else {}
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            table[key] = draw(TOMLABLE)
        elif action == "delete":
            table.pop(key, None)
        else:
            table[draw(KEYS)] = draw(TOMLABLE)
    return menu


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(text=st.text(st.characters(exclude_categories=["Cs"]), max_size=400))
def test_any_text_loads_or_raises_menu_error(tmp_path: Path, text: str) -> None:
    """FUZZ_EXAMPLES (default 300) texts of any characters: a Menu or a MenuError naming the
    file, never another exception."""
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    outcome(path)


@FUZZ
@given(document=st.dictionaries(KEYS, TOMLABLE, max_size=8))
def test_any_toml_loads_or_raises_menu_error(tmp_path: Path, document: dict[str, Any]) -> None:
    """FUZZ_EXAMPLES (default 300) valid TOML documents of random types and values (tables,
    arrays, 200-bit integers, nan and inf, dates, control characters): a Menu or a MenuError
    naming the file and the key."""
    path = tmp_path / "m.toml"
    text = toml_document(document)
    path.write_text(text, encoding="utf-8")
    assert toml_document(tomllib.loads(text)) == text  # what was drawn is what the loader reads
    result = outcome(path)
    if isinstance(result, MenuError):
        assert re.search(r": (key ['\"]|cannot read menu)", str(result)), result


@FUZZ
@given(menu=mutated_menus())
def test_mutated_real_menu_loads_or_raises_menu_error(tmp_path: Path, menu: dict[str, Any]) -> None:
    """FUZZ_EXAMPLES (default 300) copies of config/ivr/main.toml with up to 6 keys replaced,
    deleted or added: a Menu or a MenuError naming the file and the key."""
    path = tmp_path / "m.toml"
    path.write_text(toml_document(menu), encoding="utf-8")
    result = outcome(path)
    if isinstance(result, MenuError):
        assert re.search(r": key ['\"]", str(result)), result  # repr: "'" if the key has one


def test_the_mutation_leaves_a_loadable_menu_alone(tmp_path: Path) -> None:
    """The serializer is faithful: the real menu, written back, loads as the original."""
    path = tmp_path / "main.toml"
    path.write_text(toml_document(REAL), encoding="utf-8")
    assert load_menu(path) == load_menu(MAIN)


# --- nasty cases, one by one ------------------------------------------------------------------


@pytest.mark.parametrize("depth", [500, 5000, 100_000])
@pytest.mark.parametrize(("opening", "closing"), [("[", "]"), ("{a = ", "}")])
def test_deep_nesting_is_a_menu_error(
    tmp_path: Path, depth: int, opening: str, closing: str
) -> None:
    """tomllib recurses per level and raised RecursionError out of load_menu."""
    path = tmp_path / "m.toml"
    inner = "1" if opening.startswith("{") else ""
    path.write_text(f"name = {opening * depth}{inner}{closing * depth}\n", encoding="utf-8")
    with pytest.raises(MenuError, match="cannot read menu: values nested too deeply"):
        load_menu(path)


@pytest.mark.parametrize("key", ["name", "start", "steps", "languages"])
def test_one_megabyte_value_gives_a_short_message(tmp_path: Path, key: str) -> None:
    """A 1 MB string where a name or a table belongs: the message names the key and is cut."""
    menu = dict(REAL, name="m")
    menu[key] = "\x1b" + "x" * 1_000_000
    path = tmp_path / "m.toml"
    path.write_text(toml_document(menu), encoding="utf-8")
    with pytest.raises(MenuError) as caught:
        load_menu(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: key {key!r}: ")
    assert len(message) < 2 * MAX_MESSAGE
    assert re.search(r"\.\.\. \(\d{7} characters\)$", message), message


def test_one_megabyte_step_id_gives_a_short_message(tmp_path: Path) -> None:
    menu = dict(REAL, name="m", start="s" * 1_000_000)
    path = tmp_path / "m.toml"
    path.write_text(toml_document(menu), encoding="utf-8")
    with pytest.raises(MenuError, match=r"key 'start': names no step 'sss") as caught:
        load_menu(path)
    assert len(str(caught.value)) < 2 * MAX_MESSAGE


# --- the corpus -------------------------------------------------------------------------------

# file -> None when it loads, else a fragment of the MenuError after the file name
CORPUS_EXPECT: dict[str, str | None] = {
    "cycle.toml": None,
    "self_loop.toml": None,
    "regression_deep_array.toml": "cannot read menu: values nested too deeply",
    "regression_deep_inline_table.toml": "cannot read menu: values nested too deeply",
    "huge_integer.toml": "key 'routing.vip_priority': must be between 0 and 1000",
    "nan_timeout.toml": "key 'store_budget': must be more than 0 and at most 60, not nan",
    "control_characters.toml": "key 'steps.a.prompts': 'ivr/a\\x00\\x1b[2J' is not a sound",
    "step_id_with_newline.toml": "key 'steps.a\\nb': a step id may hold only",
    "missing_step.toml": "key 'steps.a.next': names no step 'nowhere'",
    "wrong_types.toml": "key 'languages': must be a list of non-empty strings, not 'en'",
    "steps_array_of_tables.toml": "key 'steps': must be a table",
    "datetime_prompt.toml": "key 'steps.a.prompts': must be a sound name or a table",
    "latin1.toml": "cannot read menu: 'utf-8' codec can't decode",
    "bom.toml": "cannot read menu: Invalid statement (at line 1, column 1)",
}


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.toml")) == sorted(CORPUS_EXPECT)
    readme = (CORPUS.parent / "README.md").read_text()
    assert [name for name in CORPUS_EXPECT if f"`menus/{name}`" not in readme] == []


@pytest.mark.parametrize("name", sorted(CORPUS_EXPECT))
def test_corpus_file(name: str) -> None:
    path = CORPUS / name
    expected = CORPUS_EXPECT[name]
    result = outcome(path)
    if expected is None:
        assert isinstance(result, Menu), result
        assert result.name == path.stem
    else:
        assert isinstance(result, MenuError)
        assert str(result).startswith(f"{path}: {expected}"), result
