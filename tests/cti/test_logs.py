"""Log lines a caller cannot forge (cti/logs.py), through a real log call of the call path:
a sink failing on a call whose caller ID name is hostile (cti.service.PbxFollower)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from cti.agents import AgentDirectory
from cti.ami import AmiEvent
from cti.events import CallerIdentified, CallStarted, DomainEvent
from cti.logs import JsonFormatter, TextFormatter
from cti.service import PbxFollower
from cti.settings import PbxSettings, SettingsError, load

FORGED = '{"time": "2030-01-01", "level": "CRITICAL", "logger": "cti", "message": "pwned"}'
HOSTILE = f'Eve\n{FORGED}\r\n\u2028{FORGED}\x85"}}, "level": "INFO'


class Refuses:
    """A sink whose error quotes the caller's name, as a real one's message may."""

    def publish(self, event: DomainEvent) -> None:
        if isinstance(event, CallStarted | CallerIdentified) and event.caller_name:
            raise ValueError(f"no card for {event.caller_name}")


@pytest.fixture
def written() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("cti.service")
    logger.addHandler(handler)
    yield out, handler
    logger.removeHandler(handler)


async def hostile_call() -> None:
    """A call from a caller named HOSTILE, through the consumer as the service runs it."""
    follower = PbxFollower(PbxSettings(name="paris"), AgentDirectory(), [Refuses()])
    follower.queue.put_nowait(
        AmiEvent(
            "paris",
            {
                "Event": "Newchannel",
                "Uniqueid": "p-1.1",
                "Linkedid": "p-1.1",
                "Channel": "PJSIP/trunk-00000001",
                "CallerIDNum": "+8613800138000",
                "CallerIDName": HOSTILE,
                "Exten": "800",
            },
            time.time(),
        )
    )
    consumer = asyncio.create_task(follower.consume())
    try:
        for _ in range(200):
            if follower.queue.empty() and follower.events_in:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)


async def test_json_lines_carry_the_call_and_a_hostile_name_forges_nothing(
    written: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = written
    handler.setFormatter(JsonFormatter())
    await hostile_call()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines  # one record, one line, whatever breaks the name holds
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "cti.service"
    assert "Refuses" in entry["message"]
    assert (entry["call_id"], entry["pbx"]) == ("p-1.1", "paris")
    assert f"ValueError: no card for {HOSTILE}" in entry["exc"]  # kept whole, only escaped


async def test_text_lines_escape_the_breaks_of_a_message(
    written: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = written
    handler.setFormatter(TextFormatter())
    logging.getLogger("cti.service").error("caller %s", HOSTILE)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "\\u000a" in lines[0] and "\\u2028" in lines[0] and "\\u0085" in lines[0]


def test_the_format_is_a_setting_text_by_default() -> None:
    assert load(env={}).log_format == "text"
    assert load(env={"CTI_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match="log_format"):
        load(env={"CTI_LOG_FORMAT": "xml"})


TERMINAL = (
    "Eve\x1b[2K\r\x1b[1A2030-01-01 00:00:00 INFO cti: agent logged out\x9b31m"
    "\b\b\x7f\u202eevil\u2066\ud800"
)


async def test_text_lines_escape_terminal_sequences_bidi_and_lone_surrogates(
    written: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = written
    handler.setFormatter(TextFormatter())
    logging.getLogger("cti.service").warning("caller %s", TERMINAL)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert all(c == "\t" or c.isprintable() for c in text[:-1]), repr(text)
    for escaped in ("\\u001b", "\\u009b", "\\u0008", "\\u007f", "\\u202e", "\\u2066", "\\ud800"):
        assert escaped in text
    assert text.encode("utf-8")  # a lone surrogate would have made the stream fail


async def test_a_traceback_cannot_start_a_line_at_the_margin(
    written: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = written
    handler.setFormatter(TextFormatter())
    await hostile_call()
    lines = out.getvalue().splitlines()
    assert lines and not lines[0].startswith(" ")  # the record's own line
    assert all(line.startswith("  ") for line in lines[1:]), lines  # the traceback, indented
    assert any("ValueError: no card for Eve" in line for line in lines[1:])
    assert not any(line.startswith("{") for line in lines)  # the forged JSON is not a line


async def test_json_lines_escape_terminal_sequences(
    written: tuple[io.StringIO, logging.Handler],
) -> None:
    out, handler = written
    handler.setFormatter(JsonFormatter())
    logging.getLogger("cti.service").warning("caller %s", TERMINAL)
    (line,) = out.getvalue().splitlines()
    assert all(c.isprintable() for c in line), repr(line)
    assert json.loads(line)["message"] == f"caller {TERMINAL}"  # the text itself, kept whole
