"""The one place where a request's input becomes typed values, or a 4xx.

Whatever a client sends, a handler gets values the store can take, or the client gets
``400 bad_json`` / ``413 too_large`` / ``422 invalid_field`` naming the field, never a 500:

* a JSON body is at most ``limit`` bytes of UTF-8, nested at most MAX_DEPTH deep (the
  decoder recurses: 100,000 ``[`` would exhaust the stack) and holds no lone surrogate
  (``"\\ud800"`` is valid JSON but no text any database or encoder can store);
* an id is a whole number 1 ≤ n < 2⁶³ (a database BIGINT: 10³⁰ overflows the driver);
* a time is ISO 8601 with its zone, within crm_sync.customers.TIMES (year 1 or 9999 with an
  offset overflows on the way to UTC);
* text follows crm_sync.text's one rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from crm_sync.customers import CustomerError, utc
from crm_sync.text import FieldError, line, lines
from screenpop.errors import ApiError

MAX_BODY = 1024 * 1024  # what aiohttp reads by default
MAX_DEPTH = 32  # no body of this API nests more than a few levels
MAX_ID = 2**63 - 1
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


async def json_body(request: web.Request, limit: int = MAX_BODY, *, decimals: bool = False) -> Any:
    """The JSON body, any value (``decimals``: numbers with a fraction kept exact). Raises
    ApiError 413 over ``limit`` bytes, 400 ``bad_json`` for anything that is not JSON text
    as described above."""
    too_large = ApiError(413, "too_large", f"The body is over {limit} bytes; send less at once.")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise too_large
    return parse_json(bytes(data), decimals=decimals)


async def json_object(request: web.Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """As :func:`json_body`, and the body must be an object."""
    body = await json_body(request, limit)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "The body must be a JSON object.")
    return body


def parse_json(data: bytes, *, decimals: bool = False) -> Any:
    """``data`` decoded (pure: what :func:`json_body` does once the bytes are read). Raises
    ApiError 400 ``bad_json``."""
    bad = ApiError(400, "bad_json", "The body must be JSON in UTF-8.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad from exc
    if depth(text) > MAX_DEPTH:
        raise ApiError(400, "bad_json", f"The body nests deeper than {MAX_DEPTH} levels.")
    floats: Callable[[str], Any] = Decimal if decimals else float
    try:
        value = json.loads(text, parse_float=floats, parse_constant=_no_constant)
        # a lone surrogate (only a \u escape can make one) cannot be encoded: found here once
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as exc:
        message = "The body holds a lone surrogate (\\ud800-\\udfff)."
        raise ApiError(400, "bad_json", message) from exc
    except ValueError as exc:  # JSONDecodeError is one
        raise bad from exc
    return value


def depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (brackets in strings not
    counted); counted without recursion, so any input can be measured."""
    deepest = level = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        level += 1 if bracket in "[{" else -1
        deepest = max(deepest, level)
    return deepest


def text(body: Mapping[str, Any], name: str, limit: int, *, multiline: bool = False) -> str | None:
    """Text field ``name`` by crm_sync.text's rule (one line, or ``multiline`` free text),
    trimmed, None when absent or empty. Raises ApiError 422."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(name, f"expected text of at most {limit} characters")
    try:
        return (lines if multiline else line)(value, name, limit)
    except FieldError as exc:
        raise invalid(name, exc.problem) from exc


def ident(body: Mapping[str, Any], name: str) -> int | None:
    """Id field ``name`` (1 ≤ n < 2⁶³), None when absent. Raises ApiError 422."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise invalid(name, f"expected a whole number from 1 to {MAX_ID}")
    return value


def when(body: Mapping[str, Any], name: str) -> datetime | None:
    """Time field ``name`` in UTC (ISO 8601 with its zone), None when absent or empty.
    Raises ApiError 422."""
    value = body.get(name)
    if value is None or value == "":
        return None
    expected = "an ISO 8601 date and time with its offset, e.g. 2026-12-05T09:00:00+01:00"
    if not isinstance(value, str) or len(value) > 40:
        raise invalid(name, expected)
    try:
        return utc(datetime.fromisoformat(value), name)
    except CustomerError as exc:
        raise invalid(name, exc.problem) from exc
    except ValueError as exc:
        raise invalid(name, expected) from exc


def invalid(field: str, problem: str) -> ApiError:
    """422 ``invalid_field`` naming ``field``."""
    return ApiError(422, "invalid_field", f"{field}: {problem}.", field=field)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")
