"""The write side of the customer store: validated input, idempotent by external id.

Data from outside (CSV files, the demo seeder, a CRM) comes in as :class:`CustomerIn` and
:class:`InteractionIn`. :func:`validate` turns raw input into the one form the store keeps
(trimmed text, known codes, E.164 numbers) or raises :class:`CustomerError` naming the field;
:func:`upsert_customer` and :func:`add_interaction` then write it, so importing the same
record twice updates it instead of duplicating it. Text is stored as given (HTML, quotes,
emoji): escaping is the display layer's job; what text may hold is crm_sync.text's one rule.

Times are stored in UTC: SQLite keeps no time zone, so an aware time in another zone would
compare wrongly there. They must fall in ``TIMES`` (years 1900 to 2199): a year 1 or 9999
with an offset overflows when converted, and no customer's data is that old or far off.

Who wins a conflict (crm_sync.conflicts): an update only writes the fields the CRM owns
(tier and lifecycle only when the customer is new), an update older than the stored version
is not applied (``stale``), and an external id of a customer merged into another names the
survivor (``merged``, nothing written: the survivor's own record owns its fields).

Concurrent writers of the same new external id: one wins, the other gets SQLAlchemy's
IntegrityError from the unique index and may simply retry (it then updates). Updates of the
same customer wait for each other: PostgreSQL locks the rows read (``FOR UPDATE``), SQLite
writers begin with :func:`crm_sync.inbound.begin_write`; so a version is always compared
with what is committed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any, Literal, NamedTuple

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_sync.bulk import insert_rows, one_of
from crm_sync.conflicts import CRM_COLUMNS, is_stale
from crm_sync.merges import survivors
from crm_sync.models import (
    INTERACTION_KINDS,
    KINDS,
    LIFECYCLES,
    TIERS,
    Base,
    Customer,
    Interaction,
    Phone,
)
from crm_sync.phones import PhoneNormalizer
from crm_sync.search import index_names
from crm_sync.text import FieldError, line, lines

INTERACTION_STATUSES = ("open", "closed")
# an order's own states; the IVR says the last one (sound ivr/order-<status>)
ORDER_STATUSES = ("processing", "shipped", "delivered", "cancelled", "returned")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_CURRENCY = re.compile(r"[A-Z]{3}")  # ISO 4217
TIMES = (datetime(1900, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
_MAX_AMOUNT = Decimal("9999999999.99")  # Numeric(12, 2)
_CHUNK = 2000  # customers per statement: well inside every driver's bind-parameter limit


class CustomerError(FieldError):
    """Input that the store refuses; ``field`` names what is wrong, the message says why."""


@dataclass(frozen=True)
class CustomerIn:
    """A customer as a source describes it. ``phones`` are raw numbers in any spelling until
    :func:`validate` has made them E.164; ``company_external_id`` links a contact person to
    their company account. ``updated_at`` is the source's version of the record (None: the
    write is current as of now)."""

    external_id: str | None
    kind: str
    name: str
    company_external_id: str | None = None
    email: str | None = None
    address: str | None = None
    owner: str | None = None
    language: str | None = None
    tier: str = "regular"
    lifecycle: str = "active"
    tags: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    balance: Decimal | None = None  # the account balance the IVR tells, in ``currency``
    currency: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class InteractionIn:
    """One timeline entry from a source. The customer is named by external id, or by store id
    (``customer_id``) for customers that only the call center knows."""

    customer_external_id: str | None
    kind: str
    occurred_at: datetime
    title: str
    body: str | None = None
    status: str | None = None
    due_at: datetime | None = None
    owner: str | None = None
    amount: Decimal | None = None
    call_id: str | None = None
    agent: str | None = None
    external_id: str | None = None
    customer_id: int | None = None


# stale: older than the stored version, not applied; merged: the id names a customer merged
# into another, whose id is given, and nothing was written
Change = Literal["inserted", "updated", "unchanged", "stale", "merged"]


class Saved(NamedTuple):
    """What a save did: the customer's (or entry's) id and whether anything changed."""

    id: int
    change: Change


def validate(raw: CustomerIn, phones: PhoneNormalizer) -> CustomerIn:
    """The customer in stored form. Raises CustomerError naming the first bad field."""
    kind = _code(raw.kind, "kind", KINDS, default=None)
    company = _text(raw.company_external_id, "company_external_id", 64)
    external_id = _text(raw.external_id, "external_id", 64)
    if company is not None and kind != "person":
        raise CustomerError("company_external_id", "only a person can belong to a company")
    if company is not None and company == external_id:
        raise CustomerError("company_external_id", "a customer cannot be its own company")
    return CustomerIn(
        external_id=external_id,
        kind=kind,
        name=_required(raw.name, "name", 200),
        company_external_id=company,
        email=_email(raw.email),
        address=_text(raw.address, "address", 1000, multiline=True),
        owner=_text(raw.owner, "owner", 64),
        language=_language(raw.language),
        tier=_code(raw.tier, "tier", TIERS, default="regular"),
        lifecycle=_code(raw.lifecycle, "lifecycle", LIFECYCLES, default="active"),
        tags=_tags(raw.tags),
        phones=_phones(raw.phones, phones),
        **_balance(raw.balance, raw.currency),
        updated_at=None if raw.updated_at is None else utc(raw.updated_at, "updated_at"),
    )


def validate_contact(
    email: str | None, phones: Sequence[str], address: str | None, normalizer: PhoneNormalizer
) -> tuple[str | None, tuple[str, ...], str | None]:
    """How to reach a customer (e-mail, phones, address) in stored form, by the same rules
    as an import. Raises CustomerError naming the first bad field."""
    return (
        _email(email),
        _phones(tuple(phones), normalizer),
        _text(address, "address", 1000, multiline=True),
    )


def validate_interaction(raw: InteractionIn) -> InteractionIn:
    """The entry in stored form (UTC times, cents). Raises CustomerError naming the field."""
    if raw.customer_id is None and not (raw.customer_external_id or "").strip():
        raise CustomerError("customer_external_id", "give the customer's external id or id")
    status = _text(raw.status, "status", 16)
    if status is not None:
        allowed = INTERACTION_STATUSES + (ORDER_STATUSES if raw.kind == "order" else ())
        status = _code(status, "status", allowed, default=None)
    return replace(
        raw,
        customer_external_id=_text(raw.customer_external_id, "customer_external_id", 64),
        kind=_code(raw.kind, "kind", INTERACTION_KINDS, default=None),
        occurred_at=utc(raw.occurred_at, "occurred_at"),
        title=_required(raw.title, "title", 200),
        body=_text(raw.body, "body", 100_000, multiline=True),
        status=status,
        due_at=None if raw.due_at is None else utc(raw.due_at, "due_at"),
        owner=_text(raw.owner, "owner", 64),
        amount=_amount(raw.amount, "amount"),
        call_id=_text(raw.call_id, "call_id", 80),
        agent=_text(raw.agent, "agent", 64),
        external_id=_text(raw.external_id, "external_id", 64),
    )


async def upsert_customer(session: AsyncSession, c: CustomerIn, *, now: datetime) -> int:
    """Insert ``c`` (from :func:`validate`), or update the customer with its external id;
    its phone list becomes exactly ``c.phones``. Returns the id; the caller commits.
    Raises CustomerError for an unknown company or phones that are not E.164."""
    (result,) = await save_customers(session, [c], now=now)
    if isinstance(result, CustomerError):
        raise result
    return result.id


async def save_customers(
    session: AsyncSession, customers: Sequence[CustomerIn], *, now: datetime
) -> list[Saved | CustomerError]:
    """Upsert many customers (from :func:`validate`) with a few statements per few hundred,
    not several per customer: what an import needs. Each result, in input order, is the
    :class:`Saved` customer or the CustomerError that kept it out (unknown company, numbers
    not E.164, an external id given twice); the others are saved regardless. Contacts are
    written after the companies of the same list. An unchanged customer keeps its
    ``updated_at`` (or takes the newer version given). The caller commits."""
    now = utc(now, "now")
    results: dict[int, Saved | CustomerError] = {}
    seen: set[str] = set()
    groups: tuple[list[int], list[int]] = ([], [])  # companies and consumers, then contacts
    for index, c in enumerate(customers):
        if c.external_id in seen:
            results[index] = CustomerError("external_id", f"{c.external_id!r} is given twice")
            continue
        if c.external_id is not None:
            seen.add(c.external_id)
        groups[c.company_external_id is not None].append(index)
    for group in groups:
        for start in range(0, len(group), _CHUNK):
            chunk = [(i, customers[i]) for i in group[start : start + _CHUNK]]
            results.update(await _save_chunk(session, chunk, now))
    return [results[i] for i in range(len(customers))]


class _Stored(NamedTuple):
    """What an update compares of a stored customer."""

    id: int
    updated_at: datetime
    crm: tuple[Any, ...]  # the columns the CRM owns, in CRM_COLUMNS order


async def _save_chunk(
    session: AsyncSession, chunk: list[tuple[int, CustomerIn]], now: datetime
) -> dict[int, Saved | CustomerError]:
    table = _table(Customer)
    results: dict[int, Saved | CustomerError] = {}
    keys = [c.external_id for _, c in chunk if c.external_id is not None]
    found = await session.execute(
        select(table.c.external_id, table.c.id, table.c.updated_at, *_CRM)
        .where(one_of(session, table.c.external_id, keys))
        .order_by(table.c.id)
        .with_for_update()
    )
    existing = {row[0]: _Stored(row[1], row[2], tuple(row[3:])) for row in found.all()}
    merged = await survivors(session, [key for key in keys if key not in existing])
    companies = await _companies(session, {c.company_external_id for _, c in chunk})
    new: list[tuple[int, CustomerIn, tuple[Any, ...]]] = []
    old: list[tuple[int, CustomerIn, tuple[Any, ...], _Stored]] = []
    for index, c in chunk:
        if c.external_id in merged:
            results[index] = Saved(merged[c.external_id], "merged")
            continue
        try:
            crm = _values(c, companies)
        except CustomerError as exc:
            results[index] = exc
            continue
        stored = existing.get(c.external_id)
        if stored is None:
            new.append((index, c, crm))
        elif is_stale(c.updated_at, stored.updated_at):
            results[index] = Saved(stored.id, "stale")
        else:
            old.append((index, c, crm, stored))
    phones: list[tuple[int, str]] = []
    if new:
        ids = await _insert(session, table, [(c, crm) for _, c, crm in new], now)
        for (index, c, _), customer_id in zip(new, ids, strict=True):
            results[index] = Saved(customer_id, "inserted")
            phones.extend((customer_id, n) for n in c.phones)
        fresh = [(i, c.name) for (_, c, _), i in zip(new, ids, strict=True)]
        await index_names(session, fresh, fresh=True)
    if old:
        changes, versions, phones_gone, phones_new = await _changes(session, old, now)
        for index, _, _, stored in old:
            results[index] = Saved(stored.id, "updated" if stored.id in changes else "unchanged")
        phones.extend(phones_new)
        if phones_gone:
            await session.execute(delete(Phone).where(Phone.id.in_(phones_gone)))
        by_id = update(table).where(table.c.id == bindparam("_id"))
        if changes:
            await session.execute(by_id, list(changes.values()))
            renamed = [(st.id, c.name) for _, c, crm, st in old if crm[_NAME] != st.crm[_NAME]]
            await index_names(session, renamed)
        if versions:  # unchanged, but a newer version: older ones must be refused from now on
            await session.execute(by_id, versions)
    await insert_rows(session, _table(Phone), ("customer_id", "e164"), phones)
    return results


async def _insert(
    session: AsyncSession,
    table: Table,
    new: list[tuple[CustomerIn, tuple[Any, ...]]],
    now: datetime,
) -> list[int]:
    """Insert the new customers; their ids in order. Those with an external id go in one
    statement (crm_sync.bulk) that returns each id with its external id: rows returned in
    input order would be row by row on SQLite, many times slower."""
    rows = [
        (*crm, c.tier, c.lifecycle, c.external_id, now, c.updated_at or now, True) for c, crm in new
    ]
    keyed = [row for row in rows if row[_KEY] is not None]
    added = await insert_rows(session, table, _NEW, keyed, returning=("external_id", "id"))
    by_key: dict[str | None, int] = {row[0]: row[1] for row in added}
    ids: list[int] = []
    for row in rows:
        if row[_KEY] is None:
            values = dict(zip(_NEW, row, strict=True))
            one = await session.execute(insert(table).values(values).returning(table.c.id))
            ids.append(one.scalar_one())
        else:
            ids.append(by_key[row[_KEY]])
    return ids


async def _changes(
    session: AsyncSession,
    old: list[tuple[int, CustomerIn, tuple[Any, ...], _Stored]],
    now: datetime,
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]], list[int], list[tuple[int, str]]]:
    """For customers already stored: the updates (by id) of those that changed, the new
    versions of those that did not, the phone rows to delete and those to add. A kept number
    keeps its row (and label)."""
    query = select(Phone.id, Phone.customer_id, Phone.e164).where(
        one_of(session, Phone.customer_id, [stored.id for *_, stored in old])
    )
    current: dict[int, dict[str, int]] = {}
    for phone_id, customer_id, e164 in (await session.execute(query)).all():
        current.setdefault(customer_id, {})[e164] = phone_id
    changes: dict[int, dict[str, Any]] = {}
    versions: list[dict[str, Any]] = []
    gone: list[int] = []
    added: list[tuple[int, str]] = []
    for _, c, crm, stored in old:
        have = current.get(stored.id, {})
        lost = [phone_id for e164, phone_id in have.items() if e164 not in c.phones]
        fresh = [(stored.id, n) for n in c.phones if n not in have]
        if lost or fresh or crm != stored.crm:
            gone.extend(lost)
            added.extend(fresh)
            changes[stored.id] = {
                "_id": stored.id,
                "updated_at": c.updated_at or now,
                **dict(zip(CRM_COLUMNS, crm, strict=True)),
            }
        elif c.updated_at is not None and is_stale(stored.updated_at, c.updated_at):
            versions.append({"_id": stored.id, "updated_at": c.updated_at})
    return changes, versions, gone, added


def _values(c: CustomerIn, companies: dict[str, tuple[int, str]]) -> tuple[Any, ...]:
    """The columns the CRM owns for ``c``, in conflicts.CRM_COLUMNS order; raises
    CustomerError for a bad company link or number."""
    for number in c.phones:
        if not _E164.fullmatch(number):
            raise CustomerError("phones", f"{number!r} is not E.164; validate() the customer first")
    if len(set(c.phones)) != len(c.phones):
        raise CustomerError("phones", "a number is listed twice; validate() the customer first")
    company_id = None
    if c.company_external_id is not None:
        company = companies.get(c.company_external_id)
        if company is None:
            raise CustomerError("company_external_id", f"unknown company {c.company_external_id!r}")
        if company[1] != "company":
            raise CustomerError(
                "company_external_id", f"{c.company_external_id!r} is not a company"
            )
        company_id = company[0]
    given = {
        "kind": c.kind,
        "name": c.name,
        "company_id": company_id,
        "email": c.email,
        "address": c.address,
        "owner": c.owner,
        "language": c.language,
        "tags": list(c.tags),
        "balance": c.balance,
        "currency": c.currency,
    }
    crm: tuple[Any, ...] = _IN_CRM_ORDER(given)
    return crm


async def _companies(
    session: AsyncSession, external_ids: set[str | None]
) -> dict[str, tuple[int, str]]:
    """external_id → (id, kind) of the customers that ``external_ids`` name (the survivor
    for a company merged into another)."""
    wanted = [e for e in external_ids if e is not None]
    if not wanted:
        return {}
    query = select(Customer.external_id, Customer.id, Customer.kind).where(
        one_of(session, Customer.external_id, wanted)
    )
    found = {key: (id_, kind) for key, id_, kind in await session.execute(query) if key}
    merged = await survivors(session, [key for key in wanted if key not in found])
    if merged:
        kinds = select(Customer.id, Customer.kind).where(Customer.id.in_(set(merged.values())))
        kind_of = {id_: kind for id_, kind in await session.execute(kinds)}
        found.update((key, (id_, kind_of[id_])) for key, id_ in merged.items())
    return found


def _table(model: type[Base]) -> Table:
    """The model's Core table: executemany without the ORM's per-row bookkeeping."""
    return Base.metadata.tables[model.__tablename__]


_CRM = tuple(_table(Customer).c[name] for name in CRM_COLUMNS)
_IN_CRM_ORDER = itemgetter(*CRM_COLUMNS)
# the columns of a new customer, in the order _insert gives them (its segments are stale:
# still to compute)
_NEW = (
    *CRM_COLUMNS,
    "tier",
    "lifecycle",
    "external_id",
    "created_at",
    "updated_at",
    "segment_stale",
)
_KEY = _NEW.index("external_id")
_NAME = CRM_COLUMNS.index("name")


async def add_interaction(session: AsyncSession, i: InteractionIn) -> int:
    """Add an entry to a customer's timeline; with an ``external_id`` a second call updates
    the same entry (a ticket closed at the source closes here). Returns the entry's id; the
    caller commits. Raises CustomerError for bad input or an unknown customer."""
    i = validate_interaction(i)
    customer_id = await _customer_id(session, i)
    if i.kind == "order":  # the customer's value and lifecycle segments count orders
        await mark_segments_stale(session, [customer_id])
    values = interaction_values(customer_id, i)
    external_id = values.pop("external_id")
    if external_id is not None:
        existing = await session.scalar(
            select(Interaction.id).where(Interaction.external_id == i.external_id)
        )
        if existing is not None:
            await session.execute(
                update(Interaction).where(Interaction.id == existing).values(**values)
            )
            return existing
    added = await session.execute(
        insert(Interaction).values(external_id=external_id, **values).returning(Interaction.id)
    )
    new_id: int = added.scalar_one()
    return new_id


async def mark_segments_stale(session: AsyncSession, customer_ids: Sequence[int]) -> None:
    """Have the segments of these customers recomputed (crm_sync.segmenting): call it in the
    transaction that stores their new orders or survey answers. The row is written even when
    already marked: on PostgreSQL that locks it, so a recompute running meanwhile cannot
    clear the mark before this transaction's data is visible to it."""
    if customer_ids:
        await session.execute(
            update(Customer).where(Customer.id.in_(customer_ids)).values(segment_stale=True)
        )


