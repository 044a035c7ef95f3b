"""The PBX simulator: scenarios against the real Asterisk 22.10 captures, and the AMI server
on real sockets (127.0.0.1), read back with our own decoder."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest

from cti.codec import AmiDecoder, encode, unescape
from pbxsim import scenarios as sc
from pbxsim.server import AmiServer, parse_event_mask
from pbxsim.traffic import generate_stream, run_traffic

FIXTURES = Path(__file__).parent.parent / "fixtures"
SNAPSHOT = [
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
]
PREFIXES = ("Dest", "Transferer", "Transferee", "OrigTransferer", "SecondTransferer")
CALLERS = [
    ("+8613800138000", "张伟"),
    ("008613800138000", "José Núñez"),
    ("13800138000", "O'Brien"),
    ("02079460958", "Ana 😀"),
    ("+15550100001", "Alice Customer"),
    (None, None),
]
NOISE = {"VarSet", "Newexten", "DeviceStateChange", "Cdr", "QueueMemberStatus"}

Events = list[dict[str, str]]


def build(name: str, seed: int = 1, number: str | None = "+15550100001", **kw: object) -> Events:
    fn = sc.SCENARIOS[name]
    out = fn(
        sc.Pbx("astlab"),
        random.Random(seed),
        start=1_795_418_875.9,
        number=number,
        name=kw.pop("caller_name", "Alice Customer"),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return [event for _, event in out]


def names(events: Iterable[dict[str, str]], *, skip: set[str] = NOISE) -> list[str]:
    """Call- and agent-class event names, as the brief compares them."""
    return [
        e["Event"]
        for e in events
        if e.get("Privilege", "").split(",")[0] in ("call", "agent") and e["Event"] not in skip
    ]


def captured_call(path: Path, linkedid: str) -> Events:
    msgs = AmiDecoder(expect_banner=False).feed(path.read_bytes())
    bridges = {
        m["BridgeUniqueid"]
        for m in msgs
        if m.get("Event") == "BridgeEnter" and m.get("Linkedid") == linkedid
    }
    return [
        m
        for m in msgs
        if any(v == linkedid for k, v in m.items() if k.endswith("Linkedid"))
        or (m.get("Event") == "OriginateResponse" and m.get("Uniqueid") == linkedid)
        or (m.get("BridgeUniqueid") in bridges and "Channel" not in m)
    ]


def index(events: Events, pred: Callable[[dict[str, str]], bool]) -> list[int]:
    return [i for i, e in enumerate(events) if pred(e)]


def is_(name: str, **fields: str) -> Callable[[dict[str, str]], bool]:
    return lambda e: e["Event"] == name and all(e.get(k) == v for k, v in fields.items())


# -- scenarios against the captures ----------------------------------------------------------
def test_answered_matches_first_captured_call() -> None:
    captured = names(captured_call(FIXTURES / "capture_10calls.txt", "astlab-1795418875.0"))
    assert captured[:3] == ["OriginateResponse", "Newchannel", "Newchannel"]
    movable = {"OriginateResponse", "AgentComplete"}
    exact = 0
    for seed in range(40):
        got = names(build("answered", seed))
        # OriginateResponse and AgentComplete move between runs, as in the captures
        assert [n for n in got if n not in movable] == [n for n in captured if n not in movable]
        exact += got == captured
    assert exact > 0


def test_answered_snapshot_values_follow_the_capture() -> None:
    events = build("answered", 3)
    join = next(e for e in events if e["Event"] == "QueueCallerJoin")
    assert join["Channel"].startswith("Local/s@incoming-") and join["Channel"].endswith(";2")
    assert (join["Context"], join["Exten"], join["Priority"]) == ("incoming", "s", "8")
    assert join["Linkedid"] != join["Uniqueid"]  # the ;1 half is the oldest channel
    called = next(e for e in events if e["Event"] == "AgentCalled")
    assert called["Interface"] == "Local/1001@agents/n" and called["MemberName"] == "Alice"
    assert called["DestChannel"].endswith(";1") and called["DestLinkedid"] == join["Linkedid"]
    uid = join["Uniqueid"]
    system, _, rest = uid.partition("-")
    assert system == "astlab" and rest.split(".")[0] == "1795418875"


@pytest.mark.parametrize("name", sorted(sc.SCENARIOS))
def test_every_scenario_keeps_channels_and_bridges_consistent(name: str) -> None:
    pbx = sc.Pbx("sim")
    for seed in range(12):
        number, caller = CALLERS[seed % len(CALLERS)]
        timings = sc.Timings(ring=(seed % 3) * 1.5, wait=seed % 4)
        extra: dict[str, object] = {}
        if name == "abandoned":
            extra["while_ringing"] = seed % 2 == 1
        if name == "answered":
            extra["hangup_by"] = "caller" if seed % 2 else "agent"
        timed = sc.SCENARIOS[name](
            pbx,
            random.Random(seed),
            start=1.8e9 + seed * 100,
            number=number,
            name=caller,
            timings=timings,
            **extra,  # type: ignore[arg-type]
        )
        check_consistent(timed)


def check_consistent(timed: list[tuple[float, dict[str, str]]]) -> None:
    alive: set[str] = set()
    seen: set[str] = set()
    bridges: dict[str, set[str]] = {}
    last = 0.0
    for offset, e in timed:
        assert offset >= last
        last = offset
        assert list(e)[:2] == ["Event", "Privilege"] and e["SystemName"] == "sim"
        if "ChannelState" in e:
            assert [k for k in e if k in SNAPSHOT] == SNAPSHOT, e["Event"]
            uid = e["Uniqueid"]
            if e["Event"] == "Newchannel":
                assert uid not in seen
                seen.add(uid)
                alive.add(uid)
            assert uid in alive, (e["Event"], e["Channel"])
            if e["Event"] == "Hangup":
                alive.remove(uid)
        for prefix in PREFIXES:
            if prefix + "Uniqueid" in e:
                assert e[prefix + "Uniqueid"] in alive, (e["Event"], prefix)
        bridge = e.get("BridgeUniqueid", "")
        if e["Event"] == "BridgeCreate":
            bridges[bridge] = set()
        elif e["Event"] in ("BridgeEnter", "BridgeLeave"):
            members = bridges[bridge]
            (members.add if e["Event"] == "BridgeEnter" else members.remove)(e["Uniqueid"])
            assert int(e["BridgeNumChannels"]) == len(members)
        elif e["Event"] == "BridgeDestroy":
            assert not bridges.pop(bridge)
    assert not alive and not bridges


def test_ring_all_orders_like_capture_extra() -> None:
    events = build("ring_all", 2, queue="sales", winner=1)
    called = index(events, is_("AgentCalled"))
    dial_ends = index(events, is_("DialEnd"))
    answers = [
        i for i in dial_ends if events[i]["DialStatus"] == "ANSWER" and "Channel" in events[i]
    ]
    assert len(called) == 3 and max(called) < min(i for i in dial_ends if "Channel" in events[i])
    assert len(answers) == 1
    winner = events[answers[0]]["DestChannel"]
    for i in called:
        leg = events[i]["DestChannel"]
        if leg != winner:
            cancels = [j for j in dial_ends if events[j]["DestChannel"] == leg]
            assert len(cancels) == 2 and min(cancels) > answers[0]
            assert all(events[j]["DialStatus"] == "CANCEL" for j in cancels)
            gone = next(e for e in events if is_("Hangup", Channel=leg)(e))
            assert gone["Cause"] == "26" and gone["Cause-txt"] == "Answered elsewhere"
    (leave,) = index(events, is_("QueueCallerLeave"))
    (connect,) = index(events, is_("AgentConnect"))
    assert leave < connect


@pytest.mark.parametrize("while_ringing", [False, True])
def test_abandon_before_leave_and_cancel_twice(while_ringing: bool) -> None:
    events = build("abandoned", 4, while_ringing=while_ringing)
    (abandon,) = index(events, is_("QueueCallerAbandon"))
    (leave,) = index(events, is_("QueueCallerLeave"))
    assert abandon < leave
    assert events[abandon]["HoldTime"] in ("3", "4")  # whole seconds, patience 4 s
    assert events[abandon]["OriginalPosition"] == "1"
    cancels = index(events, is_("DialEnd", DialStatus="CANCEL"))
    assert len(cancels) == (2 if while_ringing else 0)
    assert all(i < abandon for i in cancels)
    assert "AgentConnect" not in names(events)


def test_ring_no_answer_units() -> None:
    events = build("ring_no_answer", 5, timings=sc.Timings(ring=2.4))
    (rna,) = [e for e in events if e["Event"] == "AgentRingNoAnswer"]
    assert rna["RingTime"] == "15000" and rna["MemberName"] == "Alice"  # milliseconds
    (connect,) = [e for e in events if e["Event"] == "AgentConnect"]
    assert connect["MemberName"] == "Bob" and connect["RingTime"] in ("2", "3")  # seconds
    assert int(connect["HoldTime"]) >= 16
    statuses = [e["DialStatus"] for e in events if e["Event"] == "DialEnd" and "Channel" in e]
    assert statuses == ["NOANSWER", "CANCEL", "ANSWER"]


def test_agent_complete_variants_include_the_bare_one() -> None:
    shapes = set()
    for seed in range(30):
        (done,) = [e for e in build("answered", seed) if e["Event"] == "AgentComplete"]
        shapes.add(("Channel" in done, "DestChannel" in done))
        assert done["Reason"] == "agent" and done["TalkTime"] == "4"
    assert shapes == {(True, True), (True, False), (False, False)}


@pytest.mark.parametrize(
    ("reason", "abandon", "status", "context"),
    [
        ("timeout", True, "TIMEOUT", "queue-fallback"),
        ("leave_empty", True, "LEAVEEMPTY", "queue-fallback"),
        ("withdraw", True, "WITHDRAW", "queue-fallback"),
        ("redirect", True, None, "after-redirect"),
        ("exit_key", False, None, "queue-exit"),
    ],
)
def test_queue_exits(reason: str, abandon: bool, status: str | None, context: str) -> None:
    events = build(reason, 6)
    assert ("QueueCallerAbandon" in names(events)) is abandon
    statuses = [e["Value"] for e in events if is_("VarSet", Variable="QUEUESTATUS")(e)]
    assert statuses == ([status] if status else [])
    (leave,) = index(events, is_("QueueCallerLeave"))
    caller = events[leave]["Uniqueid"]
    later = [e for e in events[leave:] if e.get("Uniqueid") == caller and e["Event"] == "Newexten"]
    assert later[0]["Context"] in ("incoming", context)
    assert any(e["Context"] == context for e in later)
    assert events[-1]["Event"] == "Hangup" or any(is_("Hangup", Uniqueid=caller)(e) for e in events)
    if reason == "withdraw":
        assert any(
            is_("VarSet", Variable="QUEUE_WITHDRAW_INFO", Value="callback")(e) for e in events
        )
    if reason == "exit_key":
        assert [e["Digit"] for e in events if e["Event"] == "DTMFEnd"] == ["1"]


def test_blind_transfer_dials_target_with_the_callers_linkedid() -> None:
    events = build("blind_transfer", 7)
    (xfer,) = index(events, is_("BlindTransfer"))
    e = events[xfer]
    assert e["Result"] == "Success" and e["IsExternal"] == "No" and e["Extension"] == "1002"
    assert e["TransfererChannel"].startswith("Local/1001@agents-")
    assert e["TransfereeChannel"].startswith("Local/s@incoming-") and "BridgeUniqueid" in e
    assert events[xfer + 1]["Event"] == "AgentComplete"
    assert events[xfer + 1]["Reason"] == "transfer"
    dials = [i for i in index(events, is_("DialBegin")) if i > xfer]
    assert dials and events[dials[0]]["DestChannel"].startswith("Local/1002@agents-")
    assert events[dials[0]]["DestLinkedid"] == e["TransfereeLinkedid"]
    assert events[dials[0]]["Uniqueid"] == e["TransfereeUniqueid"]


def test_blind_transfer_to_queue_rejoins_with_the_same_uniqueid() -> None:
    events = build("blind_transfer_to_queue", 8)
    joins = [e for e in events if e["Event"] == "QueueCallerJoin"]
    assert [j["Queue"] for j in joins] == ["support", "sales"]
    assert joins[0]["Uniqueid"] == joins[1]["Uniqueid"]
    completes = [e["Reason"] for e in events if e["Event"] == "AgentComplete"]
    assert completes == ["transfer", "agent"]


def test_attended_transfer_rekeys_the_target_on_its_next_event() -> None:
    events = build("attended_transfer", 9)
    (xfer,) = index(events, is_("AttendedTransfer"))
    e = events[xfer]
    caller_link = e["TransfereeLinkedid"]
    assert e["DestType"] == "Bridge" and e["DestBridgeUniqueid"] == e["OrigBridgeUniqueid"]
    assert e["TransferTargetLinkedid"] != caller_link  # the consultation's own call
    assert e["SecondTransfererLinkedid"] == e["TransferTargetLinkedid"]
    target = e["TransferTargetUniqueid"]
    before = [x for x in events[:xfer] if x.get("Uniqueid") == target]
    after = [x for x in events[xfer + 1 :] if x.get("Uniqueid") == target]
    assert before[-1]["Event"] == "BridgeEnter" and before[-1]["Linkedid"] != caller_link
    assert after[0]["Linkedid"] == caller_link
    leaves = [i for i in index(events, is_("BridgeLeave")) if i < xfer]
    left = {events[i]["Channel"] for i in leaves[-3:]}
    assert {e["OrigTransfererChannel"], e["SecondTransfererChannel"]} <= left
    hangups = {x["Channel"] for x in events[xfer:] if x["Event"] == "Hangup"}
    assert {e["OrigTransfererChannel"], e["SecondTransfererChannel"]} <= hangups
    assert [x["Reason"] for x in events if x["Event"] == "AgentComplete"] == ["transfer"]


def test_names_and_numbers_on_the_wire() -> None:
    events = build("answered", 1, number="13800138000", caller_name="O'Brien")
    join = next(e for e in events if e["Event"] == "QueueCallerJoin")
    assert join["CallerIDName"] == "O\\'Brien"
    wire = encode(join)
    assert b"CallerIDName: O\\'Brien\r\n" in wire
    (decoded,) = AmiDecoder(expect_banner=False).feed(wire)
    assert unescape(decoded["CallerIDName"]) == "O'Brien"
    for number, caller in CALLERS[:4]:
        join = next(
            e
            for e in build("answered", number=number, caller_name=caller)
            if e["Event"] == "QueueCallerJoin"
        )
        assert join["CallerIDNum"] == number and unescape(join["CallerIDName"]) == caller
    anonymous = build("answered", number=None, caller_name=None)
    join = next(e for e in anonymous if e["Event"] == "QueueCallerJoin")
    assert join["CallerIDNum"] == "<unknown>" and join["CallerIDName"] == "<unknown>"
    assert "NewCallerid" not in names(anonymous)


def test_generate_stream_is_a_realistic_wire_stream() -> None:
    data = generate_stream(40, seed=3)
    assert data.startswith(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\n")
    assert b"\r\n" in data and b"\n\n" not in data.replace(b"\r\n", b"")
    decoder = AmiDecoder()
    msgs = decoder.feed(data)
    assert decoder.take_problems() == [] and msgs[1]["Event"] == "FullyBooted"
    new = [m for m in msgs if m.get("Event") == "Newchannel"]
    assert len({m["Uniqueid"] for m in new}) == len(new)
    assert len({m["Channel"] for m in new}) == len(new)
    stamps = [float(m["Timestamp"]) for m in msgs if "Timestamp" in m]
    assert stamps == sorted(stamps)
    alive = peak = 0
    for m in msgs:
        alive += (m.get("Event") == "Newchannel") - (m.get("Event") == "Hangup")
        peak = max(peak, alive)
    assert alive == 0 and peak >= 8  # several calls in flight
    assert generate_stream(40, seed=3) == data


# -- the AMI server on real sockets -----------------------------------------------------------
class Peer:
    """A raw AMI client: writes actions, reads whole messages with our decoder."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = AmiDecoder()
        self.pending: list[dict[str, str]] = []
        self.raw = bytearray()

    @classmethod
    async def open(cls, port: int, *, rcvbuf: int = 0) -> Peer:
        if rcvbuf:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            return cls(*await asyncio.open_connection(sock=sock))
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, **fields: str) -> None:
        self.writer.write(encode(fields))

    async def read(self, within: float = 2.0) -> dict[str, str]:
        async with asyncio.timeout(within):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError
                self.raw += data
                self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    async def until(
        self, pred: Callable[[dict[str, str]], bool], within: float = 2.0
    ) -> dict[str, str]:
        async with asyncio.timeout(within):
            while True:
                msg = await self.read(within)
                if pred(msg):
                    return msg

    async def login(self, events: str = "on", secret: str = "cti-secret") -> dict[str, str]:
        self.send(Action="Login", Username="cti", Secret=secret, Events=events, ActionID="l1")
        return await self.until(lambda m: "Response" in m)

    async def closed(self, within: float = 2.0) -> bool:
        """True once the server has closed the connection (FIN or RST)."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            pass
        self.close()
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server() -> AsyncIterator[AmiServer]:
    srv = AmiServer(auth_delay=0.05, system_name="sim")
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def peer(server: AmiServer) -> AsyncIterator[Peer]:
    p = await Peer.open(server.port)
    assert (await p.login())["Message"] == "Authentication accepted"
    yield p
    p.close()


def scenario_events(
    server: AmiServer, name: str = "answered", **kw: object
) -> list[tuple[float, dict[str, str]]]:
    return sc.SCENARIOS[name](
        server.pbx,
        random.Random(11),
        start=time.time(),
        number="+8613800138000",
        name="张伟",
        **kw,  # type: ignore[arg-type]
    )


async def test_login_banner_and_fully_booted(server: AmiServer) -> None:
    p = await Peer.open(server.port)
    first = await p.reader.readuntil(b"\r\n")
    assert first == b"Asterisk Call Manager/11.0.0\r\n"
    p.decoder = AmiDecoder(expect_banner=False)
    reply = await p.login()
    assert reply == {"Response": "Success", "ActionID": "l1", "Message": "Authentication accepted"}
    booted = await p.read()
    assert booted["Event"] == "FullyBooted" and booted["Status"] == "Fully Booted"
    assert booted["Privilege"] == "system,all" and int(booted["Uptime"]) >= 0
    assert server.clients == 1 and server.logins == 1
    p.close()


async def test_bad_login_waits_then_closes(server: AmiServer) -> None:
    server.auth_delay = 0.3
    p = await Peer.open(server.port)
    began = time.monotonic()
    reply = await p.login(secret="wrong")
    assert reply == {"Response": "Error", "ActionID": "l1", "Message": "Authentication failed"}
    assert time.monotonic() - began >= 0.3
    assert await p.closed() and server.failed_logins == 1 and server.clients == 0


async def test_nothing_after_a_failed_login_and_flush_on_half_close(server: AmiServer) -> None:
    p = await Peer.open(server.port)
    p.send(Action="Login", Username="cti", Secret="nope", ActionID="l1")
    p.send(Action="Ping", ActionID="p1")
    assert (await p.read())["Message"] == "Authentication failed"
    with pytest.raises(EOFError):
        await p.read()
    p.close()
    q = await Peer.open(server.port)
    q.send(Action="Login", Username="cti", Secret="cti-secret", Events="off", ActionID="l2")
    q.send(Action="Logoff", ActionID="bye")
    q.writer.write_eof()
    assert (await q.read())["Message"] == "Authentication accepted"
    assert (await q.read())["Response"] == "Goodbye"
    q.close()


async def test_md5_login_and_successful_auth_event(server: AmiServer, peer: Peer) -> None:
    q = await Peer.open(server.port)
    q.send(Action="Challenge", AuthType="MD5", ActionID="c")
    challenge = (await q.read())["Challenge"]
    key = hashlib.md5((challenge + "cti-secret").encode()).hexdigest()
    q.send(Action="Login", AuthType="MD5", Username="cti", Key=key, ActionID="l")
    assert (await q.read())["Message"] == "Authentication accepted"
    auth = await peer.until(lambda m: m.get("Event") == "SuccessfulAuth")
    assert auth["Privilege"] == "security,all" and auth["AccountID"] == "cti"
    assert auth["RemoteAddress"].startswith("IPV4/TCP/127.0.0.1/")
    q.close()


async def test_actions_before_login_are_denied(server: AmiServer) -> None:
    p = await Peer.open(server.port)
    p.send(Action="Ping", ActionID="p0")
    assert await p.read() == {"Response": "Error", "ActionID": "p0", "Message": "Permission denied"}
    p.send(Action="CoreShowChannels", ActionID="c0")
    assert (await p.read())["Message"] == "Permission denied"
    p.close()


async def test_ping_events_unknown_and_logoff(server: AmiServer, peer: Peer) -> None:
    peer.send(Action="Ping", ActionID="p1")
    pong = await peer.until(lambda m: m.get("ActionID") == "p1")
    assert pong["Response"] == "Success" and pong["Ping"] == "Pong"
    assert abs(float(pong["Timestamp"]) - time.time()) < 5
    peer.send(Action="Frobnicate", ActionID="x")
    err = await peer.until(lambda m: m.get("ActionID") == "x")
    assert err["Message"] == (
        "Invalid/unknown command: Frobnicate. Use Action: ListCommands to show available commands."
    )
    peer.send(Action="Events", EventMask="agent", ActionID="e")
    assert await peer.until(lambda m: m.get("ActionID") == "e") == {
        "Response": "Success",
        "ActionID": "e",
        "Events": "On",
    }
    await server.play(scenario_events(server, "abandoned"), speed=0)
    peer.send(Action="Ping", ActionID="p2")
    seen: list[str] = []
    while (msg := await peer.read()).get("ActionID") != "p2":
        seen.append(msg["Event"])
    assert seen == ["QueueCallerJoin", "QueueCallerAbandon", "QueueCallerLeave"]
    peer.send(Action="Logoff", ActionID="bye")
    assert await peer.read() == {
        "Response": "Goodbye",
        "ActionID": "bye",
        "Message": "Thanks for all the fish.",
    }
    assert await peer.closed()


def test_event_masks() -> None:
    assert parse_event_mask("on") == parse_event_mask("all")
    assert parse_event_mask("off") == frozenset()
    assert parse_event_mask("call, agent,bogus") == frozenset({"call", "agent"})
    assert parse_event_mask("34") == frozenset({"call", "agent"})
    assert parse_event_mask(" ") is None


async def test_events_off_login_gets_no_events(server: AmiServer) -> None:
    p = await Peer.open(server.port)
    await p.login(events="off")
    server.emit({"Event": "UserEvent", "Privilege": "user,all", "UserEvent": "X"})
    p.send(Action="Ping", ActionID="p")
    assert (await p.read())["ActionID"] == "p"  # no FullyBooted, no UserEvent before it
    p.close()


async def test_emitted_events_are_stamped(server: AmiServer, peer: Peer) -> None:
    server.emit({"Event": "UserEvent", "Privilege": "user,all", "UserEvent": "Hello"})
    got = await peer.until(lambda m: m.get("Event") == "UserEvent")
    assert list(got) == ["Event", "Privilege", "Timestamp", "SystemName", "UserEvent"]
    assert got["SystemName"] == "sim" and abs(float(got["Timestamp"]) - time.time()) < 5


async def list_items(peer: Peer, action: str, complete: str, aid: str, **kw: str) -> Events:
    peer.send(Action=action, ActionID=aid, **kw)
    ack = await peer.until(lambda m: m.get("ActionID") == aid)
    assert ack["Response"] == "Success" and ack["EventList"] == "start"
    items = []
    while (msg := await peer.until(lambda m: m.get("ActionID") == aid))["Event"] != complete:
        items.append(msg)
    assert msg["EventList"] == "Complete" and msg["ListItems"] == str(len(items))
    return items


async def test_core_show_channels_lists_live_calls_only(server: AmiServer, peer: Peer) -> None:
    talking = scenario_events(server)
    connect = next(i for i, (_, e) in enumerate(talking) if e["Event"] == "AgentConnect")
    await server.play(talking[: connect + 12], speed=0)
    await server.play(scenario_events(server, "abandoned"), speed=0)  # over before we ask
    items = await list_items(peer, "CoreShowChannels", "CoreShowChannelsComplete", "c1")
    live = {e["Uniqueid"] for _, e in talking if e["Event"] == "Newchannel"}
    assert {i["Uniqueid"] for i in items} == live and len(items) == 4
    item = next(i for i in items if i["Channel"].endswith(";2") and "incoming" in i["Channel"])
    assert list(item)[:2] == ["Event", "ActionID"]
    assert [k for k in item if k in SNAPSHOT] == SNAPSHOT
    assert item["Application"] == "Queue" and item["ApplicationData"].startswith("support,")
    assert item["BridgeId"] and item["Duration"] == "00:00:00"
    assert unescape(item["CallerIDName"]) == "张伟"


async def test_queue_status_lists_a_waiting_caller(server: AmiServer, peer: Peer) -> None:
    waiting = scenario_events(server, "abandoned")
    join = next(i for i, (_, e) in enumerate(waiting) if e["Event"] == "QueueCallerJoin")
    await server.play(waiting[: join + 1], speed=0)
    await asyncio.sleep(1.05)
    items = await list_items(peer, "QueueStatus", "QueueStatusComplete", "q1", Queue="support")
    params = [i for i in items if i["Event"] == "QueueParams"]
    members = [i for i in items if i["Event"] == "QueueMember"]
    (entry,) = [i for i in items if i["Event"] == "QueueEntry"]
    assert params[0]["Calls"] == "1" and params[0]["Strategy"] == "rrmemory"
    assert {m["Name"] for m in members} == {"Alice", "Bob", "Carol", "Dave"}
    assert members[0]["Location"] == "Local/1001@agents/n" and "Ringinuse" not in members[0]
    assert entry["CallerIDName"] == "张伟" and entry["Position"] == "1"
    assert int(entry["Wait"]) >= 1 and entry["Channel"].endswith(";2")
    assert list(entry)[-1] == "ActionID"


async def test_queue_pause_changes_member_state(server: AmiServer, peer: Peer) -> None:
    iface = "Local/1003@agents/n"
    peer.send(Action="QueuePause", Interface=iface, Paused="true", Reason="lunch", ActionID="qp")
    assert (await peer.until(lambda m: m.get("ActionID") == "qp"))["Message"] == (
        "Interface paused successfully"
    )
    pauses = [await peer.until(lambda m: m.get("Event") == "QueueMemberPause") for _ in range(2)]
    assert {p["Queue"] for p in pauses} == {"support", "sales"}
    assert all(p["Paused"] == "1" and p["PausedReason"] == "lunch" for p in pauses)
    items = await list_items(peer, "QueueStatus", "QueueStatusComplete", "q2", Member=iface)
    assert [i["Paused"] for i in items if i["Event"] == "QueueMember"] == ["1", "1"]


async def test_a_paused_member_is_not_rung(server: AmiServer, peer: Peer) -> None:
    """Asterisk offers a paused member no call: with every member of both queues paused
    (QueuePause, as the agent page or the wrap-up hold sends it), live traffic rings nobody;
    after the unpause it rings again."""
    interfaces = {a.interface for a in server.pbx.agents}
    for n, iface in enumerate(sorted(interfaces)):
        peer.send(
            Action="QueuePause", Interface=iface, Paused="true", Reason="lunch", ActionID=f"p{n}"
        )
        await peer.until(lambda m, n=n: m.get("ActionID") == f"p{n}")
    assert all(server.member_paused(q, a) for a in server.pbx.agents for q in a.queues)

    async def rung(seconds: float) -> set[str]:
        stop = asyncio.Event()
        traffic = asyncio.create_task(
            run_traffic(server, rate_per_minute=1200, seed=5, stop=stop, speed=20)
        )
        members: set[str] = set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    msg = await peer.read()
                    if msg.get("Event") == "AgentCalled":
                        members.add(msg["Interface"])
        stop.set()
        await asyncio.wait_for(traffic, 2)
        return members

    assert await rung(1.0) == set()
    peer.send(Action="QueuePause", Interface="Local/1001@agents/n", Paused="false", ActionID="u")
    await peer.until(lambda m: m.get("ActionID") == "u")
    assert await rung(1.5) == {"Local/1001@agents/n"}


async def test_write_timeout_drops_a_reader_that_stalls(server: AmiServer, peer: Peer) -> None:
    stalled = await Peer.open(server.port, rcvbuf=4096)
    await stalled.login()
    assert server.clients == 2
    event = {"Event": "UserEvent", "Privilege": "user,all", "UserEvent": "Flood", "Pad": "x" * 600}
    await server.play([(0.0, {**event, "N": str(n)}) for n in range(6000)], speed=0)
    last = await peer.until(lambda m: m.get("N") == "5999", within=5)
    assert last["Pad"] == "x" * 600
    for _ in range(150):  # without reading from it: reading would unstall it
        if server.clients == 1:
            break
        await asyncio.sleep(0.02)
    assert server.clients == 1
    assert await stalled.closed()
    assert stalled.raw.count(b"Flood") < 6000  # its events are lost, not kept for it
    server.emit({**event, "N": "after"})
    assert await peer.until(lambda m: m.get("UserEvent") == "Flood" and m.get("N") == "after")


async def test_freeze_leaves_ping_unanswered_until_thaw(server: AmiServer, peer: Peer) -> None:
    server.freeze()
    peer.send(Action="Ping", ActionID="f1")
    server.emit({"Event": "UserEvent", "Privilege": "user,all", "UserEvent": "Frozen"})
    with pytest.raises(TimeoutError):
        await peer.until(lambda m: m.get("ActionID") == "f1", within=0.3)
    assert server.clients == 1  # still connected
    server.thaw()
    assert (await peer.until(lambda m: m.get("ActionID") == "f1"))["Ping"] == "Pong"


async def test_shutdown_then_state_is_gone(server: AmiServer, peer: Peer) -> None:
    talking = scenario_events(server)
    await server.play(talking[:60], speed=0)
    playing = asyncio.create_task(server.play(scenario_events(server, "timeout"), speed=1))
    await asyncio.sleep(0.05)
    await server.shutdown(restart=True)
    await asyncio.wait_for(playing, 1)  # the restart ended the call being played
    down = await peer.until(lambda m: m.get("Event") == "Shutdown")
    assert down["Shutdown"] == "Cleanly" and down["Restart"] == "True"
    assert await peer.closed()
    again = await Peer.open(server.port)
    await again.login()
    booted = await again.until(lambda m: m.get("Event") == "FullyBooted")
    assert int(booted["Uptime"]) < 2
    assert await list_items(again, "CoreShowChannels", "CoreShowChannelsComplete", "c2") == []
    first = next(e for _, e in scenario_events(server) if e["Event"] == "Newchannel")
    assert first["Uniqueid"].endswith(".0")  # the counter restarted
    again.close()


@pytest.mark.parametrize("abort", [False, True])
async def test_drop_clients(server: AmiServer, peer: Peer, abort: bool) -> None:
    await server.drop_clients(abort=abort)
    assert await peer.closed() and server.clients == 0
    again = await Peer.open(server.port)
    assert (await again.login())["Response"] == "Success" and server.logins == 2
    again.close()


async def test_garbage_and_huge_lines_do_not_hurt(server: AmiServer, peer: Peer) -> None:
    peer.writer.write(b"\x00\xff garbage without colon\r\n\r\nFoo: bar\r\n\r\n")
    peer.writer.write(b"Action: Ping\r\nActionID: " + b"y" * 300_000 + b"\r\n\r\n")
    peer.writer.write(b"Action: Ping\r\nActionID: a\r\nActionID: b\r\n\r\n")
    peer.send(Action="Ping", ActionID="ok")
    replies = []
    while (msg := await peer.read()).get("ActionID") != "ok":
        replies.append(msg)
    assert {"Response": "Error", "Message": "Missing action in request"} in replies
    assert any(r.get("ActionID") == "a" and r.get("Ping") == "Pong" for r in replies)
    assert server.clients == 1


async def test_send_raw_reaches_logged_in_clients(server: AmiServer, peer: Peer) -> None:
    stranger = await Peer.open(server.port)
    await stranger.reader.readuntil(b"\r\n")
    raw = "Event: UserEvent\r\nCallerIDName: José\r\n\r\n".encode()
    cut = raw.index(b"\xa9")  # inside the two bytes of "é"
    server.send_raw(raw[:cut])
    await asyncio.sleep(0.05)
    server.send_raw(raw[cut:])
    got = await peer.until(lambda m: m.get("Event") == "UserEvent")
    assert got["CallerIDName"] == "José"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await stranger.reader.read(1)
    stranger.close()


async def test_run_traffic_overlaps_calls(server: AmiServer, peer: Peer) -> None:
    stop = asyncio.Event()
    traffic = asyncio.create_task(
        run_traffic(server, rate_per_minute=1200, seed=5, stop=stop, speed=20)
    )
    news: set[str] = set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.5):
            while True:
                msg = await peer.read()
                if msg.get("Event") == "Newchannel":
                    news.add(msg["Linkedid"])
    stop.set()
    await asyncio.wait_for(traffic, 2)
    assert len(news) >= 5
    with pytest.raises(ValueError, match="mix"):
        await run_traffic(server, rate_per_minute=60, seed=1, mix={"nope": 1.0})


async def test_drop_after_login_accepts_then_closes_every_time() -> None:
    server = AmiServer(auth_delay=0.0, drop_after_login=True)
    await server.start()
    try:
        for n in (1, 2):
            p = await Peer.open(server.port)
            assert (await p.login())["Message"] == "Authentication accepted"
            booted = await p.read()
            assert booted["Event"] == "FullyBooted"
            assert await p.closed() and server.logins == n and server.clients == 0
        assert server.connections == 2
    finally:
        await server.stop()


async def test_foreign_banner_replaces_asterisks() -> None:
    server = AmiServer(banner="SSH-2.0-OpenSSH_9.6")
    await server.start()
    try:
        p = await Peer.open(server.port)
        assert await p.reader.readuntil(b"\r\n") == b"SSH-2.0-OpenSSH_9.6\r\n"
        assert server.connections == 1
        p.close()
    finally:
        await server.stop()
