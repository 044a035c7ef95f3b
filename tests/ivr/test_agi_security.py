"""Issue 22, finding 3: FastAGI trusted whoever connected. Now only allowed peers with the
URL's secret are served, PIN guesses are limited per customer across calls, and findings (and
callbacks) reach only calls the AMI side follows, on one of their channels.

The simulated Asterisk is ivr.client; the menus are the shipped ones; the store is a fake
that counts what it is asked; the live calls come from the real capture (a Local ``;2`` half
runs the AGI, its linkedid is the call's)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cti.calls import CallTracker
from cti.codec import AmiDecoder
from cti.codec import Message as AmiMessage
from ivr.client import TIMEOUT, AgiCall, AgiTranscript, CallerScript, run_agi
from ivr.guard import PeerAllowList, PinLimiter, TrackedCalls
from ivr.menus import Figure, load_menus
from ivr.runner import LiveCalls, MenuHandler, pbx_from_query
from ivr.server import AgiServer
from ivr.walk import CustomerInfo, FigureValue

ROOT = Path(__file__).parent.parent.parent
MENUS = load_menus(ROOT / "config" / "ivr")
CAPTURE = ROOT / "tests" / "fixtures" / "capture_10calls.txt"
WEI = CustomerInfo(7, "Wei", "regular", "active", "en")
# The capture's first call: the AGI runs on the Local ;2 half, the call id is its linkedid
REAL = AgiCall(
    channel="Local/s@incoming-00000000;2",
    uniqueid="astlab-1795418875.1",
    linkedid="astlab-1795418875.0",
    callerid_num="+15550100001",
    script="main",
)


@dataclass
class Store:
    """A customer store that counts what it is asked; the one account is 42, PIN 2468."""

    pins_checked: list[str] = field(default_factory=list)
    callbacks: list[str | None] = field(default_factory=list)
    surveys: int = 0

    async def find_by_phone(self, number: str) -> tuple[CustomerInfo, ...]:
        return (WEI,) if number == REAL.callerid_num else ()

    async def find_by_account(self, account: str) -> tuple[CustomerInfo, ...]:
        return (WEI,) if account == "42" else ()

    async def verify_pin(self, customer_id: int, pin: str) -> bool:
        self.pins_checked.append(pin)
        return pin == "2468"

    async def figure(self, figure: Figure, customer_id: int) -> FigureValue:
        return FigureValue("amount", "1.00", "EUR")

    async def request_callback(
        self, queue: str, number: str, customer_id: int | None, call_id: str | None
    ) -> str:
        self.callbacks.append(call_id)
        return "f-1"

    async def save_survey(self, *args: Any) -> None:
        self.surveys += 1


@dataclass
class Sink:
    """The pop: ``ivr_learned`` is the only way to a card."""

    reports: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def ivr_learned(self, pbx: str, call_id: str, findings: dict[str, Any]) -> None:
        self.reports.append((pbx, call_id, findings))


def capture_until_agi() -> list[AmiMessage]:
    """The capture's messages up to the first AGIExecStart: what AMI knows when the IVR runs."""
    decoder = AmiDecoder()  # unfiltered: the model skips the AGI events, we stop at one
    out: list[AmiMessage] = []
    for message in decoder.feed(CAPTURE.read_bytes()):
        if message.get("Event") == "AGIExecStart":
            return out
        out.append(message)
    raise AssertionError("no AGIExecStart in the capture")


def tracker_with(messages: list[AmiMessage]) -> CallTracker:
    tracker = CallTracker("astlab")
    for message in messages:
        tracker.on_event(message)
    return tracker


@dataclass
class Ivr:
    port: int
    server: AgiServer
    store: Store
    sink: Sink
    handlers: list[MenuHandler]

    async def call(self, call: AgiCall, caller: CallerScript) -> AgiTranscript:
        async with asyncio.timeout(10):
            return await run_agi("127.0.0.1", self.port, call, caller)


async def serve(
    *,
    peers: PeerAllowList | None = None,
    secret: str = "",
    pins: PinLimiter | None = None,
    calls: LiveCalls | None = None,
    call_wait: float = 0.2,
) -> AsyncIterator[Ivr]:
    store, sink = Store(), Sink()
    server = AgiServer(hangup_grace=0.05, peers=peers, secret=secret)
    handlers = []
    for name, menu in MENUS.items():
        handler = MenuHandler(
            menu,
            store,
            sink,
            pbx_for=pbx_from_query("astlab", frozenset({"astlab"})),
            pins=pins,
            calls=calls,
            call_wait=call_wait,
        )
        server.add_route(name, handler)
        handlers.append(handler)
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield Ivr(port, server, store, sink, handlers)
    finally:
        await server.stop()
        for handler in handlers:
            await handler.settle()


