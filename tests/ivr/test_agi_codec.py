"""The FastAGI codec: header block and replies whole, byte by byte, at every split point, and on
hostile input; command lines quoted the way res_agi's parse_args reads them."""

from __future__ import annotations

import pytest

from ivr.agi import (
    AgiError,
    AgiLocalError,
    AgiProtocolError,
    AgiRequest,
    Hangup,
    HeaderDecoder,
    Reply,
    ReplyDecoder,
    ReplyItem,
    format_command,
    split_command,
)

HEADERS = (
    "agi_network: yes\n"
    "agi_network_script: ivr/main?lang=fr&vip=1&note=a%20b\n"
    "agi_request: agi://127.0.0.1:4573/ivr/main?lang=fr&vip=1&note=a%20b\n"
    "agi_channel: Local/s@incoming-00000000;2\n"
    "agi_language: fr\n"
    "agi_type: Local\n"
    "agi_uniqueid: astlab-1795418875.1\n"
    "agi_version: 22.10.1\n"
    "agi_callerid: +15550100001\n"
    "agi_calleridname: José Müller 张伟\n"
    "agi_callingpres: 0\n"
    "agi_callingani2: 0\n"
    "agi_callington: 0\n"
    "agi_callingtns: 0\n"
    "agi_dnid: unknown\n"
    "agi_rdnis: unknown\n"
    "agi_context: incoming\n"
    "agi_extension: s\n"
    "agi_priority: 6\n"
    "agi_enhanced: 0.0\n"
    "agi_accountcode: \n"
    "agi_threadid: 139871984142016\n"
    "agi_arg_1: first arg\n"
    "agi_arg_2: \n"
    "agi_arg_3: third\n"
    "\n"
).encode()


def _whole(data: bytes) -> AgiRequest:
    request = HeaderDecoder().feed(data)
    assert request is not None
    return request


def test_headers_whole_and_accessors() -> None:
    request = _whole(HEADERS)
    assert request.headers["agi_network"] == "yes"
    assert request.headers["agi_accountcode"] == ""
    assert request.script == "ivr/main"
    assert request.query == {"lang": "fr", "vip": "1", "note": "a b"}
    assert request.args == ["first arg", "", "third"]
    assert request.uniqueid == "astlab-1795418875.1"
    assert request.channel == "Local/s@incoming-00000000;2"
    assert request.callerid == "+15550100001"
    assert request.calleridname == "José Müller 张伟"
    assert request.language == "fr"
    assert request.context == "incoming"
    assert request.extension == "s"
    assert request.dnid is None


def test_headers_byte_by_byte() -> None:
    decoder = HeaderDecoder()
    results = [decoder.feed(HEADERS[i : i + 1]) for i in range(len(HEADERS))]
    assert all(r is None for r in results[:-1])
    assert results[-1] == _whole(HEADERS)


def test_headers_every_split_point_keeps_multibyte_names() -> None:
    expected = _whole(HEADERS)
    for cut in range(1, len(HEADERS)):
        decoder = HeaderDecoder()
        first = decoder.feed(HEADERS[:cut])
        assert first is None, cut
        assert decoder.feed(HEADERS[cut:]) == expected, cut


def test_headers_crlf_and_bytes_after_the_block_are_kept() -> None:
    decoder = HeaderDecoder()
    request = decoder.feed(HEADERS.replace(b"\n", b"\r\n") + b"HANGUP\n")
    assert request == _whole(HEADERS)
    assert decoder.rest == b"HANGUP\n"
    decoder.eof()  # complete: nothing to report
    with pytest.raises(AgiLocalError):
        decoder.feed(b"more")


def test_unknown_caller_and_missing_script() -> None:
    request = _whole(b"agi_network: yes\nagi_callerid: unknown\nagi_calleridname: unknown\n\n")
    assert request.callerid is None
    assert request.calleridname is None
    assert request.script == ""
    assert request.query == {}
    assert request.args == []
    assert _whole(b"agi_callerid: \n\n").callerid is None


def test_eof_before_the_blank_line() -> None:
    decoder = HeaderDecoder()
    assert decoder.feed(HEADERS[:100]) is None
    with pytest.raises(AgiProtocolError, match="connection closed before the AGI headers ended"):
        decoder.eof()
    with pytest.raises(AgiProtocolError):
        HeaderDecoder().eof()


