"""Inbound sync from the external CRM, below the HTTP layer: the conflict rules (pure), the
CRM's JSON records, upserts by external id with versions, concurrent writers, the CRM's
orders, tickets and notes, links of CRM ids to customers first known here, and merges of
duplicates. Store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_sync.conflicts import (
    CRM_COLUMNS,
    KEY_COLUMNS,
    LOCAL_COLUMNS,
    MAX_ENTRY_ID,
    STARTING_COLUMNS,
    crm_key,
    is_stale,
    merge_fill,
    utc,
)
from crm_sync.customers import (
    CustomerError,
    CustomerIn,
    InteractionIn,
    Saved,
    save_customers,
    validate,
)
from crm_sync.inbound import link_external_id, save_entries, validate_entry, write
from crm_sync.merges import MergeError, MergeResult, merge_customers, merge_external
from crm_sync.models import CallScore, Customer, CustomerMerge, Interaction, OutboxRow, Phone
from crm_sync.phones import PhoneNormalizer
from crm_sync.records import customer_record, entry_record, merge_record

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
V1, V2, V3 = (NOW - timedelta(hours=h) for h in (3, 2, 1))
PHONES = PhoneNormalizer("CN")
HOSTILE = "<script>alert(\"x\")</script> O'Brien & 张伟 😀 =cmd|' /C calc'!A0"


def customer(external_id: str = "P-1", **fields: Any) -> CustomerIn:
    values: dict[str, Any] = {"external_id": external_id, "kind": "person", "name": "张伟"}
    values.update(fields)
    return validate(CustomerIn(**values), PHONES)


def entry(kind: str, external_id: str, **fields: Any) -> InteractionIn:
    values: dict[str, Any] = {
        "customer_external_id": "P-1",
        "kind": kind,
        "occurred_at": NOW - timedelta(days=2),
        "title": f"{kind} {external_id}",
        "external_id": external_id,
    }
    values.update(fields)
    return validate_entry(InteractionIn(**values))


def sessions_for(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def save(engine: AsyncEngine, *records: CustomerIn) -> list[Saved | CustomerError]:
    return await write(sessions_for(engine), lambda s: save_customers(s, list(records), now=NOW))


async def save_one(engine: AsyncEngine, record: CustomerIn) -> Saved:
    (result,) = await save(engine, record)
    assert isinstance(result, Saved), result
    return result


async def entries(engine: AsyncEngine, *items: InteractionIn) -> list[Saved | CustomerError]:
    return await write(sessions_for(engine), lambda s: save_entries(s, list(items)))


async def count(engine: AsyncEngine, model: type[Any], *where: Any) -> int:
    async with AsyncSession(engine) as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def row(engine: AsyncEngine, model: type[Any], *where: Any) -> Any:
    async with AsyncSession(engine) as session:
        return (await session.scalars(select(model).where(*where))).one()


async def settle_segments(engine: AsyncEngine, **values: Any) -> None:
    """What the segments' recompute does: compute, and clear the stale flag."""
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(update(Customer).values(segment_stale=False, **values))


# -- the rules (pure) ------------------------------------------------------------------------


def test_every_customer_column_has_one_owner() -> None:
    columns = set(Customer.__table__.columns.keys())
    assert columns == {*CRM_COLUMNS, *LOCAL_COLUMNS, *KEY_COLUMNS}
    assert not set(CRM_COLUMNS) & set(LOCAL_COLUMNS)
    assert set(STARTING_COLUMNS) <= set(LOCAL_COLUMNS)


def test_an_update_is_stale_only_when_strictly_older() -> None:
    assert is_stale(V1, V2)
    assert not is_stale(V2, V2)  # a retry of the same version is applied (and changes nothing)
    assert not is_stale(V3, V2)
    assert not is_stale(None, V2) and not is_stale(V1, None)
    # SQLite hands back naive UTC times; an aware time in another zone compares by instant
    stored = datetime(2026, 12, 4, 12, 0)
    assert is_stale(datetime(2026, 12, 4, 13, 0, tzinfo=timezone(timedelta(hours=2))), stored)
    assert utc(stored) == NOW


