"""The Asterisk side of FastAGI: a simulated channel running ``AGI(agi://host:port/script)``.

Theory of operation
-------------------
:func:`run_agi` plays res_agi for one call: connect (2 s, like ``MAX_AGI_CONNECT``), write the
header block of ``setup_env``, then answer one command line at a time until the server closes,
and set ``AGISTATUS`` the way ``agi_exec_full`` does. The caller is a :class:`CallerScript`:
the keys pressed at each prompt and, optionally, the moment the caller hangs up. At that moment
res_agi behaves as follows, and so does this module: the command that was running returns its
failure line (``200 result=-1 ...``), a bare ``HANGUP`` line follows unsolicited, and the AGI
goes on in dead mode, where only dead-capable commands run and the rest get 511. A hang-up
between two commands is just the ``HANGUP`` line.

Replies follow res_agi.c (read on the Asterisk 11 source, checked against the notes on 20/22 in
docs): the formats, the argument counts that give a 520 usage block, the dead-capable table and
``parse_args`` quoting. Not simulated: audio (a prompt "plays" instantly and reports
``endpos`` as if 2 s long at 8 kHz), missing sound files, applications run by EXEC (always 0),
commands beyond those an IVR uses (they get 510, where Asterisk would run them), and the
2048-byte command buffer. The usage texts inside 520 blocks are ours, in the manner of
Asterisk's: the IVR must treat them as opaque.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode

from ivr.agi import AgiLocalError, decode_line, split_command

TIMEOUT = "timeout"
"""A :class:`CallerScript` entry: at this prompt the caller pressed nothing."""

DEFAULT_VERSION = "22.10.1"
CONNECT_TIMEOUT = 2.0  # res_agi's MAX_AGI_CONNECT, 2000 ms

AgiStatus = Literal["SUCCESS", "FAILURE", "HANGUP"]

_DTMF = re.compile(r"[0-9*#A-Da-d]+")
_LEADING_INT = re.compile(r"\s*[-+]?\d+")  # what sscanf("%d") reads
_SUBSTITUTION = re.compile(r"\$\{([^{}]*)\}")
_PROMPT_SAMPLES = 16000
_AUDIO_VERBS = ("STREAM FILE", "GET DATA", "SAY ", "WAIT FOR DIGIT")
_DEAD_511 = "511 Command Not Permitted on a dead channel or intercept routine"


@dataclass(frozen=True, slots=True)
class AgiCall:
    """The channel entering ``AGI()``: what res_agi puts in the header block."""

    channel: str
    uniqueid: str
    linkedid: str
    callerid_num: str | None = None
    callerid_name: str | None = None
    language: str = "en"
    dnid: str | None = None
    context: str = "incoming"
    extension: str = "s"
    priority: int = 1
    script: str = "ivr"
    query: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)
    accountcode: str = ""
    version: str = DEFAULT_VERSION
    threadid: int = 139_871_984_142_016

    @property
    def tech(self) -> str:
        """``agi_type``: the channel technology, ``Local`` for ``Local/s@incoming-...;2``."""
        return self.channel.partition("/")[0]

    @property
    def network_script(self) -> str:
        """What follows ``host:port/`` in the URL; relayed as ``agi_network_script``."""
        return self.script + ("?" + urlencode(self.query) if self.query else "")

    def url(self, host: str = "127.0.0.1", port: int = 4573) -> str:
        """The dialplan's AGI URL, sent back as ``agi_request``."""
        netloc = f"[{host}]" if ":" in host else host
        return f"agi://{netloc}:{port}/{self.network_script}"

    def headers(self, host: str = "127.0.0.1", port: int = 4573) -> bytes:
        """The header block exactly as launch_netscript + setup_env write it (LF lines).

        Raises AgiLocalError for a line break in a value: Asterisk would send it and break
        the framing, which no test wants by accident.
        """
        fields = []
        if self.network_script:
            fields.append(("agi_network_script", self.network_script))
        fields += [
            ("agi_request", self.url(host, port)),
            ("agi_channel", self.channel),
            ("agi_language", self.language),
            ("agi_type", self.tech),
            ("agi_uniqueid", self.uniqueid),
            ("agi_version", self.version),
            ("agi_callerid", self.callerid_num or "unknown"),
            ("agi_calleridname", self.callerid_name or "unknown"),
            ("agi_callingpres", "0"),
            ("agi_callingani2", "0"),
            ("agi_callington", "0"),
            ("agi_callingtns", "0"),
            ("agi_dnid", self.dnid or "unknown"),
            ("agi_rdnis", "unknown"),
            ("agi_context", self.context),
            ("agi_extension", self.extension),
            ("agi_priority", str(self.priority)),
            ("agi_enhanced", "0.0"),
            ("agi_accountcode", self.accountcode),
            ("agi_threadid", str(self.threadid)),
        ]
        fields += [(f"agi_arg_{i}", arg) for i, arg in enumerate(self.args, 1)]
        lines = ["agi_network: yes"]
        for key, value in fields:
            if "\n" in value or "\r" in value:
                raise AgiLocalError(f"line break in {key}: {value[:80]!r}")
            lines.append(f"{key}: {value}")
        return ("\n".join(lines) + "\n\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class CallerScript:
    """What the simulated caller does.

    ``presses``: one entry per prompt that accepts keys, in order: the keys typed there
    (``"1"``, ``"42#"``) or :data:`TIMEOUT`. STREAM FILE with escape digits and WAIT FOR
    DIGIT take one key (the rest of the entry is typed ahead for the next prompt); GET DATA
    takes keys up to its maximum or ``#``. A prompt that accepts no key, or finds the script
    exhausted, consumes nothing and times out.

    ``hangup_after``: hang up once that many commands were answered (0: before the first).
    ``hangup_on``: hang up while the first command with this verb (``"GET DATA"``) runs.
    ``listens``: a caller who reacts to what is asked: given the prompt's sound name, the
    keys to press there (or :data:`TIMEOUT`), or None to take the next entry of ``presses``.
    """

    presses: Sequence[str] = ()
    hangup_after: int | None = None
    hangup_on: str | None = None
    listens: Callable[[str], str | None] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "presses", tuple(self.presses))
        for press in self.presses:
            if press != TIMEOUT and not _DTMF.fullmatch(press):
                raise ValueError(f"not DTMF keys nor TIMEOUT: {press!r}")
        if self.hangup_after is not None and self.hangup_after < 0:
            raise ValueError("hangup_after must be >= 0")
        if self.hangup_on is not None:
            object.__setattr__(self, "hangup_on", " ".join(self.hangup_on.upper().split()))