def interaction_values(customer_id: int, i: InteractionIn) -> dict[str, Any]:
    """The interactions row for a validated entry (single writes and bulk inserts alike)."""
    return {
        "customer_id": customer_id,
        "kind": i.kind,
        "occurred_at": i.occurred_at,
        "title": i.title,
        "body": i.body,
        "status": i.status,
        "due_at": i.due_at,
        "owner": i.owner,
        "amount": i.amount,
        "call_id": i.call_id,
        "agent": i.agent,
        "external_id": i.external_id,
    }


async def _customer_id(session: AsyncSession, i: InteractionIn) -> int:
    if i.customer_id is not None:
        query = select(Customer.id).where(Customer.id == i.customer_id)
        field, name = "customer_id", str(i.customer_id)
    else:
        query = select(Customer.id).where(Customer.external_id == i.customer_external_id)
        field, name = "customer_external_id", repr(i.customer_external_id)
    found = await session.scalar(query)
    if found is None:
        raise CustomerError(field, f"unknown customer {name}")
    return found


# -- field rules ---------------------------------------------------------------------------


def _text(value: str | None, field: str, limit: int, *, multiline: bool = False) -> str | None:
    """crm_sync.text's rule (a line, or ``multiline`` free text), its refusal a CustomerError."""
    try:
        return (lines if multiline else line)(value, field, limit)
    except FieldError as exc:
        raise CustomerError(exc.field, exc.problem) from None