def test_crm_keys_keep_kinds_and_our_own_entries_apart() -> None:
    assert crm_key("order", "17") == "crm:order:17" != crm_key("ticket", "17")
    assert len(crm_key("ticket", "x" * MAX_ENTRY_ID)) == 64  # interactions.external_id
    with pytest.raises(ValueError, match="not one of the CRM's kinds"):
        crm_key("outcome", "abc")


def test_a_merge_fills_the_survivors_blanks_only() -> None:
    blank = dict.fromkeys(
        ("external_id", "company_id", "email", "address", "owner", "language", "pin_hash"), None
    )
    survivor = {**blank, "email": "a@example.com", "balance": None, "currency": None}
    merged = {
        **blank,
        "external_id": "M-1",
        "email": "b@example.com",
        "owner": "carol",
        "balance": Decimal("-3.50"),
        "currency": "EUR",
    }
    survivor["tags"], merged["tags"] = ["vip-desk"], ["wechat", "vip-desk"]
    assert merge_fill(survivor, merged) == {
        "external_id": "M-1",
        "owner": "carol",
        "balance": Decimal("-3.50"),
        "currency": "EUR",
        "tags": ["vip-desk", "wechat"],
    }
    assert merge_fill(merged, survivor) == {}  # all there already, tags included


# -- the CRM's JSON records (pure) -----------------------------------------------------------


def test_a_customer_record_is_read_with_exact_amounts() -> None:
    record = customer_record(
        {
            "kind": "person",
            "name": HOSTILE,
            "phones": ["13800138000"],
            "tags": ["b2b"],
            "balance": Decimal("0.10"),
            "currency": "cny",
            "updated_at": "2026-12-04T09:00:00Z",
            "customer_id": 7,
        },
        "P-1",
    )
    assert record.link_to == 7
    stored = validate(record.customer, PHONES)
    assert (stored.external_id, stored.name, stored.phones) == ("P-1", HOSTILE, ("+8613800138000",))
    assert (stored.balance, stored.currency, stored.updated_at) == (
        Decimal("0.10"),
        "CNY",
        datetime(2026, 12, 4, 9, 0, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ([], "body", "a customer is a JSON object"),
        ({"name": "x", "emial": "a@b.c", "updated_at": "2026-12-04T09:00:00Z"}, "emial", "not a"),
        ({"name": 5, "updated_at": "2026-12-04T09:00:00Z"}, "name", "expected text, not a number"),
        ({"phones": "13800138000", "updated_at": "x"}, "phones", "a list of text"),
        ({"balance": True, "updated_at": "2026-12-04T09:00:00Z"}, "balance", "true/false"),
        ({"balance": "12,50", "updated_at": "2026-12-04T09:00:00Z"}, "balance", "not an amount"),
        ({"name": "x"}, "updated_at", "required"),
        ({"updated_at": "yesterday"}, "updated_at", "not an ISO 8601 time"),
        ({"customer_id": "7", "updated_at": "2026-12-04T09:00:00Z"}, "customer_id", "number"),
        ({"external_id": "P-2", "updated_at": "2026-12-04T09:00:00Z"}, "external_id", "differs"),
    ],
)
def test_a_bad_customer_record_names_its_field(body: Any, field: str, message: str) -> None:
    with pytest.raises(CustomerError, match=message) as caught:
        customer_record(body, "P-1")
    assert caught.value.field == field


def test_entry_and_merge_records() -> None:
    order = entry_record(
        "order",
        {
            "customer_external_id": "P-1",
            "occurred_at": "2026-12-01T08:00:00+08:00",
            "title": "Order 17",
            "status": "shipped",
            "amount": 99.9,
        },
        "17",
    )
    assert (order.external_id, order.amount, order.status) == ("17", Decimal("99.9"), "shipped")
    with pytest.raises(CustomerError, match="not a field of a note") as caught:
        entry_record("note", {"status": "open"})
    assert caught.value.field == "status"
    assert merge_record({"survivor_external_id": " S-1 ", "merged_external_id": "M-1"}) == (
        "S-1",
        "M-1",
        "crm",
    )
    with pytest.raises(CustomerError, match="into itself"):
        merge_record({"survivor_external_id": "S-1", "merged_external_id": "S-1"})


