"""One writer for the finished calls: batches, retried while the store is down, bounded.

A task per call, each retrying on its own, was fine at a few calls a second; at fifty, with
the store slow, thousands of them waited for the connection pool at once, timed out, retried
and kept the pool from the logins and outcomes that needed it. Here one task writes: it takes
everything that is waiting (up to ``max_batch``) in one transaction
(:func:`crm_sync.call_writes.record_calls`), so the commits per second fall as the rate
rises. While the store is unreachable the same batch is tried again, waiting longer each
time (``retry_first`` doubling to ``retry_max``); calls that end meanwhile wait behind it, up
to ``max_pending``, past which a call is refused (and logged by the caller): memory comes first.
At :meth:`close` what waits gets one last attempt, then is given up, each call logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from cti.events import CallRecord
from cti.waits import wait_set

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # calls waiting for the store (an hour at 3 calls/s)
MAX_BATCH = 200
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds between attempts while the store is down
SAMPLE = 5  # call ids named in a line about a batch


@dataclass(frozen=True, slots=True)
class EndedCall:
    customer_id: int | None
    record: CallRecord
    number: str | None  # the caller's number in E.164, when the lookup had one


Write = Callable[[list[EndedCall]], Awaitable[None]]


class CallWriter:
    """Hands the calls given to :meth:`add` to ``write`` in batches, from one task."""

    def __init__(
        self,
        write: Write,
        *,
        max_pending: int = MAX_PENDING,
        max_batch: int = MAX_BATCH,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self._write = write
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.retry_first = retry_first
        self.retry_max = retry_max
        self._waiting: deque[EndedCall] = deque()
        self._writing = 0  # calls of the batch being written
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Calls not yet written: waiting, and in the batch being written."""
        return len(self._waiting) + self._writing

    def add(self, call: EndedCall) -> bool:
        """Queue a call for writing; False (nothing queued) when ``max_pending`` wait."""
        if self.pending >= self.max_pending:
            return False
        self._waiting.append(call)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return True

    async def close(self) -> None:
        """Write what waits, one attempt more for a store that is down, then stop."""
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        delay = self.retry_first
        while self._waiting or not self._closing.is_set():
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            size = min(self.max_batch, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(size)]
            self._writing = len(batch)
            try:
                await self._write(batch)
                delay = self.retry_first
            except (SQLAlchemyError, OSError) as exc:
                if self._closing.is_set():
                    for call in batch:
                        log.error(
                            "call %s not written, the service is stopping: %s",
                            call.record.call_id,
                            exc,
                            extra=_about(call),
                        )
                    continue
                log.warning(
                    "%s not written (retry in %.0f s): %s",
                    _calls(batch),
                    delay,
                    exc,
                    extra=_about(batch[0]) if len(batch) == 1 else None,
                )
                self._waiting.extendleft(reversed(batch))  # first again, in their order
                await wait_set(self._closing, delay)
                delay = min(delay * 2, self.retry_max)
            except Exception:  # a bug, not the store: these calls are lost, the others not
                log.exception("%s not written", _calls(batch))
            finally:
                self._writing = 0


def _calls(batch: list[EndedCall]) -> str:
    if len(batch) == 1:
        return f"call {batch[0].record.call_id}"
    ids = ", ".join(call.record.call_id for call in batch[:SAMPLE])
    more = f" and {len(batch) - SAMPLE:,} more" if len(batch) > SAMPLE else ""
    return f"{len(batch):,} calls ({ids}{more})"


def _about(call: EndedCall) -> dict[str, str]:
    return {"call_id": call.record.call_id, "pbx": call.record.pbx}