# --- who may connect ----------------------------------------------------------------------


async def test_a_peer_not_on_the_allow_list_is_closed_at_once_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async for ivr in serve(peers=PeerAllowList(["10.0.0.5", "192.0.2.0/24"])):
        transcript = await ivr.call(REAL, CallerScript([TIMEOUT, "3"]))
        assert transcript.commands == []  # not even GET VARIABLE CHANNEL(linkedid)
        assert ivr.sink.reports == [] and ivr.store.pins_checked == []
        assert ivr.server.refused == {"address not in [ivr] allowed_peers": 1}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "127.0.0.1" in warnings[0].getMessage()
    assert "allowed_peers" in warnings[0].getMessage()


async def test_loopback_on_the_list_is_served() -> None:
    async for ivr in serve(peers=PeerAllowList(["10.0.0.5", "127.0.0.0/8"])):
        transcript = await ivr.call(REAL, CallerScript([TIMEOUT, "3"]))
        assert transcript.variables.get("IVR_QUEUE") == "support"
        assert not ivr.server.refused


def test_the_allow_list_reads_addresses_networks_and_mapped_ipv4() -> None:
    peers = PeerAllowList(["10.0.0.5", "192.0.2.0/24", "::1"])
    assert peers.allows("10.0.0.5") and peers.allows("192.0.2.77") and peers.allows("::1")
    assert peers.allows("::ffff:10.0.0.5")  # an IPv4 peer on a dual-stack socket
    assert not peers.allows("10.0.0.6") and not peers.allows("") and not peers.allows("x")
    with pytest.raises(ValueError, match="not an IP address"):
        PeerAllowList(["asterisk.example"])


