"""One writer for finished calls: batches what waits, keeps order through a store outage,
bounds what waits, gives up (logged) at close, survives a bug in one batch."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from sqlalchemy.exc import OperationalError

from screenpop.call_writer import CallWriter, EndedCall
from tests.crm_sync.test_timeline import record
from tests.support.screenpop import eventually


def call(call_id: str) -> EndedCall:
    return EndedCall(None, replace(record(call_id), pbx="lab"), None)


class Store:
    """A write that records each batch; refuses ``down`` attempts as a lost database would."""

    def __init__(self, down: int = 0) -> None:
        self.down = down
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, batch: list[EndedCall]) -> None:
        self.batches.append([c.record.call_id for c in batch])
        await self.release.wait()
        if self.down > 0:
            self.down -= 1
            raise OperationalError("INSERT", {}, ConnectionRefusedError("refused"))

    @property
    def written(self) -> list[str]:
        return [c for batch in self.batches for c in batch]


async def test_calls_that_end_while_a_batch_commits_go_in_the_next() -> None:
    store = Store()
    store.release.clear()  # the first commit takes a while
    writer = CallWriter(store, max_batch=3)
    writer.add(call("c0"))
    await eventually(lambda: store.batches == [["c0"]])
    for n in range(1, 8):
        assert writer.add(call(f"c{n}"))
    assert writer.pending == 8
    store.release.set()
    await eventually(lambda: writer.pending == 0)
    await writer.close()
    assert store.batches == [["c0"], ["c1", "c2", "c3"], ["c4", "c5", "c6"], ["c7"]]


async def test_a_store_outage_delays_calls_in_order_and_loses_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store(down=3)
    writer = CallWriter(store, retry_first=0.01, retry_max=0.04)
    writer.add(call("c1"))
    writer.add(call("c2"))
    await eventually(lambda: writer.pending == 0)
    await writer.close()
    assert store.batches[:3] == [["c1", "c2"]] * 3  # the same batch tried again
    assert store.written[6:] == ["c1", "c2"]  # then written, in order
    retries = [r.getMessage() for r in caplog.records if "retry in" in r.getMessage()]
    assert len(retries) == 3 and "2 calls (c1, c2) not written" in retries[0]


async def test_past_the_bound_a_call_is_refused_not_kept() -> None:
    store = Store()
    store.release.clear()
    writer = CallWriter(store, max_pending=3)
    assert all(writer.add(call(f"c{n}")) for n in range(3))
    assert not writer.add(call("c3")) and writer.pending == 3
    store.release.set()
    await writer.close()
    assert store.written == ["c0", "c1", "c2"]


async def test_at_close_what_waits_is_tried_once_more_then_each_call_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store(down=1_000)
    writer = CallWriter(store, retry_first=60.0)  # the next attempt would be a minute away
    writer.add(call("c1"))
    await eventually(lambda: len(store.batches) == 1)
    writer.add(call("c2"))
    await asyncio.wait_for(writer.close(), 5)
    assert store.batches == [["c1"], ["c1", "c2"]]
    given_up = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.call_id for r in given_up] == ["c1", "c2"]  # type: ignore[attr-defined]
    assert all("not written, the service is stopping" in r.getMessage() for r in given_up)


async def test_a_bug_in_one_batch_does_not_stop_the_writer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written: list[str] = []

    async def write(batch: list[EndedCall]) -> None:
        if batch[0].record.call_id == "bad":
            raise TypeError("a bug")
        written.extend(c.record.call_id for c in batch)

    writer = CallWriter(write)
    writer.add(call("bad"))
    await eventually(lambda: writer.pending == 0)
    writer.add(call("good"))
    await writer.close()
    assert written == ["good"]
    assert any("call bad not written" in r.getMessage() for r in caplog.records)
