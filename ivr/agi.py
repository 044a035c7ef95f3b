"""Sans-IO FastAGI: the header block, reply lines and command lines as plain data.

Theory of operation
-------------------
For ``AGI(agi://host:port/script?query,arg1,...)`` Asterisk connects to us and writes
``agi_key: value`` lines ended by an empty line (:class:`HeaderDecoder`). From then on we write
one command line (:func:`format_command`) and Asterisk answers with one reply
(:class:`ReplyDecoder`), with two exceptions that break a naive line-per-command reader:

* When the channel hangs up, res_agi writes a bare ``HANGUP`` line *unsolicited*, after the
  interrupted command's own failure line or between two commands. Read as the reply to the next
  command it shifts every later reply by one; here it is its own :class:`Hangup` item.
* A usage error is a block: ``520-Invalid command syntax.  Proper usage follows:``, the usage
  text, then ``520 End of proper usage.``. It is decoded as one :class:`Reply`, whatever the
  usage lines contain (one of them reads ``Example return code: 200 result=1 (testvariable)``).

Bytes are kept until a whole line is present and only then decoded: UTF-8, else Latin-1 so no
byte is lost. Limits bound the memory a broken or hostile peer can make us hold; crossing one,
or sending a line that fits no form, raises :class:`AgiProtocolError`, after which the decoder
must not be fed again (drop the connection). Lines end in LF; a CR before it is ignored.

Command lines are split by res_agi's ``parse_args``: blanks separate words, a double quote
toggles quoting, a backslash makes the next character literal, inside quotes too.
:func:`format_command` quotes only where needed and refuses CR, LF and NUL, so customer data
cannot smuggle a second command in; :func:`split_command` is its inverse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_HEADER_LINES = 256
DEFAULT_MAX_LINE = 64 * 1024

# 100 "Trying..." comes before Gosub's final 200 (app_stack.c); 503 is res_agi's
# "result=-2 Memory allocation failure"; 510/511/520 are agi_handle_command's errors.
_REPLY_CODES = frozenset({100, 200, 503, 510, 511, 520})
_WITH_RESULT = frozenset({100, 200, 503})
_REPLY_LINE = re.compile(r"([0-9]{3})([ -])(.*)", re.DOTALL)  # not \d: "٢٠٠" is no code
_VERB = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")
_NEEDS_QUOTES = re.compile(r'[ \t"\\]')
_FORBIDDEN = ("\n", "\r", "\x00")


class AgiError(Exception):
    """Base of every FastAGI error."""


class AgiProtocolError(AgiError):
    """The peer broke the protocol (a remote error): drop the connection."""


class AgiLocalError(AgiError, ValueError):
    """We misused the API (a local error), e.g. a line break inside a command argument."""


class ChannelHungUp(AgiError):
    """The caller's channel is gone; only dead-capable commands (SET VARIABLE...) still work."""


class AgiCommandError(AgiError):
    """Asterisk refused or failed a command (510, 520, 503, or a -1 result on a live channel)."""

    def __init__(self, verb: str, reply: Reply) -> None:
        first_line = reply.text.partition("\n")[0]
        super().__init__(f"{verb}: {reply.code} {first_line}".rstrip())
        self.verb = verb
        self.reply = reply


def decode_line(raw: bytes) -> str:
    """UTF-8, else Latin-1: every byte maps to a character, so nothing is lost."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The header block Asterisk sends when a call enters the AGI."""

    headers: dict[str, str]

    @property
    def network_script(self) -> str:
        """Everything after ``host[:port]/`` in the AGI URL, query string included."""
        return self.headers.get("agi_network_script", "")

    @property
    def script(self) -> str:
        """The path part of the URL, what we route on (``ivr`` for ``ivr?lang=fr``)."""
        return self.network_script.partition("?")[0]

    @property
    def query(self) -> dict[str, str]:
        """The URL's query parameters, percent-decoded; a repeated key keeps its last value."""
        return dict(parse_qsl(self.network_script.partition("?")[2], keep_blank_values=True))

    @property
    def args(self) -> list[str]:
        """``agi_arg_1`` .. ``agi_arg_N``: the dialplan's arguments after the URL."""
        out: list[str] = []
        while (value := self.headers.get(f"agi_arg_{len(out) + 1}")) is not None:
            out.append(value)
        return out

    @property
    def uniqueid(self) -> str:
        """The AGI channel's Uniqueid: for the lab's Local ``;2`` half, not the call id."""
        return self.headers.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        return self.headers.get("agi_channel", "")

    @property
    def callerid(self) -> str | None:
        return _known(self.headers.get("agi_callerid", ""))

    @property
    def calleridname(self) -> str | None:
        return _known(self.headers.get("agi_calleridname", ""))

    @property
    def language(self) -> str:
        return self.headers.get("agi_language", "")

    @property
    def context(self) -> str:
        return self.headers.get("agi_context", "")

    @property
    def extension(self) -> str:
        return self.headers.get("agi_extension", "")

    @property
    def dnid(self) -> str | None:
        return _known(self.headers.get("agi_dnid", ""))


