"""The one rule for human text, whatever door it comes in by (CSV import, CRM API, outcome
form, notes, ratings): pure functions, so every write path calls the same ones.

Two kinds of text:

* a **line** (names, titles, codes typed by people) refuses every control character
  (Unicode Cc: NUL breaks PostgreSQL, CR/LF break one-line displays and logs), lone
  surrogates (Cs: no encoding can store them) and the bidi controls (U+202A-U+202E,
  U+2066-U+2069, U+200E/U+200F, U+061C): an invisible U+202E in a name reverses what is
  shown after it, and nobody types one into a name on purpose.
* **lines** (notes, addresses, bodies) also allow LF and TAB; CR LF (what a browser's form
  sends) becomes LF, and a lone CR is refused. Bidi controls are *kept* here: people writing
  Arabic or Hebrew use the marks (U+200E, U+200F, U+061C) in mixed text, and refusing an
  invisible character they cannot see is no help to them. Every page shows free text
  direction-isolated (``unicode-bidi: isolate`` / ``plaintext``), so what such a text holds
  cannot reorder anything outside it.

Text is trimmed and empty text is None; lengths are counted after that. A refusal is a
:class:`FieldError` naming the field, which the HTTP layer answers ``422 invalid_field``.
"""

from __future__ import annotations

import re

# Cc and Cs are fixed by the Unicode stability policy; the bidi controls are listed by UAX #9
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_NOT_IN_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_BIDI}]")
_NOT_IN_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class FieldError(ValueError):
    """A value the store refuses; ``field`` names it, the message says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def line(value: str | None, field: str, limit: int) -> str | None:
    """One line of text, trimmed, None when empty. Raises FieldError: too long, or a
    control, lone surrogate or bidi control character in it."""
    return _checked(value, field, limit, _NOT_IN_LINE)


def lines(value: str | None, field: str, limit: int) -> str | None:
    """Free text (LF line ends, TABs kept; CR LF made LF), trimmed, None when empty. Raises
    FieldError: too long, or another control character or a lone surrogate in it."""
    text = None if value is None else value.replace("\r\n", "\n")
    return _checked(text, field, limit, _NOT_IN_LINES)


def required_line(value: str | None, field: str, limit: int) -> str:
    """As :func:`line`, and empty text is refused too."""
    text = line(value, field, limit)
    if text is None:
        raise FieldError(field, "must not be empty")
    return text


def _checked(value: str | None, field: str, limit: int, refused: re.Pattern[str]) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > limit:
        raise FieldError(field, f"longer than {limit} characters ({len(text)})")
    bad = refused.search(text)
    if bad is not None:
        raise FieldError(field, f"contains the control character U+{ord(bad.group()):04X}")
    return text
