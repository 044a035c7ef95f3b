"""The IVR's side of the customer store: who calls, PINs, figures to say, callbacks, surveys.

The walker (:mod:`ivr.walk`) asks for these through its actions and the AGI edge carries them
out here. Every method raises StoreUnavailable when the database fails, never a driver's own
error, so the edge has one thing to turn into ``StoreFailed("error")``. Time budgets are the
edge's (:mod:`ivr.runner`): the caller-ID lookup gets a generous one here so the two do not race.

PINs are stored as scrypt hashes. A PIN has few values (10^4 for the usual four digits), so
no affordable hashing cost makes a stolen hash safe: the hash keeps PINs out of sight
(screens, dumps, logs) and the IVR's retry limit is what stops guessing. Hence a cheaper
scrypt than for passwords (``n = 2**12``, a few ms), still run off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from asyncpg import PostgresError
from sqlalchemy import ColumnCollection, Executable, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_sync.customers import (
    CustomerIn,
    InteractionIn,
    add_interaction,
    mark_segments_stale,
    upsert_customer,
    validate,
)
from crm_sync.models import CallScore, Customer, Interaction, Phone
from crm_sync.outbox import enqueue
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore, Figures, StoreUnavailable
from crm_sync.timeline import followup_data
from cti.hashing import HashError, hash_password, verify_password
from ivr.menus import Figure
from ivr.walk import CustomerInfo, FigureValue

log = logging.getLogger(__name__)

PIN_SCRYPT_N: Final = 2**12
LOOKUP_BUDGET: Final = 10.0  # seconds: above the edge's own limit, so that one decides
CALLBACK_TITLE: Final = "Callback requested in the IVR"
_MAX_ID: Final = 2**31 - 1  # customers.id is a 32-bit integer on PostgreSQL
_PIN = re.compile(r"[0-9]{4,8}")
_STATUS = re.compile(r"[a-z0-9][a-z0-9-]*")  # what the walker can say as ivr/order-<status>
_CURRENCY = re.compile(r"[A-Z]{3}")
_SCORE_KEY: Final = ("pbx", "call_id", "question")
_NONE: Final = FigureValue("none")
_DB_ERRORS = (SQLAlchemyError, OSError, sqlite3.Error, PostgresError)  # as crm_sync.store


def hash_pin(pin: str) -> str:
    """The stored form of ``pin``. Blocking (scrypt): call it off the event loop. Raises
    ValueError unless the PIN is 4 to 8 digits."""
    if not _PIN.fullmatch(pin):
        raise ValueError("a PIN is 4 to 8 digits")
    return hash_password(pin, n=PIN_SCRYPT_N)


class IvrStore:
    """The store operations behind the walker's FindCustomer, VerifyPin, FetchFigure and
    RequestCallback actions, and the survey's scores. ``clock`` gives aware times."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: CustomerStore,
        phones: PhoneNormalizer,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.engine = engine
        self.store = store
        self.phones = phones
        self.clock = clock
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def find_by_phone(self, number: str) -> tuple[CustomerInfo, ...]:
        """The customers with this caller number, in any spelling; none for an internal or
        impossible number. Raises StoreUnavailable."""
        with _unavailable():
            found = await self.store.lookup(number, now=self._now(), budget=LOOKUP_BUDGET)
        if found.status in ("timeout", "error"):
            raise StoreUnavailable(f"customer lookup for {found.e164}: {found.status}")
        return tuple(
            CustomerInfo(c.id, c.name, c.tier, c.lifecycle, c.language, c.owner)
            for c in found.cards
        )

    async def find_by_account(self, account: str) -> tuple[CustomerInfo, ...]:
        """The customer whose number (the store id) the caller typed; none for anything but
        the digits of an existing id. Raises StoreUnavailable."""
        customer_id = _account_id(account)
        if customer_id is None:
            return ()
        query = select(
            Customer.id,
            Customer.name,
            Customer.tier,
            Customer.lifecycle,
            Customer.language,
            Customer.owner,
        ).where(Customer.id == customer_id)
        with _unavailable():
            async with self.sessions() as session:
                rows = (await session.execute(query)).all()
        return tuple(CustomerInfo(*row) for row in rows)

    async def verify_pin(self, customer_id: int, pin: str) -> bool:
        """Whether ``pin`` is the customer's PIN (compared in constant time); False when the
        customer has none. Raises StoreUnavailable."""
        if not _PIN.fullmatch(pin) or not _in_range(customer_id):
            return False
        query = select(Customer.pin_hash).where(Customer.id == customer_id)
        with _unavailable():
            async with self.sessions() as session:
                stored = await session.scalar(query)
        if stored is None:
            return False
        try:
            return await asyncio.to_thread(verify_password, pin, stored)
        except HashError:
            log.warning("customer %d has a malformed PIN hash; PIN refused", customer_id)
            return False

    async def set_pin(self, customer_id: int, pin: str) -> None:
        """Give the customer this PIN, replacing any. Raises ValueError for a PIN that is not
        4 to 8 digits or an unknown customer, StoreUnavailable."""
        encoded = await asyncio.to_thread(hash_pin, pin)
        if not _in_range(customer_id):
            raise ValueError(f"no customer {customer_id}")
        change = (
            update(Customer)
            .where(Customer.id == customer_id)
            .values(pin_hash=encoded)
            .returning(Customer.id)
        )
        with _unavailable():
            async with self.sessions() as session, session.begin():
                found = (await session.execute(change)).scalar_one_or_none()
        if found is None:
            raise ValueError(f"no customer {customer_id}")

    async def figure(self, figure: Figure, customer_id: int) -> FigureValue:
        """What the walker says for ``figure``: ``none`` when there is nothing to tell (no
        balance, no order, an order status that is not a sound name, an unknown customer).
        Raises StoreUnavailable."""
        if not _in_range(customer_id):
            return FigureValue("none")
        with _unavailable():  # one statement on the raw read path: figures are hot
            figures = await self.store.figures(customer_id)
        if figures is None:
            return FigureValue("none")
        match figure:
            case "balance":
                return _balance(figures)
            case "last_order":
                status = (figures.last_order_status or "").strip().lower()
                return FigureValue("text", status) if _STATUS.fullmatch(status) else _NONE
            case "open_tickets":
                return FigureValue("number", str(figures.open_tickets))

    async def request_callback(
        self, queue: str, number: str, customer_id: int | None, call_id: str | None
    ) -> str:
        """File a follow-up for ``queue`` to call ``number`` back, dated now so that it sorts
        before later callers. A caller the IVR did not identify gets the first customer
        holding the number, else a new minimal one with it, so the next call from that number
        is recognised. Idempotent per ``call_id``. Returns the follow-up's id. Raises
        StoreUnavailable; CustomerError (a ValueError) for what the store refuses (an unknown
        ``customer_id``, a queue name over 58 characters)."""
        now = self._now()
        e164 = self.phones.to_e164(number)
        shown = e164 or _digits(number) or "without a number"
        key = None if call_id is None else _callback_key(call_id)
        entry = InteractionIn(
            customer_external_id=None,
            customer_id=customer_id,
            kind="followup",
            occurred_at=now,
            title=CALLBACK_TITLE,
            body=f"Call back {shown}",
            status="open",
            due_at=now,
            owner=f"queue:{queue}",
            call_id=call_id,
            external_id=key,
        )
        with _unavailable():
            try:
                return await self._file_callback(entry, e164, f"Caller {shown}")
            except IntegrityError:
                if key is None:
                    raise
            async with self.sessions() as session:  # a request for the same call came first
                first = await _by_key(session, key)
        if first is None:
            raise StoreUnavailable(f"callback for call {call_id} neither stored nor found")
        return first

    async def _file_callback(self, entry: InteractionIn, e164: str | None, name: str) -> str:
        async with self.sessions() as session, session.begin():
            if entry.external_id is not None:
                first = await _by_key(session, entry.external_id)
                if first is not None:
                    return first
            if entry.customer_id is None:
                entry = replace(entry, customer_id=await self._caller(session, e164, name))
            followup = await add_interaction(session, entry)
            enqueue(
                session,
                topic="followup.created",
                key=f"followup.created:{followup}",
                customer_id=entry.customer_id,
                data=followup_data(followup, entry, source="ivr"),
                now=entry.occurred_at,
            )
            return str(followup)

    async def _caller(self, session: AsyncSession, e164: str | None, name: str) -> int:
        """The customer for an unidentified caller: a holder of the number (of several, the
        first: the agent sees the number and can pick), else a new prospect with it."""
        if e164 is not None:
            holders = select(Phone.customer_id).where(Phone.e164 == e164)
            holder = await session.scalar(holders.order_by(Phone.customer_id).limit(1))
            if holder is not None:
                return holder
        new = CustomerIn(
            external_id=None,
            kind="person",
            name=name,
            tier="regular",
            lifecycle="prospect",
            phones=(e164,) if e164 else (),
        )
        now = self._now()
        created = await upsert_customer(session, validate(new, self.phones), now=now)
        enqueue(
            session,
            topic="customer.created",
            key=f"customer.created:{created}",
            customer_id=created,
            data={"name": name, "phones": list(new.phones), "lifecycle": "prospect"},
            now=now,
        )
        return created

    async def save_survey(
        self,
        pbx: str,
        call_id: str,
        agent: str | None,
        customer_id: int | None,
        scores: Mapping[str, int],
    ) -> None:
        """Store the caller's scores (and have the customer's segments recomputed); a question
        scored again for the same call keeps the new score. Raises ValueError for text too
        long for its column, StoreUnavailable."""
        if not scores:
            return
        for field, value, limit in (("pbx", pbx, 64), ("call_id", call_id, 80)):
            _check_text(field, value, limit)
        if agent is not None:
            _check_text("agent", agent, 64)
        for question in scores:
            _check_text("question", question, 32)
        now = self._now()
        rows = [
            {
                "pbx": pbx,
                "call_id": call_id,
                "agent": agent,
                "customer_id": customer_id,
                "question": question,
                "score": score,
                "created_at": now,
            }
            for question, score in scores.items()
        ]
        with _unavailable():
            async with self.sessions() as session, session.begin():
                await session.execute(_score_upsert(self.engine.dialect.name), rows)
                if customer_id is not None:  # satisfaction is part of the customer's segments
                    await mark_segments_stale(session, [customer_id])

    async def scores_for(self, pbx: str, call_id: str) -> dict[str, int]:
        """The call's scores by question. Raises StoreUnavailable."""
        query = select(CallScore.question, CallScore.score).where(
            CallScore.pbx == pbx, CallScore.call_id == call_id
        )
        with _unavailable():
            async with self.sessions() as session:
                rows = (await session.execute(query)).all()
        return {question: score for question, score in rows}

    async def agent_scores(self, agent: str, since: datetime) -> dict[str, tuple[float, int]]:
        """(average, count) per question of the calls ``agent`` handled, scored since
        ``since`` (aware). Raises ValueError for a naive time, StoreUnavailable."""
        query = (
            select(CallScore.question, func.avg(CallScore.score), func.count())
            .where(CallScore.agent == agent, CallScore.created_at >= _utc(since))
            .group_by(CallScore.question)
        )
        with _unavailable():
            async with self.sessions() as session:
                rows = (await session.execute(query)).all()
        return {question: (float(average), int(count)) for question, average, count in rows}

    def _now(self) -> datetime:
        return _utc(self.clock())


