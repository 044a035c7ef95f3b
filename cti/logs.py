"""Log lines that caller-controlled text cannot forge.

A caller ID name, IVR input or a PBX's reply can hold a line break, a terminal escape sequence
(ESC or the one-byte CSI U+009B: move the cursor, erase the line, recolour), a backspace or a
bidi override; written as they are, they would start or redraw a line that reads like one of
ours. Both formats keep one record on one line with every such character escaped (``\u001b``):
``text`` (the default) escapes them in the message, ``json`` writes one JSON object per line
(time, level, logger, message, and ``call_id`` / ``pbx`` when the call passes them as
``extra=``). The console's event lines (cti/console.py) go through the same :func:`one_line`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT = ("call_id", "pbx")  # the ``extra=`` keys a line about a call carries
# every control character but TAB (C0, DEL, C1: line breaks, ESC, CSI, backspace…), the other
# characters str.splitlines() breaks on, the bidi controls that reorder what a reader sees,
# and lone surrogates (a stream would fail on them: the line would be lost, not written)
_UNSAFE = [
    *(chr(c) for c in range(0x20) if c != 0x09),
    *(chr(c) for c in range(0x7F, 0xA0)),
    "\u2028",
    "\u2029",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
    "\u200e",
    "\u200f",
    "\u061c",
    *(chr(c) for c in range(0xD800, 0xE000)),  # lone surrogates: no encoding writes them
]
_ESCAPES = str.maketrans({c: f"\\u{ord(c):04x}" for c in _UNSAFE})


def one_line(text: str) -> str:
    """``text`` as one line that draws only itself: each character of :data:`_UNSAFE`
    written as an escape (``\\u000a``, ``\\u001b``…)."""
    return text.translate(_ESCAPES)


class TextFormatter(logging.Formatter):
    """The classic line, its message escaped. A traceback still follows on lines of its own,
    each indented and escaped: an exception's message may quote a caller, and a line it breaks
    off must not start at the margin where our lines (and their times) start."""

    def __init__(self) -> None:
        super().__init__(TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(block: str) -> str:
    return "\n".join(f"  {one_line(line)}" for line in block.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per record and per line; the traceback is a field of it."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return one_line(json.dumps(entry, ensure_ascii=False, default=str))


def formatter(name: str) -> logging.Formatter:
    """The formatter of a ``log_format`` setting (one of :data:`FORMATS`)."""
    return JsonFormatter() if name == "json" else TextFormatter()