def _known(value: str) -> str | None:
    """Asterisk writes ``unknown`` for an absent caller id, DNID or RDNIS."""
    return None if value in ("", "unknown") else value


class HeaderDecoder:
    """Incremental decoder of the header block. ``feed`` returns the request once complete.

    Bytes after the blank line (an early unsolicited ``HANGUP``) are kept in :attr:`rest`.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_lines: int = DEFAULT_MAX_HEADER_LINES,
    ) -> None:
        self._max_bytes = max_bytes
        self._max_lines = max_lines
        self._buf = bytearray()
        self._pos = 0
        self._lines = 0
        self._headers: dict[str, str] = {}
        self._request: AgiRequest | None = None
        self.rest = b""

    def feed(self, data: bytes) -> AgiRequest | None:
        """Add received bytes; return the request when the blank line has arrived.

        Raises AgiProtocolError past a limit or on a line without ``': '``; AgiLocalError when
        fed again after the request was returned.
        """
        if self._request is not None:
            raise AgiLocalError("the AGI header block is already complete")
        buf = self._buf
        buf += data
        while (newline := buf.find(b"\n", self._pos)) >= 0:
            raw = bytes(buf[self._pos : newline]).removesuffix(b"\r")
            self._pos = newline + 1
            if not raw:
                self._request = AgiRequest(self._headers)
                self.rest = bytes(buf[self._pos :])
                buf.clear()
                return self._request
            if self._pos > self._max_bytes:
                raise AgiProtocolError(f"AGI headers longer than {self._max_bytes} bytes")
            self._lines += 1
            if self._lines > self._max_lines:
                raise AgiProtocolError(f"more than {self._max_lines} AGI header lines")
            key, sep, value = decode_line(raw).partition(": ")
            if not sep:
                raise AgiProtocolError(f"AGI header line without ': ': {key[:80]!r}")
            self._headers[key] = value
        # a lone CR may be the start of the blank line, which the limit does not count
        if len(buf) > self._max_bytes and buf[self._pos :] != b"\r":
            raise AgiProtocolError(f"AGI headers longer than {self._max_bytes} bytes")
        return None

    def eof(self) -> None:
        """The peer closed. Raises AgiProtocolError unless the header block was complete."""
        if self._request is None:
            raise AgiProtocolError("connection closed before the AGI headers ended")


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply: ``200 result=<result> [(<data>)] [key=value...]``, 510, 511, 520, 503, 100.

    ``text`` is everything after the code; for a 520 block, its lines joined with LF.
    """

    code: int
    result: str = ""
    data: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True, slots=True)
class Hangup:
    """A bare ``HANGUP`` line: the channel hung up. It answers no command."""


ReplyItem = Reply | Hangup


