"""The simulated Asterisk side (ivr.client) against a tiny scripted FastAGI server: the exact
header block, every verb it serves, hang-ups, dead mode, 510/511/520 as res_agi writes them."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest

from ivr.agi import AgiLocalError, Hangup, ReplyDecoder, ReplyItem, format_command
from ivr.client import TIMEOUT, AgiCall, AgiTranscript, CallerScript, run_agi

CALL = AgiCall(
    channel="Local/s@incoming-00000000;2",
    uniqueid="astlab-1795418875.1",
    linkedid="astlab-1795418875.0",
    callerid_num="+15550100001",
    callerid_name="Alice Customer",
    priority=6,
)
DEAD = b"511 Command Not Permitted on a dead channel or intercept routine\n"


@dataclass
class Exchange:
    """What the scripted server saw: the header bytes, every byte after them, the replies."""

    port: int = 0
    headers: bytes = b""
    wire: bytes = b""
    items: list[ReplyItem] = field(default_factory=list)


async def scripted(
    commands: list[bytes], caller: CallerScript | None = None, call: AgiCall = CALL
) -> tuple[Exchange, AgiTranscript]:
    """Serve one call: send each command, wait for its reply (skipping HANGUP), then close."""
    seen = Exchange()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.headers = await reader.readuntil(b"\n\n")
            decoder = ReplyDecoder()
            for command in commands:
                writer.write(command)
                answered = len([i for i in seen.items if not isinstance(i, Hangup)]) + 1
                while len([i for i in seen.items if not isinstance(i, Hangup)]) < answered:
                    data = await reader.read(4096)
                    assert data, "the client closed first"
                    seen.wire += data
                    seen.items += decoder.feed(data)
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = seen.port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(5):
            transcript = await run_agi("127.0.0.1", port, call, caller or CallerScript())
    finally:
        server.close()
        await server.wait_closed()
    return seen, transcript


def lines(*commands: str) -> list[bytes]:
    return [c.encode() + b"\n" for c in commands]


async def test_header_block_is_exactly_what_res_agi_sends() -> None:
    call = AgiCall(
        channel="PJSIP/trunk-0000002a",
        uniqueid="astlab-1795418875.7",
        linkedid="astlab-1795418875.7",
        callerid_num=None,
        callerid_name=None,
        language="fr",
        dnid="5000",
        context="from-trunk",
        extension="5000",
        priority=3,
        script="ivr/main",
        query={"lang": "fr", "note": "a b"},
        args=("one", ""),
        accountcode="acme",
        threadid=140001,
    )
    assert call.headers("10.0.0.5", 4573) == (
        b"agi_network: yes\n"
        b"agi_network_script: ivr/main?lang=fr&note=a+b\n"
        b"agi_request: agi://10.0.0.5:4573/ivr/main?lang=fr&note=a+b\n"
        b"agi_channel: PJSIP/trunk-0000002a\n"
        b"agi_language: fr\n"
        b"agi_type: PJSIP\n"
        b"agi_uniqueid: astlab-1795418875.7\n"
        b"agi_version: 22.10.1\n"
        b"agi_callerid: unknown\n"
        b"agi_calleridname: unknown\n"
        b"agi_callingpres: 0\n"
        b"agi_callingani2: 0\n"
        b"agi_callington: 0\n"
        b"agi_callingtns: 0\n"
        b"agi_dnid: 5000\n"
        b"agi_rdnis: unknown\n"
        b"agi_context: from-trunk\n"
        b"agi_extension: 5000\n"
        b"agi_priority: 3\n"
        b"agi_enhanced: 0.0\n"
        b"agi_accountcode: acme\n"
        b"agi_threadid: 140001\n"
        b"agi_arg_1: one\n"
        b"agi_arg_2: \n"
        b"\n"
    )
    seen, transcript = await scripted([], call=call)
    assert seen.headers == call.headers("127.0.0.1", seen.port)
    assert transcript.commands == [] and transcript.agi_status == "SUCCESS"


async def test_lab_call_headers_and_line_breaks_refused() -> None:
    block = CALL.headers().decode()
    assert "agi_type: Local\n" in block
    assert "agi_callerid: +15550100001\nagi_calleridname: Alice Customer\n" in block
    assert "agi_network_script: ivr\nagi_request: agi://127.0.0.1:4573/ivr\n" in block
    assert "agi_dnid: unknown\n" in block and "agi_accountcode: \n" in block
    assert AgiCall("x", "1", "1", script="").headers().startswith(b"agi_network: yes\nagi_request")
    assert b"agi://[::1]:4573/ivr" in AgiCall("x", "1", "1").headers("::1")
    with pytest.raises(AgiLocalError):
        AgiCall("x", "1", "1", callerid_name="a\nagi_extension: 666").headers()


async def test_answer_stream_file_and_key_presses() -> None:
    seen, transcript = await scripted(
        lines(
            "ANSWER",
            'STREAM FILE welcome ""',
            "STREAM FILE menu 123",
            "STREAM FILE menu 123 800",
            "STREAM FILE menu 123",
            "STREAM FILE menu 123",
        ),
        CallerScript(["2", "9", TIMEOUT]),
    )
    assert seen.wire == (
        b"200 result=0\n"
        b"200 result=0 endpos=16000\n"  # no escape digits: the caller's keys wait
        b"200 result=50 endpos=8000\n"  # "2"
        b"200 result=0 endpos=16800\n"  # "9" is no escape digit: ignored, played to the end
        b"200 result=0 endpos=16000\n"  # timeout
        b"200 result=0 endpos=16000\n"  # script exhausted
    )
    assert transcript.digits == "29"


async def test_get_data_collects_until_max_hash_or_timeout() -> None:
    seen, transcript = await scripted(
        lines(
            "GET DATA menu 3000 4",
            "GET DATA menu 3000 4",
            "GET DATA menu 3000 4",
            "GET DATA menu 3000 4",
            "WAIT FOR DIGIT 2000",
            'GET DATA "account number"',
            "GET DATA menu 3000 1",
            "WAIT FOR DIGIT 2000",
            "WAIT FOR DIGIT -1",
        ),
        CallerScript(["123#", "12", TIMEOUT, "98765", "4444#", "#", "*"]),
    )
    assert seen.wire == (
        b"200 result=123\n"
        b"200 result=12 (timeout)\n"
        b"200 result= (timeout)\n"
        b"200 result=9876\n"
        b"200 result=53\n"  # the "5" typed ahead
        b"200 result=4444\n"  # maxdigits defaults to 1024, '#' ends
        b"200 result=\n"
        b"200 result=42\n"
        b"200 result=0\n"
    )
    assert transcript.digits == "123#1298765" + "4444##*"


async def test_variables_functions_and_the_rest() -> None:
    seen, transcript = await scripted(
        [
            format_command("SET VARIABLE", "NAME", 'O"Brien \\ x'),
            *lines(
                "GET VARIABLE NAME",
                'GET VARIABLE "CHANNEL(linkedid)"',
                "GET VARIABLE CHANNEL(uniqueid)",
                "GET VARIABLE CALLERID(num)",
                "GET VARIABLE UNIQUEID",
                "GET VARIABLE NOPE",
                "GET VARIABLE FOO(bar)",
                'GET FULL VARIABLE "${CALLERID(name)}/${NAME}/${NOPE}"',
                "GET FULL VARIABLE ${UNIQUEID} PJSIP/other-1",
                'SET VARIABLE EMPTY ""',
                "GET VARIABLE EMPTY",
                'VERBOSE "hello world" 3',
                "EXEC Playback hello-world",
                "NOOP",
                'SAY NUMBER 42 ""',
                "SAY DIGITS 0123 #",
                'say digits 1 ""',
            ),
        ]
    )
    assert seen.wire.decode() == (
        "200 result=1\n"
        '200 result=1 (O"Brien \\ x)\n'
        "200 result=1 (astlab-1795418875.0)\n"
        "200 result=1 (astlab-1795418875.1)\n"
        "200 result=1 (+15550100001)\n"
        "200 result=1 (astlab-1795418875.1)\n"
        "200 result=0\n"
        "200 result=0\n"
        '200 result=1 (Alice Customer/O"Brien \\ x/)\n'
        "200 result=0\n"
        "200 result=1\n"
        "200 result=1 ()\n"
        "200 result=1\n"
        "200 result=0\n"
        "200 result=0\n"
        "200 result=0\n"
        "200 result=0\n"
        "200 result=0\n"
    )
    assert transcript.variables == {"NAME": 'O"Brien \\ x', "EMPTY": ""}
    assert transcript.commands[0] == 'SET VARIABLE NAME "O\\"Brien \\\\ x"'


async def test_unknown_commands_and_usage_blocks() -> None:
    seen, _ = await scripted(
        lines("FROB", "GET", "GET DATA", "WAIT FOR DIGIT soon", "STREAM FILE x", "SET VARIABLE X")
    )
    usage = [item.text for item in seen.items if not isinstance(item, Hangup)]
    assert seen.wire.startswith(
        b"510 Invalid or unknown command\n"
        b"510 Invalid or unknown command\n"
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b" Usage: GET DATA <file to be streamed> [timeout] [max digits]\n"
        b" Stream the given file, and receive DTMF data.\n"
        b"520 End of proper usage.\n"
        b"520-Invalid command syntax.  Proper usage follows:\n"
    )
    assert [item.code for item in seen.items if not isinstance(item, Hangup)] == [
        510,
        510,
        520,
        520,
        520,
        520,
    ]
    assert "Usage: SET VARIABLE" in usage[-1]


async def test_hangup_command_kills_the_channel() -> None:
    seen, transcript = await scripted(lines("HANGUP", "ANSWER", "SET VARIABLE A 1", "NOOP"))
    assert seen.wire == b"200 result=1\nHANGUP\n" + DEAD + b"200 result=1\n200 result=0\n"
    assert transcript.agi_status == "HANGUP"
    assert not transcript.caller_hung_up
    seen, _ = await scripted(lines("HANGUP PJSIP/elsewhere-1", "ANSWER"))
    assert seen.wire == b"200 result=-1\n200 result=0\n"


@pytest.mark.parametrize(
    ("verb", "command", "failure"),
    [
        ("STREAM FILE", "STREAM FILE menu 12", b"200 result=-1 endpos=0\n"),
        ("get data", "GET DATA menu 3000 1", b"200 result=-1\n"),
        ("WAIT  FOR DIGIT", "WAIT FOR DIGIT 5000", b"200 result=-1\n"),
        ("SAY NUMBER", 'SAY NUMBER 7 ""', b"200 result=-1\n"),
        ("ANSWER", "ANSWER", b"200 result=-1\n"),
    ],
)
async def test_caller_hangs_up_during_a_channel_command(
    verb: str, command: str, failure: bytes
) -> None:
    seen, transcript = await scripted(
        lines("NOOP", command, "WAIT FOR DIGIT 100", "GET VARIABLE CHANNEL(linkedid)", "VERBOSE x"),
        CallerScript(["1"], hangup_on=verb),
    )
    assert seen.wire == (
        b"200 result=0\n"
        + failure
        + b"HANGUP\n"
        + DEAD
        + b"200 result=1 (astlab-1795418875.0)\n"
        + b"200 result=1\n"
    )
    assert transcript.caller_hung_up and transcript.agi_status == "HANGUP"
    assert transcript.digits == ""


async def test_hangup_during_an_instant_command_and_after_n_commands() -> None:
    seen, _ = await scripted(
        lines("SET VARIABLE A 1", "SET VARIABLE B 2", "ANSWER"),
        CallerScript(hangup_on="SET VARIABLE"),
    )
    assert seen.wire == b"200 result=1\nHANGUP\n200 result=1\n" + DEAD
    seen, transcript = await scripted(
        lines("ANSWER", "NOOP", "STREAM FILE x 1", "EXEC Wait 1"), CallerScript(hangup_after=2)
    )
    assert seen.wire == b"200 result=0\n200 result=0\nHANGUP\n" + DEAD + b"200 result=0\n"
    assert transcript.agi_status == "HANGUP"


async def test_hangup_before_the_first_command() -> None:
    seen, transcript = await scripted(lines("ANSWER"), CallerScript(hangup_after=0))
    assert seen.items[0] == Hangup()
    assert seen.wire == b"HANGUP\n" + DEAD
    assert transcript.caller_hung_up


async def test_usage_error_beats_the_hangup_point_and_511_beats_usage() -> None:
    seen, _ = await scripted(
        lines("GET DATA", "GET DATA menu", "GET DATA"), CallerScript(hangup_on="GET DATA")
    )
    assert seen.wire.endswith(b"520 End of proper usage.\n200 result=-1\nHANGUP\n" + DEAD)


async def test_refused_connection_is_agistatus_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transcript = await run_agi("127.0.0.1", port, CALL, CallerScript())
    assert transcript.agi_status == "FAILURE"
    assert transcript.commands == []


def test_caller_script_is_validated() -> None:
    assert CallerScript(["1", TIMEOUT, "*#"]).presses == ("1", TIMEOUT, "*#")
    assert CallerScript(hangup_on="  get   data ").hangup_on == "GET DATA"
    for bad in (["12x"], [""], ["Timeout"]):
        with pytest.raises(ValueError):
            CallerScript(bad)
    with pytest.raises(ValueError):
        CallerScript(hangup_after=-1)


async def test_a_listening_caller_answers_what_each_prompt_asks() -> None:
    heard: list[str] = []

    def listens(prompt: str) -> str | None:
        heard.append(prompt)
        return {"ivr/en/enter-pin": "1234#", "ivr/en/welcome": TIMEOUT}.get(prompt)

    caller = CallerScript(presses=["7"], listens=listens)
    _, transcript = await scripted(
        lines(
            'STREAM FILE ivr/en/welcome "0123456789"',
            "GET DATA ivr/en/enter-pin 5000 4",
            "GET DATA ivr/en/main-menu 5000 1",
        ),
        caller,
    )
    assert heard == ["ivr/en/welcome", "ivr/en/enter-pin", "ivr/en/main-menu"]
    # the welcome played out, the PIN was what the prompt asked, the menu took the script's key
    assert transcript.replies == ["200 result=0 endpos=16000", "200 result=1234", "200 result=7"]


async def test_prompts_can_take_time_and_the_servers_steps_are_timed() -> None:
    waits: list[float] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\n\n")
        for command in lines('STREAM FILE ivr/en/welcome ""', "SET VARIABLE X 1"):
            await asyncio.sleep(0.05)  # the server thinks
            writer.write(command)
            await reader.readline()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await run_agi("127.0.0.1", port, CALL, CallerScript(), audio=lambda line: 0.2, waits=waits)
        took = loop.time() - began
    finally:
        server.close()
        await server.wait_closed()
    assert len(waits) == 2 and all(0.045 <= w < 0.2 for w in waits), waits
    assert took >= 0.3  # the prompt played 0.2 s; SET VARIABLE is instant
