"""Who is calling: the lookup behind the screen pop, with a time budget.

The pop must never wait on the store: :meth:`CustomerStore.lookup` answers within ``budget``
seconds whatever the database does. A slow or unreachable database gives a ``timeout`` or
``error`` result that the pop shows as "unknown caller, store unavailable" and enriches later.
Cards are frozen snapshots, never ORM objects, so nothing lazy escapes into the web layer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from asyncpg import PostgresError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.group_commit import OutcomeWriter
from crm_sync.phones import PhoneNormalizer
from crm_sync.readers import Rows, card_rows
from crm_sync.segments import reasons

log = logging.getLogger(__name__)

# "skipped": not asked, the service was behind its PBX's events (screenpop.pipeline)
LookupStatus = Literal[
    "found", "several", "none", "internal", "invalid", "timeout", "error", "skipped"
]
MAX_MATCHES = 10
REPEAT_WINDOW = timedelta(hours=24)


class StoreUnavailable(Exception):
    """The database did not answer (down, refused, broken connection)."""


_DRIVER_ERRORS = (SQLAlchemyError, OSError, sqlite3.Error, PostgresError)


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    kind: str
    occurred_at: datetime
    title: str
    status: str | None
    agent: str | None
    due_at: datetime | None
    body: str | None  # what was written: an outcome's notes, a ticket's text


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
    quadrant: str | None = None  # satisfaction/loyalty (crm_sync.segments); None: no survey
    why: tuple[str, ...] = ()  # the segments' reasons: tier, lifecycle, quadrant


@dataclass(frozen=True, slots=True)
class Figures:
    """A customer's account figures as stored (the IVR decides what it can say)."""

    balance: Decimal | None
    currency: str | None
    last_order_status: str | None
    open_tickets: int


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
        self.outcomes = OutcomeWriter(self.sessions)  # the agent page's saves, group-committed
        self._rows = card_rows(engine.url)
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
        elif isinstance(
            task.exception(), SQLAlchemyError | OSError | sqlite3.Error | PostgresError
        ):
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
        """Let lookups given up on finish their clean-up, then close the reader."""
        if self._abandoned:
            await asyncio.gather(*self._abandoned, return_exceptions=True)
        await self.outcomes.close()
        await self._rows.close()

    async def card(self, customer_id: int, *, now: datetime) -> CustomerCard | None:
        """One customer's card (after the agent picked among several, or for the API).
        Raises StoreUnavailable when the database does not answer."""
        try:
            rows = await self._rows.by_id(customer_id, now - REPEAT_WINDOW, self.recent)
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(str(exc)) from exc
        cards = _cards_from(rows, self.recent)
        return cards[0] if cards else None

    async def figures(self, customer_id: int) -> Figures | None:
        """What the IVR can tell a caller about their account; None for an unknown customer.
        Raises StoreUnavailable when the database does not answer."""
        try:
            row = await self._rows.figures(customer_id)
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(str(exc)) from exc
        if row is None:
            return None
        balance, currency, last_order, open_tickets = row
        amount = None if balance is None else Decimal(str(balance))
        return Figures(amount, currency, last_order, int(open_tickets))

    async def _cards(self, e164: str, now: datetime) -> tuple[CustomerCard, ...]:
        rows = await self._rows.by_phone(e164, now - REPEAT_WINDOW, self.recent, MAX_MATCHES)
        return _cards_from(rows, self.recent)


def _cards_from(rows: Rows, recent_count: int) -> tuple[CustomerCard, ...]:
    customers, phone_rows, timeline = rows
    phones: dict[int, list[str]] = {row[0]: [] for row in customers}
    for owner, e164 in phone_rows:
        phones[owner].append(e164)
    recent: dict[int, list[tuple[int, TimelineEntry]]] = {row[0]: [] for row in customers}
    open_items: dict[int, list[TimelineEntry]] = {row[0]: [] for row in customers}
    for owner, kind, at, title, status, agent, due, body, position in timeline:
        entry = TimelineEntry(kind, at, title, status, agent, due, body)
        if position <= recent_count:
            recent[owner].append((position, entry))
        if status == "open":
            open_items[owner].append(entry)
    return tuple(
        _card(
            row,
            phones[row[0]],
            [entry for _, entry in sorted(recent[row[0]], key=lambda pair: pair[0])],
            open_items[row[0]],
        )
        for row in customers
    )


def _card(
    row: Any, phones: list[str], recent: list[TimelineEntry], open_items: list[TimelineEntry]
) -> CustomerCard:
    cid, kind, name, company, tier, lifecycle, language, owner, email, tags, repeat, *segments = row
    quadrant, why = segments
    return CustomerCard(
        id=cid,
        kind=kind,
        name=name,
        company=company,
        tier=tier,
        lifecycle=lifecycle,
        language=language,
        owner=owner,
        email=email,
        tags=tuple(tags or ()),
        phones=tuple(phones),
        open_items=tuple(sorted(open_items, key=_due_order))[:20],
        recent=tuple(recent),
        repeat_caller=bool(repeat),
        quadrant=quadrant,
        why=reasons(why),
    )


def _due_order(entry: TimelineEntry) -> tuple[bool, datetime, datetime]:
    far = datetime.max.replace(tzinfo=UTC)
    return (entry.due_at is None, entry.due_at or far, entry.occurred_at)
