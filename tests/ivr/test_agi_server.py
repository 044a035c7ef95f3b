"""The FastAGI server over real loopback sockets, driven by the simulated Asterisk of
ivr.client and, for the edges the simulator never produces, by a hand-written fake."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from ivr.agi import AgiCommandError, AgiProtocolError, ChannelHungUp
from ivr.client import TIMEOUT, AgiCall, CallerScript, run_agi
from ivr.server import AgiServer, AgiSession, Handler

CALL = AgiCall(
    channel="Local/s@incoming-00000000;2",
    uniqueid="astlab-1795418875.1",
    linkedid="astlab-1795418875.0",
    callerid_num="+15550100001",
    callerid_name="Alice Customer",
    priority=6,
)
HEADERS = CALL.headers()
LOGGER = "ivr.server"


@asynccontextmanager
async def serving(
    routes: dict[str, Handler] | None = None, **options: float
) -> AsyncIterator[tuple[AgiServer, int]]:
    server = AgiServer(routes, **options)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield server, port
    finally:
        await server.stop()


async def until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    """Poll: the server offers no event for "all sessions are gone"."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def fake_asterisk(port: int, replies: list[bytes]) -> list[bytes]:
    """Send the headers, answer each command with the next canned bytes, wait for the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    commands: list[bytes] = []
    try:
        writer.write(HEADERS)
        for reply in replies:
            commands.append(await reader.readline())
            writer.write(reply)
            await writer.drain()
        assert await reader.read() == b""  # the server closed, having sent nothing more
    finally:
        writer.close()
        await writer.wait_closed()
    return commands


async def test_routes_on_the_script_and_gives_the_query_to_the_handler() -> None:
    seen: dict[str, object] = {}

    async def menu(session: AgiSession) -> None:
        seen["query"] = session.request.query
        seen["args"] = session.request.args
        await session.answer()
        call_id = await session.get_variable("CHANNEL(linkedid)")
        assert call_id is not None
        await session.set_variable("CALL_ID", call_id)
        digits, timed_out = await session.get_data("main-menu", 3000, 1)
        await session.set_variable("IVR_CHOICE", digits)
        seen["timed_out"] = timed_out

    call = replace(CALL, script="ivr", query={"lang": "fr"}, args=("x",))
    async with serving({"ivr": menu}) as (_, port):
        transcript = await run_agi("127.0.0.1", port, call, CallerScript(["2"]))
    assert seen == {"query": {"lang": "fr"}, "args": ["x"], "timed_out": False}
    assert transcript.commands == [
        "ANSWER",
        "GET VARIABLE CHANNEL(linkedid)",
        "SET VARIABLE CALL_ID astlab-1795418875.0",
        "GET DATA main-menu 3000 1",
        "SET VARIABLE IVR_CHOICE 2",
    ]
    assert transcript.variables == {"CALL_ID": "astlab-1795418875.0", "IVR_CHOICE": "2"}
    assert transcript.agi_status == "SUCCESS"


async def test_unknown_script_sets_ivr_error_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    call = replace(CALL, script="nope", query={"a": "1"})
    async with serving({"ivr": _never_called}) as (_, port):
        transcript = await run_agi("127.0.0.1", port, call, CallerScript())
    assert transcript.commands == ['SET VARIABLE IVR_ERROR "unknown menu nope"']
    assert transcript.variables == {"IVR_ERROR": "unknown menu nope"}
    assert transcript.agi_status == "SUCCESS"
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'nope'" in warning.getMessage()


async def _never_called(session: AgiSession) -> None:
    raise AssertionError("routed to the wrong menu")


async def test_peers_closing_before_the_headers_never_freeze_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """panoramisk spins forever here (tests/test_agi_stock_panoramisk.py); a session served
    meanwhile must complete promptly, which it cannot if the loop is frozen."""
    caplog.set_level(logging.INFO, LOGGER)

    async def menu(session: AgiSession) -> None:
        for _ in range(5):
            await session.verbose("still here")
            await asyncio.sleep(0.02)

    async def early_closer(data: bytes) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        writer.close()
        await writer.wait_closed()

    async with serving({"ivr": menu}) as (server, port):
        started = time.monotonic()
        good = asyncio.create_task(run_agi("127.0.0.1", port, CALL, CallerScript()))
        await asyncio.gather(
            *(early_closer(HEADERS[:cut]) for cut in (0, 1, 30, len(HEADERS) - 1)),
        )
        async with asyncio.timeout(2):
            transcript = await good
        elapsed = time.monotonic() - started
        await until(lambda: server.sessions == 0)
    assert transcript.commands == ['VERBOSE "still here" 1'] * 5
    assert elapsed < 1.0
    early = [r for r in caplog.records if "before the AGI headers ended" in r.getMessage()]
    assert len(early) == 4
    assert all(r.levelno == logging.INFO for r in early)


async def test_half_headers_then_silence_hits_the_header_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    async with serving({"ivr": _never_called}, header_timeout=0.2) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEADERS[:50])
        started = time.monotonic()
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # the server hung up on us
        waited = time.monotonic() - started
        writer.close()
        await writer.wait_closed()
        await until(lambda: server.sessions == 0)
    assert 0.15 < waited < 1.5
    assert any("no header block in 0.2 s" in r.getMessage() for r in caplog.records)


async def test_unsolicited_hangup_between_commands_does_not_shift_replies() -> None:
    seen: dict[str, object] = {}

    async def menu(session: AgiSession) -> None:
        await session.answer()  # the caller hangs up right after this reply
        await session.set_variable("AFTER", "1")
        seen["hung_up"] = session.hung_up
        seen["call_id"] = await session.get_variable("CHANNEL(linkedid)")
        seen["uniqueid"] = await session.get_variable("CHANNEL(uniqueid)")
        try:
            await session.stream_file("menu", "12")
        except ChannelHungUp as exc:
            seen["stream"] = str(exc)

    async with serving({"ivr": menu}) as (_, port):
        transcript = await run_agi("127.0.0.1", port, CALL, CallerScript(hangup_after=1))
    assert seen == {
        "hung_up": True,
        "call_id": "astlab-1795418875.0",
        "uniqueid": "astlab-1795418875.1",
        "stream": "STREAM FILE: the channel is dead (511)",
    }
    assert transcript.caller_hung_up
    assert transcript.agi_status == "HANGUP"


async def test_hangup_during_a_prompt_raises_and_dead_commands_still_work() -> None:
    seen: dict[str, object] = {}

    async def menu(session: AgiSession) -> None:
        try:
            await session.get_data("main-menu", 3000, 1)
        except ChannelHungUp:
            seen["raised"] = session.hung_up
        await session.set_variable("IVR_RESULT", "abandoned")
        seen["call_id"] = await session.get_variable("CHANNEL(linkedid)")
        await session.hangup()  # already gone: a no-op, no 511

    caller = CallerScript(["1"], hangup_on="GET DATA")
    async with serving({"ivr": menu}, hangup_grace=5.0) as (_, port):
        started = time.monotonic()
        transcript = await run_agi("127.0.0.1", port, CALL, caller)
    assert seen == {"raised": True, "call_id": "astlab-1795418875.0"}
    assert time.monotonic() - started < 2.0  # the HANGUP line ended the grace wait at once
    assert transcript.variables == {"IVR_RESULT": "abandoned"}
    assert transcript.replies[:2] == ["200 result=-1", "HANGUP"]
    assert transcript.digits == ""


async def test_early_hangup_glued_to_the_headers_is_not_lost() -> None:
    seen: dict[str, object] = {}

    async def menu(session: AgiSession) -> None:
        await session.verbose("hello")
        seen["hung_up"] = session.hung_up
        with pytest.raises(ChannelHungUp):
            await session.answer()

    async with serving({"ivr": menu}) as (_, port):
        transcript = await run_agi("127.0.0.1", port, CALL, CallerScript(hangup_after=0))
    assert seen == {"hung_up": True}
    assert transcript.commands == ["VERBOSE hello 1", "ANSWER"]


async def test_usage_error_and_unknown_command_do_not_desync() -> None:
    seen: dict[str, object] = {}

    async def menu(session: AgiSession) -> None:
        usage = await session.command("GET DATA")
        seen["usage"] = (usage.code, usage.text.splitlines()[0], usage.text.splitlines()[-1])
        seen["call_id"] = await session.get_variable("CHANNEL(linkedid)")
        seen["unknown"] = (await session.command("FROB NICATE")).code
        seen["caller"] = await session.get_variable("CALLERID(num)")

    async with serving({"ivr": menu}) as (_, port):
        await run_agi("127.0.0.1", port, CALL, CallerScript())
    assert seen == {
        "usage": (520, "Invalid command syntax.  Proper usage follows:", "End of proper usage."),
        "call_id": "astlab-1795418875.0",
        "unknown": 510,
        "caller": "+15550100001",
    }


class _Menu:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def __call__(self, session: AgiSession) -> None:
        self.seen.append("class")
        await session.answer()


async def test_any_callable_returning_an_awaitable_is_a_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    async def tagged(session: AgiSession, tag: str) -> None:
        seen.append(tag)
        await session.answer()

    def plain(session: AgiSession) -> Awaitable[None]:
        return tagged(session, "plain")

    def broken(session: AgiSession) -> None:
        seen.append("broken ran")

    server = AgiServer()
    server.add_route("partial", functools.partial(tagged, tag="partial"))
    server.add_route("class", _Menu(seen))
    server.add_route("plain", plain)
    server.add_route("broken", broken)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not callable"):
        server.add_route("junk", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already exists"):
        server.add_route("plain", plain)
    _, port = await server.start("127.0.0.1", 0)
    try:
        for script in ("partial", "class", "plain", "broken"):
            call = replace(CALL, script=script)
            transcript = await run_agi("127.0.0.1", port, call, CallerScript())
            assert transcript.commands == ([] if script == "broken" else ["ANSWER"])
    finally:
        await server.stop()
    assert seen == ["partial", "class", "plain", "broken ran"]
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.exc_info is not None and error.exc_info[0] is TypeError
    assert "returned NoneType, not an awaitable" in str(error.exc_info[1])


async def test_handler_exception_is_logged_once_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def menu(session: AgiSession) -> None:
        await session.answer()
        raise RuntimeError("boom")

    async with serving({"ivr": menu}) as (server, port):
        transcript = await run_agi("127.0.0.1", port, CALL, CallerScript())
        await until(lambda: server.sessions == 0)
    assert transcript.commands == ["ANSWER"]
    assert transcript.agi_status == "SUCCESS"  # the server closed: the dialplan continues
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is RuntimeError


async def test_channel_hung_up_ends_the_session_quietly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)

    async def menu(session: AgiSession) -> None:
        await session.answer()
        await session.stream_file("welcome")
        await session.get_data("main-menu", 3000, 1)  # the caller hangs up here
        raise AssertionError("not reached")

    async with serving({"ivr": menu}) as (server, port):
        transcript = await run_agi(
            "127.0.0.1", port, CALL, CallerScript([TIMEOUT], hangup_on="GET DATA")
        )
        await until(lambda: server.sessions == 0)
    assert transcript.agi_status == "HANGUP"
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert any(
        r.levelno == logging.INFO and "ended: GET DATA: the caller hung up" in r.getMessage()
        for r in caplog.records
    )


async def test_stop_cancels_running_sessions_and_leaves_no_task() -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def menu(session: AgiSession) -> None:
        await session.answer()
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    server = AgiServer({"ivr": menu})
    _, port = await server.start("127.0.0.1", 0)
    calls = [asyncio.create_task(run_agi("127.0.0.1", port, CALL, CallerScript()))]
    await started.wait()
    started.clear()
    calls.append(asyncio.create_task(run_agi("127.0.0.1", port, CALL, CallerScript())))
    await started.wait()
    assert server.sessions == 2
    await server.stop()
    assert cancelled == [True, True]
    assert server.sessions == 0
    async with asyncio.timeout(2):
        transcripts = await asyncio.gather(*calls)
    assert [t.commands for t in transcripts] == [["ANSWER"], ["ANSWER"]]
    refused = await run_agi("127.0.0.1", port, CALL, CallerScript())
    assert refused.agi_status == "FAILURE"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_eof_mid_session_is_a_hang_up() -> None:
    outcome: list[BaseException] = []

    async def menu(session: AgiSession) -> None:
        try:
            await session.answer()
        except ChannelHungUp as exc:
            outcome.append(exc)
            assert session.hung_up

    async with serving({"ivr": menu}) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEADERS)
        assert await reader.readline() == b"ANSWER\n"
        writer.close()
        await writer.wait_closed()
        await until(lambda: server.sessions == 0)
    assert [str(e) for e in outcome] == ["Asterisk closed the connection"]


async def test_no_reply_within_the_reply_timeout_is_a_protocol_error() -> None:
    outcome: list[BaseException] = []

    async def menu(session: AgiSession) -> None:
        try:
            await session.answer()
        except AgiProtocolError as exc:
            outcome.append(exc)

    async with serving({"ivr": menu}, reply_timeout=0.2) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEADERS)
        assert await reader.readline() == b"ANSWER\n"
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # gave up on us and closed
        writer.close()
        await writer.wait_closed()
        await until(lambda: server.sessions == 0)
    assert [str(e) for e in outcome] == ["no reply to ANSWER within 0.2 s"]


async def test_failure_on_a_live_channel_is_a_command_error_after_the_grace() -> None:
    """``-1`` with no HANGUP behind it: a missing prompt, not a hang-up; replies stay in step."""
    seen: dict[str, object] = {}

    async def menu(session: AgiSession) -> None:
        with pytest.raises(AgiCommandError) as info:
            await session.stream_file("no-such-file", "1")
        seen["reply"] = info.value.reply.text
        seen["hung_up"] = session.hung_up
        seen["exec"] = await session.exec_("Gosub", "sub-x", "s", "1")
        with pytest.raises(AgiCommandError, match="ANSWER: 510 Invalid or unknown command"):
            await session.answer()

    async with serving({"ivr": menu}, hangup_grace=0.1) as (_, port):
        commands = await fake_asterisk(
            port,
            [
                b"200 result=-1 endpos=0\n",
                b"100 result=0 Trying...\n200 result=0 Gosub complete\n",
                b"510 Invalid or unknown command\n",
            ],
        )
    assert commands == [b"STREAM FILE no-such-file 1\n", b"EXEC Gosub sub-x,s,1\n", b"ANSWER\n"]
    assert seen == {"reply": "result=-1 endpos=0", "hung_up": False, "exec": 0}


async def test_malformed_headers_are_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async with serving({"ivr": _never_called}) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(2):
            assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        await until(lambda: server.sessions == 0)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "malformed headers" in warning.getMessage()
    assert "HTTP" in warning.getMessage()


async def test_start_reports_the_bound_port_and_refuses_a_second_start() -> None:
    server = AgiServer()
    host, port = await server.start("127.0.0.1", 0)
    try:
        assert host == "127.0.0.1" and port > 0
        with pytest.raises(RuntimeError):
            await server.start("127.0.0.1", 0)
    finally:
        await server.stop()
    await server.stop()  # idempotent
