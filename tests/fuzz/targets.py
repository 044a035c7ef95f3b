"""Coverage-guided fuzz targets (atheris, libFuzzer) for the decoders that read a peer's bytes.

Hypothesis (tests/*/test_fuzz_*.py) draws inputs from strategies we wrote; libFuzzer instead
mutates the corpus and keeps what reaches new branches of the instrumented decoders, so it
finds the inputs we did not think of. Each target checks the same property as the hypothesis
tests: never an unexpected exception, and the input fed whole gives what it gives fed in
pieces (cut at points drawn from the data itself, so a corpus file is used as it is).

Run one (from the repo root; libFuzzer writes new inputs into the first folder given)::

    python -m tests.fuzz.targets ami -runs=100000 -max_len=4096 /tmp/ami-corpus

Targets: ``ami`` (cti.codec.AmiDecoder), ``agi_headers`` (ivr.agi.HeaderDecoder),
``agi_replies`` (ivr.agi.ReplyDecoder); ``canary`` only proves a failure is caught.
tests/fuzz/test_atheris.py runs each in ``make test``.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from cti.codec import DEFAULT_MAX_FRAME, AmiDecoder, DecodeProblem, Message
    from ivr.agi import AgiProtocolError, AgiRequest, HeaderDecoder, ReplyDecoder, ReplyItem

KINDS = {"oversized", "bad-banner", "not-utf8", "bad-line", "truncated"}  # codec.py's docstring


def pieces(data: bytes) -> list[list[bytes]]:
    """Two ways to cut ``data`` into reads: at one point and at two, drawn from the data."""
    n = len(data)
    first = zlib.crc32(data) % (n + 1)
    second = zlib.adler32(data) % (n + 1)
    low, high = sorted((first, second))
    return [[data[:first], data[first:]], [data[:low], data[low:high], data[high:]]]


# --- AMI --------------------------------------------------------------------------------------


def _ami(chunks: list[bytes], **options: object) -> tuple[list[Message], list[DecodeProblem]]:
    decoder = AmiDecoder(**options)  # type: ignore[arg-type]
    messages: list[Message] = []
    for chunk in chunks:
        messages += decoder.feed(chunk)
    decoder.eof()
    return messages, decoder.take_problems()


def ami(data: bytes) -> None:
    """Any bytes, with and without the banner, at the default frame limit and a small one."""
    for expect_banner in (True, False):
        for max_frame in (DEFAULT_MAX_FRAME, 200):
            options = {"expect_banner": expect_banner, "max_frame": max_frame}
            whole = _ami([data], **options)
            assert {p.kind for p in whole[1]} <= KINDS, whole[1]
            for chunks in pieces(data):
                assert _ami(chunks, **options) == whole, (chunks, options)


# --- FastAGI ----------------------------------------------------------------------------------


def _headers(chunks: list[bytes], **limits: int) -> tuple[AgiRequest | None, bytes, str | None]:
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


def agi_headers(data: bytes) -> None:
    for limits in ({}, {"max_bytes": 100, "max_lines": 5}):
        whole = _headers([data], **limits)
        for chunks in pieces(data):
            assert _headers(chunks, **limits) == whole, (chunks, limits)


def _replies(chunks: list[bytes], max_line: int) -> tuple[list[ReplyItem], str | None]:
    decoder = ReplyDecoder(max_line=max_line)
    items: list[ReplyItem] = []
    try:
        for chunk in chunks:
            items += decoder.feed(chunk)
    except AgiProtocolError as exc:
        return items, str(exc)
    return items, None


def agi_replies(data: bytes) -> None:
    """The same error (or none) however it is cut; a cut may deliver fewer items before the
    error (the read that raises returns nothing), never other ones."""
    for max_line in (64 * 1024, 100):
        whole = _replies([data], max_line)
        for chunks in pieces(data):
            items, error = _replies(chunks, max_line)
            assert error == whole[1], (chunks, max_line)
            if error is None:
                assert items == whole[0], (chunks, max_line)
            else:
                assert whole[0] == [], whole  # fed whole, the raising read returns nothing


def canary(data: bytes) -> None:
    """Fails on its seed, so test_atheris.py can show that a failure is seen and kept."""
    if data == b"canary":
        raise RuntimeError("the canary input")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "ami": ami,
    "agi_headers": agi_headers,
    "agi_replies": agi_replies,
    "canary": canary,
}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.targets {{{','.join(TARGETS)}}} [libFuzzer flags]")
    atheris.Setup([argv[0], *argv[2:]], TARGETS[argv[1]])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
