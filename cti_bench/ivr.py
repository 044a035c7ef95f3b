"""``cti bench`` IVR figures: concurrent FastAGI sessions and the time each step takes.

Two processes over loopback sockets, as in production:

* **the product**: ``python -m cti serve`` with ``[ivr] menus_dir = config/ivr`` (the shipped
  menus) and its own SQLite store of ``customers`` seeded customers; it also follows an idle
  simulated PBX over AMI, as it would in production;
* **the harness** (this process): ``sessions`` simulated channels (:func:`ivr.client.run_agi`,
  which speaks res_agi's protocol) kept busy for the whole run: each slot runs calls back to
  back. Nine callers in ten are customers found by caller ID, who hear their balance and their
  last order's status (two figures from the store) and choose the support queue; the tenth is
  unknown, is asked for a customer number and chooses an agent instead.

Every prompt takes a random 0.5 to 1.5 ``audio`` seconds before the channel answers (what
holds a real session open: prompts differ in length, so the channels do not move in step; a
call lasts about ten seconds). A **step** is the product's share:
from the channel's reply leaving the harness to the product's next command arriving
(``time.perf_counter()`` in the harness), which includes the store lookups of that step and
two loopback hops. The first ``warmup`` seconds are not counted. The harness does not
collect garbage while measuring (:func:`~cti_bench.harness.harness_without_collections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from cti_bench.data import number
from cti_bench.harness import (
    harness_without_collections,
    raise_fd_limit,
    running_product,
    spread,
)
from cti_bench.run import Figure
from ivr.client import TIMEOUT, AgiCall, CallerScript, run_agi
from pbxsim import AmiServer

SESSIONS = 500
SECONDS = 30.0
WARMUP = 5.0
AUDIO = 1.0
CUSTOMERS = 10_000
MENUS = Path(__file__).resolve().parent.parent / "config" / "ivr"
KNOWN = CallerScript([TIMEOUT, "2", "1", "3"])  # welcome, balance, last order, support
UNKNOWN = CallerScript([TIMEOUT, "0"])  # welcome, "no number: put me through"


@dataclass
class IvrFigure(Figure):
    """Steps measured over ``seconds``, with the sessions that were open meanwhile."""

    sessions: int = 0
    open_min: int = 0  # fewest sessions open at once while measuring (sampled every 0.1 s)
    open_max: int = 0
    calls: int = 0  # calls that ended while measuring
    failed: int = 0  # calls the product did not take (AGISTATUS=FAILURE) or routed nowhere
    max_ms: float = 0.0
    unit: str = "steps/s"

    def line(self) -> str:
        return (
            f"{super().line()}  max {self.max_ms:.3f} ms\n"
            f"{'':<26} {self.open_min}-{self.open_max} sessions open at once, "
            f"{self.calls:,} calls ended, {self.failed} failed"
        )


@dataclass
class _Run:
    measuring: bool = False
    stop: bool = False
    open: int = 0
    steps: list[float] = field(default_factory=list)
    calls: int = 0
    failed: int = 0
    serial: int = 0


def _settings_file(folder: Path, server: AmiServer, port: int) -> Path:
    config = folder / "cti.toml"
    config.write_text(
        'log_level = "WARNING"\n\n'
        f'[store]\ndatabase_url = "sqlite:///{folder}/store.sqlite3"\ndefault_region = "CN"\n\n'
        f'[pbx.bench]\nhost = "127.0.0.1"\nport = {server.port}\n'
        f'secret = "{server.secret}"\nping_interval = 60.0\n\n'
        f'[ivr]\nhost = "127.0.0.1"\nport = {port}\nmenus_dir = "{MENUS}"\n',
        encoding="utf-8",
    )
    return config


async def _slot(run: _Run, port: int, rng: random.Random, customers: int, audio: float) -> None:
    """One channel after another until the run stops."""
    while not run.stop:
        run.serial += 1
        known = rng.random() < 0.9
        caller = number(rng.randint(1, customers) if known else customers + run.serial)
        call = AgiCall(
            channel=f"Local/s@incoming-{run.serial:08x};2",
            uniqueid=f"bench-1.{2 * run.serial}",
            linkedid=f"bench-1.{2 * run.serial - 1}",
            callerid_num=caller[3:],  # national spelling, as Asterisk often shows it
            script="main",
        )
        steps: list[float] = []
        run.open += 1
        try:
            transcript = await run_agi(
                "127.0.0.1",
                port,
                call,
                KNOWN if known else UNKNOWN,
                audio=lambda line: audio * rng.uniform(0.5, 1.5),
                waits=steps,
            )
        finally:
            run.open -= 1
        if run.measuring:
            run.steps += steps
            run.calls += 1
            if transcript.agi_status == "FAILURE" or "IVR_QUEUE" not in transcript.variables:
                run.failed += 1


async def measure_ivr(
    sessions: int = SESSIONS,
    *,
    seconds: float = SECONDS,
    warmup: float = WARMUP,
    audio: float = AUDIO,
    customers: int = CUSTOMERS,
    seed: int = 1,
) -> IvrFigure:
    """One figure: ``sessions`` channels kept busy for ``warmup`` + ``seconds`` seconds."""
    if sessions < 1 or seconds <= 0:
        raise ValueError("measure_ivr needs at least one session and a positive duration")
    raise_fd_limit(2 * sessions + 256)
    run = _Run()
    server = AmiServer(system_name="bench", auth_delay=0.0)
    slots: list[asyncio.Task[None]] = []
    opened: list[int] = []
    await server.start()
    try:
        async with running_product(
            "cti-bench-ivr-", customers, lambda folder, port: _settings_file(folder, server, port)
        ) as port:
            stack = contextlib.ExitStack()
            try:
                rng = random.Random(seed)
                for _ in range(sessions):  # ramp up over the first second
                    slots.append(asyncio.create_task(_slot(run, port, rng, customers, audio)))
                    await asyncio.sleep(1.0 / sessions)
                await asyncio.sleep(warmup)
                stack.enter_context(harness_without_collections())
                run.measuring = True
                began = time.monotonic()
                while time.monotonic() - began < seconds:
                    opened.append(run.open)
                    await asyncio.sleep(0.1)
                run.measuring = False
                measured = time.monotonic() - began
            finally:
                stack.close()
                run.stop = True
                for task in slots:
                    task.cancel()
                await asyncio.gather(*slots, return_exceptions=True)
    finally:
        await server.stop()
    if not run.steps:
        raise RuntimeError("no IVR step was measured")
    p50, p99, worst = spread(run.steps)
    return IvrFigure(
        f"ivr {sessions:,} sessions",
        len(run.steps),
        measured,
        p50,
        p99,
        sessions=sessions,
        open_min=min(opened),
        open_max=max(opened),
        calls=run.calls,
        failed=run.failed,
        max_ms=worst,
    )


def run_ivr(sessions: int = SESSIONS, seconds: float = SECONDS) -> list[Figure]:
    """The IVR figure; print and return it."""
    print(
        f"ivr: {sessions} FastAGI channels kept busy for {seconds:g}s (after {WARMUP:g}s), "
        f"prompts {AUDIO / 2:g}-{AUDIO * 1.5:g}s each, shipped menus, SQLite store with "
        f"{CUSTOMERS:,} customers; "
        "step = the channel's reply -> the product's next command, store lookups included; "
        "the product runs as `cti serve` in a process of its own"
    )
    figure = asyncio.run(measure_ivr(sessions, seconds=seconds))
    print(figure.line())
    return [figure]
