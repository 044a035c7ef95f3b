"""``cti bench``: AMI throughput and event-to-domain-event latency, beside panoramisk's parser.

The stream is made from the real Asterisk 22.10 captures (tests/fixtures), copied many times
with every Uniqueid/Linkedid and Timestamp shifted so each copy is a new set of calls. Four
figures come from the same bytes in the same run:

* ``panoramisk parse``: stock ``AMIProtocol.data_received`` with a no-op dispatch (its
  per-chunk decode, split and ``Message`` building) — the baseline;
* ``decoder``: :class:`cti.codec.AmiDecoder` with the model's frame filter;
* ``decoder + model``: the same, every message applied to :class:`cti.calls.CallTracker`;
* ``end to end``: a loopback TCP peer writes the stream to :class:`cti.ami.AmiClient` (our
  panoramisk-based connection), one consumer task feeds the model; latency is measured from
  the read that delivered an event to the moment its domain events exist;
* ``lookup``: :class:`crm_sync.store.CustomerStore` finding the caller among a million
  customers (SQLite file and PostgreSQL), the pop's other hot path.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

from crm_sync.db import create_engine
from crm_sync.migrate import upgrade
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore
from cti.ami import AmiClient, AmiEvent, Item, ResyncEnd
from cti.calls import CallTracker, frame_filter
from cti.codec import AmiDecoder, frame
from cti.settings import PbxSettings
from cti_bench.data import load_postgres, load_sqlite, number
from cti_bench.search import measure_search

CAPTURES = ("capture_10calls.txt", "capture_extra.txt", "capture_agi_down.txt")
_ID = re.compile(rb"(astlab-\d+)\.(\d+)")
_TS = re.compile(rb"^Timestamp: (\d+\.\d+)", re.MULTILINE)
_CHUNK = 16 * 1024
PACED_RATE = 10_000.0  # events/s: about 50 queue calls/s, a large centre's peak


def _fixtures() -> Path:
    return Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def generate_stream(copies: int, fixtures: Path | None = None) -> bytes:
    """The captures' events (login replies dropped), ``copies`` times, ids and times shifted."""
    folder = fixtures or _fixtures()
    events = (
        b"".join(
            b"\r\n\r\n".join(
                f for f in (folder / name).read_bytes().split(b"\n\n") if f.startswith(b"Event:")
            )
            + b"\r\n\r\n"
            for name in CAPTURES
        )
        .replace(b"\r\n\r\n", b"\n\n")
        .replace(b"\n", b"\r\n")
    )
    parts = []
    for copy in range(copies):
        offset = copy * 1_000_000

        def shift_id(m: re.Match[bytes], offset: int = offset) -> bytes:
            return m.group(1) + b"." + str(int(m.group(2)) + offset).encode()

        def shift_ts(m: re.Match[bytes], copy: int = copy) -> bytes:
            return b"Timestamp: %.6f" % (float(m.group(1)) + copy * 200.0)

        parts.append(_TS.sub(shift_ts, _ID.sub(shift_id, events)))
    return b"".join(parts)


@dataclass
class Figure:
    name: str
    events: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    unit: str = "events/s"

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def line(self) -> str:
        text = f"{self.name:<26} {self.rate:>11,.0f} {self.unit}"
        text += f"  ({self.events:,} in {self.seconds:.2f}s)"
        if self.p50_ms is not None and self.p99_ms is not None:
            text += f"  latency p50 {self.p50_ms:.3f} ms  p99 {self.p99_ms:.3f} ms"
        return text


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)]


def bench_panoramisk(data: bytes) -> Figure:
    from panoramisk.ami_protocol import AMIProtocol

    class _Factory:
        save_stream = None

        def dispatch(self, message: Any) -> None:
            pass

    protocol = AMIProtocol()
    protocol.connection_made(None)
    protocol.factory = _Factory()
    protocol.encoding = "utf-8"
    chunks = _chunks(data)
    start = time.perf_counter()
    for chunk in chunks:
        protocol.data_received(chunk)
    return Figure("panoramisk parse", data.count(b"Event: "), time.perf_counter() - start)


def bench_decoder(data: bytes, with_model: bool) -> Figure:
    decoder = AmiDecoder(expect_banner=False, frame_filter=frame_filter)
    tracker = CallTracker("bench")
    chunks = _chunks(data)
    start = time.perf_counter()
    for chunk in chunks:
        for message in decoder.feed(chunk):
            if with_model:
                tracker.on_event(message)
    name = "decoder + model" if with_model else "decoder (filtered)"
    return Figure(name, data.count(b"Event: "), time.perf_counter() - start)


async def _send(writer: asyncio.StreamWriter, data: bytes, rate: float | None) -> None:
    """Write the stream as fast as possible, or paced at ``rate`` events/s in 1 ms ticks."""
    if rate is None:
        for piece in _chunks(data):
            writer.write(piece)
            await writer.drain()
        return
    frames = [f + b"\r\n\r\n" for f in data.split(b"\r\n\r\n") if f]
    loop = asyncio.get_running_loop()
    begin, sent = loop.time(), 0
    while sent < len(frames):
        due = min(len(frames), int((loop.time() - begin) * rate) + 1)
        if due > sent:
            writer.write(b"".join(frames[sent:due]))
            sent = due
            await writer.drain()
        await asyncio.sleep(0.001)


def _reply(action: str, action_id: str) -> bytes:
    """What Asterisk answers to the few actions the client sends (snapshots: empty lists)."""
    head = {"Response": "Success", "ActionID": action_id}
    if action == "Login":
        return frame({**head, "Message": "Authentication accepted"})
    if action in ("CoreShowChannels", "QueueStatus"):
        done = {"Event": f"{action}Complete", "ActionID": action_id, "EventList": "Complete"}
        return frame({**head, "EventList": "start", "Message": "will follow"}) + frame(
            {**done, "ListItems": "0"}
        )
    return frame({**head, "Ping": "Pong"})


