"""The console sink prints one readable line per meaningful event, in the order printed."""

from __future__ import annotations

import io
import time
from pathlib import Path

from cti.console import ConsoleSink
from cti.events import CallAbandoned, CallQueued
from cti.replay import replay_file

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_console_lines_for_a_ring_all_call() -> None:
    out = io.StringIO()
    now = 0.0
    sink = ConsoleSink(out, clock=lambda: now)
    for event in replay_file(FIXTURES / "capture_extra.txt").events:
        if event.call_id == "astlab-1795418978.95":
            now = event.at or 0.0  # printed as it happens
            sink.publish(event)
    lines = [line.split("  ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        'queued in sales (position 1): +15553786850 "Chris Young"',
        'ringing Carol from sales: +15553786850 "Chris Young"',
        'ringing Eve from sales: +15553786850 "Chris Young"',
        'ringing Dave from sales: +15553786850 "Chris Young"',
        "Carol stopped ringing (answered_elsewhere)",
        "Eve stopped ringing (answered_elsewhere)",
        "answered by Dave after 0s",
        'ended: +15553786850 "Chris Young" queues=sales agent=Dave outcome=answered'
        " hold=0s talk=7s",
    ]
    assert all(line.startswith(tuple("0123456789")) for line in out.getvalue().splitlines())
    assert "[astlab] astlab-1795418978.95" in out.getvalue()


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def test_a_line_published_late_is_stamped_when_printed_and_says_when_it_happened() -> None:
    """A redirected caller's abandon is published seconds after the fact: stamped with its
    own time it would print before the line above it."""
    out = io.StringIO()
    now = 1_800_000_091.2
    sink = ConsoleSink(out, clock=lambda: now)
    sink.publish(CallAbandoned("sim", "c2", 1_800_000_091.0, "sales", "exit_key", 12.0, 1))
    now = 1_800_000_092.5
    sink.publish(CallAbandoned("sim", "c1", 1_800_000_089.0, "support", "redirected", 20.0, 1))
    now = 1_800_000_093.0
    sink.publish(CallQueued("sim", "c3", 1_800_000_090.0, "sales", 1, "+8613800138000", ""))
    stamps = [line[:8] for line in out.getvalue().splitlines()]
    assert stamps == [clock(1_800_000_091.2), clock(1_800_000_092.5), clock(1_800_000_093.0)]
    lines = [line.split("  ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "left sales without an agent (exit_key)",
        f"left support at {clock(1_800_000_089.0)} without an agent (redirected)",
        f"queued in sales (position 1): +8613800138000 (at {clock(1_800_000_090.0)})",
    ]


def test_a_hostile_caller_name_prints_one_line_that_moves_nothing() -> None:
    """A caller ID name is the caller's text: a line break, an ANSI erase-and-rewrite, a CSI,
    backspaces or a bidi override must not forge or redraw a console line."""
    out = io.StringIO()
    sink = ConsoleSink(out, clock=lambda: 1_800_000_000.0)
    name = "Eve\r\n12:00:00 [sim] c9  answered by Mallory\x1b[1A\x1b[2K\x9b2J\b\b\u202eevil"
    sink.publish(CallQueued("sim", "c3", 1_800_000_000.0, "sales", 1, "+8613800138000", name))
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert all(c.isprintable() for c in text[:-1]), repr(text)
    assert "Eve\\u000d\\u000a12:00:00 [sim] c9  answered by Mallory\\u001b[1A" in text
    assert "\\u009b2J\\u0008\\u0008\\u202eevil" in text
