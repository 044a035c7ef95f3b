"""Outcomes saved in group commits: what arrives while one transaction commits goes in the next.

Each outcome alone costs a transaction of its own, a few milliseconds of this process's time
however fast the disk is; at the rates a big center reaches after a wave of calls that is the
limit. :class:`OutcomeWriter` keeps the promise of :func:`save_outcome` (an outcome is
committed, with its outbox rows, before its caller hears "saved"; a repeated key answers the
first result) while letting concurrent callers share one transaction. With one caller at a
time nothing waits: the batch is that one outcome.

An outcome that cannot go with others (a new customer to create, a key already stored) is
saved on its own. If the shared transaction fails for a reason one outcome could cause (an
integrity error), each outcome of the batch is saved again on its own, so one bad outcome
never fails the rest; if the store is down, every caller of the batch is told.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.models import Customer, Interaction
from crm_sync.timeline import (
    OutcomeError,
    OutcomeIn,
    OutcomeSaved,
    check_outcome,
    outcome_rows,
    save_outcome,
    tell_crm,
)

MAX_BATCH = 200
PARALLEL = 3  # transactions at once: one commits while the next is being written


@dataclass(slots=True)
class _Waiting:
    outcome: OutcomeIn
    now: datetime
    done: asyncio.Future[OutcomeSaved] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def answer(self, result: OutcomeSaved | BaseException) -> None:
        if self.done.done():  # the caller went away (a closed request); the work is done
            return
        if isinstance(result, BaseException):
            self.done.set_exception(result)
        else:
            self.done.set_result(result)


class OutcomeWriter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        max_batch: int = MAX_BATCH,
        parallel: int = PARALLEL,
    ) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self.batches = 0  # transactions shared by several outcomes (for tests and figures)
        self.parallel = parallel
        self._waiting: list[_Waiting] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def save(self, outcome: OutcomeIn, *, now: datetime) -> OutcomeSaved:
        """As :func:`save_outcome`: OutcomeError for bad input, the store's errors as such."""
        check_outcome(outcome)
        if outcome.customer_id is None:  # a customer to create: alone
            return await save_outcome(self.sessions, outcome, now=now)
        waiting = _Waiting(outcome, now)
        self._waiting.append(waiting)
        if len(self._flushers) < self.parallel:
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await asyncio.shield(waiting.done)

    async def close(self) -> None:
        """Finish what was handed over (called on shutdown)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._flushers)

    async def _flush(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            try:
                results = await self._together(batch)
            except IntegrityError:
                results = [await self._alone(w) for w in batch]
            except Exception as exc:  # the store failed: every caller hears it
                results = [exc] * len(batch)
            for waiting, result in zip(batch, results, strict=True):
                waiting.answer(result)

    async def _alone(self, waiting: _Waiting) -> OutcomeSaved | BaseException:
        try:
            return await save_outcome(self.sessions, waiting.outcome, now=waiting.now)
        except Exception as exc:  # handed to that outcome's caller
            return exc

    async def _together(self, batch: list[_Waiting]) -> list[OutcomeSaved | BaseException]:
        keys = [f"outcome:{w.outcome.key}" for w in batch]
        async with self.sessions() as session, session.begin():
            wanted = {w.outcome.customer_id for w in batch}
            known = set(await session.scalars(select(Customer.id).where(Customer.id.in_(wanted))))
            taken = set(
                await session.scalars(
                    select(Interaction.external_id).where(Interaction.external_id.in_(keys))
                )
            )
            planned: dict[str, tuple[Interaction, Interaction | None, _Waiting]] = {}
            for key, waiting in zip(keys, batch, strict=True):
                customer = waiting.outcome.customer_id
                if key in taken or key in planned or customer not in known:
                    continue
                assert customer is not None  # outcomes without one are saved alone
                row, followup = outcome_rows(session, waiting.outcome, customer, waiting.now)
                planned[key] = (row, followup, waiting)
            await session.flush()
            for row, followup, waiting in planned.values():
                tell_crm(session, waiting.outcome, row, followup, waiting.now)
        self.batches += 1
        results: list[OutcomeSaved | BaseException] = []
        for key, waiting in zip(keys, batch, strict=True):
            first = planned.get(key)
            if first is not None and first[2] is waiting:
                row, followup, _ = first
                results.append(
                    OutcomeSaved(row.id, row.customer_id, followup.id if followup else None, False)
                )
            elif waiting.outcome.customer_id not in known and key not in taken:
                results.append(OutcomeError(f"no customer {waiting.outcome.customer_id}"))
            else:  # saved before, or earlier in this batch (a double click): the first result
                results.append(await self._alone(waiting))
        return results
