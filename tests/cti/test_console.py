"""The console sink prints one readable line per meaningful event."""

from __future__ import annotations

import io
from pathlib import Path

from cti.console import ConsoleSink
from cti.replay import replay_file

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_console_lines_for_a_ring_all_call() -> None:
    out = io.StringIO()
    sink = ConsoleSink(out)
    for event in replay_file(FIXTURES / "capture_extra.txt").events:
        if event.call_id == "astlab-1795418978.95":
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
