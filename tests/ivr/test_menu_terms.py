"""What a menu tells the pop about itself: step labels and survey scales (Menu.terms)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.menus import MAX_LABEL, MenuError, load_menu

MENU = """
name = "m"
start = "ask"
languages = ["en"]
fallback = "bye"

[steps.ask]
type = "menu"
{label}
prompt = "ivr/ask"
options = {{ 1 = "rate_us" }}
timeout = 5
retries = 1
invalid_prompt = "ivr/again"

[steps.rate_us]
type = "rate"
name = "stars"
prompt = "ivr/rate"
min = 0
max = 9
labels = {{ 0 = "none" }}
timeout = 5
retries = 1
invalid_prompt = "ivr/again"
next = "bye"

[steps.bye]
type = "leave"
"""


def write(tmp_path: Path, label: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(MENU.format(label=label), encoding="utf-8")
    return path


def test_terms_give_labels_types_options_and_scales(tmp_path: Path) -> None:
    menu = load_menu(write(tmp_path, 'label = "  Account questions "'))
    assert menu.terms() == {
        "steps": {
            "ask": {"label": "Account questions", "type": "menu", "options": {"1": "rate_us"}},
            "rate_us": {"label": "Rate us", "type": "rate", "score": "stars"},
            "bye": {"label": "Bye", "type": "leave"},
        },
        "scores": {"stars": {"label": "Rate us", "min": 0, "max": 9, "labels": {"0": "none"}}},
    }


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ('label = ""', "non-empty string"),
        ("label = 3", "non-empty string"),
        (f'label = "{"x" * (MAX_LABEL + 1)}"', f"at most {MAX_LABEL}"),
    ],
)
def test_a_bad_label_names_its_key(tmp_path: Path, label: str, problem: str) -> None:
    with pytest.raises(MenuError, match=rf"'steps\.ask\.label'.*{problem}"):
        load_menu(write(tmp_path, label))
