"""The relay against a real HTTP receiver on loopback (SQLite and PostgreSQL): signed, in
order per customer, retried through errors and lost answers, dead-lettered, stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.models import Customer
from crm_sync.outbox import Outbox, enqueue
from crm_sync.receiver import Fault, Receiver
from crm_sync.relay import Relay, RelayPolicy
from tests.support.screenpop import served

SECRET = "s3cret-签名"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
async def outbox(engine: AsyncEngine) -> Outbox:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        for n in range(1, 6):
            session.add(
                Customer(
                    kind="person",
                    name=f"C{n}",
                    external_id=f"ext-{n}",
                    tags=[],
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    return Outbox(sessions)


async def fill(outbox: Outbox, count: int) -> list[str]:
    """``count`` changes spread over five customers and some without one."""
    keys = []
    async with outbox.sessions() as session, session.begin():
        for n in range(count):
            key = f"followup.created:{n}"
            customer = None if n % 7 == 0 else n % 5 + 1
            enqueue(
                session,
                topic="followup.created",
                key=key,
                customer_id=customer,
                data={"n": n, "text": "<script>x</script> 你好"},
                now=datetime.now(UTC),
            )
            keys.append(key)
    return keys


@contextlib.asynccontextmanager
async def relaying(outbox: Outbox, url: str, **policy: float) -> AsyncIterator[Relay]:
    relay = Relay(
        outbox,
        RelayPolicy(url=url, secret=SECRET, **policy),  # type: ignore[arg-type]
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(check: object, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_every_row_arrives_signed_once_in_order_through_faults(outbox: Outbox) -> None:
    keys = await fill(outbox, 120)
    script: dict[int, Fault] = {3: "error", 4: "drop", 9: "busy", 15: "drop", 30: "error"}
    receiver = Receiver(SECRET, faults=lambda n, _key: script.get(n, "ok"))
    async with (
        served(receiver.app()) as base,
        relaying(outbox, f"{base}/hook", backoff_initial=0.05, backoff_max=0.2, concurrency=4),
    ):
        await until(lambda: len(receiver.applied) == 120)
        counts = await outbox.counts()
        for _ in range(40):
            if counts.delivered == 120:
                break
            await asyncio.sleep(0.05)
            counts = await outbox.counts()
    assert set(receiver.applied) == set(keys)
    assert receiver.refused == 0
    assert receiver.duplicates == 2  # the two dropped answers, sent again under their keys
    assert receiver.order_kept()
    assert (counts.pending, counts.delivered, counts.dead) == (0, 120, 0)
    first = receiver.applied["followup.created:1"].envelope
    assert first["topic"] == "followup.created" and first["customer"] == {
        "id": 2,
        "external_id": "ext-2",
    }
    assert first["data"] == {"n": 1, "text": "<script>x</script> 你好"}


async def test_a_row_that_keeps_failing_goes_dead_and_others_go_on(outbox: Outbox) -> None:
    await fill(outbox, 10)
    receiver = Receiver(
        SECRET, faults=lambda _n, key: "error" if key == "followup.created:2" else "ok"
    )
    async with (
        served(receiver.app()) as base,
        relaying(outbox, f"{base}/hook", backoff_initial=0.05, backoff_max=0.1, max_attempts=3),
    ):
        await until(lambda: len(receiver.applied) == 9)
        dead: list[object] = []

        async def died() -> None:
            while not dead:
                dead.extend(await outbox.rows("dead", 10))
                await asyncio.sleep(0.05)

        await asyncio.wait_for(died(), 10)
    (row,) = dead
    assert row.key == "followup.created:2" and row.attempts == 3  # type: ignore[attr-defined]
    assert row.last_error == "HTTP 500 Internal Server Error"  # type: ignore[attr-defined]
    assert "followup.created:2" not in receiver.applied
    assert await outbox.retry(None, datetime.now(UTC)) == 1


async def test_a_receiver_that_is_down_holds_the_rows_until_it_answers(outbox: Outbox) -> None:
    keys = await fill(outbox, 5)
    receiver = Receiver(SECRET)
    app = receiver.app()
    async with served(app) as base:
        url = f"{base}/hook"
    # the port is closed now: every attempt is refused
    async with relaying(outbox, url, backoff_initial=0.05, backoff_max=0.1):
        await asyncio.sleep(0.6)
        (row,) = [r for r in await outbox.rows("pending", 10) if r.key == keys[1]]
        assert row.attempts >= 2 and row.last_error and "Connect" in row.last_error
    counts = await outbox.counts()
    assert (counts.pending, counts.dead) == (5, 0)


async def test_wrong_secret_is_refused_by_the_receiver_and_retried(outbox: Outbox) -> None:
    await fill(outbox, 1)
    receiver = Receiver("another secret")
    async with (
        served(receiver.app()) as base,
        relaying(outbox, f"{base}/hook", backoff_initial=0.05, backoff_max=0.1),
    ):
        await until(lambda: receiver.refused >= 2)
    assert receiver.applied == {}
    (row,) = await outbox.rows("pending", 10)
    assert row.last_error == "HTTP 401 Unauthorized"


async def test_a_stopped_relay_gives_back_what_was_in_flight(outbox: Outbox) -> None:
    await fill(outbox, 3)
    entered, stopped = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        entered.set()
        await stopped.wait()
        return web.Response()

    receiver = Receiver(SECRET)
    app = receiver.app()
    app.router.add_post("/slow", hang)
    async with served(app) as base:
        async with relaying(outbox, f"{base}/slow", timeout=20):
            await asyncio.wait_for(entered.wait(), 5)
        stopped.set()
        pending = await outbox.rows("pending", 10)
        assert {r.attempts for r in pending} == {0}  # the cut-off attempts were not counted
        (claimed, *_rest) = await outbox.claim(datetime.now(UTC), 10, lease=30)
        assert claimed.attempt == 1  # due at once, not after the 25 s lease


async def test_batches_carry_several_customers_changes_each_applied_once(outbox: Outbox) -> None:
    keys = await fill(outbox, 60)
    script: dict[int, Fault] = {2: "drop", 4: "error"}
    receiver = Receiver(SECRET, faults=lambda n, _key: script.get(n, "ok"))
    async with (
        served(receiver.app()) as base,
        relaying(
            outbox, f"{base}/hook", backoff_initial=0.05, backoff_max=0.2, concurrency=2, batch=10
        ),
    ):
        await until(lambda: len(receiver.applied) == 60)
    assert set(receiver.applied) == set(keys)
    assert receiver.requests < 30  # not one request per change
    assert 1 <= receiver.duplicates <= 10  # the lost answer's batch, sent again
    assert receiver.order_kept()