@pytest.mark.parametrize("query", [{}, {"secret": "guess"}, {"secret": "s3cret-but-longer"}])
async def test_a_wrong_or_missing_secret_is_refused(
    query: Mapping[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    call = AgiCall(
        channel=REAL.channel, uniqueid=REAL.uniqueid, linkedid=REAL.linkedid,
        callerid_num=REAL.callerid_num, script="main", query=query,
    )  # fmt: skip
    async for ivr in serve(secret="s3cret"):
        transcript = await ivr.call(call, CallerScript([TIMEOUT, "3"]))
        assert transcript.commands == [] and ivr.sink.reports == []
        assert ivr.server.refused == {"wrong or missing secret in the AGI URL": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "secret" in warnings[0]


async def test_the_right_secret_is_served_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    call = AgiCall(
        channel=REAL.channel, uniqueid=REAL.uniqueid, linkedid=REAL.linkedid,
        callerid_num=REAL.callerid_num, script="main", query={"pbx": "astlab", "secret": "s3cret"},
    )  # fmt: skip
    async for ivr in serve(secret="s3cret"):
        transcript = await ivr.call(call, CallerScript([TIMEOUT, "3"]))
        assert transcript.variables.get("IVR_QUEUE") == "support"
        assert not ivr.server.refused
    assert "s3cret" not in caplog.text


# --- PIN guessing -------------------------------------------------------------------------


def guesser(n: int) -> CallerScript:
    """A caller without caller ID: account 42, then three wrong PINs."""
    return CallerScript([TIMEOUT, "42#", f"{3 * n:04d}", f"{3 * n + 1:04d}", f"{3 * n + 2:04d}"])


def anonymous(n: int) -> AgiCall:
    return AgiCall(
        channel=f"PJSIP/trunk-{n:08x}", uniqueid=f"lab-{n}", linkedid=f"lab-{n}", script="main"
    )


async def test_pin_guessing_across_14_sessions_stops_at_the_limit() -> None:
    now = [0.0]
    pins = PinLimiter(failures=5, window=900.0, lockout=60.0, clock=lambda: now[0])
    async for ivr in serve(pins=pins):
        transcripts = await asyncio.gather(*(ivr.call(anonymous(n), guesser(n)) for n in range(14)))
        assert len(ivr.store.pins_checked) == 5  # not 42
        assert all(t.variables.get("IVR_QUEUE") == "support" for t in transcripts)
        locked = [r for _, _, r in ivr.sink.reports if ["identify", "pin-locked"] in r["path"]]
        assert locked and all(r["customer_id"] is None for _, _, r in ivr.sink.reports)
        # the right PIN does not help while locked out
        right = CallerScript([TIMEOUT, "42#", "2468"])
        await ivr.call(anonymous(99), right)
        assert len(ivr.store.pins_checked) == 5 and ivr.sink.reports[-1][2]["customer_id"] is None
        now[0] += 61.0  # the lockout is over: one more try, and it is right
        await ivr.call(anonymous(100), right)
        assert ivr.store.pins_checked[-1] == "2468"
        assert ivr.sink.reports[-1][2]["customer_id"] == WEI.id


def test_the_lockout_doubles_and_a_right_pin_clears_the_count() -> None:
    now = [0.0]
    pins = PinLimiter(failures=2, window=100.0, lockout=10.0, clock=lambda: now[0])
    assert pins.attempt(1) and pins.attempt(1) and not pins.attempt(1)
    now[0] = 9.0
    assert not pins.attempt(1) and pins.attempt(2)  # another customer is not locked
    now[0] = 10.0
    assert pins.attempt(1) and pins.attempt(1) and not pins.attempt(1)  # locked for 20 s now
    now[0] = 29.0
    assert pins.locked(1) and not pins.attempt(1)
    now[0] = 30.0
    assert pins.attempt(1)
    pins.succeeded(1)
    assert pins.attempt(1) and pins.attempt(1)


def test_the_limiter_is_bounded() -> None:
    pins = PinLimiter(failures=1, max_customers=100, clock=lambda: 0.0)
    for customer in range(1000):
        pins.attempt(customer)
    assert len(pins) <= 100


# --- findings only for calls AMI follows ------------------------------------------------


@pytest.fixture
def tracker() -> CallTracker:
    return tracker_with(capture_until_agi())


def calls_of(tracker: CallTracker) -> TrackedCalls:
    return TrackedCalls({"astlab": tracker})


async def test_a_real_call_from_the_capture_gets_its_findings_and_callback(
    tracker: CallTracker,
) -> None:
    async for ivr in serve(calls=calls_of(tracker)):
        await ivr.call(REAL, CallerScript([TIMEOUT, "9"]))
        assert ivr.store.callbacks == [REAL.linkedid]
        assert ivr.sink.reports and {(p, c) for p, c, _ in ivr.sink.reports} == {
            ("astlab", REAL.linkedid)
        }
        assert ivr.sink.reports[-1][2]["callback"] == "f-1"


def forged(**changes: str) -> AgiCall:
    fields = {
        "channel": REAL.channel, "uniqueid": REAL.uniqueid, "linkedid": REAL.linkedid,
        "callerid_num": REAL.callerid_num, "script": "main",
    }  # fmt: skip
    return AgiCall(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        forged(linkedid="astlab-1795418999.0"),  # no such call
        forged(uniqueid="astlab-1795418875.0", channel="Local/s@incoming-00000000;2"),
        forged(channel="PJSIP/evil-00000001", uniqueid="evil.1"),  # not a channel of it
        forged(uniqueid=REAL.linkedid, channel="PJSIP/guess-00000000"),  # its id, not its name
    ],
    ids=["unknown-call", "name-of-another-channel", "foreign-channel", "linkedid-as-uniqueid"],
)
async def test_findings_for_a_call_or_channel_ami_does_not_know_never_reach_the_card(
    tracker: CallTracker, call: AgiCall, caplog: pytest.LogCaptureFixture
) -> None:
    async for ivr in serve(calls=calls_of(tracker)):
        transcript = await ivr.call(call, CallerScript([TIMEOUT, "9"]))
        assert ivr.sink.reports == []
        assert ivr.store.callbacks == []  # no follow-up created
        assert transcript.variables.get("IVR_QUEUE") == "support"  # the caller still gets help
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if "not a live call" in w]) == 1


async def test_ami_events_arriving_after_the_agi_session_starts_still_prove_the_call() -> None:
    tracker = CallTracker("astlab")
    messages = capture_until_agi()

    async def feed_late() -> None:
        await asyncio.sleep(0.1)  # the AMI stream is a little behind the FastAGI connection
        for message in messages:
            tracker.on_event(message)

    async for ivr in serve(calls=calls_of(tracker), call_wait=2.0):
        late = asyncio.ensure_future(feed_late())
        transcript = await ivr.call(REAL, CallerScript([TIMEOUT, "3"]))
        assert transcript.variables.get("IVR_QUEUE") == "support"  # the dialplan goes on
        await late
        async with asyncio.timeout(5):
            for handler in ivr.handlers:
                await handler.settle()
        assert ivr.sink.reports and ivr.sink.reports[-1][1] == REAL.linkedid
        assert ivr.sink.reports[-1][2]["route"]["queue"] == "support"
