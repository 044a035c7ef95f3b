"""Why ivr/ does not use panoramisk.fast_agi: its faults, shown on stock panoramisk 1.4.

Each test passes *because the bug is there*; if one starts failing, panoramisk was fixed (or
replaced) and the note in docs should say so. The same inputs go through our layer in
tests/test_agi_server.py (peer closing before the headers, unsolicited HANGUP, 520 block,
plain-function handler), where they are handled.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from panoramisk.fast_agi import Application, Request

from cti.children import preexec

# Run in a child process: the bug freezes the whole event loop in a busy loop, so no in-process
# timeout can fire. wait_for(0.2 s) would print "timed out" if the loop ever got control back.
FREEZE_CHILD = """
import asyncio
from panoramisk.fast_agi import Application

class Writer:
    def get_extra_info(self, name):
        return None
    def close(self):
        pass

async def main():
    app = Application()
    reader = asyncio.StreamReader()
    reader.feed_data(b"agi_network: yes\\nagi_network_scr")
    reader.feed_eof()
    print("spinning", flush=True)
    try:
        await asyncio.wait_for(app.handler(reader, Writer()), 0.2)
        print("returned", flush=True)
    except asyncio.TimeoutError:
        print("timed out", flush=True)

asyncio.run(main())
"""


class _Writer:
    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data

    async def drain(self) -> None:
        return None


def _request(replies: bytes) -> tuple[Request, _Writer]:
    reader = asyncio.StreamReader()
    reader.feed_data(replies)
    writer = _Writer()
    return Request(app=None, headers={}, reader=reader, writer=writer), writer


def test_peer_closing_before_the_blank_line_freezes_the_event_loop() -> None:
    with pytest.raises(subprocess.TimeoutExpired) as frozen:
        subprocess.run(
            [sys.executable, "-c", FREEZE_CHILD],
            capture_output=True,
            timeout=2.0,
            preexec_fn=preexec(),  # an interrupted run must not leave it spinning
        )
    # the child got as far as the handler, then its loop never ran again: not even the 0.2 s
    # timeout fired in 2 s of wall time (subprocess.run killed it)
    assert frozen.value.stdout == b"spinning\n"


async def test_unsolicited_hangup_shifts_every_later_reply_by_one() -> None:
    request, writer = _request(b"HANGUP\n200 result=0\n200 result=1 (astlab-1795418875.0)\n")
    answer = await request.send_command("ANSWER")
    call_id = await request.send_command('GET VARIABLE "CHANNEL(linkedid)"')
    assert writer.sent == b'ANSWER\nGET VARIABLE "CHANNEL(linkedid)"\n'
    assert answer["error"] == "AGIResultHangup"  # ANSWER got the HANGUP line...
    assert call_id["result"] == ("0", "")  # ...GET VARIABLE got ANSWER's reply, not the id


async def test_multiline_usage_reply_desyncs_the_reader() -> None:
    request, _ = _request(
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b" Usage: GET DATA <file to be streamed> [timeout] [max digits]\n"
        b" Stream the given file, and receive DTMF data.\n"
        b"520 End of proper usage.\n"
        b"200 result=1 (astlab-1795418875.0)\n"
    )
    usage = await request.send_command("GET DATA")
    assert usage["error"] == "AGIUsageError"
    with pytest.raises(ValueError, match="invalid literal for int"):
        await request.send_command('GET VARIABLE "CHANNEL(linkedid)"')  # reads a usage line


async def test_add_route_with_a_plain_function_fails_on_python_311() -> None:
    app = Application()

    def menu(request: Request) -> None:
        return None

    with pytest.raises(AttributeError, match="asyncio' has no attribute 'coroutine'"):
        app.add_route("ivr", menu)
