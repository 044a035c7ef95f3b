"""Fuzzing the AMI framing (cti/codec.py's AmiDecoder) and the protocol that feeds it
(cti/ami.py's AmiClientProtocol) with hypothesis, plus a replayed corpus of nasty inputs.

Each ``@given`` test runs ``FUZZ_EXAMPLES`` examples (env var, default 300; 4 such tests
here). Hypothesis keeps no database (``database=None``) and its caches go to the temp dir,
so nothing is written into the repo; it is derandomized when ``CI`` is set, so a CI run
tries the same examples every time; locally each run draws new ones. A failure found here
goes into tests/fixtures/fuzz/ami/ (see the README there), whose every file is replayed by
``test_corpus_file``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import string
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from cti.ami import AmiClient, AmiClientProtocol, AmiEvent, Item, ResyncBegin
from cti.codec import DEFAULT_MAX_FRAME, AmiDecoder, DecodeProblem, Message, encode
from cti.settings import PbxSettings
from tests.support.logs import recording

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cti-hypothesis")  # its caches too
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CORPUS = Path(__file__).parent.parent / "fixtures" / "fuzz" / "ami"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
KINDS = {"oversized", "bad-banner", "not-utf8", "bad-line", "truncated"}  # codec.py's docstring

Outcome = tuple[list[Message], list[DecodeProblem], str | None]


def decode(chunks: list[bytes], **options: Any) -> Outcome:
    """Messages, problems (eof included) and banner from feeding ``chunks`` one by one."""
    decoder = AmiDecoder(**options)
    messages: list[Message] = []
    for chunk in chunks:
        messages += decoder.feed(chunk)
    decoder.eof()
    return messages, decoder.take_problems(), decoder.banner


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def mark(seq: int) -> bytes:
    """A well-formed event placed after each nasty piece: it must always come through."""
    return encode({"Event": "FuzzMark", "Seq": str(seq)})


def marks(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.get("Event") == "FuzzMark"]


# --- strategies -------------------------------------------------------------------------------

NAMES = st.text(string.ascii_letters + string.digits + "-_()/;@.", min_size=1, max_size=16)
# what encode writes (cti.codec.header_problem): no control character; the decoder meets
# those as raw bytes, in the corpus and in test_random_bytes_never_raise_and_split_the_same
VALUES = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=30)
MESSAGES = st.dictionaries(NAMES, st.lists(VALUES, min_size=1, max_size=3), min_size=1, max_size=6)
ENDINGS = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    """A valid message with CRLF or LF-only line ends."""
    data = encode(draw(MESSAGES))
    return data if draw(st.booleans()) else data.replace(b"\r\n", b"\n")


@st.composite
def nasty_lines(draw: st.DrawFn) -> bytes:
    """A frame of hostile lines: Latin-1, NUL, lone CR, no colon, no space, huge, binary."""
    line = st.one_of(
        st.binary(max_size=40).filter(lambda b: b"\n" not in b),
        st.sampled_from(
            [
                "CallerIDName: José Ñandú".encode("latin-1"),
                b"CallerIDName: A\x00B",
                b"\x00\x00",
                b"Value: a\rb",
                b"\r",
                b"AccountCode:",
                b"Variable:QUEUEWAIT",
                b"no colon at all",
                b"ChanVariable: X=1",
                b"Asterisk Call Manager/11.0.0",
                "CallerIDName: 张伟 😀".encode(),
            ]
        ),
        st.integers(50, 1500).map(lambda n: b"Junk: " + b"x" * n),
    )
    lines = draw(st.lists(line, min_size=1, max_size=8))
    return b"".join(line + draw(ENDINGS) for line in lines)


CORPUS_PIECES = [p.read_bytes() for p in sorted(CORPUS.glob("*.bin"))]
NASTY = st.one_of(
    nasty_lines(),
    encoded(),
    st.binary(max_size=200),
    st.sampled_from(CORPUS_PIECES) if CORPUS_PIECES else st.nothing(),
).map(lambda b: b + b"\r\n\r\n")  # whatever it holds, a blank line ends it
FIRST_LINES = st.one_of(
    st.just(BANNER),
    st.just(b"Asterisk Call Manager/11.0.0\n"),
    st.sampled_from([b"SSH-2.0-OpenSSH_9.2\r\n", b"\x16\x03\x01\x00\xa5\x01\r\n", b"\r\n"]),
    st.integers(100, 3000).map(lambda n: b"HTTP/1.1 " + b"y" * n + b"\r\n"),
)
MAX_FRAMES = st.sampled_from([120, 300, 2000, DEFAULT_MAX_FRAME])


def near_limit(max_frame: int) -> st.SearchStrategy[bytes]:
    """A frame from 3 bytes under to 4 bytes over ``max_frame``, the edge of "oversized"."""
    head = b"Event: Edge\r\nPad: "
    pad = st.integers(-3, 4).map(lambda d: b"p" * (max_frame - len(head) + d))
    return st.tuples(pad, ENDINGS, ENDINGS).map(lambda t: head + t[0] + t[1] + t[2])


@st.composite
def streams(draw: st.DrawFn, max_frame: int) -> tuple[bytes, int]:
    """A first line (Asterisk's banner or not), then nasty pieces each followed by a mark."""
    nasty = NASTY if max_frame > 4000 else st.one_of(NASTY, near_limit(max_frame))
    pieces = draw(st.lists(nasty, max_size=6))
    body = b"".join(piece + mark(i) for i, piece in enumerate(pieces))
    return draw(FIRST_LINES) + body, len(pieces)


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """Random reads, their ends often next to a line end (where framing decisions are made)."""
    edges = [i + d for i, byte in enumerate(data) if byte == 0x0A for d in (-1, 0, 1, 2)]
    cut = st.integers(0, len(data))
    if edges:
        cut = st.one_of(cut, st.sampled_from([e for e in edges if 0 <= e <= len(data)]))
    return st.lists(cut, max_size=40).map(lambda cuts: split(data, cuts))


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(max_frame=MAX_FRAMES, data=st.data())
def test_any_split_gives_the_same_messages_and_problems(
    max_frame: int, data: st.DataObject
) -> None:
    """FUZZ_EXAMPLES (default 300) streams of nasty frames (some at the max_frame edge): fed
    whole, byte by byte (when short) and in two random chunkings, the messages, problems and
    banner are identical; every problem has a documented kind; the well-formed event after each
    nasty piece comes through intact."""
    raw, count = data.draw(streams(max_frame))
    whole = decode([raw], max_frame=max_frame)
    assert decode(data.draw(chunkings(raw)), max_frame=max_frame) == whole
    assert decode(data.draw(chunkings(raw)), max_frame=max_frame) == whole
    if len(raw) <= 3000:
        assert decode([raw[i : i + 1] for i in range(len(raw))], max_frame=max_frame) == whole
    messages, problems, _ = whole
    assert {p.kind for p in problems} <= KINDS
    assert marks(messages) == [{"Event": "FuzzMark", "Seq": str(i)} for i in range(count)]


@FUZZ
@given(fields=st.lists(MESSAGES, min_size=1, max_size=5), lf_only=st.booleans(), data=st.data())
def test_round_trip_of_generated_messages(
    fields: list[dict[str, list[str]]], lf_only: bool, data: st.DataObject
) -> None:
    """FUZZ_EXAMPLES (default 300) lists of messages (header names of AMI characters, values of
    any text but CR/LF, repeated headers) encoded as AMI after a banner decode, in any chunking,
    to the same dicts: repeated values joined with LF, multibyte characters whole, no problem."""
    raw = BANNER + b"".join(encode(f) for f in fields)
    if lf_only:
        raw = raw.replace(b"\r\n", b"\n")
    expected = [{k: "\n".join(v) for k, v in f.items()} for f in fields]
    assert decode(data.draw(chunkings(raw))) == (expected, [], "Asterisk Call Manager/11.0.0")


@FUZZ
@given(junk=st.binary(max_size=2000), max_frame=MAX_FRAMES, data=st.data())
def test_random_bytes_never_raise_and_split_the_same(
    junk: bytes, max_frame: int, data: st.DataObject
) -> None:
    """FUZZ_EXAMPLES (default 300) runs of raw random bytes (banner expected or not): feed() and
    eof() never raise, and a random chunking gives what the whole does."""
    for expect_banner in (True, False):
        whole = decode([junk], max_frame=max_frame, expect_banner=expect_banner)
        chunks = data.draw(chunkings(junk))
        assert decode(chunks, max_frame=max_frame, expect_banner=expect_banner) == whole
        assert {p.kind for p in whole[1]} <= KINDS


# --- documented results, one by one -----------------------------------------------------------


def test_split_utf8_character_is_kept_at_every_offset() -> None:
    raw = BANNER + encode({"Event": "Newchannel", "CallerIDName": "José 张伟 😀"})
    expected = decode([raw])
    assert expected[0] == [{"Event": "Newchannel", "CallerIDName": "José 张伟 😀"}]
    for cut in range(1, len(raw)):
        assert decode([raw[:cut], raw[cut:]]) == expected, cut


@pytest.mark.parametrize(
    ("frame", "message", "kinds"),
    [
        ("CallerIDName: José".encode("latin-1"), {"CallerIDName": "José"}, ["not-utf8"]),
        (b"AccountCode:", {"AccountCode": ""}, []),
        (b"AccountCode: ", {"AccountCode": ""}, []),
        (b"Variable:QUEUEWAIT", {"Variable": "QUEUEWAIT"}, []),
        (b"no colon\r\nUniqueid: 1.1", {"Uniqueid": "1.1"}, ["bad-line"]),
        (b"ChanVariable: A=1\r\nChanVariable: B=", {"ChanVariable": "A=1\nB="}, []),
        (b"CallerIDName: A\x00B", {"CallerIDName": "A\x00B"}, []),
        (b"\x00", {}, ["bad-line"]),
        (b"CallerIDName: A\rB\r\nUniqueid: 1.1", {"CallerIDName": "A\rB", "Uniqueid": "1.1"}, []),
        (b"Value: x\r", {"Value": "x\r"}, []),
    ],
)
def test_nasty_line_gives_the_documented_result_and_the_next_event_comes(
    frame: bytes, message: Message, kinds: list[str]
) -> None:
    """Latin-1 is decoded as Latin-1 (reported), ``Key:`` without a space still parses, a line
    without ':' is reported and dropped, repeats are joined with LF, NUL and a CR that ends no
    line stay in the value; the event after it is untouched."""
    raw = BANNER + frame + b"\r\n\r\n" + mark(0)
    messages, problems, _ = decode([raw])
    assert messages == ([message] if message else []) + [{"Event": "FuzzMark", "Seq": "0"}]
    assert [p.kind for p in problems] == kinds


def test_lf_only_stream_equals_crlf_stream() -> None:
    crlf = BANNER + b"".join(mark(i) for i in range(3))
    assert decode([crlf.replace(b"\r\n", b"\n")]) == decode([crlf])


def test_ten_thousand_line_event_in_tcp_sized_reads() -> None:
    lines = [f"Output: line {i:05d}" for i in range(10_000)]
    raw = BANNER + ("Response: Follows\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode() + mark(0)
    chunks = [raw[i : i + 1460] for i in range(0, len(raw), 1460)]
    messages, problems, _ = decode(chunks)
    assert problems == []
    assert messages[0]["Output"].split("\n") == [line.removeprefix("Output: ") for line in lines]
    assert messages[1:] == [{"Event": "FuzzMark", "Seq": "0"}]


def test_one_megabyte_line_is_skipped_and_the_next_event_comes() -> None:
    raw = BANNER + b"Event: Huge\r\nJunk: " + b"\xff" * (1 << 20) + b"\r\n\r\n" + mark(0)
    chunks = [raw[i : i + 65536] for i in range(0, len(raw), 65536)]
    assert decode(chunks) == decode([raw])
    messages, problems, _ = decode(chunks)
    assert messages == [{"Event": "FuzzMark", "Seq": "0"}]
    assert [p.kind for p in problems] == ["oversized"]


@pytest.mark.parametrize("first", [b"SSH-2.0-OpenSSH_9.2\r\n", b"x" * 300_000 + b"\r\n"])
def test_foreign_banner_is_reported_once_and_the_stream_goes_on(first: bytes) -> None:
    raw = first + mark(0)
    whole = decode([raw])
    assert whole[0] == [{"Event": "FuzzMark", "Seq": "0"}]
    assert [p.kind for p in whole[1]] == ["bad-banner"]
    assert whole[2] is None
    assert decode([raw[i : i + 4096] for i in range(0, len(raw), 4096)]) == whole


# --- the corpus -------------------------------------------------------------------------------

# file -> (max_frame, labels of the messages (Event or Response), problem kinds, banner)
CORPUS_EXPECT: dict[str, tuple[int, list[str], list[str], str | None]] = {
    "real_login.bin": (DEFAULT_MAX_FRAME, ["Success", "FullyBooted"], [], "ok"),
    "real_lf_only.bin": (DEFAULT_MAX_FRAME, ["NewCallerid", "VarSet", "AGIExecStart"], [], "ok"),
    "split_utf8_names.bin": (DEFAULT_MAX_FRAME, ["NewCallerid"], [], "ok"),
    "latin1_name.bin": (DEFAULT_MAX_FRAME, ["NewCallerid", "Hangup"], ["not-utf8"], "ok"),
    "colon_without_space.bin": (DEFAULT_MAX_FRAME, ["VarSet", "Hangup"], [], "ok"),
    "line_without_colon.bin": (DEFAULT_MAX_FRAME, ["Newstate", "Hangup"], ["bad-line"], "ok"),
    "chanvariable_repeated.bin": (DEFAULT_MAX_FRAME, ["NewCallerid"], [], "ok"),
    "nul_bytes.bin": (DEFAULT_MAX_FRAME, ["Newchannel", "Hangup"], ["bad-line"], "ok"),
    "lone_cr.bin": (DEFAULT_MAX_FRAME, ["Newchannel", "Hangup"], [], "ok"),
    "mixed_line_ends.bin": (DEFAULT_MAX_FRAME, ["A", "B", "C", "D"], [], "ok"),
    "foreign_banner_ssh.bin": (DEFAULT_MAX_FRAME, ["Hangup"], ["bad-banner"], None),
    "foreign_banner_http.bin": (DEFAULT_MAX_FRAME, ["?"], ["bad-banner", "truncated"], None),
    "truncated_frame.bin": (DEFAULT_MAX_FRAME, [], ["truncated"], "ok"),
    "blank_lines.bin": (DEFAULT_MAX_FRAME, ["FullyBooted", "Hangup"], [], "ok"),
    "regression_frame_at_limit.bin": (200, ["AtLimit", "After"], [], None),
    "regression_long_banner.bin": (200, ["After"], ["bad-banner"], None),
}


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.bin")) == sorted(CORPUS_EXPECT)
    readme = (CORPUS.parent / "README.md").read_text()
    assert [name for name in CORPUS_EXPECT if f"`ami/{name}`" not in readme] == []


@pytest.mark.parametrize("name", sorted(CORPUS_EXPECT))
def test_corpus_file(name: str) -> None:
    """Each corpus file decodes to its expected labels and problems, and identically when cut
    at every offset and fed byte by byte."""
    max_frame, labels, kinds, banner = CORPUS_EXPECT[name]
    raw = (CORPUS / name).read_bytes()
    whole = decode([raw], max_frame=max_frame)
    messages, problems, got_banner = whole
    assert [m.get("Event") or m.get("Response") or "?" for m in messages] == labels
    assert [p.kind for p in problems] == kinds
    assert got_banner == (None if banner is None else "Asterisk Call Manager/11.0.0")
    for cut in range(1, len(raw)):
        assert decode([raw[:cut], raw[cut:]], max_frame=max_frame) == whole, cut
    assert decode([raw[i : i + 1] for i in range(len(raw))], max_frame=max_frame) == whole


def test_corpus_values_survive() -> None:
    """Spot checks of what the corpus files must decode to, beyond their labels."""
    (msg,) = decode([(CORPUS / "split_utf8_names.bin").read_bytes()])[0]
    assert msg["CallerIDName"] == "José Müller 张伟 😀 O\\'Brien"
    (msg,) = decode([(CORPUS / "chanvariable_repeated.bin").read_bytes()])[0]
    assert msg["ChanVariable"] == "CUSTOMER_ID=42\nVIP="
    assert msg["ChanVariable(Local/s@incoming-00000000;2)"] == "LANG=fr"
    msg = decode([(CORPUS / "real_lf_only.bin").read_bytes()])[0][1]
    assert (msg["Variable"], msg["Value"], msg["AccountCode"]) == ("ANSWEREDTIME", "", "")
    msg = decode([(CORPUS / "latin1_name.bin").read_bytes()])[0][0]
    assert msg["CallerIDName"] == "José Ñandú"


# --- the protocol on top of the decoder -------------------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


async def _through_protocol(chunks: list[bytes]) -> tuple[list[Item], bool]:
    queue: asyncio.Queue[Item] = asyncio.Queue()
    client = AmiClient(PbxSettings(name="fuzz"), queue)
    proto = AmiClientProtocol(client)
    transport = _Transport()
    proto.connection_made(transport)
    proto.go_live(ResyncBegin("fuzz", time.time()))  # the real clock, as the protocol's
    for chunk in chunks:
        proto.data_received(chunk)
    dropped = transport.closing
    proto.connection_lost(None)
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items, dropped


@FUZZ
@given(pieces=st.lists(NASTY, max_size=6), data=st.data())
def test_protocol_survives_nasty_frames_and_logs_each_problem(
    pieces: list[bytes], data: st.DataObject
) -> None:
    """FUZZ_EXAMPLES (default 300) streams through AmiClientProtocol.data_received in random
    reads: nothing escapes data_received or connection_lost, the well-formed event after each
    nasty piece reaches the queue, each decoder problem is logged once as a warning, and the
    connection is not dropped (the banner was Asterisk's)."""
    raw = BANNER + b"".join(piece + mark(i) for i, piece in enumerate(pieces))
    expected = decode([raw])[1]
    with recording("cti.ami") as log:
        items, dropped = asyncio.run(_through_protocol(data.draw(chunkings(raw))))
    events = [i.message for i in items if isinstance(i, AmiEvent)]
    assert marks(events) == [{"Event": "FuzzMark", "Seq": str(i)} for i in range(len(pieces))]
    warned = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    problems = [w for w in warned if any(f": {k}: " in w for k in KINDS)]
    assert len(problems) == len(expected)
    for line, problem in zip(problems, expected, strict=True):
        assert f": {problem.kind}: {problem.detail}: " in line
    assert not dropped or any(b"Event: Shutdown" in p for p in pieces)