def test_entries_are_checked_per_kind() -> None:
    assert entry("ticket", "T-1").status == "open"
    for kind, field, value in (("note", "status", "open"), ("order", "owner", "bob")):
        with pytest.raises(CustomerError) as caught:
            entry(kind, "X-1", **{field: value})
        assert caught.value.field == field
    with pytest.raises(CustomerError, match="longer than 53"):
        entry("order", "9" * 54)
    with pytest.raises(CustomerError, match="'lost' is not one of"):
        entry("order", "O-1", status="lost")
    with pytest.raises(CustomerError, match="outcome"):
        entry("outcome", "O-1")


# -- customers: idempotent, versioned, who owns what -------------------------------------------


async def test_the_same_record_twice_is_one_unchanged_row(engine: AsyncEngine) -> None:
    record = customer(phones=("13800138000",), updated_at=V1)
    first, again = await save_one(engine, record), await save_one(engine, record)
    assert (first.change, again) == ("inserted", (first.id, "unchanged"))
    stored = await row(engine, Customer, Customer.id == first.id)
    assert utc(stored.updated_at) == V1  # the CRM's version, not our clock
    assert (await count(engine, Customer), await count(engine, Phone)) == (1, 1)
    assert await count(engine, OutboxRow) == 0  # nothing the CRM said goes back to it


async def test_an_older_update_is_ignored_and_a_newer_one_applied(engine: AsyncEngine) -> None:
    saved = await save_one(engine, customer(name="Wei v2", updated_at=V2))
    late = await save_one(engine, customer(name="Wei v1", phones=("13800138000",), updated_at=V1))
    assert late == (saved.id, "stale")
    stored = await row(engine, Customer, Customer.id == saved.id)
    assert (stored.name, await count(engine, Phone)) == ("Wei v2", 0)
    assert (await save_one(engine, customer(name="Wei v3", updated_at=V3))).change == "updated"
    assert (await row(engine, Customer, Customer.id == saved.id)).name == "Wei v3"


async def test_a_newer_unchanged_record_still_moves_the_version(engine: AsyncEngine) -> None:
    await save_one(engine, customer(updated_at=V1))
    assert (await save_one(engine, customer(updated_at=V3))).change == "unchanged"
    # an edit made between the two, delivered late, is older than what is stored now
    assert (await save_one(engine, customer(name="between", updated_at=V2))).change == "stale"
    assert (await row(engine, Customer, Customer.external_id == "P-1")).name == "张伟"


async def test_tier_and_lifecycle_only_start_a_customer(engine: AsyncEngine) -> None:
    saved = await save_one(engine, customer(tier="vip", lifecycle="prospect", updated_at=V1))
    stored = await row(engine, Customer, Customer.id == saved.id)
    assert (stored.tier, stored.lifecycle, stored.segment_stale) == ("vip", "prospect", True)
    await settle_segments(engine, tier="low", lifecycle="lapsed")
    result = await save_one(engine, customer(tier="vip", lifecycle="active", updated_at=V2))
    stored = await row(engine, Customer, Customer.id == saved.id)
    assert (result.change, stored.tier, stored.lifecycle) == ("unchanged", "low", "lapsed")


async def test_balance_comes_with_its_currency(engine: AsyncEngine) -> None:
    saved = await save_one(engine, customer(balance=Decimal("-12.5"), currency="eur"))
    stored = await row(engine, Customer, Customer.id == saved.id)
    assert (stored.balance, stored.currency) == (Decimal("-12.50"), "EUR")
    await save_one(engine, customer())  # the record is whole: no balance any more
    stored = await row(engine, Customer, Customer.id == saved.id)
    assert (stored.balance, stored.currency) == (None, None)
    for fields, field in (({"balance": Decimal(1)}, "currency"), ({"currency": "EUR"}, "balance")):
        with pytest.raises(CustomerError) as caught:
            customer(**fields)
        assert caught.value.field == field
    with pytest.raises(CustomerError, match="currency code"):
        customer(balance=Decimal(1), currency="€")


