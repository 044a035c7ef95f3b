"""The AMI connection layer: panoramisk 1.4 made sound.

Each fixed panoramisk bug has a ``test_stock_*`` proving the bug is real in the installed 1.4
(so the matching test exercises it) and a test proving our layer does not have it. Protocol
tests feed ``data_received`` directly; connection tests run against a scripted peer on
127.0.0.1 and against the PBX simulator (pbxsim/server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager

from cti.ami import (
    AmiActionTimeout,
    AmiClient,
    AmiClientProtocol,
    AmiError,
    AmiEvent,
    AmiProtocolError,
    AttemptFailed,
    Backoff,
    Disconnected,
    Item,
    ResyncBegin,
    ResyncEnd,
)
from cti.codec import AmiDecoder, encode
from cti.settings import PbxSettings
from pbxsim.server import AmiServer

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
SECRET = "cti-secret"


def newchannel(name: str, uniqueid: str = "1.1") -> bytes:
    return encode(
        {
            "Event": "Newchannel",
            "Privilege": "call,all",
            "Channel": "PJSIP/far-00000001",
            "CallerIDNum": "50100",
            "CallerIDName": name,
            "Uniqueid": uniqueid,
        }
    )


def ami_settings(port: int = 5038, **overrides: Any) -> PbxSettings:
    values: dict[str, Any] = {
        "name": "pbx1",
        "host": "127.0.0.1",
        "port": port,
        "username": "cti",
        "secret": SECRET,
        "ping_interval": 0.2,
        "pong_timeout": 0.3,
        "connect_timeout": 1.0,
        "action_timeout": 1.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.4,
    }
    values.update(overrides)
    return PbxSettings(**values)


class FakeTransport(asyncio.Transport):
    """Records writes; closing reports connection_lost on the next loop turn, like asyncio."""

    def __init__(self, protocol: asyncio.Protocol | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def actions(self) -> list[dict[str, str]]:
        return AmiDecoder(expect_banner=False).feed(bytes(self.written))


@pytest.fixture
async def ami_proto() -> AsyncIterator[tuple[AmiClient, AmiClientProtocol, FakeTransport]]:
    """Our protocol on a fake transport, banner seen and the session marked logged in."""
    queue: asyncio.Queue[Item] = asyncio.Queue()
    client = AmiClient(ami_settings(), queue)
    proto = AmiClientProtocol(client)
    transport = FakeTransport(proto)
    proto.connection_made(transport)
    client.manager.protocol = proto
    client._protocol = proto  # what a login in AmiClient._session() leaves behind
    proto.data_received(BANNER)
    proto.go_live(ResyncBegin("pbx1", 0.0))
    assert isinstance(queue.get_nowait(), ResyncBegin)
    yield client, proto, transport
    transport.close()
    await asyncio.sleep(0)


@pytest.fixture
async def ami_stock() -> AsyncIterator[tuple[AMIProtocol, list[Any]]]:
    """panoramisk 1.4's own protocol and Manager, with a '*' callback collecting events."""
    manager = Manager(loop=asyncio.get_running_loop())
    seen: list[Any] = []
    manager.register_event("*", lambda _m, event: seen.append(event))
    proto = AMIProtocol()
    proto.connection_made(FakeTransport())
    proto.factory = manager
    proto.encoding = "utf8"
    manager.protocol = proto
    yield proto, seen


def drain(queue: asyncio.Queue[Item]) -> list[Item]:
    items: list[Item] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def events(items: list[Item], name: str | None = None) -> list[dict[str, str]]:
    return [
        i.message
        for i in items
        if isinstance(i, AmiEvent) and (name is None or i.message.get("Event") == name)
    ]


# --- 1. split UTF-8, empty trailing header ------------------------------------------------------


@pytest.mark.parametrize("name", ["José", "张伟"])
async def test_stock_loses_split_utf8(ami_stock: tuple[AMIProtocol, list[Any]], name: str) -> None:
    proto, seen = ami_stock
    data = BANNER + newchannel(name)
    cut = data.index(name.encode()) + len(name.encode()) - 1  # inside the last character
    proto.data_received(data[:cut])
    proto.data_received(data[cut:])
    assert seen[0]["CallerIDName"] == name[:-1]  # the split character is silently gone


@pytest.mark.parametrize("name", ["José", "张伟"])
async def test_split_utf8_kept_at_every_offset(name: str) -> None:
    data = BANNER + newchannel(name)
    for cut in range(1, len(data)):
        queue: asyncio.Queue[Item] = asyncio.Queue()
        client = AmiClient(ami_settings(), queue)
        proto = AmiClientProtocol(client)
        proto.connection_made(FakeTransport())
        proto.go_live(ResyncBegin("pbx1", 0.0))
        proto.data_received(data[:cut])
        proto.data_received(data[cut:])
        assert [e["CallerIDName"] for e in events(drain(queue))] == [name], cut


async def test_stock_drops_trailing_empty_header(ami_stock: tuple[AMIProtocol, list[Any]]) -> None:
    proto, seen = ami_stock
    proto.data_received(BANNER + b"Event: VarSet\r\nVariable: QUEUEWAIT\r\nValue: \r\n\r\n")
    assert "Value" not in seen[0]


