"""What the latency benchmarks share: the product as a ``cti serve`` process of its own, and
a harness that does not disturb what it measures."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from crm_sync.migrate import upgrade
from cti.children import preexec
from cti_bench.data import load_sqlite

START_TIMEOUT = 60.0


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-file limit to ``needed`` if the hard limit allows; the new soft
    limit. Raises RuntimeError when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise RuntimeError(f"need {needed} open files, the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return soft


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def start_product(config: Path, port: int, log: Path) -> asyncio.subprocess.Process:
    """Start ``cti serve --config config`` and wait until it accepts connections on
    127.0.0.1:``port``; its output goes to ``log``. Raises RuntimeError if it exits first or
    does not listen within a minute."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cti", "serve", "--config", str(config),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=preexec(),  # a killed benchmark leaves no product behind
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.returncode is not None:
            said = await asyncio.to_thread(log.read_text, errors="replace")
            raise RuntimeError(f"cti serve exited: {said[-2000:]}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return process
        if time.monotonic() > deadline:
            await end_product(process)
            raise RuntimeError(f"cti serve did not listen on {port} within {START_TIMEOUT:g} s")
        await asyncio.sleep(0.1)


async def end_product(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            async with asyncio.timeout(15.0):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.contextmanager
def harness_without_collections() -> Iterator[None]:
    """The harness's own collections would stop its simulated PBX and clients and show as
    product latency: while measuring, its heap is frozen and automatic collection is off
    (what piles up meanwhile is collected afterwards), then both are restored."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``check`` every 10 ms. Raises RuntimeError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def spread(seconds: list[float]) -> tuple[float, float, float]:
    """p50, p99 (as in :mod:`cti_bench.run`) and max, in milliseconds."""
    ms = sorted(x * 1000 for x in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[-1]


@contextlib.asynccontextmanager
async def running_product(
    prefix: str, customers: int, configure: Callable[[Path, int], Path]
) -> AsyncIterator[int]:
    """``cti serve`` on a fresh SQLite store of ``customers`` seeded customers
    (``<folder>/store.sqlite3``), configured by ``configure(folder, port)`` to listen on
    ``port``; yields that port, and stops the product on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        folder = Path(name)
        await asyncio.to_thread(upgrade, f"sqlite:///{folder}/store.sqlite3")
        await asyncio.to_thread(load_sqlite, str(folder / "store.sqlite3"), customers)
        port = free_port()
        process = await start_product(configure(folder, port), port, folder / "serve.log")
        try:
            yield port
        finally:
            await end_product(process)