async def _blaster(
    data: bytes, rate: float | None, finished: asyncio.Event
) -> tuple[asyncio.Server, int]:
    """A loopback peer that logs us in, answers the snapshot with empty lists, then sends."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        decoder = AmiDecoder(expect_banner=False)
        sent = False
        while not reader.at_eof():
            chunk = await reader.read(4096)
            for action in decoder.feed(chunk):
                name = action.get("Action", "")
                writer.write(_reply(name, action.get("ActionID", "")))
                if name == "QueueStatus" and not sent:
                    sent = True
                    await _send(writer, data, rate)
                    finished.set()
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def bench_end_to_end(data: bytes, rate: float | None = None) -> Figure:
    total = data.count(b"Event: ")
    finished = asyncio.Event()
    server, port = await _blaster(data, rate, finished)
    queue: asyncio.Queue[Item] = asyncio.Queue()
    settings = PbxSettings(name="bench", port=port, secret="x", ping_interval=3600)
    client = AmiClient(settings, queue, frame_filter=frame_filter)
    tracker = CallTracker("bench")
    latencies: list[float] = []
    seen = 0
    expected = AmiDecoder(expect_banner=False, frame_filter=frame_filter).feed(data)
    wanted = len(expected)
    runner = asyncio.create_task(client.run())
    start: float | None = None
    clock: Callable[[], float] = time.time
    while seen < wanted:
        item = await queue.get()
        if isinstance(item, ResyncEnd):
            start = time.perf_counter()
        if not isinstance(item, AmiEvent):
            continue
        tracker.on_event(item.message)
        latencies.append(clock() - item.received_at)
        seen += 1
    elapsed = time.perf_counter() - (start or time.perf_counter())
    await finished.wait()
    await client.close()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    server.close()
    await server.wait_closed()
    latencies.sort()
    return Figure(
        f"end to end at {rate:,.0f}/s" if rate else "end to end (TCP)",
        total,
        elapsed,
        statistics.median(latencies) * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
    )


def run(copies: int = 60) -> list[Figure]:
    """Run every figure on one generated stream; print and return them."""
    data = generate_stream(copies)
    print(
        f"stream: {len(data) / 1e6:.1f} MB, {data.count(b'Event: '):,} AMI events "
        f"({copies} copies of the shared captures)"
    )
    figures = [bench_panoramisk(data), bench_decoder(data, False), bench_decoder(data, True)]
    figures.append(asyncio.run(bench_end_to_end(data)))
    paced = generate_stream(max(1, copies // 8))
    figures.append(asyncio.run(bench_end_to_end(paced, PACED_RATE)))
    for figure in figures:
        print(figure.line())
    ratio = figures[3].rate / figures[0].rate
    print(f"end to end with call tracking: {ratio:.2f}x panoramisk's parsing alone")
    return figures


async def _measure_lookups(url: str, count: int, samples: int) -> Figure:
    """Lookup latency through CustomerStore, national spellings, one in ten unknown."""
    engine = create_engine(url)
    store = CustomerStore(engine, PhoneNormalizer("CN"))
    rng = random.Random(3)
    now = datetime.now(UTC)
    wanted = [number(rng.randint(1, count) if i % 10 else count + i)[3:] for i in range(samples)]
    for raw in wanted[:50]:  # warm the pool and the page cache
        await store.lookup(raw, now=now, budget=5.0)
    timings = []
    start = time.perf_counter()
    for raw in wanted:
        result = await store.lookup(raw, now=now, budget=5.0)
        if result.status not in ("found", "none"):
            raise RuntimeError(f"lookup {raw}: {result.status}")
        timings.append(result.elapsed_ms)
    elapsed = time.perf_counter() - start
    await store.close()
    await engine.dispose()
    timings.sort()
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    name = f"lookup {backend} {count:,}"
    p50, p99 = statistics.median(timings), timings[int(samples * 0.99)]
    return Figure(name, samples, elapsed, p50, p99, unit="lookups/s")


async def _admin(base: URL, sql: str) -> None:
    conn = await asyncpg.connect(
        host=base.host,
        port=base.port,
        user=base.username,
        password=base.password,
        database=base.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _print_search(figures: list[tuple[str, float, float]], url: str = "sqlite") -> None:
    backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    for kind, p50, p99 in figures:
        print(f"search {backend} {kind:<14} latency p50 {p50:.2f} ms  p99 {p99:.2f} ms")


def run_lookups(count: int, samples: int = 2000, pg_url: str | None = None) -> list[Figure]:
    """Customer lookup p50/p99 with ``count`` customers, in SQLite and (if given) PostgreSQL."""
    figures = []
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/bench.sqlite3"
        upgrade(f"sqlite:///{path}")
        print(f"loading {count:,} customers into SQLite: {load_sqlite(path, count):.1f}s")
        figures.append(asyncio.run(_measure_lookups(f"sqlite:///{path}", count, samples)))
        _print_search(asyncio.run(measure_search(f"sqlite:///{path}", count, samples // 10)))
    if pg_url:
        base = make_url(pg_url)
        name = f"cti_bench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        try:
            upgrade(url)
            took = asyncio.run(load_postgres(url, count))
            print(f"loading {count:,} customers into PostgreSQL: {took:.1f}s")
            figures.append(asyncio.run(_measure_lookups(url, count, samples)))
            _print_search(asyncio.run(measure_search(url, count, samples // 10)), url)
        finally:
            asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    for figure in figures:
        print(figure.line())
    return figures