async def test_trailing_empty_header_kept(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
) -> None:
    client, proto, _ = ami_proto
    proto.data_received(b"Event: VarSet\r\nVariable: QUEUEWAIT\r\nValue: \r\n\r\n")
    assert events(drain(client.queue)) == [
        {"Event": "VarSet", "Variable": "QUEUEWAIT", "Value": ""}
    ]


async def test_repeated_headers_reach_callbacks_as_lists(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
) -> None:
    client, proto, _ = ami_proto
    seen: list[Any] = []
    client.manager.register_event("Newchannel", lambda _m, e: seen.append(e))
    proto.data_received(b"Event: Newchannel\r\nChanVariable: A=1\r\nChanVariable: B=\r\n\r\n")
    assert seen[0].getdict("ChanVariable") == {"A": "1", "B": ""}
    assert events(drain(client.queue))[0]["ChanVariable"] == "A=1\nB="


# --- 2. a failing event callback ----------------------------------------------------------------


async def test_stock_callback_error_escapes_data_received(
    ami_stock: tuple[AMIProtocol, list[Any]],
) -> None:
    proto, seen = ami_stock

    def boom(_m: Any, _e: Any) -> None:
        raise RuntimeError("handler bug")

    proto.factory.register_event("Boom", boom)
    with pytest.raises(RuntimeError):
        proto.data_received(BANNER + encode({"Event": "Boom"}) + newchannel("Ann"))
    assert [e["Event"] for e in seen] == ["Boom"]  # the Newchannel after it is lost