@dataclass
class AgiTranscript:
    """What happened on the simulated channel."""

    commands: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    digits: str = ""
    caller_hung_up: bool = False
    agi_status: AgiStatus = "SUCCESS"


async def run_agi(
    host: str,
    port: int,
    call: AgiCall,
    caller: CallerScript,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    audio: Callable[[str], float] | None = None,
    waits: list[float] | None = None,
) -> AgiTranscript:
    """Run one FastAGI call against ``host:port`` until the server closes.

    ``audio``: given a command that plays sound or waits for keys, the seconds it keeps the
    channel busy before its reply, as a real prompt does (None: every command is instant).
    ``waits``: if given, gets the server's time for each of its steps: from our header block
    or reply leaving to its next command arriving (``time.perf_counter``).

    A refused or timed-out connection is not raised: it gives AGISTATUS=FAILURE, as in
    Asterisk, where the dialplan then goes on.
    """
    transcript = AgiTranscript()
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        transcript.agi_status = "FAILURE"
        return transcript
    channel = _Channel(call, caller, transcript)
    try:
        writer.write(call.headers(host, port) + channel.start())
        while True:
            await writer.drain()
            sent = time.perf_counter()
            raw = await reader.readline()
            if not raw:
                break
            if waits is not None:
                waits.append(time.perf_counter() - sent)
            line = decode_line(raw.removesuffix(b"\n"))
            if audio is not None and line.upper().startswith(_AUDIO_VERBS):
                await asyncio.sleep(audio(line))
            writer.write(channel.handle(line))
    except ConnectionError:
        pass  # the server went away mid-conversation: for Asterisk the AGI simply ended
    finally:
        with suppress(OSError):
            writer.write(b"HANGUP\n")  # run_agi's last word to a FastAGI socket
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()
    transcript.agi_status = "HANGUP" if channel.dead else "SUCCESS"
    return transcript


@dataclass(frozen=True, slots=True)
class _Verb:
    words: tuple[str, ...]
    valid: Callable[[list[str]], bool]
    run: Callable[[_Channel, list[str]], str]
    dead_ok: bool
    failure: str | None  # the line when the caller hangs up during it; None: instant command
    usage: tuple[str, ...]

    @property
    def name(self) -> str:
        return " ".join(self.words)


def _is_int(text: str) -> bool:
    return _LEADING_INT.match(text) is not None


def _atoi(text: str) -> int:
    """C's atoi: the leading integer, 0 when there is none."""
    match = _LEADING_INT.match(text)
    return int(match[0]) if match else 0


