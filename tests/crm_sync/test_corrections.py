"""An agent's correction of how to reach a customer (SQLite and PostgreSQL): sent to the CRM
when the CRM owns the customer, applied here at once only for a customer born here; each
bad field named; a double submit recorded once; hostile text kept as given."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crm_sync.corrections import ContactIn, CorrectionError, contact_of, correct_contact
from crm_sync.customers import CustomerIn, save_customers
from crm_sync.models import Customer, Interaction, OutboxRow
from crm_sync.phones import PhoneNormalizer

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PHONES = PhoneNormalizer("CN")
HOSTILE = "<script>alert(1)</script>\nRoom 3, 'B' & Co"


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


async def customer(sessions: Any, *, crm: bool) -> int:
    record = CustomerIn(
        external_id="CRM-1", kind="person", name="Ana", email="ana@old.example",
        phones=("+8613800138000",),
    )  # fmt: skip
    async with sessions() as session, session.begin():
        (saved,) = await save_customers(session, [record], now=NOW)
        if not crm:  # born here: the CRM has not claimed it
            await session.execute(
                update(Customer).where(Customer.id == saved.id).values(external_id=None)
            )
    return int(saved.id)


async def told(sessions: Any) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxRow).where(OutboxRow.topic == "contact.corrected").order_by(OutboxRow.id)
        )
        return [r.payload for r in rows]


async def test_a_crm_customer_is_only_sent_the_correction(sessions: Any) -> None:
    cid = await customer(sessions, crm=True)
    given = ContactIn("ana@new.example", ("138 0013 8000", "+44 20 7946 0958"), HOSTILE)
    done = await correct_contact(sessions, PHONES, cid, given, agent="alice", key="k1", now=NOW)
    assert not done.applied and not done.duplicate
    assert done.changes == {
        "email": {"from": "ana@old.example", "to": "ana@new.example"},
        "phones": {"from": ["+8613800138000"], "to": ["+8613800138000", "+442079460958"]},
        "address": {"from": None, "to": HOSTILE},
    }
    stored = await contact_of(sessions, cid)
    assert stored == (ContactIn("ana@old.example", ("+8613800138000",), None), True)
    (payload,) = await told(sessions)
    assert (payload["applied"], payload["agent"], payload["changes"]) == (
        False, "alice", done.changes,
    )  # fmt: skip
    async with sessions() as session:
        note = await session.get(Interaction, done.interaction_id)
    assert note is not None
    assert (note.kind, note.agent, note.title) == (
        "note", "alice", "Contact correction sent to the CRM: e-mail, phones, address",
    )  # fmt: skip
    assert note.body is not None and HOSTILE.splitlines()[0] in note.body


async def test_a_customer_born_here_is_corrected_at_once(sessions: Any) -> None:
    cid = await customer(sessions, crm=False)
    given = ContactIn(None, ("+44 20 7946 0958",), "Hauptstraße 1")
    done = await correct_contact(sessions, PHONES, cid, given, agent="bob", key="k2", now=NOW)
    assert done.applied
    assert await contact_of(sessions, cid) == (
        ContactIn(None, ("+442079460958",), "Hauptstraße 1"), False,
    )  # fmt: skip
    (payload,) = await told(sessions)
    assert (payload["applied"], payload["agent"], sorted(payload["changes"])) == (
        True, "bob", ["address", "email", "phones"],
    )  # fmt: skip
    # the same submission again: recorded once
    again = await correct_contact(sessions, PHONES, cid, given, agent="bob", key="k2", now=NOW)
    assert again.duplicate and again.interaction_id == done.interaction_id
    assert len(await told(sessions)) == 1


@pytest.mark.parametrize(
    ("given", "field", "problem"),
    [
        (ContactIn("not-an-address", (), None), "email", "not an e-mail address"),
        (ContactIn(None, ("1001",), None), "phones", "internal extension"),
        (ContactIn(None, ("+999 12",), None), "phones", "not a valid phone number"),
        (ContactIn(None, (), "a\x00b"), "address", "control character"),
    ],
)
async def test_bad_fields_are_named_and_nothing_is_written(
    sessions: Any, given: ContactIn, field: str, problem: str
) -> None:
    cid = await customer(sessions, crm=False)
    with pytest.raises(CorrectionError, match=problem) as caught:
        await correct_contact(sessions, PHONES, cid, given, agent="a", key="k", now=NOW)
    assert caught.value.field == field
    assert await told(sessions) == []


async def test_nothing_changed_or_nobody_to_correct(sessions: Any) -> None:
    cid = await customer(sessions, crm=True)
    same = ContactIn("ana@old.example", ("+86 138 0013 8000",), None)
    with pytest.raises(CorrectionError, match="Nothing changed"):
        await correct_contact(sessions, PHONES, cid, same, agent="a", key="k", now=NOW)
    with pytest.raises(CorrectionError, match="no customer"):
        await correct_contact(sessions, PHONES, cid + 99, same, agent="a", key="k", now=NOW)
    assert await told(sessions) == []