class ReplyDecoder:
    """Incremental decoder of Asterisk's replies. ``feed`` returns whole items in order."""

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._max_line = max_line
        self._buf = bytearray()
        self._block: list[str] | None = None
        self._block_size = 0

    def feed(self, data: bytes) -> list[ReplyItem]:
        """Add received bytes; return every reply and HANGUP marker they complete.

        Raises AgiProtocolError on a line that is no AGI reply or is longer than ``max_line``,
        and on a 520 block longer than ``max_line`` in all.
        """
        buf = self._buf
        buf += data
        out: list[ReplyItem] = []
        start = 0
        while (newline := buf.find(b"\n", start)) >= 0:
            if newline - start > self._max_line:
                raise AgiProtocolError(f"AGI reply line longer than {self._max_line} bytes")
            raw = bytes(buf[start:newline]).removesuffix(b"\r")
            start = newline + 1
            item = self._line(decode_line(raw))
            if item is not None:
                out.append(item)
        del buf[:start]
        if len(buf) > self._max_line:
            raise AgiProtocolError(f"AGI reply line longer than {self._max_line} bytes")
        return out

    def _line(self, line: str) -> ReplyItem | None:
        if self._block is not None:
            self._block_size += len(line) + 1
            if self._block_size > self._max_line:
                raise AgiProtocolError(f"AGI usage block longer than {self._max_line} bytes")
            if line.startswith("520 "):
                text = "\n".join([*self._block, line[4:]])
                self._block = None
                return Reply(520, text=text)
            self._block.append(line)
            return None
        if line == "HANGUP":
            return Hangup()
        match = _REPLY_LINE.fullmatch(line)
        if match is None or int(match[1]) not in _REPLY_CODES:
            raise AgiProtocolError(f"not an AGI reply: {line[:80]!r}")
        code, rest = int(match[1]), match[3]
        if match[2] == "-":
            if code != 520:
                raise AgiProtocolError(f"unexpected multi-line AGI reply: {line[:80]!r}")
            self._block = [rest]
            self._block_size = len(line) + 1
            return None
        if code not in _WITH_RESULT:
            return Reply(code, text=rest)
        if not rest.startswith("result="):
            raise AgiProtocolError(f"AGI {code} reply without result=: {line[:80]!r}")
        return _parse_result(code, rest)


def _parse_result(code: int, rest: str) -> Reply:
    """``result=<v> [(<data>)] [k=v...]``; words that are not ``k=v`` (``Gosub complete``)
    stay in ``text`` only."""
    result, _, tail = rest[len("result=") :].partition(" ")
    data: str | None = None
    if tail.startswith("("):
        data, tail = _split_data(tail)
    extra: dict[str, str] = {}
    for word in split_command(tail):
        key, sep, value = word.partition("=")
        if sep:
            extra[key] = value
    return Reply(code, result, data, extra, rest)


def _split_data(tail: str) -> tuple[str, str]:
    """Split ``(<data>) k=v...`` where the data may hold spaces and parentheses.

    The data ends at the last ``)`` followed only by ``k=v`` words (a variable's value can be
    ``a) b``); failing that, at the first ``)``.
    """
    close = tail.rfind(")")
    while close > 0:
        after = tail[close + 1 :]
        if not after or (after.startswith(" ") and _all_pairs(after)):
            return tail[1:close], after
        close = tail.rfind(")", 0, close)
    first = tail.find(")")
    if first < 0:
        raise AgiProtocolError(f"unclosed '(' in AGI reply: {tail[:80]!r}")
    return tail[1:first], tail[first + 1 :]


def _all_pairs(text: str) -> bool:
    words = split_command(text)
    return bool(words) and all(word.partition("=")[0] and "=" in word for word in words)


def format_command(verb: str, *args: str | int | float) -> bytes:
    """One command line, LF-terminated, e.g. ``format_command("GET DATA", "menu", 5000, 1)``.

    Arguments holding a blank, a quote or a backslash are quoted (``\\"`` and ``\\\\`` escaped);
    an empty one is ``""``. Raises AgiLocalError for a verb that is not words of letters and for
    CR, LF or NUL in an argument: they would end the line and start a command of the sender's
    choosing.
    """
    if not _VERB.fullmatch(verb):
        raise AgiLocalError(f"not an AGI command verb: {verb[:80]!r}")
    words = [verb]
    for arg in args:
        text = arg if isinstance(arg, str) else str(arg)
        if any(ch in text for ch in _FORBIDDEN):
            raise AgiLocalError(f"CR, LF or NUL in an argument of {verb}: {text[:80]!r}")
        if not text or _NEEDS_QUOTES.search(text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(text)
    return (" ".join(words) + "\n").encode("utf-8")


def split_command(line: str) -> list[str]:
    """Split a command line into words exactly as res_agi's ``parse_args`` does."""
    words: list[str] = []
    word: list[str] = []
    in_word = quoted = escaped = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and not in_word:
                in_word, word = True, []
            continue
        if ch in " \t" and not quoted and not escaped:
            if in_word:
                words.append("".join(word))
            in_word = False
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if not in_word:
            in_word, word = True, []
        word.append(ch)
        escaped = False
    if in_word:
        words.append("".join(word))
    return words
