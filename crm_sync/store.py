"""Who is calling: the lookup behind the screen pop, with a time budget.

The pop must never wait on the store: :meth:`CustomerStore.lookup` answers within ``budget``
seconds whatever the database does. A slow or unreachable database gives a ``timeout`` or
``error`` result that the pop shows as "unknown caller, store unavailable" and enriches later.
Cards are frozen snapshots, never ORM objects, so nothing lazy escapes into the web layer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import exists, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from crm_sync.models import Customer, Interaction, Phone
from crm_sync.phones import PhoneNormalizer

log = logging.getLogger(__name__)

LookupStatus = Literal["found", "several", "none", "internal", "invalid", "timeout", "error"]
MAX_MATCHES = 10
REPEAT_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    kind: str
    occurred_at: datetime
    title: str
    status: str | None
    agent: str | None
    due_at: datetime | None


@dataclass(frozen=True, slots=True)
class CustomerCard:
    """What an agent needs to see while the phone rings."""

    id: int
    kind: str
    name: str
    company: str | None
    tier: str
    lifecycle: str
    language: str | None
    owner: str | None
    email: str | None
    tags: tuple[str, ...]
    phones: tuple[str, ...]
    open_items: tuple[TimelineEntry, ...]
    recent: tuple[TimelineEntry, ...]
    repeat_caller: bool


@dataclass(frozen=True, slots=True)
class Lookup:
    raw: str
    e164: str | None
    status: LookupStatus
    cards: tuple[CustomerCard, ...] = ()
    elapsed_ms: float = 0.0


class CustomerStore:
    """Reads for the pop. ``recent`` is how many timeline entries a card carries."""

    def __init__(self, engine: AsyncEngine, phones: PhoneNormalizer, *, recent: int = 5) -> None:
        self.engine = engine
        self.phones = phones
        self.recent = recent
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._abandoned: set[asyncio.Task[tuple[CustomerCard, ...]]] = set()

    async def lookup(self, raw: str, *, now: datetime, budget: float = 0.3) -> Lookup:
        """Find the customers behind a caller number, within ``budget`` seconds. Never raises
        for store trouble: the result's status says ``timeout`` or ``error`` instead."""
        started = time.perf_counter()
        if self.phones.is_internal(raw):
            return Lookup(raw, None, "internal")
        e164 = self.phones.to_e164(raw)
        if e164 is None:
            return Lookup(raw, None, "invalid")
        task = asyncio.create_task(self._cards(e164, now))
        done, _ = await asyncio.wait({task}, timeout=budget)
        status: LookupStatus
        cards: tuple[CustomerCard, ...] = ()
        if not done:
            # not wait_for: it would also wait for the cancelled query's clean-up, which on a
            # stalled database is exactly what the budget is there to avoid
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._reap)
            status = "timeout"
        elif isinstance(task.exception(), SQLAlchemyError | OSError):
            log.warning("customer lookup for %s failed: %s", e164, task.exception())
            status = "error"
        else:
            cards = task.result()
            status = "none" if not cards else "found" if len(cards) == 1 else "several"
        elapsed = (time.perf_counter() - started) * 1000
        return Lookup(raw, e164, status, cards, round(elapsed, 3))

    def _reap(self, task: asyncio.Task[tuple[CustomerCard, ...]]) -> None:
        """A lookup given up on has finished its clean-up; forget it (its error is moot)."""
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("abandoned lookup ended with %r", task.exception())

    async def close(self) -> None:
        """Wait for lookups given up on to finish their clean-up (before disposing the engine)."""
        if self._abandoned:
            await asyncio.gather(*self._abandoned, return_exceptions=True)

    async def card(self, customer_id: int, *, now: datetime) -> CustomerCard | None:
        """One customer's card (after the agent picked among several, or for the API)."""
        async with self.sessions() as session:
            rows = await self._customers(session, Customer.id == customer_id)
            return await self._card(session, *rows[0], now) if rows else None

    async def _cards(self, e164: str, now: datetime) -> tuple[CustomerCard, ...]:
        async with self.sessions() as session:
            matching = select(Phone.customer_id).where(Phone.e164 == e164)
            rows = await self._customers(session, Customer.id.in_(matching))
            return tuple([await self._card(session, c, company, now) for c, company in rows])

    async def _customers(
        self, session: AsyncSession, condition: object
    ) -> list[tuple[Customer, str | None]]:
        company = aliased(Customer)
        query = (
            select(Customer, company.name)
            .outerjoin(company, Customer.company_id == company.id)
            .where(condition)  # type: ignore[arg-type]
            .order_by(Customer.id)
            .limit(MAX_MATCHES)
        )
        return [(c, name) for c, name in (await session.execute(query)).all()]

    async def _card(
        self, session: AsyncSession, customer: Customer, company: str | None, now: datetime
    ) -> CustomerCard:
        mine = Interaction.customer_id == customer.id
        recent = await session.scalars(
            select(Interaction)
            .where(mine)
            .order_by(Interaction.occurred_at.desc())
            .limit(self.recent)
        )
        open_items = await session.scalars(
            select(Interaction)
            .where(mine, Interaction.status == "open")
            .order_by(Interaction.due_at.is_(None), Interaction.due_at, Interaction.occurred_at)
            .limit(20)
        )
        repeat = await session.scalar(
            select(
                exists().where(
                    mine, Interaction.kind == "call", Interaction.occurred_at >= now - REPEAT_WINDOW
                )
            )
        )
        phones = await session.scalars(
            select(Phone.e164).where(Phone.customer_id == customer.id).order_by(Phone.id)
        )
        return CustomerCard(
            id=customer.id,
            kind=customer.kind,
            name=customer.name,
            company=company,
            tier=customer.tier,
            lifecycle=customer.lifecycle,
            language=customer.language,
            owner=customer.owner,
            email=customer.email,
            tags=tuple(customer.tags or ()),
            phones=tuple(phones),
            open_items=tuple(_entry(i) for i in open_items),
            recent=tuple(_entry(i) for i in recent),
            repeat_caller=bool(repeat),
        )


def _entry(row: Interaction) -> TimelineEntry:
    return TimelineEntry(row.kind, row.occurred_at, row.title, row.status, row.agent, row.due_at)