def _balance(figures: Figures) -> FigureValue:
    if figures.balance is None:
        return _NONE
    amount = figures.balance.quantize(Decimal("0.01"))
    currency = (figures.currency or "").strip().upper()
    return FigureValue("amount", f"{amount:f}", currency if _CURRENCY.fullmatch(currency) else None)


async def _by_key(session: AsyncSession, key: str) -> str | None:
    found = await session.scalar(select(Interaction.id).where(Interaction.external_id == key))
    return None if found is None else str(found)


def _callback_key(call_id: str) -> str:
    """The follow-up's idempotency key: a call id may have 80 characters, external_id 64."""
    return "ivr-callback:" + hashlib.sha256(call_id.encode()).hexdigest()[:48]


def _score_upsert(dialect: str) -> Executable:
    """INSERT … ON CONFLICT (pbx, call_id, question) DO UPDATE, in the dialect's spelling
    (the store runs on PostgreSQL or SQLite)."""
    if dialect == "postgresql":
        pg = postgresql.insert(CallScore)
        return pg.on_conflict_do_update(index_elements=_SCORE_KEY, set_=_rescored(pg.excluded))
    lite = sqlite.insert(CallScore)
    return lite.on_conflict_do_update(index_elements=_SCORE_KEY, set_=_rescored(lite.excluded))


