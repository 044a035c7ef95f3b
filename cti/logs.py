"""Log lines that caller-controlled text cannot forge.

A caller ID name, IVR input or a PBX's reply can hold a line break or a fake JSON fragment;
written as they are, they would start a line that reads like one of ours. Both formats keep
one record on one line: ``text`` (the default) escapes line breaks in the message, ``json``
writes one JSON object per line (time, level, logger, message, and ``call_id`` / ``pbx`` when
the call passes them as ``extra=``), with every line break of any kind escaped.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT = ("call_id", "pbx")  # the ``extra=`` keys a line about a call carries
# everything str.splitlines() breaks on; JSON escapes the first ones itself, not the last three
_BREAKS = str.maketrans({c: f"\\u{ord(c):04x}" for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(text: str) -> str:
    """``text`` with every line break written as an escape (``\\u000a``…)."""
    return text.translate(_BREAKS)


class TextFormatter(logging.Formatter):
    """The classic line; the message's line breaks escaped (a traceback still follows)."""

    def __init__(self) -> None:
        super().__init__(TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))


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