def test_line_without_separator_is_a_protocol_error() -> None:
    with pytest.raises(AgiProtocolError, match="without ': '"):
        HeaderDecoder().feed(b"agi_network: yes\nGET / HTTP/1.1\n\n")


def test_latin1_header_loses_no_byte() -> None:
    request = _whole("agi_calleridname: José Ñandú\n\n".encode("latin-1"))
    assert request.calleridname == "José Ñandú"


def test_header_byte_limit_even_without_a_line_end() -> None:
    with pytest.raises(AgiProtocolError, match="16384 bytes"):
        HeaderDecoder().feed(b"agi_x: " + b"a" * 20_000)
    decoder = HeaderDecoder()
    with pytest.raises(AgiProtocolError, match="bytes"):
        for _ in range(200):
            decoder.feed(b"agi_x: " + b"b" * 100 + b"\n")


def test_header_line_limit() -> None:
    block = b"".join(b"agi_%d: v\n" % i for i in range(257)) + b"\n"
    with pytest.raises(AgiProtocolError, match="256"):
        HeaderDecoder().feed(block)
    assert len(_whole(b"".join(b"agi_%d: v\n" % i for i in range(256)) + b"\n").headers) == 256


USAGE_BLOCK = (
    b"520-Invalid command syntax.  Proper usage follows:\n"
    b" Usage: GET VARIABLE <variablename>\n"
    b" Example return code: 200 result=1 (testvariable)\n"
    b"520 End of proper usage.\n"
)
REPLIES = (
    b"200 result=0\n"
    b"200 result=49 endpos=8000\n"
    b"200 result= (timeout)\n"
    b"200 result=12 (timeout)\n"
    b"HANGUP\n"
    + "200 result=1 (José O'Brien (VIP) a) b)\n".encode()
    + b"510 Invalid or unknown command\n"
    b"511 Command Not Permitted on a dead channel or intercept routine\n"
    + USAGE_BLOCK
    + b"520 Invalid command syntax.  Proper usage not available.\n"
    b"100 result=0 Trying...\n"
    b"200 result=0 Gosub complete\n"
    b'200 result=1 (speech) endpos=0 results=1 score0=900 text0="hello world" grammar0=menu\n'
    b"200 result=-1 endpos=0\r\n"
)
EXPECTED: list[ReplyItem] = [
    Reply(200, "0", text="result=0"),
    Reply(200, "49", extra={"endpos": "8000"}, text="result=49 endpos=8000"),
    Reply(200, "", "timeout", text="result= (timeout)"),
    Reply(200, "12", "timeout", text="result=12 (timeout)"),
    Hangup(),
    Reply(200, "1", "José O'Brien (VIP) a) b", text="result=1 (José O'Brien (VIP) a) b)"),
    Reply(510, text="Invalid or unknown command"),
    Reply(511, text="Command Not Permitted on a dead channel or intercept routine"),
    Reply(
        520,
        text="Invalid command syntax.  Proper usage follows:\n"
        " Usage: GET VARIABLE <variablename>\n"
        " Example return code: 200 result=1 (testvariable)\n"
        "End of proper usage.",
    ),
    Reply(520, text="Invalid command syntax.  Proper usage not available."),
    Reply(100, "0", text="result=0 Trying..."),
    Reply(200, "0", text="result=0 Gosub complete"),
    Reply(
        200,
        "1",
        "speech",
        {
            "endpos": "0",
            "results": "1",
            "score0": "900",
            "text0": "hello world",
            "grammar0": "menu",
        },
        'result=1 (speech) endpos=0 results=1 score0=900 text0="hello world" grammar0=menu',
    ),
    Reply(200, "-1", extra={"endpos": "0"}, text="result=-1 endpos=0"),
]


def test_replies_whole() -> None:
    assert ReplyDecoder().feed(REPLIES) == EXPECTED


def test_replies_byte_by_byte() -> None:
    decoder = ReplyDecoder()
    out: list[ReplyItem] = []
    for i in range(len(REPLIES)):
        out += decoder.feed(REPLIES[i : i + 1])
    assert out == EXPECTED


def test_replies_every_split_point() -> None:
    for cut in range(1, len(REPLIES)):
        decoder = ReplyDecoder()
        assert decoder.feed(REPLIES[:cut]) + decoder.feed(REPLIES[cut:]) == EXPECTED, cut