def _required(value: str | None, field: str, limit: int) -> str:
    text = _text(value, field, limit)
    if text is None:
        raise CustomerError(field, "must not be empty")
    return text


def _code(value: str | None, field: str, allowed: tuple[str, ...], default: str | None) -> str:
    """One of ``allowed`` (case-insensitive); empty means ``default`` when there is one."""
    code = (value or "").strip().lower()
    if not code and default is not None:
        return default
    if code not in allowed:
        raise CustomerError(field, f"{value!r} is not one of {', '.join(allowed)}")
    return code


def _email(value: str | None) -> str | None:
    email = _text(value, "email", 254)
    if email is not None and not _EMAIL.fullmatch(email):
        raise CustomerError("email", f"{email!r} is not an e-mail address")
    return email


def _language(value: str | None) -> str | None:
    language = _text(value, "language", 16)
    if language is not None and not _LANGUAGE.fullmatch(language):
        raise CustomerError("language", f"{language!r} is not a language code such as zh or en-GB")
    return language


def _tags(values: tuple[str, ...]) -> tuple[str, ...]:
    tags = (_text(t, "tags", 64) for t in values)
    return tuple(dict.fromkeys(t for t in tags if t is not None))


def _phones(values: tuple[str, ...], phones: PhoneNormalizer) -> tuple[str, ...]:
    """E.164, duplicates (in any spelling) removed, first spelling's order kept."""
    numbers: dict[str, None] = {}
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        if phones.is_internal(text):
            raise CustomerError("phones", f"{text!r} is an internal extension, not a customer's")
        e164 = phones.to_e164(text)
        if e164 is None:
            raise CustomerError("phones", f"{text!r} is not a valid phone number")
        numbers[e164] = None
    return tuple(numbers)