def _rescored(excluded: ColumnCollection[str, Any]) -> dict[str, Any]:
    return {name: excluded[name] for name in ("score", "agent", "customer_id")}


def _account_id(account: str) -> int | None:
    """The id a caller typed: ASCII digits (leading zeros allowed) of a possible id."""
    if not (account.isascii() and account.isdigit()):
        return None
    digits = account.lstrip("0")
    if not digits or len(digits) > len(str(_MAX_ID)):  # also keeps int() off huge input
        return None
    customer_id = int(digits)
    return customer_id if _in_range(customer_id) else None


def _in_range(customer_id: int) -> bool:
    return 0 < customer_id <= _MAX_ID


def _digits(number: str) -> str:
    """The ASCII digits of a raw number, at most as many as E.164 allows plus a margin."""
    return "".join(ch for ch in number if ch.isascii() and ch.isdigit())[:20]


def _check_text(field: str, value: str, limit: int) -> None:
    if not value or len(value) > limit:
        raise ValueError(f"{field}: 1 to {limit} characters, not {len(value)}")


def _utc(value: datetime) -> datetime:
    """UTC, as the store keeps times (SQLite has no zones). Raises ValueError if naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("the time needs a time zone")
    return value.astimezone(UTC)


@contextmanager
def _unavailable() -> Iterator[None]:
    """A database failure becomes StoreUnavailable. The statement's parameters stay out of
    its message and of the chained error (they may hold a PIN hash)."""
    try:
        yield
    except _DB_ERRORS as exc:
        if isinstance(exc, StatementError):
            exc.hide_parameters = True
        raise StoreUnavailable(str(exc)) from exc
