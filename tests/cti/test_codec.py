"""The AMI decoder: whole, byte by byte, at every split point, and on hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from cti.codec import AmiDecoder, encode, escape, header_problem, unescape

FIXTURES = Path(__file__).parent.parent / "fixtures"

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
EVENT = (
    "Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/far-00000001\r\n"
    "CallerIDNum: 008613800138000\r\nCallerIDName: 张伟 José O\\'Brien 😀\r\n"
    "AccountCode: \r\nUniqueid: 1.1\r\n\r\n"
).encode()
EXPECTED = {
    "Event": "Newchannel",
    "Privilege": "call,all",
    "Channel": "PJSIP/far-00000001",
    "CallerIDNum": "008613800138000",
    "CallerIDName": "张伟 José O\\'Brien 😀",
    "AccountCode": "",
    "Uniqueid": "1.1",
}


def test_banner_is_not_glued_to_first_message() -> None:
    dec = AmiDecoder()
    assert dec.feed(BANNER + b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n") == [
        {"Response": "Success", "Message": "Authentication accepted"}
    ]
    assert dec.banner == "Asterisk Call Manager/11.0.0"
    assert dec.take_problems() == []


def test_whole_stream() -> None:
    dec = AmiDecoder()
    assert dec.feed(BANNER + EVENT + EVENT) == [EXPECTED, EXPECTED]


def test_byte_by_byte() -> None:
    dec = AmiDecoder()
    out = []
    for i in range(len(BANNER + EVENT)):
        out += dec.feed((BANNER + EVENT)[i : i + 1])
    assert out == [EXPECTED]
    assert dec.take_problems() == []


def test_every_split_point_keeps_multibyte_names_intact() -> None:
    data = BANNER + EVENT
    for cut in range(1, len(data)):
        dec = AmiDecoder()
        out = dec.feed(data[:cut]) + dec.feed(data[cut:])
        assert out == [EXPECTED], cut


def test_lf_only_and_mixed_line_ends() -> None:
    dec = AmiDecoder(expect_banner=False)
    text = b"Event: A\nX: 1\n\nEvent: B\r\nX: 2\r\n\r\nEvent: C\nX: 3\r\n\n"
    assert [m["Event"] for m in dec.feed(text)] == ["A", "B", "C"]


def test_eof_mid_frame_drops_and_reports() -> None:
    dec = AmiDecoder()
    assert dec.feed(BANNER + EVENT[:40]) == []
    dec.eof()
    (problem,) = dec.take_problems()
    assert problem.kind == "truncated"


def test_repeated_headers_are_kept() -> None:
    dec = AmiDecoder(expect_banner=False)
    (msg,) = dec.feed(b"Event: X\r\nChanVariable: A=1\r\nChanVariable: B=\r\n\r\n")
    assert msg["ChanVariable"].split("\n") == ["A=1", "B="]


def test_one_megabyte_line_is_skipped_and_stream_continues() -> None:
    dec = AmiDecoder(max_frame=64 * 1024)
    huge = b"Event: Huge\r\nJunk: " + b"x" * (1024 * 1024) + b"\r\n\r\n"
    out = dec.feed(BANNER)
    for i in range(0, len(huge), 4096):
        out += dec.feed(huge[i : i + 4096])
    out += dec.feed(EVENT)
    assert out == [EXPECTED]
    kinds = [p.kind for p in dec.take_problems()]
    assert kinds == ["oversized"]


def test_huge_frame_in_one_read_is_skipped() -> None:
    dec = AmiDecoder(max_frame=1000)
    big = b"Event: Big\r\n" + b"A: b\r\n" * 1000 + b"\r\n"
    assert dec.feed(BANNER + big + EVENT) == [EXPECTED]
    assert [p.kind for p in dec.take_problems()] == ["oversized"]


def test_garbage_lines_are_reported_not_fatal() -> None:
    dec = AmiDecoder()
    out = dec.feed(BANNER + b"\x00\xff garbage without colon\r\n\r\n" + EVENT)
    assert out[-1] == EXPECTED
    kinds = {p.kind for p in dec.take_problems()}
    assert kinds == {"not-utf8", "bad-line"}


def test_latin1_frame_loses_no_byte() -> None:
    dec = AmiDecoder(expect_banner=False)
    (msg,) = dec.feed("Event: X\r\nCallerIDName: José\r\n\r\n".encode("latin-1"))
    assert msg["CallerIDName"] == "José"
    assert [p.kind for p in dec.take_problems()] == ["not-utf8"]


def test_non_asterisk_banner_is_reported() -> None:
    dec = AmiDecoder()
    assert dec.feed(b"SSH-2.0-OpenSSH_9.2\r\n") == []
    (problem,) = dec.take_problems()
    assert problem.kind == "bad-banner"
    assert dec.banner is None


def test_frame_filter_skips_before_decoding() -> None:
    dec = AmiDecoder(expect_banner=False, frame_filter=lambda f: not f.startswith(b"Event: VarSet"))
    out = dec.feed(b"Event: VarSet\r\nValue: \r\n\r\nEvent: Hangup\r\n\r\n")
    assert out == [{"Event": "Hangup"}]


def test_capture_decodes_every_frame() -> None:
    data = (FIXTURES / "capture_10calls.txt").read_bytes()
    whole = AmiDecoder(expect_banner=False).feed(data)
    assert len(whole) == data.count(b"\n\n") - data.count(b"\n\n\n")
    assert sum(1 for m in whole if m.get("Event") == "AgentConnect") == 10
    chunked: list[dict[str, str]] = []
    dec = AmiDecoder(expect_banner=False)
    for i in range(0, len(data), 1000):
        chunked += dec.feed(data[i : i + 1000])
    assert chunked == whole


@pytest.mark.parametrize(
    ("wire", "text"),
    [
        ("O\\'Brien", "O'Brien"),
        ('say \\"hi\\"', 'say "hi"'),
        ("a\\\\b", "a\\b"),
        ("plain", "plain"),
    ],
)
def test_unescape_and_escape_round_trip(wire: str, text: str) -> None:
    assert unescape(wire) == text
    assert escape(text) == wire


def test_encode_refuses_header_injection() -> None:
    assert encode({"Action": "Ping", "ActionID": "1"}) == b"Action: Ping\r\nActionID: 1\r\n\r\n"
    with pytest.raises(ValueError):
        encode({"Action": "Originate", "CallerID": "x\r\nAction: Hangup"})


@pytest.mark.parametrize("char", ["\r", "\n", "\r\n", "\x00", "\x1b", "\x7f", "\x85", "\ud800"])
@pytest.mark.parametrize("where", ["{}x", "x{}y", "y{}"])
def test_encode_refuses_a_control_character_anywhere(char: str, where: str) -> None:
    """At the start or end too: nothing is trimmed on the way out, it is refused."""
    bad = where.format(char)
    assert header_problem(bad) is not None
    with pytest.raises(ValueError):
        encode({"Action": "QueuePause", "Reason": bad})
    with pytest.raises(ValueError):
        encode({"Action": "QueuePause", bad: "x"})
    with pytest.raises(ValueError):
        encode({"Event": "X", "Output": ["fine", bad]})


def test_encode_refuses_a_key_that_names_another_header() -> None:
    with pytest.raises(ValueError):
        encode({"Action": "Ping", "Reason: x\r\nAction": "Logoff"})
    with pytest.raises(ValueError):
        encode({"Action: Logoff": "x"})


def test_header_problem_allows_any_printable_text() -> None:
    for text in ("", "lunch break", "张伟 José O\\'Brien 😀", "Local/1001@agents/n", '"A" <1>'):
        assert header_problem(text) is None
    assert "line break" in (header_problem("a\rb") or "")
    assert "U+0000" in (header_problem("\x00") or "")
    assert "surrogate" in (header_problem("\udfff") or "")