class _Channel:
    """The channel and res_agi's command loop, without IO: a command line in, lines out."""

    def __init__(self, call: AgiCall, caller: CallerScript, transcript: AgiTranscript) -> None:
        self.call = call
        self.caller = caller
        self.transcript = transcript
        self.presses: deque[str] = deque(caller.presses)
        self.variables = dict(call.variables)
        self.hangup_on = caller.hangup_on
        self.count = 0
        self.dead = False

    def start(self) -> bytes:
        return self._send(self._hang_up(by_caller=True) if self.caller.hangup_after == 0 else [])

    def handle(self, line: str) -> bytes:
        self.transcript.commands.append(line)
        self.count += 1
        argv = split_command(line)
        verb = _find(argv)
        out: list[str]
        if verb is None:
            out = ["510 Invalid or unknown command"]
        elif self.dead and not verb.dead_ok:
            out = [_DEAD_511]
        elif not verb.valid(argv[len(verb.words) :]):
            out = [
                "520-Invalid command syntax.  Proper usage follows:",
                *verb.usage,
                "520 End of proper usage.",
            ]
        elif not self.dead and verb.name == self.hangup_on:
            self.hangup_on = None
            if verb.failure is not None:
                out = [verb.failure]
            else:
                out = [verb.run(self, argv[len(verb.words) :])]
            out += self._hang_up(by_caller=True)
        else:
            out = [verb.run(self, argv[len(verb.words) :])]
            if verb.name == "HANGUP" and out == ["200 result=1"]:
                out += self._hang_up(by_caller=False)
        if not self.dead and self.count == self.caller.hangup_after:
            out += self._hang_up(by_caller=True)
        return self._send(out)

    def _send(self, lines: list[str]) -> bytes:
        self.transcript.replies += lines
        return "".join(line + "\n" for line in lines).encode("utf-8")

    def _hang_up(self, *, by_caller: bool) -> list[str]:
        self.dead = True
        self.transcript.caller_hung_up = by_caller
        return ["HANGUP"]

    def _press(self, prompt: str) -> str | None:
        """What the caller does at ``prompt``: their reaction to it if they listen, else the
        next entry of the script; None when there is nothing left to do."""
        listens = self.caller.listens
        reaction = listens(prompt) if listens is not None else None
        if reaction is not None:
            return reaction
        return self.presses.popleft() if self.presses else None

    def _key(self, prompt: str = "") -> str:
        """One key from the next entry, or "" for a timeout; the rest is typed ahead."""
        press = self._press(prompt)
        if press is None or press == TIMEOUT:
            return ""
        if len(press) > 1:
            self.presses.appendleft(press[1:])
        self.transcript.digits += press[0]
        return press[0]

    def stream_file(self, args: list[str]) -> str:
        offset = _atoi(args[2]) if len(args) > 2 else 0
        key = self._key(args[0]) if args[1] else ""
        if key and key in args[1]:
            return f"200 result={ord(key)} endpos={offset + _PROMPT_SAMPLES // 2}"
        return f"200 result=0 endpos={offset + _PROMPT_SAMPLES}"

    def get_data(self, args: list[str]) -> str:
        maximum = _atoi(args[2]) if len(args) > 2 else 1024
        press = self._press(args[0])
        if press is None or press == TIMEOUT:
            return "200 result= (timeout)"
        digits = ""
        for i, key in enumerate(press):
            if key == "#" or len(digits) >= maximum:
                ended = i + (key == "#")
                if press[ended:]:
                    self.presses.appendleft(press[ended:])
                self.transcript.digits += press[:ended]
                return f"200 result={digits}"
            digits += key
        self.transcript.digits += press
        return (
            f"200 result={digits}" if len(digits) >= maximum else f"200 result={digits} (timeout)"
        )

    def wait_for_digit(self, args: list[str]) -> str:
        key = self._key()
        return f"200 result={ord(key) if key else 0}"

    def set_variable(self, args: list[str]) -> str:
        self.variables[args[0]] = args[1]
        self.transcript.variables[args[0]] = args[1]
        return "200 result=1"

    def get_variable(self, args: list[str]) -> str:
        value = self._lookup(args[0])
        return "200 result=0" if value is None else f"200 result=1 ({value})"

    def get_full_variable(self, args: list[str]) -> str:
        if len(args) > 1 and args[1] != self.call.channel:
            return "200 result=0"
        value = _SUBSTITUTION.sub(lambda m: self._lookup(m[1]) or "", args[0])
        return f"200 result=1 ({value})"

    def hangup(self, args: list[str]) -> str:
        return "200 result=1" if not args or args[0] == self.call.channel else "200 result=-1"

    def _lookup(self, name: str) -> str | None:
        """A variable, or a dialplan function when the name ends in ``)`` (as res_agi)."""
        call = self.call
        functions = {
            "CHANNEL(linkedid)": call.linkedid,
            "CHANNEL(uniqueid)": call.uniqueid,
            "CHANNEL(name)": call.channel,
            "CHANNEL(language)": call.language,
            "CALLERID(num)": call.callerid_num or "",
            "CALLERID(name)": call.callerid_name or "",
        }
        if name.endswith(")"):
            return functions.get(name)
        builtins = {
            "CHANNEL": call.channel,
            "UNIQUEID": call.uniqueid,
            "CONTEXT": call.context,
            "EXTEN": call.extension,
        }
        return self.variables.get(name, builtins.get(name))