async def test_concurrent_upserts_of_one_new_id_end_in_one_customer(engine: AsyncEngine) -> None:
    versions = [NOW - timedelta(minutes=m) for m in (5, 1, 9, 3, 7, 2, 8, 4)]
    results = await asyncio.gather(
        *(save(engine, customer("P-9", name=f"at {v:%H:%M}", updated_at=v)) for v in versions)
    )
    changes = sorted(r.change for (r,) in results if isinstance(r, Saved))
    assert changes.count("inserted") == 1 and len(changes) == len(versions)
    assert await count(engine, Customer) == 1
    newest = max(versions)
    stored = await row(engine, Customer, Customer.external_id == "P-9")
    assert (stored.name, utc(stored.updated_at)) == (f"at {newest:%H:%M}", newest)


async def test_concurrent_updates_never_apply_an_older_version(engine: AsyncEngine) -> None:
    await save_one(engine, customer(updated_at=NOW - timedelta(days=1)))
    for round_ in range(3):
        base = NOW + timedelta(hours=round_)
        versions = [base + timedelta(seconds=s) for s in (3, 1, 4, 2)]
        await asyncio.gather(
            *(save(engine, customer(name=f"{v:%H:%M:%S}", updated_at=v)) for v in versions)
        )
        stored = await row(engine, Customer, Customer.external_id == "P-1")
        assert stored.name == f"{max(versions):%H:%M:%S}"


