"""The store's write side: every validation rule, upserts by external id (SQLite and
PostgreSQL), company contacts, idempotent timeline entries, hostile text kept as given."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crm_sync.customers import (
    CustomerError,
    CustomerIn,
    InteractionIn,
    Saved,
    add_interaction,
    save_customers,
    upsert_customer,
    validate,
    validate_interaction,
)
from crm_sync.models import Customer, Interaction, Phone
from crm_sync.phones import PhoneNormalizer
from crm_sync.store import CustomerStore

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PHONES = PhoneNormalizer("CN")
HOSTILE = "<script>alert(\"x\")</script> O'Brien & 张伟 😀 =cmd|' /C calc'!A0"


def person(**fields: Any) -> CustomerIn:
    values: dict[str, Any] = {"external_id": "P-1", "kind": "person", "name": "张伟"}
    values.update(fields)
    return CustomerIn(**values)


def entry(**fields: Any) -> InteractionIn:
    values: dict[str, Any] = {
        "customer_external_id": "P-1",
        "kind": "ticket",
        "occurred_at": NOW,
        "title": "Parcel not delivered",
    }
    values.update(fields)
    return InteractionIn(**values)


async def save_one(session: AsyncSession, record: CustomerIn, now: datetime) -> Saved:
    (result,) = await save_customers(session, [record], now=now)
    assert isinstance(result, Saved), result
    return result


async def count(session: AsyncSession, model: type[Any], *where: Any) -> int:
    return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


# -- validation (pure) ---------------------------------------------------------------------


def test_validate_normalises() -> None:
    raw = person(
        external_id="  P-1 ",
        kind=" Person ",
        name="  张伟 ",
        email=" wei@example.com ",
        address="  1 Main St\nSpringfield ",
        owner="",
        language=" zh-CN ",
        tier="",
        lifecycle="LAPSED",
        tags=(" b2b ", "", "b2b", "wechat"),
        phones=("+86 138 0013 8000", "008613800138000", "13800138000", " ", "(0)20 7946 0958"),
    )
    assert validate(raw, PHONES) == CustomerIn(
        external_id="P-1",
        kind="person",
        name="张伟",
        email="wei@example.com",
        address="1 Main St\nSpringfield",
        owner=None,
        language="zh-CN",
        tier="regular",
        lifecycle="lapsed",
        tags=("b2b", "wechat"),
        phones=("+8613800138000", "+862079460958"),  # national (0)20… read in region CN
    )
    assert validate(person(phones=("(0)20 7946 0958",)), PhoneNormalizer("GB")).phones == (
        "+442079460958",
    )


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"kind": "household"}, "kind", "'household' is not one of person, company"),
        ({"kind": ""}, "kind", "is not one of"),
        ({"name": "   "}, "name", "must not be empty"),
        ({"name": "x" * 201}, "name", "longer than 200 characters (201)"),
        ({"name": "Zhang\x00Wei"}, "name", "control character U+0000"),
        ({"name": "Zhang\nWei"}, "name", "control character U+000A"),
        ({"email": "wei@example"}, "email", "'wei@example' is not an e-mail address"),
        ({"email": "wei example@x.com"}, "email", "is not an e-mail address"),
        ({"email": "@example.com"}, "email", "is not an e-mail address"),
        ({"tier": "gold"}, "tier", "'gold' is not one of vip, regular, low"),
        ({"lifecycle": "dead"}, "lifecycle", "'dead' is not one of prospect, new, active"),
        ({"phones": ("1001",)}, "phones", "'1001' is an internal extension"),
        ({"phones": ("+86 1",)}, "phones", "'+86 1' is not a valid phone number"),
        ({"phones": ("call me",)}, "phones", "'call me' is not a valid phone number"),
        ({"external_id": "x" * 65}, "external_id", "longer than 64"),
        ({"owner": "o" * 65}, "owner", "longer than 64"),
        ({"language": "chinese!"}, "language", "not a language code"),
        ({"tags": ("t" * 65,)}, "tags", "longer than 64"),
        ({"kind": "company", "company_external_id": "C-1"}, "company_external_id", "only a person"),
        ({"company_external_id": "P-1"}, "company_external_id", "its own company"),
    ],
)
def test_validate_refuses_naming_the_field(
    fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(CustomerError, match=r"^" + field + ": .*" + re.escape(message)) as caught:
        validate(person(**fields), PHONES)
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_hostile_text_passes_validation_unchanged() -> None:
    raw = person(name=HOSTILE, address=HOSTILE + "\n2nd line", tags=(HOSTILE[:60],))
    checked = validate(raw, PHONES)
    assert (checked.name, checked.address, checked.tags) == (raw.name, raw.address, raw.tags)


# -- customers in the database (SQLite and PostgreSQL) ---------------------------------------


async def test_upsert_inserts_then_updates_by_external_id(engine: AsyncEngine) -> None:
    first = validate(person(phones=("13800138000", "+1 555 0100 001"), tags=("a",)), PHONES)
    async with AsyncSession(engine) as session:
        saved = await save_one(session, first, NOW)
        assert saved.change == "inserted"
        again = await save_one(session, first, NOW + timedelta(hours=1))
        assert again == (saved.id, "unchanged")
        changed = validate(
            person(name="张伟 (Wei)", tier="vip", phones=("+1 555 0100 001", "+49 30 12345678")),
            PHONES,
        )
        later = NOW + timedelta(days=1)
        assert await upsert_customer(session, changed, now=later) == saved.id
        await session.commit()
    async with AsyncSession(engine) as session:
        row = await session.get_one(Customer, saved.id)
        # the tier is this service's once the customer exists (crm_sync.conflicts)
        assert (row.name, row.tier, row.tags) == ("张伟 (Wei)", "regular", [])
        assert _utc(row.created_at) == NOW and _utc(row.updated_at) == later
        numbers = await session.scalars(
            select(Phone.e164).where(Phone.customer_id == saved.id).order_by(Phone.id)
        )
        assert list(numbers) == ["+15550100001", "+493012345678"]  # kept one keeps its row
        assert await count(session, Customer) == 1


async def test_unchanged_customer_keeps_updated_at(engine: AsyncEngine) -> None:
    record = validate(person(phones=("13800138000",)), PHONES)
    async with AsyncSession(engine) as session:
        customer_id = await upsert_customer(session, record, now=NOW)
        assert (await save_one(session, record, NOW + timedelta(days=3))).change == ("unchanged")
        await session.commit()
        row = await session.get_one(Customer, customer_id)
        assert _utc(row.updated_at) == NOW


async def test_without_external_id_each_upsert_is_a_new_customer(engine: AsyncEngine) -> None:
    record = validate(person(external_id=None), PHONES)
    async with AsyncSession(engine) as session:
        one = await upsert_customer(session, record, now=NOW)
        two = await upsert_customer(session, record, now=NOW)
        assert one != two


async def test_upsert_refuses_numbers_that_are_not_e164(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        with pytest.raises(CustomerError, match="validate"):
            await upsert_customer(session, person(phones=("13800138000",)), now=NOW)
        assert await count(session, Customer) == 0


async def test_contact_is_linked_to_its_company(engine: AsyncEngine) -> None:
    company = validate(
        CustomerIn("C-1", "company", "ACME 有限公司", phones=("+86 20 7946 0958",), tier="vip"),
        PHONES,
    )
    contact = validate(person(company_external_id="C-1", phones=("13800138000",)), PHONES)
    async with AsyncSession(engine) as session:
        with pytest.raises(CustomerError, match="unknown company 'C-1'") as caught:
            await upsert_customer(session, contact, now=NOW)
        assert caught.value.field == "company_external_id"
        company_id = await upsert_customer(session, company, now=NOW)
        contact_id = await upsert_customer(session, contact, now=NOW)
        other = validate(person(external_id="P-2", company_external_id="P-1"), PHONES)
        with pytest.raises(CustomerError, match="'P-1' is not a company"):
            await upsert_customer(session, other, now=NOW)
        await session.commit()
        assert (await session.get_one(Customer, contact_id)).company_id == company_id
        # leaving the company: the link goes
        await upsert_customer(session, replace(contact, company_external_id=None), now=NOW)
        await session.commit()
        assert (await session.get_one(Customer, contact_id)).company_id is None
    store = CustomerStore(engine, PHONES)
    await upsert_customer_and_commit(engine, contact)
    found = await store.lookup("+86 138 0013 8000", now=NOW)
    assert found.status == "found"
    assert (found.cards[0].name, found.cards[0].company) == ("张伟", "ACME 有限公司")


async def test_save_many_in_one_go(engine: AsyncEngine) -> None:
    """Contacts before their company, a bad link and a repeated id: each gets its answer."""
    records = [
        validate(person(external_id=f"P-{n}", company_external_id="C-1"), PHONES) for n in range(3)
    ] + [
        validate(CustomerIn("C-1", "company", "ACME", phones=("+86 20 7946 0958",)), PHONES),
        validate(person(external_id="P-9", company_external_id="C-404"), PHONES),
        validate(person(external_id="P-0"), PHONES),
        validate(person(external_id="P-5", phones=("13800138000",)), PHONES),
    ]
    async with AsyncSession(engine) as session:
        results = await save_customers(session, records, now=NOW)
        await session.commit()
        assert [r.change if isinstance(r, Saved) else r.field for r in results] == [
            *["inserted"] * 4,
            "company_external_id",
            "external_id",
            "inserted",
        ]
        assert "'P-0' is given twice" in str(results[5])
        company = results[3]
        assert isinstance(company, Saved)
        linked = await session.scalars(select(Customer.company_id).where(Customer.kind == "person"))
        assert list(linked).count(company.id) == 3
        again = await save_customers(session, [records[6], replace(records[0], name="X")], now=NOW)
        assert [r.change for r in again if isinstance(r, Saved)] == ["unchanged", "updated"]


async def upsert_customer_and_commit(engine: AsyncEngine, record: CustomerIn) -> int:
    async with AsyncSession(engine) as session:
        customer_id = await upsert_customer(session, record, now=NOW)
        await session.commit()
        return customer_id


async def test_hostile_text_round_trips(engine: AsyncEngine) -> None:
    record = validate(
        person(
            name=HOSTILE,
            email="o'brien+tag@example.com",
            address=HOSTILE + "\n第二行",
            owner="alice",
            tags=("<b>vip</b>", "😀"),
            phones=("13800138000",),
        ),
        PHONES,
    )
    customer_id = await upsert_customer_and_commit(engine, record)
    async with AsyncSession(engine) as session:
        await add_interaction(session, entry(title=HOSTILE[:200], body=HOSTILE + "\n\t--"))
        await session.commit()
        row = await session.get_one(Customer, customer_id)
        assert (row.name, row.email, row.address, row.tags) == (
            HOSTILE,
            "o'brien+tag@example.com",
            HOSTILE + "\n第二行",
            ["<b>vip</b>", "😀"],
        )
        note = await session.scalar(select(Interaction))
        assert note is not None and (note.title, note.body) == (HOSTILE, HOSTILE + "\n\t--")
    card = (await CustomerStore(engine, PHONES).lookup("13800138000", now=NOW)).cards[0]
    assert (card.name, card.tags, card.recent[0].title) == (HOSTILE, ("<b>vip</b>", "😀"), HOSTILE)


# -- the timeline ---------------------------------------------------------------------------


async def test_interaction_is_idempotent_by_external_id(engine: AsyncEngine) -> None:
    customer_id = await upsert_customer_and_commit(engine, validate(person(), PHONES))
    ticket = entry(external_id="T-9", status="open", body="first report")
    async with AsyncSession(engine) as session:
        first = await add_interaction(session, ticket)
        assert await add_interaction(session, ticket) == first
        closed = replace(ticket, status="closed", body="solved")
        assert await add_interaction(session, closed) == first
        await session.commit()
        assert await count(session, Interaction) == 1
        row = await session.get_one(Interaction, first)
        assert (row.customer_id, row.status, row.body) == (customer_id, "closed", "solved")
        # without an external id every call is a new entry
        note = entry(kind="note", title="Prefers e-mail")
        assert await add_interaction(session, note) != await add_interaction(session, note)


async def test_interaction_fields_are_normalised(engine: AsyncEngine) -> None:
    customer_id = await upsert_customer_and_commit(engine, validate(person(), PHONES))
    beijing = timezone(timedelta(hours=8))
    order = entry(
        kind=" ORDER ",
        occurred_at=datetime(2026, 11, 23, 20, 0, tzinfo=beijing),
        title=" Web order WO-1 ",
        amount=Decimal("12.345"),
        customer_external_id=None,
        customer_id=customer_id,
    )
    followup = entry(
        kind="followup",
        title="Call back",
        status="open",
        due_at=datetime(2026, 11, 25, 9, 0, tzinfo=beijing),
        owner="bob",
    )
    async with AsyncSession(engine) as session:
        order_id = await add_interaction(session, order)
        followup_id = await add_interaction(session, followup)
        await session.commit()
        row = await session.get_one(Interaction, order_id)
        assert (row.kind, row.title, row.amount) == ("order", "Web order WO-1", Decimal("12.34"))
        assert _utc(row.occurred_at) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        due = (await session.get_one(Interaction, followup_id)).due_at
        assert due is not None and _utc(due) == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    card = await CustomerStore(engine, PHONES).card(customer_id, now=NOW)
    assert card is not None
    assert [i.title for i in card.open_items] == ["Call back"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"kind": "fax"}, "kind", "'fax' is not one of call, order"),
        ({"title": " "}, "title", "must not be empty"),
        ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at", "needs a time zone"),
        ({"due_at": datetime(2026, 1, 1)}, "due_at", "needs a time zone"),
        ({"status": "pending"}, "status", "'pending' is not one of open, closed"),
        ({"status": "shipped"}, "status", "'shipped' is not one of open, closed"),  # a ticket
        ({"amount": Decimal("NaN")}, "amount", "out of range"),
        ({"amount": Decimal("1e12")}, "amount", "out of range"),
        ({"customer_external_id": None}, "customer_external_id", "give the customer"),
        ({"owner": "o" * 65}, "owner", "longer than 64"),
    ],
)
def test_bad_interaction_is_refused(fields: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(CustomerError, match=re.escape(message)) as caught:
        validate_interaction(entry(**fields))
    assert caught.value.field == field


def test_an_order_has_states_of_its_own() -> None:
    order = validate_interaction(entry(kind="order", status="Shipped"))
    assert order.status == "shipped"


async def test_interaction_for_an_unknown_customer_is_refused(engine: AsyncEngine) -> None:
    await upsert_customer_and_commit(engine, validate(person(), PHONES))
    async with AsyncSession(engine) as session:
        with pytest.raises(CustomerError, match="unknown customer 'nobody'") as caught:
            await add_interaction(session, entry(customer_external_id="nobody"))
        assert caught.value.field == "customer_external_id"
        with pytest.raises(CustomerError, match="unknown customer 999") as caught:
            await add_interaction(session, entry(customer_external_id=None, customer_id=999))
        assert caught.value.field == "customer_id"
        assert await count(session, Interaction) == 0


def _utc(value: datetime) -> datetime:
    """SQLite hands times back without a zone; they were stored in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