def _fixed(line: str) -> Callable[[_Channel, list[str]], str]:
    return lambda channel, args: line


_VERBS = (
    _Verb(
        ("ANSWER",),
        lambda a: True,
        _fixed("200 result=0"),
        False,
        "200 result=-1",
        (" Answers channel if not already in answer state.",),
    ),
    _Verb(
        ("STREAM", "FILE"),
        lambda a: 2 <= len(a) <= 3 and (len(a) < 3 or _is_int(a[2])),
        _Channel.stream_file,
        False,
        "200 result=-1 endpos=0",
        (
            " Usage: STREAM FILE <filename> <escape digits> [sample offset]",
            " Send the given file, allowing playback to be interrupted by the given digits.",
        ),
    ),
    _Verb(
        ("GET", "DATA"),
        lambda a: len(a) >= 1,
        _Channel.get_data,
        False,
        "200 result=-1",
        (
            " Usage: GET DATA <file to be streamed> [timeout] [max digits]",
            " Stream the given file, and receive DTMF data.",
        ),
    ),
    _Verb(
        ("GET", "FULL", "VARIABLE"),
        lambda a: len(a) in (1, 2),
        _Channel.get_full_variable,
        True,
        None,
        (
            " Usage: GET FULL VARIABLE <variablename> [<channel name>]",
            " Evaluates a channel expression.",
        ),
    ),
    _Verb(
        ("GET", "VARIABLE"),
        lambda a: len(a) == 1,
        _Channel.get_variable,
        True,
        None,
        (
            " Usage: GET VARIABLE <variablename>",
            " Returns 0 if variablename is not set. Returns 1 if variablename is set",
            " and returns the variable in parentheses.",
            " Example return code: 200 result=1 (testvariable)",
        ),
    ),
    _Verb(
        ("WAIT", "FOR", "DIGIT"),
        lambda a: len(a) == 1 and _is_int(a[0]),
        _Channel.wait_for_digit,
        False,
        "200 result=-1",
        (
            " Usage: WAIT FOR DIGIT <timeout>",
            " Waits up to timeout milliseconds for channel to receive a DTMF digit.",
        ),
    ),
    _Verb(
        ("SAY", "NUMBER"),
        lambda a: 2 <= len(a) <= 3 and _is_int(a[0]),
        _fixed("200 result=0"),
        False,
        "200 result=-1",
        (" Usage: SAY NUMBER <number> <escape digits> [gender]", " Says a given number."),
    ),
    _Verb(
        ("SAY", "DIGITS"),
        lambda a: len(a) == 2 and _is_int(a[0]),
        _fixed("200 result=0"),
        False,
        "200 result=-1",
        (" Usage: SAY DIGITS <number> <escape digits>", " Says a given digit string."),
    ),
    _Verb(
        ("SET", "VARIABLE"),
        lambda a: len(a) == 2,
        _Channel.set_variable,
        True,
        None,
        (" Usage: SET VARIABLE <variablename> <value>", " Sets a variable to the given value."),
    ),
    _Verb(
        ("VERBOSE",),
        lambda a: len(a) >= 1,
        _fixed("200 result=1"),
        True,
        None,
        (" Usage: VERBOSE <message> <level>", " Logs a message to the asterisk verbose log."),
    ),
    _Verb(
        ("EXEC",),
        lambda a: len(a) >= 1,
        _fixed("200 result=0"),
        True,
        "200 result=-1",
        (" Usage: EXEC <application> <options>", " Executes a given Application."),
    ),
    _Verb(("NOOP",), lambda a: True, _fixed("200 result=0"), True, None, (" Does nothing.",)),
    _Verb(
        ("HANGUP",),
        lambda a: len(a) <= 1,
        _Channel.hangup,
        False,
        None,
        (" Usage: HANGUP [<channelname>]", " Hangs up the specified channel."),
    ),
)


def _find(argv: list[str]) -> _Verb | None:
    """res_agi's find_command: the verb's words, case-insensitive, then any arguments."""
    upper = [word.upper() for word in argv]
    for verb in _VERBS:
        if tuple(upper[: len(verb.words)]) == verb.words:
            return verb
    return None