def utc(value: datetime, field: str) -> datetime:
    """``value`` in UTC. Raises CustomerError: no time zone, or outside ``TIMES``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise CustomerError(field, "needs a time zone")
    out_of_range = CustomerError(
        field, f"must be in the years {TIMES[0].year} to {TIMES[1].year - 1}"
    )
    try:
        when = value.astimezone(UTC)
    except OverflowError:
        raise out_of_range from None
    if not TIMES[0] <= when < TIMES[1]:
        raise out_of_range
    return when


def _amount(value: Decimal | None, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        cents = Decimal(value).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise CustomerError(field, f"{value!r} is not an amount") from None
    if not cents.is_finite() or abs(cents) > _MAX_AMOUNT:
        raise CustomerError(field, f"{value!r} is out of range")
    return cents


def _balance(balance: Decimal | None, currency: str | None) -> dict[str, Any]:
    """A balance and its ISO 4217 currency, both or neither."""
    code = _text(currency, "currency", 3)
    if code is not None:
        code = code.upper()
        if not _CURRENCY.fullmatch(code):
            raise CustomerError("currency", f"{currency!r} is not a currency code such as CNY")
    amount = _amount(balance, "balance")
    if (amount is None) != (code is None):
        missing = "currency" if code is None else "balance"
        raise CustomerError(missing, "a balance needs its currency, and a currency a balance")
    return {"balance": amount, "currency": code}
