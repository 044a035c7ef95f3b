"""Fuzzing the FastAGI reader (ivr/agi.py's HeaderDecoder and ReplyDecoder, ivr/server.py's
request reading) with hypothesis, plus a replayed corpus of nasty inputs.

Each ``@given`` test runs ``FUZZ_EXAMPLES`` examples (env var, default 300; 5 such tests
here, the last over real loopback sockets). Hypothesis keeps no database (``database=None``)
and its caches go to the temp dir, so nothing is written into the repo; it is derandomized
when ``CI`` is set, so a CI run tries the same examples every time; locally each run draws new
ones. A failure found here goes into tests/fixtures/fuzz/agi/ (see the README there), whose
every file is replayed by the ``test_corpus_*`` tests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import socket
import string
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from ivr.agi import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADER_LINES,
    DEFAULT_MAX_LINE,
    AgiProtocolError,
    AgiRequest,
    Hangup,
    HeaderDecoder,
    Reply,
    ReplyDecoder,
    ReplyItem,
)
from ivr.client import AgiCall
from ivr.server import AgiServer, AgiSession
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
CORPUS = Path(__file__).parent.parent / "fixtures" / "fuzz" / "agi"
CORPUS_FILES = {p.name: p.read_bytes() for p in sorted(CORPUS.glob("*.bin"))}

HeaderOutcome = tuple[AgiRequest | None, bytes, str | None]
ReplyOutcome = tuple[list[ReplyItem], str | None]


def read_headers(chunks: list[bytes], **limits: int) -> HeaderOutcome:
    """(request, bytes after it, error) from feeding ``chunks`` then closing; only
    AgiProtocolError is expected, anything else fails the test."""
    decoder = HeaderDecoder(**limits)
    try:
        for i, chunk in enumerate(chunks):
            request = decoder.feed(chunk)
            if request is not None:
                return request, decoder.rest + b"".join(chunks[i + 1 :]), None
        decoder.eof()
    except AgiProtocolError as exc:
        return None, b"", str(exc)
    raise AssertionError("eof() accepted an incomplete header block")


def read_replies(chunks: list[bytes], max_line: int = DEFAULT_MAX_LINE) -> ReplyOutcome:
    """Items delivered until the first AgiProtocolError, and that error."""
    decoder = ReplyDecoder(max_line=max_line)
    items: list[ReplyItem] = []
    try:
        for chunk in chunks:
            items += decoder.feed(chunk)
    except AgiProtocolError as exc:
        return items, str(exc)
    return items, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """Random reads, their ends often next to a line end (where decisions are made)."""
    edges = [i + d for i, byte in enumerate(data) if byte == 0x0A for d in (-1, 0, 1)]
    cut = st.integers(0, len(data))
    if edges:
        cut = st.one_of(cut, st.sampled_from([e for e in edges if 0 <= e <= len(data)]))
    return st.lists(cut, max_size=30).map(lambda cuts: split(data, cuts))


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def labels(items: list[ReplyItem]) -> list[str]:
    return ["HANGUP" if isinstance(i, Hangup) else str(i.code) for i in items]


# --- strategies -------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30)
REAL_HEADERS = CORPUS_FILES.get("headers_real.bin", b"agi_network: yes\n\n")
ENDINGS = st.sampled_from([b"\n", b"\r\n"])


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes inserted, replaced or cut: the near misses a fuzzer likes."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(out)))
        junk = draw(st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from([b"\n", b"\r"])))
        match draw(st.sampled_from(["insert", "replace", "cut"])):
            case "insert":
                out[at:at] = junk
            case "replace":
                out[at : at + len(junk)] = junk
            case _:
                del out[at:]
    return bytes(out)


HEADER_INPUTS = st.one_of(
    st.binary(max_size=400),
    mutated(REAL_HEADERS),
    st.sampled_from(list(CORPUS_FILES.values())).flatmap(mutated),
    st.tuples(st.just(REAL_HEADERS), st.binary(max_size=60)).map(b"".join),
    st.lists(st.sampled_from([b"agi_x: y\n", b"agi_x:\n", b"\r\n", b"agi_y: \r\n"])).map(b"".join),
)


@st.composite
def near_limit_headers(draw: st.DrawFn, max_bytes: int) -> bytes:
    """Header lines ending from 3 bytes under to 3 over ``max_bytes``, then a blank line."""
    head = b"agi_network: yes\nagi_x: "
    ending = draw(ENDINGS)
    pad = max_bytes - len(head) - len(ending) + draw(st.integers(-3, 3))
    return head + b"v" * max(pad, 0) + ending + draw(ENDINGS)


HEADER_LIMITS = st.fixed_dictionaries(
    {
        "max_bytes": st.sampled_from([40, 100, 300, DEFAULT_MAX_HEADER_BYTES]),
        "max_lines": st.sampled_from([2, 5, DEFAULT_MAX_HEADER_LINES]),
    }
)

WORD = st.text(string.ascii_letters + string.digits + ".-", min_size=1, max_size=8)
DATA = st.text(string.ascii_letters + string.digits + " (-_.é张", max_size=20)  # no ")"


@st.composite
def result_lines(draw: st.DrawFn) -> tuple[bytes, Reply]:
    """A ``200 result=…`` line and the Reply it must decode to."""
    result = draw(st.one_of(st.just(""), st.integers(-2, 255).map(str), WORD))
    data = draw(st.none() | DATA)
    extra = draw(st.dictionaries(WORD, WORD, max_size=3))
    rest = f"result={result}"
    if data is not None:
        rest += f" ({data})"
    rest += "".join(f" {k}={v}" for k, v in extra.items())
    return f"200 {rest}".encode(), Reply(200, result, data, extra, rest)


FIXED_REPLIES = [
    b"HANGUP",
    b"510 Invalid or unknown command",
    b"511 Command Not Permitted on a dead channel or intercept routine",
    b"100 result=0 Trying...",
    b"200 result=0 Gosub complete",
    b"503 result=-2 Memory allocation failure",
    b"520 Invalid command syntax.  Proper usage not available.",
]
NASTY_REPLY_LINES = [
    b"hangup",
    b"",
    b"300 result=0",
    b"200 ok",
    b"200",
    b"510-Invalid",
    "٢٠٠ result=1".encode(),
    b"200 result=1 (never closed",
    "200 result=1 (Ñandú)".encode("latin-1"),
    b"\x00",
    b"200 result=1\r",
    b"SSH-2.0-OpenSSH_9.2",
]


@st.composite
def usage_blocks(draw: st.DrawFn) -> bytes:
    body = draw(st.lists(TEXT.filter(lambda t: not t.startswith("520 ")), max_size=4))
    lines = ["520-Invalid command syntax.  Proper usage follows:", *body, "520 End of usage."]
    return "\n".join(lines).encode()


REPLY_LINES = st.one_of(
    result_lines().map(lambda t: t[0]),
    st.sampled_from(FIXED_REPLIES),
    usage_blocks(),
    st.sampled_from(NASTY_REPLY_LINES),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
)


@st.composite
def reply_streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(REPLY_LINES, max_size=8))
    return b"".join(line + draw(ENDINGS) for line in lines)


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(limits=HEADER_LIMITS, data=st.data())
def test_headers_any_split_gives_the_same_outcome(
    limits: dict[str, int], data: st.DataObject
) -> None:
    """FUZZ_EXAMPLES (default 300) header inputs (random bytes, mutated real blocks, near-limit
    blocks): whole, byte by byte and in a random chunking, the same request, bytes after it and
    AgiProtocolError message; no other exception type ever escapes feed()/eof()."""
    near = data.draw(st.booleans())  # half the time at the size limit, where the bugs were
    raw = data.draw(near_limit_headers(limits["max_bytes"]) if near else HEADER_INPUTS)
    whole = read_headers([raw], **limits)
    assert read_headers(bytewise(raw), **limits) == whole
    assert read_headers(data.draw(chunkings(raw)), **limits) == whole


@FUZZ
@given(
    name=TEXT,
    args=st.lists(TEXT, max_size=4),
    query=st.dictionaries(WORD, TEXT, max_size=3),
    crlf=st.booleans(),
    data=st.data(),
)
def test_headers_round_trip(
    name: str, args: list[str], query: dict[str, str], crlf: bool, data: st.DataObject
) -> None:
    """FUZZ_EXAMPLES (default 300) header blocks written as res_agi does (any caller name,
    arguments and URL query; LF or CRLF) read back, in any chunking, to the same values."""
    call = AgiCall(
        channel="Local/s@incoming-00000000;2",
        uniqueid="astlab-1795418875.1",
        linkedid="astlab-1795418875.0",
        callerid_name=name,
        script="ivr/main",
        query=query,
        args=tuple(args),
    )
    raw = call.headers()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    request, rest, error = read_headers(data.draw(chunkings(raw)))
    assert (rest, error) == (b"", None)
    assert request is not None
    assert request.calleridname == (None if name in ("", "unknown") else name)
    assert (request.script, request.query, request.args) == ("ivr/main", query, args)


@FUZZ
@given(raw=reply_streams(), max_line=st.sampled_from([40, 200, DEFAULT_MAX_LINE]), data=st.data())
def test_replies_any_split_gives_the_same_outcome(
    raw: bytes, max_line: int, data: st.DataObject
) -> None:
    """FUZZ_EXAMPLES (default 300) reply streams (valid 200/510/511/520 blocks/HANGUP mixed with
    garbage): byte by byte and in a random chunking, the same AgiProtocolError (or none) and the
    same items up to it (a chunking may deliver fewer: the read that raises returns nothing);
    fed whole, the same items when nothing is wrong; each item read stands for a line that
    starts with its ASCII code (or ``HANGUP``), in order."""
    reference = read_replies(bytewise(raw), max_line)
    items, error = read_replies(data.draw(chunkings(raw)), max_line)
    assert error == reference[1]
    assert items == reference[0][: len(items)]
    whole = read_replies([raw], max_line)
    assert whole == (reference if reference[1] is None else ([], reference[1]))
    lines = iter(raw.split(b"\n"))
    for item in reference[0]:
        start = b"HANGUP" if isinstance(item, Hangup) else b"%d" % item.code
        assert any(line.startswith(start) for line in lines), (item, raw)


@FUZZ
@given(lines=st.lists(result_lines(), min_size=1, max_size=6), crlf=st.booleans(), data=st.data())
def test_result_lines_round_trip(
    lines: list[tuple[bytes, Reply]], crlf: bool, data: st.DataObject
) -> None:
    """FUZZ_EXAMPLES (default 300) runs of generated ``200 result=<r> [(<data>)] [k=v…]`` lines
    decode, in any chunking, to their result, data, key=value pairs and text."""
    ending = b"\r\n" if crlf else b"\n"
    raw = b"".join(line + ending for line, _ in lines)
    assert read_replies(data.draw(chunkings(raw))) == ([reply for _, reply in lines], None)


# --- the corpus -------------------------------------------------------------------------------

# headers_* file -> (limits, script of the request or None, bytes after it, error fragment)
HEADER_EXPECT: dict[str, tuple[dict[str, int], str | None, bytes, str | None]] = {
    "headers_real.bin": ({}, "ivr", b"", None),
    "headers_crlf_then_hangup.bin": ({}, "ivr", b"HANGUP\n", None),
    "headers_utf8_name.bin": ({}, "ivr", b"", None),
    "headers_latin1_name.bin": ({}, "ivr", b"", None),
    "headers_nul.bin": ({}, "ivr", b"", None),
    "headers_http_probe.bin": ({}, None, b"", "without ': '"),
    "headers_no_space.bin": ({}, None, b"", "without ': '"),
    "headers_truncated.bin": ({}, None, b"", "closed before the AGI headers ended"),
    "headers_tls_hello.bin": ({}, None, b"", "without ': '"),
    "regression_headers_crlf_at_limit.bin": ({"max_bytes": 100}, "", b"", None),
    "regression_headers_then_garbage.bin": ({}, "ivr", b"200 ok\n", None),
}
# replies_* file -> (labels of the items before the error, error fragment)
REPLY_EXPECT: dict[str, tuple[list[str], str | None]] = {
    "replies_real.bin": (["200"] * 3 + ["HANGUP", "200", "510", "511", "100", "200", "200"], None),
    "replies_usage_block.bin": (["520", "200"], None),
    "replies_crlf.bin": (["200"] * 3 + ["HANGUP", "200", "510", "511", "100", "200", "200"], None),
    "replies_latin1.bin": (["200"], None),
    "replies_garbage.bin": (["200"], "not an AGI reply"),
    "replies_unclosed_paren.bin": ([], "unclosed '('"),
    "replies_lowercase_hangup.bin": ([], "not an AGI reply"),
    "replies_empty_line.bin": (["200"], "not an AGI reply"),
    "replies_multiline_510.bin": ([], "unexpected multi-line"),
    "regression_replies_unicode_digits.bin": ([], "not an AGI reply"),
}


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(CORPUS_FILES) == sorted([*HEADER_EXPECT, *REPLY_EXPECT])
    readme = (CORPUS.parent / "README.md").read_text()
    assert [name for name in CORPUS_FILES if f"`agi/{name}`" not in readme] == []


@pytest.mark.parametrize("name", sorted(HEADER_EXPECT))
def test_corpus_headers_file(name: str) -> None:
    """Each headers file gives its expected request or error, identically at every cut."""
    limits, script, rest, error = HEADER_EXPECT[name]
    raw = CORPUS_FILES[name]
    whole = read_headers([raw], **limits)
    request, got_rest, got_error = whole
    assert (None if request is None else request.script, got_rest) == (script, rest)
    assert (got_error is None) == (error is None) and (error or "") in (got_error or "")
    for cut in range(1, len(raw)):
        assert read_headers([raw[:cut], raw[cut:]], **limits) == whole, cut
    assert read_headers(bytewise(raw), **limits) == whole


@pytest.mark.parametrize("name", sorted(REPLY_EXPECT))
def test_corpus_replies_file(name: str) -> None:
    """Each replies file gives its expected items and error, identically at every cut."""
    expected, error = REPLY_EXPECT[name]
    raw = CORPUS_FILES[name]
    items, got_error = read_replies(bytewise(raw))
    assert labels(items) == expected
    assert (got_error is None) == (error is None) and (error or "") in (got_error or "")
    for cut in range(1, len(raw)):
        first, second = read_replies([raw[:cut], raw[cut:]])[1], read_replies([raw])[1]
        assert first == second == got_error, cut


def test_corpus_values_survive() -> None:
    """Spot checks of what the corpus files must decode to, beyond their labels."""
    utf8, latin1, nul = (
        read_headers([CORPUS_FILES[f"headers_{n}.bin"]])[0]
        for n in ("utf8_name", "latin1_name", "nul")
    )
    assert utf8 is not None and utf8.calleridname == "José Müller 张伟"
    assert latin1 is not None and latin1.calleridname == "José Ñandú"
    assert nul is not None and nul.calleridname == "Alice\x00Customer"
    (reply,) = read_replies([CORPUS_FILES["replies_latin1.bin"]])[0]
    assert isinstance(reply, Reply) and reply.data == "José Ñandú"
    usage = read_replies([CORPUS_FILES["replies_usage_block.bin"]])[0][0]
    assert isinstance(usage, Reply) and "Example return code: 200 result=1" in usage.text


# --- a running AgiServer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def agi_server() -> Iterator[tuple[int, queue.Queue[str]]]:
    """An AgiServer on its own event loop thread, so that plain blocking sockets (and
    hypothesis's synchronous examples) can talk to it; ``served`` gets each answered call."""
    served: queue.Queue[str] = queue.Queue()

    async def answer(session: AgiSession) -> None:
        await session.answer()
        served.put(session.request.channel)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = AgiServer({"fuzz/ok": answer}, header_timeout=2.0, reply_timeout=2.0)
    try:
        _, port = asyncio.run_coroutine_threadsafe(server.start("127.0.0.1", 0), loop).result(5)
        yield port, served
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    got = bytearray()
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return bytes(got)


def _expected_log(junk: bytes) -> tuple[str, ...]:
    """What ivr/server.py logs when it drops this input, from the sans-IO decoders."""
    decoder = HeaderDecoder()
    try:
        request = decoder.feed(junk)
    except AgiProtocolError:
        return ("sent malformed headers",)
    if request is None:
        return ("connection closed before the AGI headers ended",)
    menu = f"unknown menu {request.script!r}"
    try:
        ReplyDecoder().feed(decoder.rest)
    except AgiProtocolError:
        # garbage read with the headers is dropped at once; read later, by the session
        return ("sent garbage after the headers", menu)
    return (menu,)


SERVER_JUNK = st.one_of(
    st.binary(max_size=600),
    mutated(REAL_HEADERS),
    st.sampled_from(list(CORPUS_FILES.values())),
    st.tuples(st.just(REAL_HEADERS), reply_streams()).map(b"".join),
)
GOOD_CALLS = iter(range(1_000_000))


def junk_then_good_call(port: int, served: queue.Queue[str], junk: bytes) -> None:
    """Send ``junk`` and close our side: the server must close too, with the log line the
    decoders predict (naming the peer, or the menu asked for); then a well-formed call must
    be answered and served."""
    expected = _expected_log(junk)
    with recording("ivr.server") as log:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            peer = str(sock.getsockname())
            try:
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
            except OSError:  # the server may already have closed on the first bytes
                pass
            _read_to_close(sock)
        lines = [r.getMessage() for r in log.records if r.levelno >= logging.INFO]
    assert any(
        text in line and (peer in line or text.startswith("unknown menu"))
        for line in lines
        for text in expected
    ), (expected, peer, lines)

    channel = f"Fuzz/ok-{next(GOOD_CALLS)}"
    call = AgiCall(channel=channel, uniqueid="fuzz.1", linkedid="fuzz.0", script="fuzz/ok")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(call.headers())
        command = b""
        while not command.endswith(b"\n") and (chunk := sock.recv(100)):
            command += chunk
        assert command == b"ANSWER\n"
        sock.sendall(b"200 result=0\n")
        assert _read_to_close(sock) == b""
    assert served.get(timeout=5) == channel


@FUZZ
@given(junk=SERVER_JUNK)
def test_server_drops_junk_with_a_log_line_and_serves_the_next_call(
    agi_server: tuple[int, queue.Queue[str]], junk: bytes
) -> None:
    """FUZZ_EXAMPLES (default 300) junk inputs (random bytes, mutated header blocks, corpus
    files, a real block followed by garbage replies) sent to a running AgiServer over loopback:
    it closes that connection with the log line the decoders predict, and the well-formed call
    made right after is answered and served."""
    assume(b"fuzz/ok" not in junk)  # the one menu served, where junk would be a call
    event(_expected_log(junk)[0])  # how the examples spread over the server's paths
    junk_then_good_call(*agi_server, junk)


@pytest.mark.parametrize("name", sorted(CORPUS_FILES))
def test_corpus_file_through_the_server(
    agi_server: tuple[int, queue.Queue[str]], name: str
) -> None:
    """Every AGI corpus file, sent as a peer would: logged and dropped (or refused as an
    unknown menu), and the next call is served."""
    junk_then_good_call(*agi_server, CORPUS_FILES[name])