async def test_a_crm_id_links_a_customer_first_known_here(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        local = Customer(kind="person", name="New caller", tags=[], created_at=NOW, updated_at=NOW)
        session.add(local)
        await session.flush()
        local_id = local.id
    sessions = sessions_for(engine)

    async def link_and_save(session: AsyncSession) -> list[Saved | CustomerError]:
        await link_external_id(session, local_id, "P-1", version=V1)
        return await save_customers(session, [customer(updated_at=V1)], now=NOW)

    (result,) = await write(sessions, link_and_save)
    assert result == (local_id, "updated")
    assert (await count(engine, Customer), (await row(engine, Customer)).name) == (1, "张伟")
    await write(sessions, lambda s: link_external_id(s, local_id, "P-1", version=None))  # no-op
    await save_one(engine, customer("P-2"))
    for customer_id, message in ((local_id, "already the CRM's 'P-1'"), (9999, "no customer")):
        with pytest.raises(CustomerError, match=message):
            async with AsyncSession(engine) as session, session.begin():
                await link_external_id(session, customer_id, "P-3", version=None)
    async with AsyncSession(engine) as session, session.begin():
        other = Customer(kind="person", name="Other", tags=[], created_at=NOW, updated_at=NOW)
        session.add(other)
        await session.flush()
        other_id = other.id
    with pytest.raises(CustomerError, match="'P-2' is already customer"):
        await write(sessions, lambda s: link_external_id(s, other_id, "P-2", version=None))


# -- the CRM's orders, tickets and notes -----------------------------------------------------


async def test_an_order_whose_status_changes_is_one_row(engine: AsyncEngine) -> None:
    saved = await save_one(engine, customer())
    await settle_segments(engine)
    (first,) = await entries(engine, entry("order", "17", status="processing", amount=Decimal(5)))
    assert isinstance(first, Saved) and first.change == "inserted"
    assert (await row(engine, Customer, Customer.id == saved.id)).segment_stale
    await settle_segments(engine)
    same = await entries(engine, entry("order", "17", status="processing", amount=Decimal(5)))
    assert same == [(first.id, "unchanged")]
    assert not (await row(engine, Customer, Customer.id == saved.id)).segment_stale
    shipped = await entries(engine, entry("order", "17", status="shipped", amount=Decimal(5)))
    assert shipped == [(first.id, "updated")]
    stored = await row(engine, Interaction, Interaction.id == first.id)
    assert (stored.status, stored.external_id, stored.customer_id) == (
        "shipped",
        "crm:order:17",
        saved.id,
    )
    assert (await row(engine, Customer, Customer.id == saved.id)).segment_stale  # recompute
    assert await count(engine, Interaction) == 1
    assert await count(engine, OutboxRow) == 0


async def test_tickets_notes_and_our_own_entries_never_collide(engine: AsyncEngine) -> None:
    saved = await save_one(engine, customer())
    async with AsyncSession(engine) as session, session.begin():
        session.add(
            Interaction(
                customer_id=saved.id,
                kind="outcome",
                occurred_at=NOW,
                title="callback",
                external_id="outcome:abc",
            )
        )
    results = await entries(
        engine,
        entry("ticket", "17", body=HOSTILE),
        entry("order", "17"),
        entry("note", "outcome:abc", body="the CRM's note"),
        entry("note", "N-1", customer_external_id="P-404"),
        entry("note", "N-2"),
        entry("note", "N-2"),
    )
    assert [r.change if isinstance(r, Saved) else r.field for r in results] == [
        "inserted",
        "inserted",
        "inserted",
        "customer_external_id",
        "inserted",
        "external_id",
    ]
    ours = await row(engine, Interaction, Interaction.external_id == "outcome:abc")
    assert (ours.kind, ours.body) == ("outcome", None)
    ticket = await row(engine, Interaction, Interaction.external_id == "crm:ticket:17")
    assert (ticket.status, ticket.body) == ("open", HOSTILE)
    (closed,) = await entries(engine, entry("ticket", "17", body=HOSTILE, status="closed"))
    assert closed == (ticket.id, "updated")
    assert (await row(engine, Interaction, Interaction.id == ticket.id)).status == "closed"


# -- merges ----------------------------------------------------------------------------------


async def two_customers(engine: AsyncEngine) -> tuple[int, int]:
    """Survivor S-1 and duplicate M-1, each with a timeline, a shared phone and their own."""
    s, m = await save(
        engine,
        customer("S-1", name="Wei Zhang", phones=("13800138000", "13900000001")),
        customer(
            "M-1",
            name=HOSTILE,
            email="wei@example.com",
            phones=("13900000001", "13700000002"),
            tags=("wechat",),
            balance=Decimal("8.00"),
            currency="CNY",
        ),
    )
    assert isinstance(s, Saved) and isinstance(m, Saved)
    await entries(
        engine,
        entry("order", "O-1", customer_external_id="M-1"),
        entry("ticket", "T-1", customer_external_id="M-1"),
        entry("note", "N-1", customer_external_id="S-1"),
    )
    async with AsyncSession(engine) as session, session.begin():
        session.add_all(
            [
                Interaction(
                    customer_id=m.id,
                    kind="followup",
                    occurred_at=NOW,
                    title="call back",
                    status="open",
                    due_at=NOW + timedelta(hours=1),
                    external_id="outcome:k1:followup",
                ),
                CallScore(
                    pbx="lab",
                    call_id="c1",
                    customer_id=m.id,
                    question="csat",
                    score=5,
                    created_at=NOW,
                ),
            ]
        )
    await settle_segments(engine)
    return s.id, m.id


async def merge_here(engine: AsyncEngine, survivor: int, merged: int) -> MergeResult:
    return await write(
        sessions_for(engine),
        lambda s: merge_customers(s, survivor, merged, source="admin", by="sue", now=NOW),
    )


async def test_a_merge_moves_everything_and_is_recorded(engine: AsyncEngine) -> None:
    survivor, merged = await two_customers(engine)
    result = await merge_here(engine, survivor, merged)
    assert result.moved == {
        "phones": 1,
        "phones_already_there": 1,
        "interactions": {"followup": 1, "order": 1, "ticket": 1},
        "call_scores": 1,
        "contacts": 0,
        "earlier_merges": 0,
        "filled": ["balance", "currency", "email", "tags"],
    }
    assert await count(engine, Customer, Customer.id == merged) == 0
    stored = await row(engine, Customer, Customer.id == survivor)
    assert (stored.name, stored.email, stored.tags, stored.balance, stored.segment_stale) == (
        "Wei Zhang",
        "wei@example.com",
        ["wechat"],
        Decimal("8.00"),
        True,
    )
    async with AsyncSession(engine) as session:
        numbers = await session.scalars(
            select(Phone.e164).where(Phone.customer_id == survivor).order_by(Phone.e164)
        )
        assert list(numbers) == ["+8613700000002", "+8613800138000", "+8613900000001"]
    assert await count(engine, Interaction, Interaction.customer_id == survivor) == 4
    assert await count(engine, CallScore, CallScore.customer_id == survivor) == 1
    record = await row(engine, CustomerMerge)
    assert (record.survivor_id, record.merged_id, record.merged_external_id) == (
        survivor,
        merged,
        "M-1",
    )
    assert (record.merged_name, record.source, record.detail["by"]) == (HOSTILE, "admin", "sue")
    assert record.detail["moved"] == result.moved
    told = await row(engine, OutboxRow)
    assert (told.topic, told.key, told.customer_id) == (
        "customer.merged",
        f"customer.merged:{result.merge_id}",
        survivor,
    )
    assert told.payload["merged"] == {"id": merged, "external_id": "M-1", "name": HOSTILE}
    assert told.payload["survivor"] == {"id": survivor, "external_id": "S-1"}


async def test_later_data_for_the_merged_id_lands_on_the_survivor(engine: AsyncEngine) -> None:
    survivor, merged = await two_customers(engine)
    await merge_here(engine, survivor, merged)
    (order,) = await entries(engine, entry("order", "O-2", customer_external_id="M-1"))
    assert isinstance(order, Saved)
    assert (await row(engine, Interaction, Interaction.id == order.id)).customer_id == survivor
    again = await save_one(engine, customer("M-1", name="Duplicate again", updated_at=V3))
    assert again == (survivor, "merged")  # not recreated, not written over the survivor
    assert await count(engine, Customer) == 1
    assert (await row(engine, Customer)).name == "Wei Zhang"


async def test_merges_chain_and_companies_take_their_contacts(engine: AsyncEngine) -> None:
    results = await save(
        engine,
        customer("C-1", kind="company", name="ACME"),
        customer("C-2", kind="company", name="ACME Ltd"),
        customer("C-3", kind="company", name="ACME Holding"),
        customer("P-1", company_external_id="C-2"),
    )
    c1, c2, c3, p1 = (r.id for r in results if isinstance(r, Saved))
    first = await merge_here(engine, c2, c1)
    second = await merge_here(engine, c3, c2)
    assert (first.moved["contacts"], second.moved["contacts"]) == (0, 1)
    assert second.moved["earlier_merges"] == 1
    assert (await row(engine, Customer, Customer.id == p1)).company_id == c3
    # C-1 went into C-2, which went into C-3: both ids now name C-3
    (contact,) = await save(engine, customer("P-2", company_external_id="C-1"))
    assert isinstance(contact, Saved)
    assert (await row(engine, Customer, Customer.id == contact.id)).company_id == c3
    with pytest.raises(MergeError, match="a company cannot be merged into a person") as caught:
        await merge_here(engine, p1, c3)
    assert caught.value.reason == "refused"
    for survivor, merged, reason in ((c3, c3, "refused"), (c3, c1, "unknown")):
        with pytest.raises(MergeError) as caught:
            await merge_here(engine, survivor, merged)
        assert caught.value.reason == reason
    assert await count(engine, OutboxRow, OutboxRow.topic == "customer.merged") == 2


async def test_a_merge_from_the_crm_is_not_echoed_and_can_be_repeated(
    engine: AsyncEngine,
) -> None:
    survivor, merged = await two_customers(engine)
    await save_one(engine, customer("X-1"))
    sessions = sessions_for(engine)

    async def crm_merge(survivor_key: str, merged_key: str) -> MergeResult:
        return await write(
            sessions, lambda s: merge_external(s, survivor_key, merged_key, by="crm", now=NOW)
        )

    done = await crm_merge("S-1", "M-1")
    repeated = await crm_merge("S-1", "M-1")
    assert (done.already, repeated.already) == (False, True)
    assert (repeated.merge_id, repeated.survivor_id, repeated.moved) == (
        done.merge_id,
        survivor,
        done.moved,
    )
    assert (await row(engine, CustomerMerge)).source == "crm"
    assert await count(engine, OutboxRow) == 0
    problems: Sequence[tuple[str, str, str]] = (
        ("X-1", "M-1", "conflict"),  # M-1 is S-1's now
        ("S-1", "M-404", "unknown"),
        ("S-404", "X-1", "unknown"),
    )
    for survivor_key, merged_key, reason in problems:
        with pytest.raises(MergeError) as caught:
            await crm_merge(survivor_key, merged_key)
        assert caught.value.reason == reason
    assert await count(engine, Customer, Customer.id == merged) == 0