async def test_callback_error_is_contained_and_logged_once(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, proto, transport = ami_proto
    seen: list[str] = []

    def boom(_m: Any, _e: Any) -> None:
        raise RuntimeError("handler bug")

    async def async_boom(_m: Any, _e: Any) -> None:
        raise RuntimeError("async handler bug")

    client.manager.register_event("Boom", boom)
    client.manager.register_event("Boom", async_boom)
    client.manager.register_event("*", lambda _m, e: seen.append(e["Event"]))
    with caplog.at_level(logging.ERROR, logger="cti.ami"):
        proto.data_received(encode({"Event": "Boom"}) + newchannel("Ann"))
        await asyncio.sleep(0.01)  # let the coroutine callback run
    assert seen == ["Boom", "Newchannel"]
    assert [e["Event"] for e in events(drain(client.queue))] == ["Boom", "Newchannel"]
    assert not transport.is_closing()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2  # one per failing callback, each naming the event
    assert all("Boom" in r.getMessage() for r in errors)
    assert not client.manager._tasks


# --- 4/6. panoramisk Action.multi ---------------------------------------------------------------


async def test_stock_originate_without_async_raises_in_data_received(
    ami_stock: tuple[AMIProtocol, list[Any]],
) -> None:
    proto, _ = ami_stock
    action = Action({"Action": "Originate", "Channel": "PJSIP/1", "Exten": "1"})
    proto.factory.send_action(action)
    reply = encode(
        {"Response": "Success", "ActionID": action.id, "Message": "Originate successfully queued"}
    )
    with pytest.raises(KeyError):
        proto.data_received(BANNER + reply)


async def test_originate_without_async_resolves(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
) -> None:
    client, proto, transport = ami_proto
    task = asyncio.create_task(
        client.send_action({"Action": "Originate", "Channel": "PJSIP/1", "Exten": "1"})
    )
    await asyncio.sleep(0)
    (sent,) = transport.actions()
    assert sent["Action"] == "Originate"
    proto.data_received(
        encode(
            {
                "Response": "Success",
                "ActionID": sent["ActionID"],
                "Message": "Originate successfully queued",
            }
        )
        + newchannel("after")
    )
    assert await task == {
        "Response": "Success",
        "ActionID": sent["ActionID"],
        "Message": "Originate successfully queued",
    }
    assert [e["CallerIDName"] for e in events(drain(client.queue))] == ["after"]


async def test_async_originate_collects_originate_response(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
) -> None:
    client, proto, transport = ami_proto
    task = asyncio.create_task(
        client.send_action({"Action": "Originate", "Channel": "PJSIP/1", "Async": "true"})
    )
    await asyncio.sleep(0)
    action_id = transport.actions()[0]["ActionID"]
    proto.data_received(
        encode(
            {
                "Response": "Success",
                "ActionID": action_id,
                "Message": "Originate successfully queued",
            }
        )
    )
    await asyncio.sleep(0)
    assert not task.done()
    proto.data_received(
        encode({"Event": "OriginateResponse", "ActionID": action_id, "Response": "Success"})
    )
    result = await task
    assert isinstance(result, list)
    assert [m.get("Event", m.get("Response")) for m in result] == ["Success", "OriginateResponse"]


async def test_error_while_matching_a_response_fails_that_action_only(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Even panoramisk's own (buggy) Action cannot break the reader: every message is guarded."""
    client, proto, transport = ami_proto
    stock = Action({"Action": "Originate", "Channel": "PJSIP/1"})
    future = proto.send(stock)
    reply = {
        "Response": "Success",
        "ActionID": stock.id,
        "Message": "Originate successfully queued",
    }
    with caplog.at_level(logging.ERROR, logger="cti.ami"):
        proto.data_received(encode(reply) + newchannel("after"))
    with pytest.raises(AmiError, match="bad response to Originate"):
        future.result()
    assert [e["CallerIDName"] for e in events(drain(client.queue))] == ["after"]
    assert len(caplog.records) == 1 and "Originate" in caplog.records[0].getMessage()
    assert stock.id not in proto.responses and not transport.is_closing()


async def test_stock_queueadd_never_resolves(ami_stock: tuple[AMIProtocol, list[Any]]) -> None:
    proto, _ = ami_stock
    action = Action({"Action": "QueueAdd", "Queue": "support", "Interface": "PJSIP/agent1"})
    future = proto.factory.send_action(action)
    proto.data_received(
        BANNER
        + encode(
            {"Response": "Success", "ActionID": action.id, "Message": "Added interface to queue"}
        )
    )
    assert not future.done()


async def test_queueadd_resolves(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
) -> None:
    client, proto, transport = ami_proto
    task = asyncio.create_task(
        client.send_action({"Action": "QueueAdd", "Queue": "support", "Interface": "PJSIP/a1"})
    )
    await asyncio.sleep(0)
    action_id = transport.actions()[0]["ActionID"]
    proto.data_received(
        encode(
            {"Response": "Success", "ActionID": action_id, "Message": "Added interface to queue"}
        )
    )
    result = await asyncio.wait_for(task, 1)
    assert isinstance(result, dict)
    assert result["Message"] == "Added interface to queue"


async def test_list_response_routed_to_action_not_queue(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
) -> None:
    client, proto, transport = ami_proto
    task = asyncio.create_task(client.send_action({"Action": "CoreShowChannels"}))
    await asyncio.sleep(0)
    aid = transport.actions()[0]["ActionID"]
    proto.data_received(
        encode({"Response": "Success", "ActionID": aid, "EventList": "start"})
        + encode({"Event": "CoreShowChannel", "ActionID": aid, "Channel": "PJSIP/a-1"})
        + newchannel("live")
        + encode({"Event": "CoreShowChannelsComplete", "ActionID": aid, "ListItems": "1"})
    )
    result = await task
    assert isinstance(result, list)
    assert [m.get("Event", "") for m in result] == [
        "",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
    ]
    assert [e["Event"] for e in events(drain(client.queue))] == ["Newchannel"]


async def test_action_timeout_and_late_answer_goes_nowhere(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
) -> None:
    client, proto, transport = ami_proto
    with pytest.raises(AmiActionTimeout, match="Status"):
        await client.send_action({"Action": "Status"}, timeout=0.05)
    assert proto.responses == {}
    aid = transport.actions()[0]["ActionID"]
    proto.data_received(encode({"Response": "Success", "ActionID": aid}))  # late: ignored
    assert drain(client.queue) == []


async def test_send_action_refuses_when_not_connected_or_header_injection() -> None:
    client = AmiClient(ami_settings(), asyncio.Queue())
    with pytest.raises(AmiError, match="not connected"):
        await client.send_action({"Action": "Ping"})
    with pytest.raises(ValueError):
        await client.send_action({"Action": "Originate", "CallerID": "x\r\nAction: Hangup"})
    assert not client.connected


@pytest.mark.parametrize(
    "fields",
    [
        {"Action": "QueuePause", "Reason": "lunch\x00"},
        {"Action": "QueuePause", "Reason": "\x1b[2Jlunch"},
        {"Action": "QueuePause", "Reason": "lunch\x85"},
        {"Action": "QueuePause", "Reason": "lunch\ud800"},
        {"Action": "QueuePause", "Reason\t": "lunch"},
        {"Action": "QueuePause", "Reason: x": "lunch"},
        {"Action": "QueuePause", "Reason": "\nlunch"},
    ],
)
async def test_every_action_sent_refuses_what_encode_refuses(fields: dict[str, str]) -> None:
    """The client's own send path (panoramisk's action objects) holds the codec's rule: no
    control character, lone surrogate or colon in a key, wherever the action was built."""
    client = AmiClient(ami_settings(), asyncio.Queue())
    with pytest.raises(ValueError, match="AMI header"):
        await client.send_action(fields)


# --- 7. bad input -------------------------------------------------------------------------------


async def test_bad_input_is_logged_once_and_skipped(
    ami_proto: tuple[AmiClient, AmiClientProtocol, FakeTransport],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, proto, transport = ami_proto
    huge = b"Event: Huge\r\nJunk: " + b"x" * (1024 * 1024) + b"\r\n\r\n"
    with caplog.at_level(logging.WARNING, logger="cti.ami"):
        proto.data_received(b"\x00\x01 garbage without colon\r\n\r\n")
        for i in range(0, len(huge), 65536):
            proto.data_received(huge[i : i + 65536])
        proto.data_received("Event: Latin\r\nCallerIDName: José\r\n\r\n".encode("latin-1"))
        proto.data_received(b"Foo: neither event nor response\r\n\r\n")
        proto.data_received(encode({"Event": "SomethingNobodyKnows", "X": "1"}))
        proto.data_received(newchannel("Ann"))
    got = events(drain(client.queue))
    assert [e["Event"] for e in got] == ["Latin", "SomethingNobodyKnows", "Newchannel"]
    assert got[0]["CallerIDName"] == "José"
    kinds = [r.getMessage().split(": ")[1] for r in caplog.records if "pbx1 (" in r.getMessage()]
    assert sorted(kinds) == ["bad-line", "not-utf8", "oversized"]
    assert sum("neither Event nor Response" in r.getMessage() for r in caplog.records) == 1
    assert all(len(r.getMessage()) < 1000 for r in caplog.records)
    assert not transport.is_closing()


async def test_bad_banner_marks_protocol_fatal() -> None:
    client = AmiClient(ami_settings(), asyncio.Queue())
    proto = AmiClientProtocol(client)
    transport = FakeTransport(proto)
    proto.connection_made(transport)
    proto.data_received(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert isinstance(proto.fatal, AmiProtocolError)
    assert "not an Asterisk manager" in str(proto.fatal)
    assert transport.is_closing()
    assert await asyncio.wait_for(proto.lost, 1) == "not an Asterisk manager"


async def test_events_before_login_are_held_until_resync_begin() -> None:
    queue: asyncio.Queue[Item] = asyncio.Queue()
    client = AmiClient(ami_settings(), queue)
    proto = AmiClientProtocol(client)
    proto.connection_made(FakeTransport())
    proto.data_received(BANNER + newchannel("early"))
    assert queue.empty()
    proto.go_live(ResyncBegin("pbx1", 1.0))
    proto.data_received(newchannel("late"))
    items = drain(queue)
    assert isinstance(items[0], ResyncBegin)
    assert [e["CallerIDName"] for e in events(items)] == ["early", "late"]


# --- 4. backoff ---------------------------------------------------------------------------------


def test_backoff_full_jitter_doubles_to_cap_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    ceilings, delays = [], []
    for _ in range(7):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next_delay())
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not fixed
    backoff.reset()
    assert backoff.ceiling() == 0.5
    many = [Backoff(1.0, 1.0, random.Random(i)).next_delay() for i in range(200)]
    assert min(many) < 0.1 and max(many) > 0.9  # full jitter: the whole [0, ceiling]


# --- a scripted peer for what the simulator does not do -----------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedPeer:
    """A TCP server on 127.0.0.1 that runs ``handler`` per connection (tasks reaped on stop)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self._tasks.discard(task)


async def read_action(reader: asyncio.StreamReader) -> dict[str, str]:
    frame = await reader.readuntil(b"\r\n\r\n")
    (action,) = AmiDecoder(expect_banner=False).feed(frame)
    return action


def asterisk_like(
    *,
    before_login_reply: bytes = b"",
    answer: Callable[[dict[str, str]], bytes | None] | None = None,
) -> Handler:
    """A minimal Asterisk: banner, Login, Ping, empty snapshot lists; ``answer`` overrides."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        while True:
            action = await read_action(reader)
            aid = action.get("ActionID", "")
            reply = answer(action) if answer else None
            if reply is not None:
                writer.write(reply)
            elif action["Action"] == "Login":
                writer.write(
                    before_login_reply
                    + encode(
                        {
                            "Response": "Success",
                            "ActionID": aid,
                            "Message": "Authentication accepted",
                        }
                    )
                )
            elif action["Action"] == "Ping":
                writer.write(encode({"Response": "Success", "ActionID": aid, "Ping": "Pong"}))
            elif action["Action"] in ("CoreShowChannels", "QueueStatus"):
                done = (
                    "CoreShowChannelsComplete"
                    if action["Action"] == "CoreShowChannels"
                    else "QueueStatusComplete"
                )
                writer.write(
                    encode(
                        {
                            "Response": "Success",
                            "ActionID": aid,
                            "EventList": "start",
                            "Message": "will follow",
                        }
                    )
                    + encode(
                        {"Event": done, "ActionID": aid, "EventList": "Complete", "ListItems": "0"}
                    )
                )
            await writer.drain()

    return handler


@contextlib.asynccontextmanager
async def running(client: AmiClient) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``client.run()`` in a task; close and reap it afterwards (re-raising nothing)."""
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        await client.close()
        with contextlib.suppress(AmiError):
            await asyncio.wait_for(task, 5)


async def wait_for_item(
    queue: asyncio.Queue[Item],
    kind: type,
    within: float = 5.0,
    seen: list[Item] | None = None,
    *,
    event: str | None = None,
) -> Any:
    """Take items off the queue (kept in ``seen``) until one of type ``kind`` arrives
    (an AmiEvent named ``event``, if given)."""
    async with asyncio.timeout(within):
        while True:
            item = await queue.get()
            if seen is not None:
                seen.append(item)
            if isinstance(item, kind) and (
                event is None or (isinstance(item, AmiEvent) and item.message["Event"] == event)
            ):
                return item


async def test_foreign_peer_gets_no_credentials_and_is_retried_with_backoff() -> None:
    received = bytearray()

    async def ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        received.extend(await reader.read(100))

    async with ScriptedPeer(ssh) as peer:
        client = AmiClient(ami_settings(peer.port), asyncio.Queue())
        async with running(client) as task:
            await eventually(lambda: peer.connections >= 3)
            assert not task.done()  # a foreign peer is this PBX's failure, retried, never raised
            status = client.status
    assert b"Login" not in received and SECRET.encode() not in received
    assert client.logins == 0
    assert client.last_error is not None
    assert re.search(rf"127\.0\.0\.1:{peer.port} is not an Asterisk .*SSH-2\.0", client.last_error)
    assert not status.up and status.reason is not None and "SSH-2.0" in status.reason
    assert status.retry_at is not None and not status.refused
    failed = drain(client.queue)
    assert len(failed) >= 2 and all(isinstance(i, AttemptFailed) for i in failed)


async def test_events_before_login_response_come_after_resync_begin() -> None:
    early = newchannel("early", "9.9")
    async with ScriptedPeer(asterisk_like(before_login_reply=early)) as peer:
        client = AmiClient(ami_settings(peer.port), asyncio.Queue())
        async with running(client):
            seen: list[Item] = []
            await wait_for_item(client.queue, ResyncEnd, seen=seen)
    assert isinstance(seen[0], ResyncBegin)
    assert events(seen)[0]["CallerIDName"] == "early"
    end = seen[-1]
    assert isinstance(end, ResyncEnd) and end.complete


async def test_failed_snapshot_gives_incomplete_resync_and_session_goes_on() -> None:
    def answer(action: dict[str, str]) -> bytes | None:
        if action["Action"] == "QueueStatus":
            return encode(
                {
                    "Response": "Error",
                    "ActionID": action["ActionID"],
                    "Message": "Invalid/unknown command",
                }
            )
        if action["Action"] == "CoreShowChannels":
            return b""  # never answered: times out
        return None

    async with ScriptedPeer(asterisk_like(answer=answer)) as peer:
        client = AmiClient(ami_settings(peer.port, action_timeout=0.3), asyncio.Queue())
        async with running(client):
            end = await wait_for_item(client.queue, ResyncEnd)
            assert end.complete is False
            assert client.connected
    assert client.logins == 1 and client.reconnects == 0


async def test_reconnect_backs_off_instead_of_spinning() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return  # accept and close at once: every attempt fails before the banner

    async with ScriptedPeer(hang_up) as peer:
        client = AmiClient(ami_settings(peer.port, backoff_max=0.4), asyncio.Queue())
        async with running(client):
            await asyncio.sleep(1.2)
    # ceilings 0.05, 0.1, 0.2, 0.4, 0.4…: mean delays sum to ~1.2 s after ~6 attempts
    assert 3 <= peer.connections <= 25, peer.connections
    assert client.reconnects >= peer.connections - 1
    assert client.last_error is not None
    assert client.logins == 0
    # no Disconnected for sessions that never logged in: each failed attempt says so instead
    items = drain(client.queue)
    assert len(items) == client.reconnects and all(isinstance(i, AttemptFailed) for i in items)
    assert {i.reason for i in items if isinstance(i, AttemptFailed)} == {client.last_error}


class Ceiling(random.Random):
    """Full jitter without the jitter: every delay is the backoff's ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def accept_then_drop(hold: float) -> Handler:
    """An Asterisk that accepts the login, answers the snapshot, and closes ``hold`` s later."""
    inner = asterisk_like()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(hold):
                await inner(reader, writer)

    return handler


def delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The reconnect delays the client announced, in order."""
    found = (re.search(r"reconnecting in ([0-9.]+) s", r.getMessage()) for r in caplog.records)
    return [float(m.group(1)) for m in found if m]


@pytest.mark.parametrize(
    ("stable_after", "expected"),
    [(30.0, [0.05, 0.1, 0.2, 0.4]), (0.2, [0.05, 0.05, 0.05, 0.05])],
    ids=["drops-before-stable", "stayed-up"],
)
async def test_backoff_resets_only_after_the_link_stayed_up(
    caplog: pytest.LogCaptureFixture, stable_after: float, expected: list[float]
) -> None:
    """F21: a peer that accepts the login and drops 0.3 s later is retried with growing delays
    (the default stable_after); once links stay up longer than stable_after, each drop is a new
    outage and starts again from backoff_initial."""
    async with ScriptedPeer(accept_then_drop(0.3)) as peer:
        settings = ami_settings(peer.port, backoff_max=0.4, stable_after=stable_after)
        client = AmiClient(settings, asyncio.Queue(), rng=Ceiling())
        with caplog.at_level(logging.INFO, logger="cti.ami"):
            async with running(client):
                await eventually(lambda: len(delays(caplog)) >= 4)
    assert delays(caplog)[:4] == expected
    items = drain(client.queue)
    begins = sum(isinstance(i, ResyncBegin) for i in items)
    assert begins == client.logins >= 4  # one resync per link, each link logged in once


async def test_unanswered_ping_closes_and_reconnects() -> None:
    def no_pong(action: dict[str, str]) -> bytes | None:
        return b"" if action["Action"] == "Ping" else None

    async with ScriptedPeer(asterisk_like(answer=no_pong)) as peer:
        settings = ami_settings(peer.port)
        client = AmiClient(settings, asyncio.Queue())
        loop = asyncio.get_running_loop()
        async with running(client):
            await wait_for_item(client.queue, ResyncBegin)
            started = loop.time()
            gone = await wait_for_item(client.queue, Disconnected)
            detected = loop.time() - started
            await wait_for_item(client.queue, ResyncBegin)
    assert "no Pong within 0.3 s" in gone.reason
    assert settings.ping_interval + settings.pong_timeout <= detected + 0.05
    assert detected < settings.ping_interval + settings.pong_timeout + 0.3
    assert peer.connections >= 2 and client.logins >= 2


async def test_action_pending_at_disconnect_is_resent_after_next_login() -> None:
    """panoramisk's awaiting actions are kept: re-sent when the next session is FullyBooted."""
    booted = encode({"Event": "FullyBooted", "Privilege": "system,all", "Status": "Fully Booted"})
    status_seen: list[int] = []

    def answer(action: dict[str, str]) -> bytes | None:
        if action["Action"] == "Login":
            reply = {"Response": "Success", "ActionID": action["ActionID"], "Message": "ok"}
            return encode(reply) + booted
        if action["Action"] == "Status":
            status_seen.append(peer.connections)
            if peer.connections == 1:
                raise ConnectionResetError  # drop the first session without answering
            return encode({"Response": "Success", "ActionID": action["ActionID"], "N": "2"})
        return None

    async with ScriptedPeer(asterisk_like(answer=answer)) as peer:
        client = AmiClient(ami_settings(peer.port, action_timeout=3.0), asyncio.Queue())
        async with running(client):
            await wait_for_item(client.queue, ResyncEnd)
            result = await client.send_action({"Action": "Status"})
    assert isinstance(result, dict) and result["N"] == "2"
    assert status_seen == [1, 2]


async def test_an_originate_pending_at_disconnect_fails_and_is_never_sent_twice() -> None:
    """Asterisk may have placed the call before the link went: calling a customer twice is
    worse than a callback the agent retries, so the Originate is not in the awaiting list."""
    booted = encode({"Event": "FullyBooted", "Privilege": "system,all", "Status": "Fully Booted"})
    originates: list[int] = []

    def answer(action: dict[str, str]) -> bytes | None:
        if action["Action"] == "Login":
            reply = {"Response": "Success", "ActionID": action["ActionID"], "Message": "ok"}
            return encode(reply) + booted
        if action["Action"] == "Originate":
            originates.append(peer.connections)
            raise ConnectionResetError  # the link goes before any answer
        return None

    async with ScriptedPeer(asterisk_like(answer=answer)) as peer:
        client = AmiClient(ami_settings(peer.port, action_timeout=3.0), asyncio.Queue())
        async with running(client):
            await wait_for_item(client.queue, ResyncEnd)
            with pytest.raises(AmiError, match="not sent again"):
                await client.send_action({"Action": "Originate", "Channel": "Local/1@x"})
            await wait_for_item(client.queue, ResyncEnd)  # the next session is up …
            await asyncio.sleep(0.2)
    assert originates == [1]  # … and did not get the Originate again


async def test_frame_filter_in_session() -> None:
    queue: asyncio.Queue[Item] = asyncio.Queue()
    client = AmiClient(
        ami_settings(), queue, frame_filter=lambda frame: not frame.startswith(b"Event: VarSet")
    )
    proto = AmiClientProtocol(client)
    proto.connection_made(FakeTransport())
    proto.go_live(ResyncBegin("pbx1", 0.0))
    proto.data_received(BANNER + b"Event: VarSet\r\nValue: \r\n\r\n" + newchannel("kept"))
    assert [e["Event"] for e in events(drain(queue))] == ["Newchannel"]


# --- end to end against the PBX simulator -------------------------------------------------------


def channel(uniqueid: str, name: str = "Ann") -> dict[str, str]:
    return {
        "Event": "Newchannel",
        "Privilege": "call,all",
        "Channel": f"PJSIP/far-{uniqueid}",
        "ChannelState": "4",
        "ChannelStateDesc": "Ring",
        "CallerIDNum": "50100",
        "CallerIDName": name,
        "Uniqueid": uniqueid,
        "Linkedid": uniqueid,
    }


@pytest.fixture
async def ami_sim() -> AsyncIterator[AmiServer]:
    server = AmiServer(auth_delay=0.05, write_timeout=0.1)
    await server.start()
    try:
        yield server
    finally:
        server.thaw()
        await server.stop()


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def logged_in(client: AmiClient) -> list[Item]:
    """The items of the first session up to its ResyncEnd."""
    seen: list[Item] = []
    await wait_for_item(client.queue, ResyncEnd, seen=seen)
    return seen


async def test_sim_login_resync_then_live_events(
    ami_sim: AmiServer, caplog: pytest.LogCaptureFixture
) -> None:
    ami_sim.emit(channel("sim-1.1"))  # a call up before we connect: must be in the snapshot
    client = AmiClient(ami_settings(ami_sim.port), asyncio.Queue())
    with caplog.at_level(logging.DEBUG):
        async with running(client):
            seen = await logged_in(client)
            assert client.connected
            ami_sim.emit(channel("sim-1.2", "张伟"))
            live = await wait_for_item(client.queue, AmiEvent, event="Newchannel")
            pong = await client.send_action({"Action": "Ping"})
    assert isinstance(seen[0], ResyncBegin)
    assert isinstance(seen[-1], ResyncEnd) and seen[-1].complete
    names = [e["Event"] for e in events(seen)]  # live events (FullyBooted…) and the snapshot
    assert {"CoreShowChannel", "QueueParams", "QueueMember"} <= set(names)
    assert not any(name.endswith("Complete") for name in names)
    assert events(seen, "CoreShowChannel")[0]["Uniqueid"] == "sim-1.1"
    assert live.message["CallerIDName"] == "张伟" and live.pbx == "pbx1"
    assert isinstance(pong, dict) and pong["Ping"] == "Pong"
    assert client.logins == 1 and ami_sim.logins == 1
    assert SECRET not in caplog.text


@pytest.mark.parametrize("abort", [False, True], ids=["close", "rst"])
async def test_sim_f4_drop_reconnects_and_resyncs(ami_sim: AmiServer, abort: bool) -> None:
    client = AmiClient(ami_settings(ami_sim.port), asyncio.Queue())
    loop = asyncio.get_running_loop()
    async with running(client):
        await logged_in(client)
        dropped_at = loop.time()
        await ami_sim.drop_clients(abort=abort)
        gone = await wait_for_item(client.queue, Disconnected)
        again = await wait_for_item(client.queue, ResyncBegin)
        back_after = loop.time() - dropped_at
        end = await wait_for_item(client.queue, ResyncEnd)
    assert gone.reason.startswith("connection")
    assert end.complete and again.at <= end.at
    assert client.logins == 2 and ami_sim.logins == 2 and client.reconnects == 1
    assert back_after < client.settings.backoff_initial + 0.5  # the first retry: initial delay


async def test_sim_f4_outage_retries_with_backoff_then_recovers(ami_sim: AmiServer) -> None:
    client = AmiClient(ami_settings(ami_sim.port, backoff_max=0.4), asyncio.Queue())
    async with running(client):
        await logged_in(client)
        await ami_sim.stop()  # a crash: connections cut, port refused
        await wait_for_item(client.queue, Disconnected)
        await asyncio.sleep(1.0)
        attempts = client.reconnects
        await ami_sim.start()
        await wait_for_item(client.queue, ResyncEnd)
        # a login alone does not reset the backoff (the link must stay up stable_after first)
        assert client._backoff.ceiling() > client.settings.backoff_initial
    # ceilings 0.05, 0.1, 0.2, 0.4, 0.4…: a handful of attempts per second, not a spin
    assert 3 <= attempts <= 25, attempts
    assert client.last_error is not None and "cannot connect" in client.last_error
    assert client.logins == 2


async def test_sim_f5_half_open_detected_and_replaced(ami_sim: AmiServer) -> None:
    settings = ami_settings(ami_sim.port)
    client = AmiClient(settings, asyncio.Queue())
    loop = asyncio.get_running_loop()
    async with running(client):
        await logged_in(client)
        ami_sim.freeze()
        frozen_at = loop.time()
        gone = await wait_for_item(client.queue, Disconnected)
        detected = loop.time() - frozen_at
        ami_sim.thaw()
        await wait_for_item(client.queue, ResyncEnd)
    print(f"half-open detected after {detected:.3f} s")
    assert "no Pong" in gone.reason
    assert detected <= settings.ping_interval + settings.pong_timeout + 0.25
    assert client.logins == 2


async def test_sim_f7_shutdown_then_fresh_state(ami_sim: AmiServer) -> None:
    ami_sim.emit(channel("sim-7.1"))
    client = AmiClient(ami_settings(ami_sim.port), asyncio.Queue())
    async with running(client):
        first = await logged_in(client)
        await ami_sim.shutdown(restart=True)
        seen: list[Item] = []
        gone = await wait_for_item(client.queue, Disconnected, seen=seen)
        second = await logged_in(client)
    assert events(first, "CoreShowChannel")
    assert [e["Event"] for e in events(seen)][-1] == "Shutdown"
    assert gone.reason == "Asterisk shut down (Restart: True)"
    assert isinstance(second[0], ResyncBegin)
    assert events(second, "CoreShowChannel") == []  # the restart forgot every channel
    assert client.logins == 2


async def test_sim_wrong_credentials_retried_no_sooner_than_refused_backoff(
    ami_sim: AmiServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-secret-42"
    settings = ami_settings(ami_sim.port, secret=wrong, backoff_max=0.05, refused_backoff=0.5)
    client = AmiClient(settings, asyncio.Queue())
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.DEBUG):
        async with running(client) as task:
            await eventually(lambda: ami_sim.failed_logins == 1)
            first = loop.time()  # the simulator counts a refusal before it answers
            await eventually(lambda: client.status.refused)
            status = client.status
            await eventually(lambda: ami_sim.failed_logins == 2)
            between = loop.time() - first
            assert not task.done()
    assert 0.5 <= between < 1.5, between  # the plain backoff alone would retry within 0.05 s
    assert ami_sim.logins == 0 and client.logins == 0
    message = client.last_error
    assert message is not None and message.startswith("login refused for user 'cti'")
    assert f"127.0.0.1:{ami_sim.port}" in message
    assert status.refused and not status.up and status.reason == message
    assert status.retry_at is not None and status.retry_at - status.since >= 0.5
    refusals = [r.getMessage() for r in caplog.records if "login refused" in r.getMessage()]
    assert refusals and all(line.startswith("PBX pbx1 (") for line in refusals)
    assert all(r.levelno == logging.ERROR for r in caplog.records if "login refused" in r.message)
    assert wrong not in caplog.text
    items = drain(client.queue)
    assert items and all(isinstance(i, AttemptFailed) and i.reason == message for i in items)


async def test_a_bug_in_a_session_is_logged_and_retried(
    ami_sim: AmiServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = AmiClient(ami_settings(ami_sim.port), asyncio.Queue())
    login = client._login
    calls = 0

    async def buggy_once(protocol: AmiClientProtocol) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        await login(protocol)

    client._login = buggy_once  # type: ignore[method-assign]
    async with running(client):
        await logged_in(client)
    assert calls == 2 and client.logins == 1
    (bug,) = [r for r in caplog.records if r.exc_info is not None]
    assert "session failed on a bug" in bug.getMessage() and bug.levelno == logging.ERROR


async def test_sim_utf8_split_across_two_raw_writes(ami_sim: AmiServer) -> None:
    client = AmiClient(ami_settings(ami_sim.port), asyncio.Queue())
    async with running(client):
        await logged_in(client)
        for name in ("张伟", "José"):
            data = newchannel(name, "sim-8.1")
            cut = data.index(name.encode()) + 1  # inside the first character
            ami_sim.send_raw(data[:cut])
            await asyncio.sleep(0.05)  # two TCP segments, two reads
            ami_sim.send_raw(data[cut:])
            event = await wait_for_item(client.queue, AmiEvent, event="Newchannel")
            assert event.message["CallerIDName"] == name


async def test_sim_garbage_and_huge_line_are_skipped(
    ami_sim: AmiServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = AmiClient(ami_settings(ami_sim.port), asyncio.Queue())
    async with running(client):
        await logged_in(client)
        with caplog.at_level(logging.WARNING, logger="cti.ami"):
            ami_sim.send_raw(b"\xff\xfe\x00 garbage\r\n\r\n")
            ami_sim.send_raw(b"Event: Huge\r\nJunk: " + b"x" * (1024 * 1024) + b"\r\n\r\n")
            ami_sim.emit(channel("sim-9.1", "after"))
            seen: list[Item] = []
            event = await wait_for_item(client.queue, AmiEvent, seen=seen, event="Newchannel")
        assert client.connected
    assert event.message["CallerIDName"] == "after"
    assert [e for e in events(seen) if e["Event"] != "Newchannel"] == []  # nothing from junk
    problems = [r.getMessage() for r in caplog.records if r.name == "cti.ami"]
    assert len(problems) == 3, problems  # not-utf8, bad-line, oversized: once each
    assert client.logins == 1


async def test_sim_slow_consumer_does_not_stall_the_reader(ami_sim: AmiServer) -> None:
    """Asterisk drops a reader that does not take a write within 100 ms: ours must survive."""
    total = 20_000
    client = AmiClient(ami_settings(ami_sim.port), asyncio.Queue())
    got: list[Item] = []

    async def slow_consumer() -> None:
        floods = 0
        while floods < total:
            item = await client.queue.get()
            got.append(item)
            if isinstance(item, Disconnected):
                return  # fail fast: the assertions below say what was lost
            floods += isinstance(item, AmiEvent) and item.message["Event"] == "VarSet"
            if len(got) < 20:
                await asyncio.sleep(0.05)  # one slow second while the flood arrives

    # control: a reader that waits (here: forever) is dropped by the same flood
    reader, writer = await asyncio.open_connection("127.0.0.1", ami_sim.port)
    writer.write(encode({"Action": "Login", "Username": "cti", "Secret": SECRET}))
    await reader.readuntil(b"Authentication accepted\r\n\r\n")

    async with running(client):
        await logged_in(client)
        consumer = asyncio.create_task(slow_consumer())
        for i in range(total):
            ami_sim.emit(
                {
                    "Event": "VarSet",
                    "Privilege": "dialplan,all",
                    "Channel": "PJSIP/far-00000001",
                    "Uniqueid": "sim-10.1",
                    "Variable": "FLOOD",
                    "Value": f"{i:06d} " + "v" * 200,
                }
            )
            if i % 500 == 0:
                await asyncio.sleep(0)
        await eventually(lambda: ami_sim.clients == 1)  # the control, dropped by write_timeout
        backlog = client.queue.qsize()  # the consumer is still asleep; the reader kept reading
        await asyncio.wait_for(consumer, 15)
        assert client.connected
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    values = [int(e["Value"][:6]) for e in events(got, "VarSet")]
    assert values == list(range(total))  # all of them, in order
    assert not any(isinstance(i, Disconnected) for i in got)
    assert client.logins == 1 and ami_sim.logins == 2
    assert backlog > total // 2, backlog


async def test_sim_close_ends_run_and_fails_pending_actions(ami_sim: AmiServer) -> None:
    client = AmiClient(ami_settings(ami_sim.port, ping_interval=0), asyncio.Queue())
    task = asyncio.create_task(client.run())
    await logged_in(client)
    ami_sim.freeze()  # the next action stays unanswered
    pending = asyncio.create_task(client.send_action({"Action": "QueueStatus"}, timeout=10))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(client.close(), 2)
    assert task.done() and task.exception() is None  # run() returned
    with pytest.raises(AmiError, match="client closed"):
        await pending
    gone = await wait_for_item(client.queue, Disconnected)
    assert gone.reason == "closed by client"
    assert not client.connected
    await client.close()  # idempotent