def test_usage_block_is_one_reply_and_the_next_reply_is_in_step() -> None:
    decoder = ReplyDecoder()
    assert decoder.feed(USAGE_BLOCK[:-10]) == []
    items = decoder.feed(USAGE_BLOCK[-10:] + b"200 result=1 (astlab-1.0)\n")
    assert [type(i) for i in items] == [Reply, Reply]
    usage, after = items
    assert isinstance(usage, Reply) and usage.code == 520
    assert "Example return code: 200 result=1 (testvariable)" in usage.text
    assert after == Reply(200, "1", "astlab-1.0", text="result=1 (astlab-1.0)")


def test_latin1_reply_loses_no_byte() -> None:
    (reply,) = ReplyDecoder().feed("200 result=1 (Ñandú)\n".encode("latin-1"))
    assert isinstance(reply, Reply) and reply.data == "Ñandú"


@pytest.mark.parametrize(
    "line",
    [
        b"garbage\n",
        b"\n",
        b"300 result=0\n",
        b"200 ok\n",
        b"200\n",
        b"510-Invalid\n",
        b"200 result=1 (never closed\n",
        b"hangup\n",
    ],
)
def test_garbage_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(AgiProtocolError):
        ReplyDecoder().feed(line)


def test_oversize_line_complete_or_not() -> None:
    with pytest.raises(AgiProtocolError, match="longer than"):
        ReplyDecoder().feed(b"200 result=1 (" + b"x" * 70_000 + b")\n")
    decoder = ReplyDecoder(max_line=1000)
    with pytest.raises(AgiProtocolError, match="longer than 1000"):
        for _ in range(20):
            decoder.feed(b"y" * 100)
    block = ReplyDecoder(max_line=1000)
    block.feed(b"520-Invalid command syntax.  Proper usage follows:\n")
    with pytest.raises(AgiProtocolError, match="usage block"):
        for _ in range(20):
            block.feed(b"u" * 99 + b"\n")


def test_errors_share_one_base_and_split_local_remote() -> None:
    assert issubclass(AgiProtocolError, AgiError)
    assert issubclass(AgiLocalError, AgiError) and issubclass(AgiLocalError, ValueError)
    assert not issubclass(AgiProtocolError, ValueError)


def test_format_command_quotes_only_where_needed() -> None:
    assert format_command("ANSWER") == b"ANSWER\n"
    assert format_command("GET DATA", "menu", 5000, 1) == b"GET DATA menu 5000 1\n"
    assert format_command("STREAM FILE", "welcome", "") == b'STREAM FILE welcome ""\n'
    assert format_command("SET VARIABLE", "X", "a b") == b'SET VARIABLE X "a b"\n'
    assert format_command("VERBOSE", 'say "hi" \\o/', 1) == b'VERBOSE "say \\"hi\\" \\\\o/" 1\n'
    assert format_command("GET VARIABLE", "CHANNEL(linkedid)") == (
        b"GET VARIABLE CHANNEL(linkedid)\n"
    )
    assert format_command("SET VARIABLE", "NAME", "José") == "SET VARIABLE NAME José\n".encode()


@pytest.mark.parametrize("bad", ["x\nHANGUP", "x\r", "nul\x00", "\n"])
def test_format_command_refuses_injection(bad: str) -> None:
    with pytest.raises(AgiLocalError):
        format_command("SET VARIABLE", "CUSTOMER", bad)
    with pytest.raises(ValueError):
        format_command("SET VARIABLE", "CUSTOMER", bad)


@pytest.mark.parametrize("verb", ["", "GET  DATA", "EXEC\nHANGUP", "ANSWER ", "GET_DATA"])
def test_format_command_refuses_bad_verbs(verb: str) -> None:
    with pytest.raises(AgiLocalError):
        format_command(verb)


@pytest.mark.parametrize(
    "args",
    [
        ("plain",),
        ("",),
        ("two words", "", "tab\there"),
        ('quote " inside', "back\\slash", '\\"', "trailing\\"),
        ('"', "\\", "(a) b=c", "José 张伟"),
    ],
)
def test_split_command_reverses_format_command(args: tuple[str, ...]) -> None:
    line = format_command("SET VARIABLE", *args).decode().removesuffix("\n")
    assert split_command(line) == ["SET", "VARIABLE", *args]


def test_split_command_follows_parse_args_quirks() -> None:
    assert split_command('a"b c"d  e') == ["ab cd", "e"]
    assert split_command(' lead\\ space\t"" x\\') == ["lead space", "", "x"]
    assert split_command('\\"q') == ['"q']
    assert split_command("") == []
