"""kill -9 of the service while it relays (F3): nothing committed is lost, nothing applied twice.

A real ``cti serve`` subprocess (following the PBX simulator, relaying to a webhook) is
SIGKILLed again and again at random moments mid-stream and started again, while this test
commits outcomes to the same store the way the agent page does. A real HTTP receiver on
loopback, which honours idempotency keys and sometimes fails or loses its answer, counts what
arrived. At the end every committed change has been applied exactly once, in order per
customer, and the outbox is empty.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.models import Customer, OutboxRow
from crm_sync.outbox import Outbox
from crm_sync.receiver import Fault, Receiver
from crm_sync.timeline import OutcomeIn, save_outcome
from cti.children import preexec
from pbxsim.server import AmiServer
from tests.crm_sync.test_outbox import NOW
from tests.support.screenpop import served

SECRET = "kill-test-secret"
OUTCOMES = 400
CUSTOMERS = 25
KILLS = 6


def config(tmp_path: Path, db_url: str, ami_port: int, hook: str) -> Path:
    path = tmp_path / "cti.toml"
    path.write_text(
        f"""
log_level = "WARNING"
[store]
database_url = "{db_url}"
[pbx.PBX]
port = {ami_port}
secret = "cti-secret"
[crm]
webhook_url = "{hook}"
secret = "{SECRET}"
timeout = 1.0
backoff_initial = 0.05
backoff_max = 0.5
concurrency = 8
""",
        encoding="utf-8",
    )
    return path


def start(path: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cti", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=path.parent,
            preexec_fn=preexec(),
        )


async def write_outcomes(sessions: async_sessionmaker, keys: list[str]) -> None:  # type: ignore[type-arg]
    rng = random.Random(7)
    for n in range(OUTCOMES):
        item = OutcomeIn(
            key=f"k{n}",
            pbx="PBX",
            call_id=f"call-{n}",
            agent="alice",
            disposition="resolved",
            notes=f"note {n} <b>ünïcode</b> 电话",
            customer_id=rng.randint(1, CUSTOMERS),
            new_customer_name=None,
            caller_e164=None,
        )
        await save_outcome(sessions, item, now=datetime.now(UTC))
        keys.append(f"outcome:k{n}")
        await asyncio.sleep(rng.uniform(0, 0.02))


async def test_kill_9_mid_stream_loses_nothing_and_applies_nothing_twice(
    engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        session.add_all(
            Customer(kind="person", name=f"C{n}", tags=[], created_at=NOW, updated_at=NOW)
            for n in range(CUSTOMERS)
        )
    rng = random.Random(11)
    faults: dict[str, Fault] = {}

    def fault(_n: int, key: str) -> Fault:
        if key not in faults:  # each key's first request: 5 % lost answers, 5 % errors
            roll = rng.random()
            faults[key] = "drop" if roll < 0.05 else "error" if roll < 0.1 else "ok"
            return faults[key]
        return "ok"

    receiver = Receiver(SECRET, faults=fault)
    pbx = AmiServer(auth_delay=0.05)
    await pbx.start()
    log = tmp_path / "serve.log"
    async with served(receiver.app()) as base:
        path = config(tmp_path, db_url, pbx.port, f"{base}/hook")
        keys: list[str] = []
        writer = asyncio.create_task(write_outcomes(sessions, keys))
        process = start(path, log)
        kills = 0
        try:
            while kills < KILLS:
                seen = len(receiver.applied)
                while len(receiver.applied) <= seen:  # it is up and delivering: mid-stream
                    assert process.poll() is None, log.read_text(errors="replace")
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(0, 0.3))
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
                process = start(path, log)
            await writer
            outbox = Outbox(sessions)
            deadline = asyncio.get_running_loop().time() + 60
            while (await outbox.counts()).pending:
                assert asyncio.get_running_loop().time() < deadline, log.read_text()
                assert process.poll() is None, log.read_text(errors="replace")
                await asyncio.sleep(0.1)
        finally:
            writer.cancel()
            process.kill()
            process.wait()
            await pbx.stop()
    async with sessions() as session:
        committed = set(await session.scalars(select(OutboxRow.key)))
    counts = await Outbox(sessions).counts()
    assert (counts.pending, counts.dead) == (0, 0)
    assert len(committed) == OUTCOMES and committed == set(keys)
    assert set(receiver.applied) == committed  # nothing lost, and applied once each
    assert receiver.refused == 0
    assert receiver.order_kept()
    drops = sum(1 for f in faults.values() if f == "drop")
    # what was sent twice: the lost answers, and what each kill cut off (at most the
    # deliveries in flight plus those delivered but not yet marked)
    assert drops <= receiver.duplicates <= drops + KILLS * 16, receiver.duplicates
