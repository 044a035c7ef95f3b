"""Fuzzing the call model (cti/calls.py's CallTracker) with hypothesis over the real captures.

The recorded streams are cut, reordered, duplicated, thinned and mutated (hostile field values,
unknown ids, resyncs at random points); whatever comes, the model never raises, starts each call
once, ends it at most once, never ends what it did not start, and leaks nothing: once the stream
is over and time has moved past every call's ``max_call_age``, no call and no channel is left.

Each ``@given`` test runs ``FUZZ_EXAMPLES`` examples (env var, default 300; 3 such tests here).
Hypothesis keeps no database and its caches go to the temp dir; it is derandomized when ``CI``
is set. Time is the model's own: each message's ``Timestamp`` or an injected clock, never the
wall clock.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from cti.calls import _IDLE_CHECK_EVERY, CallTracker, frame_filter
from cti.codec import AmiDecoder, Message
from cti.events import CallEnded, CallMerged, CallStarted, DomainEvent

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cti-hypothesis")  # its caches too
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIXTURES = Path(__file__).parent.parent / "fixtures"
CAPTURES = {
    name: AmiDecoder(frame_filter=frame_filter).feed((FIXTURES / f"{name}.txt").read_bytes())
    for name in ("capture_10calls", "capture_extra", "capture_agi_down")
}
MAX_CALL_AGE = 3600.0
TICK = 0.05  # the injected clock's step between two messages


@dataclass(frozen=True)
class Resync:
    """A reconnect in the middle of the stream: begin_resync, or end_resync(complete)."""

    begin: bool
    complete: bool = True


Item = Message | Resync

# --- strategies -------------------------------------------------------------------------------

# Values a broken or hostile peer could put in any field: empty, huge, control characters,
# non-numbers (and non-finite numbers) in numeric fields, ids of nothing the model has seen.
HOSTILE = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\x1b[2J\x07",
            "a\nb",
            "nan",
            "inf",
            "-inf",
            "1e309",
            "1e300",
            "-1",
            "0",
            "١٢٣",
            "12abc",
            "9" * 400,
            "<unknown>",
            "1795400000.999",
            "PJSIP/ghost-0000ffff",
            "x" * 1_000_000,
        ]
    ),
    st.text(max_size=20),
)
# What float() accepts but no clock reads; what it refuses
ODD_NUMBERS = st.sampled_from(["nan", "inf", "-inf", "1e309", "NaN", "Infinity", "-0", "0x10"])
FIELDS = st.sampled_from(
    [
        "Event",
        "Uniqueid",
        "Linkedid",
        "DestUniqueid",
        "DestLinkedid",
        "Channel",
        "DestChannel",
        "Timestamp",
        "Queue",
        "MemberName",
        "Interface",
        "DialStatus",
        "HoldTime",
        "TalkTime",
        "Position",
        "BridgeUniqueid",
        "Variable",
        "Value",
        "CallerIDNum",
        "ChannelState",
    ]
)
INDEX = st.integers(0, 10**6)  # taken modulo the stream's length, so it shrinks to 0

OPS = st.one_of(
    st.tuples(st.just("prefix"), INDEX),
    st.tuples(st.just("suffix"), INDEX),
    st.tuples(st.just("drop"), INDEX, st.integers(1, 50)),
    st.tuples(st.just("duplicate"), INDEX, st.integers(1, 20)),
    st.tuples(st.just("swap"), INDEX),
    st.tuples(st.just("shuffle"), INDEX, st.permutations(range(8))),
    st.tuples(st.just("subset"), st.integers(0, 2**32), st.floats(0.05, 0.95)),
    st.tuples(st.just("mutate"), INDEX, FIELDS, HOSTILE),
    st.tuples(st.just("remove"), INDEX, FIELDS),
    st.tuples(st.just("resync"), INDEX, INDEX, st.booleans()),
)


def apply(stream: list[Item], op: tuple[object, ...]) -> list[Item]:
    """One edit of the stream; indexes wrap, so any drawn number is a valid place."""
    if not stream:
        return stream
    n = len(stream)
    kind, *args = op
    at = args[0] % n if isinstance(args[0], int) else 0
    match op:
        case ("prefix", _):
            return stream[:at]
        case ("suffix", _):
            return stream[at:]
        case ("drop", _, int(length)):
            return stream[:at] + stream[at + length :]
        case ("duplicate", _, int(length)):
            return stream[: at + length] + stream[at : at + length] + stream[at + length :]
        case ("swap", _):
            j = (at + 1) % n
            out = list(stream)
            out[at], out[j] = out[j], out[at]
            return out
        case ("shuffle", _, order):
            window = stream[at : at + 8]
            shuffled = [window[i] for i in order if i < len(window)]  # type: ignore[attr-defined]
            return stream[:at] + shuffled + stream[at + 8 :]
        case ("subset", int(seed), float(keep)):
            # a random subset: each message kept or not by a hash of its place and the seed
            return [m for i, m in enumerate(stream) if hash((seed, i)) % 1000 < keep * 1000]
        case ("mutate", _, str(key), str(value)):
            target = stream[at]
            if isinstance(target, Resync):
                return stream
            return [*stream[:at], {**target, key: value}, *stream[at + 1 :]]
        case ("remove", _, str(key)):
            target = stream[at]
            if isinstance(target, Resync):
                return stream
            edited = {k: v for k, v in target.items() if k != key}
            return [*stream[:at], edited, *stream[at + 1 :]]
        case ("resync", _, int(end), bool(complete)):
            stop = max(at, end % n)
            begin, end_ = Resync(True), Resync(False, complete)
            return [*stream[:at], begin, *stream[at:stop], end_, *stream[stop:]]
    raise AssertionError(f"unknown edit {kind}")


def edited_streams() -> st.SearchStrategy[list[Item]]:
    @st.composite
    def build(draw: st.DrawFn) -> list[Item]:
        stream: list[Item] = list(CAPTURES[draw(st.sampled_from(sorted(CAPTURES)))])
        for op in draw(st.lists(OPS, min_size=1, max_size=8)):
            stream = apply(stream, op)
        return stream

    return build()


# --- running and checking ---------------------------------------------------------------------


def _time(item: Item) -> float | None:
    try:
        value = float(item.get("Timestamp", "")) if not isinstance(item, Resync) else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def run(stream: list[Item], clock: float) -> tuple[CallTracker, list[DomainEvent], float]:
    """Feed the stream (each message received ``TICK`` after the previous one) and return the
    tracker, what it said, and the latest time it was told about."""
    tracker = CallTracker("fuzz", max_call_age=MAX_CALL_AGE)
    events: list[DomainEvent] = []
    latest = clock
    for item in stream:
        clock += TICK
        latest = max(latest, clock, _time(item) or clock)
        if isinstance(item, Resync):
            if item.begin:
                tracker.begin_resync()
            else:
                events += tracker.end_resync(clock, item.complete)
        else:
            events += tracker.on_event(item, clock)
    return tracker, events, latest


def wind_down(tracker: CallTracker, latest: float) -> list[DomainEvent]:
    """The stream is over: end closing calls, then let time pass beyond every call's age (a
    first look stamps the calls never seen with a time, the next one ends them)."""
    events = tracker.flush()
    far = latest + MAX_CALL_AGE + 2 * _IDLE_CHECK_EVERY
    events += tracker.expire(far)
    events += tracker.expire(far + MAX_CALL_AGE + 2 * _IDLE_CHECK_EVERY)
    return events


def check(tracker: CallTracker, events: list[DomainEvent]) -> None:
    started = Counter(e.call_id for e in events if isinstance(e, CallStarted))
    ended = Counter(e.call_id for e in events if isinstance(e, CallEnded))
    absorbed = Counter(e.absorbed_call_id for e in events if isinstance(e, CallMerged))
    assert [c for c, n in started.items() if n > 1] == [], "a call started twice"
    assert [c for c, n in ended.items() if n > 1] == [], "a call ended twice"
    assert set(ended) <= set(started), "a call ended that never started"
    assert set(absorbed) <= set(started), "a merge absorbed a call that never started"
    assert [c for c in ended if c in absorbed] == [], "an absorbed call ended on its own"
    assert tracker.active_calls() == [], "calls left after time ran out"
    assert tracker.channel_count == 0, "channels left after time ran out"
    assert set(started) == set(ended) | set(absorbed), "a call neither ended nor merged"


def first_time(stream: list[Item]) -> float:
    times = [t for t in map(_time, stream) if t is not None]
    return times[0] if times else 1_795_400_000.0


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(stream=edited_streams())
def test_edited_capture_never_raises_and_never_leaks(stream: list[Item]) -> None:
    """FUZZ_EXAMPLES (default 300) real captures, each edited up to 8 times (prefix, suffix,
    dropped run, duplicated run, swapped neighbours, shuffled window of 8, random subset, a
    field set to a hostile value or removed, a resync around a stretch): the model never
    raises, starts and ends each call at most once, and after flush() and expire() far ahead
    holds no call and no channel."""
    tracker, events, latest = run(stream, first_time(stream))
    events += wind_down(tracker, latest)
    check(tracker, events)


@FUZZ
@given(name=st.sampled_from(sorted(CAPTURES)), cuts=st.lists(INDEX, min_size=1, max_size=6))
def test_resyncs_at_random_points_never_leak(name: str, cuts: list[int]) -> None:
    """FUZZ_EXAMPLES (default 300) captures with reconnects at random points (a begin_resync,
    a stretch of stream, an end_resync), some overlapping: nothing is left after wind-down."""
    stream: list[Item] = list(CAPTURES[name])
    for i, cut in enumerate(cuts):
        stream = apply(stream, ("resync", cut, cut * 7 + i, i % 3 != 0))
    tracker, events, latest = run(stream, first_time(stream))
    events += wind_down(tracker, latest)
    check(tracker, events)


@FUZZ
@given(
    name=st.sampled_from(sorted(CAPTURES)),
    edits=st.lists(st.tuples(INDEX, FIELDS, HOSTILE), min_size=1, max_size=30),
    stamps=st.lists(st.tuples(INDEX, ODD_NUMBERS), max_size=3),
    cut=st.none() | INDEX,
)
def test_hostile_field_values_never_raise_or_leak(
    name: str, edits: list[tuple[int, str, str]], stamps: list[tuple[int, str]], cut: int | None
) -> None:
    """FUZZ_EXAMPLES (default 300) captures with up to 30 fields (ids, times, numbers, names)
    set to hostile text: empty, 1 MB, control characters, non-digits, non-finite numbers,
    unknown ids; up to 3 odd Timestamps (nan, inf); half of them cut short, so some hang-ups
    never come. Same properties as above."""
    stream: list[Item] = list(CAPTURES[name])
    for index, key, value in edits:
        stream = apply(stream, ("mutate", index, key, value))
    for index, value in stamps:
        stream = apply(stream, ("mutate", index, "Timestamp", value))
    if cut is not None:
        stream = apply(stream, ("prefix", cut))
    tracker, events, latest = run(stream, first_time(stream))
    events += wind_down(tracker, latest)
    check(tracker, events)


def test_the_checks_can_fail() -> None:
    """The leak check is real: a stream cut mid-call, not wound down, leaves a call."""
    stream: list[Item] = list(CAPTURES["capture_10calls"])
    tracker, events, _ = run(stream[: len(stream) // 2], first_time(stream))
    assert tracker.active_calls() != []
    try:
        check(tracker, events)
    except AssertionError:
        return
    raise AssertionError("check() passed on a tracker that still holds calls")


# --- what the fuzzing found -------------------------------------------------------------------


def test_regression_infinite_timestamp_does_not_stop_expiry() -> None:
    """Found by test_hostile_field_values_never_raise_or_leak (``Timestamp: inf`` on the first
    event, the stream cut soon after): the idle check was put off to ``inf + 60`` for good, so a
    call whose hang-up never came was never expired. Fix: cti/calls.py's ``_timestamp`` takes a
    Timestamp only when it is a finite number (else the receive time)."""
    for odd in ("inf", "nan", "1e309", "-inf"):
        stream = list(CAPTURES["capture_10calls"])
        first = next(i for i, m in enumerate(stream) if "Event" in m)
        stream = apply(stream, ("mutate", first, "Timestamp", odd))
        stream = apply(stream, ("prefix", 300))  # a call in progress when the stream stops
        tracker, events, latest = run(stream, first_time(stream))
        assert tracker.active_calls() != []
        events += wind_down(tracker, latest)
        check(tracker, events)


def test_regression_non_finite_hold_time_is_no_number() -> None:
    """``HoldTime: nan`` gave a record with ``hold_seconds`` nan (not JSON, never equal to
    itself); like a non-number it is now None."""
    base = {"Uniqueid": "1.1", "Linkedid": "1.1", "Channel": "PJSIP/a-00000001"}
    for hold in ("nan", "inf"):
        tracker = CallTracker()
        tracker.on_event({"Event": "Newchannel", "Timestamp": "10", **base})
        tracker.on_event({"Event": "QueueCallerJoin", "Queue": "q", "Timestamp": "11", **base})
        tracker.on_event({"Event": "HangupRequest", "Timestamp": "12", **base})
        (event,) = tracker.on_event(
            {"Event": "QueueCallerAbandon", "Queue": "q", "HoldTime": hold, **base}
        )
        assert event.hold_seconds is None  # type: ignore[attr-defined]


def test_regression_a_far_off_timestamp_does_not_move_the_clock() -> None:
    """Left by the fuzzing (a finite ``Timestamp`` far ahead, e.g. ``1e300``, moved the model's
    clock: every open call expired at once and the idle check waited for that time). Fix:
    cti/calls.py's ``_timestamp`` believes a Timestamp only before the year 5138 and within a
    day of when it was read."""
    stream = list(CAPTURES["capture_10calls"])
    stream = apply(stream, ("prefix", 300))  # calls in progress
    start = first_time(stream)
    for odd in ("1e300", "99999999999", f"{start + 3 * 86_400:.6f}", "-5"):
        tracker, events, latest = run(stream, start)
        open_calls = {c.call_id for c in tracker.active_calls()}
        assert open_calls
        said = tracker.on_event(
            {"Event": "Newexten", "Uniqueid": "x.1", "Linkedid": "x.1", "Timestamp": odd},
            latest + TICK,
        )
        said += tracker.expire(latest + 10.0)  # ten seconds on: nothing is that old
        assert not [e for e in said if isinstance(e, CallEnded)], odd
        assert {c.call_id for c in tracker.active_calls()} >= open_calls
        events += said + wind_down(tracker, latest)
        check(tracker, events)
