"""An agent corrects how to reach a customer: e-mail, phone numbers, address.

The CRM owns these fields (crm_sync.conflicts: only its writes change them). So for a customer
the CRM knows (one with an external id) a correction is *proposed*, not applied: it travels to
the CRM through the outbox (``contact.corrected``, ``applied: false``), and the customer's
timeline says what was sent, by whom. The CRM's next update of the customer, the owner's write,
brings the new data back here through the inbound API. A customer born here (no external id:
an agent's new caller the CRM has not claimed yet) has no other owner: the correction is
applied at once and told to the CRM the same way (``applied: true``).

Each correction is idempotent by the form's key (a double submit records it once), and the
store's change, the timeline entry and the outbox row are one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.customers import CustomerError, validate_contact
from crm_sync.models import Customer, Interaction, Phone
from crm_sync.outbox import enqueue
from crm_sync.phones import PhoneNormalizer

LABELS = {"email": "e-mail", "phones": "phones", "address": "address"}


class CorrectionError(ValueError):
    """The correction cannot be taken (``field`` names what is wrong, when one is)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ContactIn:
    email: str | None
    phones: tuple[str, ...]
    address: str | None


@dataclass(frozen=True, slots=True)
class Corrected:
    interaction_id: int
    applied: bool  # changed here (a customer born here), or only sent to the CRM
    changes: dict[str, dict[str, Any]]  # field -> {"from", "to"}
    duplicate: bool  # the same submission again: the first one's result


async def correct_contact(
    sessions: async_sessionmaker[AsyncSession],
    normalizer: PhoneNormalizer,
    customer_id: int,
    given: ContactIn,
    *,
    agent: str,
    key: str,
    now: datetime,
) -> Corrected:
    """Record (and, for a customer born here, apply) the agent's correction. Raises
    CorrectionError: a bad field, an unknown customer, nothing changed."""
    try:
        email, phones, address = validate_contact(
            given.email, given.phones, given.address, normalizer
        )
    except CustomerError as exc:
        raise CorrectionError(str(exc), exc.field) from exc
    external_id = f"contact:{key}"
    first = await _first(sessions, external_id)
    if first is not None:  # the same submission again, after it went through
        return first
    try:
        async with sessions() as session, session.begin():
            customer = await session.get(Customer, customer_id)
            if customer is None:
                raise CorrectionError(f"There is no customer {customer_id}.")
            before = await _numbers(session, customer_id)
            changes = _changes(
                {"email": customer.email, "phones": before, "address": customer.address},
                {"email": email, "phones": list(phones), "address": address},
            )
            if not changes:
                raise CorrectionError("Nothing changed: the contact data is as shown.")
            applied = customer.external_id is None
            if applied:
                await _apply(session, customer_id, email, phones, address, before)
            said = ", ".join(LABELS[f] for f in changes)
            row = Interaction(
                customer_id=customer_id,
                kind="note",
                occurred_at=now,
                title=(
                    f"Contact corrected: {said}"
                    if applied
                    else f"Contact correction sent to the CRM: {said}"
                )[:200],
                body="\n".join(_line(f, c) for f, c in changes.items()),
                agent=agent[:64],
                external_id=external_id,
            )
            session.add(row)
            await session.flush()
            enqueue(
                session,
                topic="contact.corrected",
                key=f"contact.corrected:{key}",
                customer_id=customer_id,
                data={
                    "interaction_id": row.id,
                    "agent": agent,
                    "at": now.isoformat(),
                    "applied": applied,
                    "changes": changes,
                },
                now=now,
            )
            return Corrected(row.id, applied, changes, False)
    except IntegrityError:
        pass  # the same submission, at the same moment
    first = await _first(sessions, external_id)
    if first is None:
        raise CorrectionError("The correction could not be stored.")
    return first


async def _first(sessions: async_sessionmaker[AsyncSession], external_id: str) -> Corrected | None:
    """The result of a submission already recorded under this key."""
    async with sessions() as session:
        row = await session.scalar(
            select(Interaction).where(Interaction.external_id == external_id)
        )
    if row is None:
        return None
    return Corrected(row.id, row.title.startswith("Contact corrected"), {}, True)


async def contact_of(
    sessions: async_sessionmaker[AsyncSession], customer_id: int
) -> tuple[ContactIn, bool] | None:
    """How the store reaches the customer now (what the correction form starts from), and
    whether the CRM owns it (then a correction is only sent)."""
    async with sessions() as session:
        customer = await session.get(Customer, customer_id)
        if customer is None:
            return None
        numbers = tuple(await _numbers(session, customer_id))
        return ContactIn(
            customer.email, numbers, customer.address
        ), customer.external_id is not None


async def _numbers(session: AsyncSession, customer_id: int) -> list[str]:
    found = await session.scalars(
        select(Phone.e164).where(Phone.customer_id == customer_id).order_by(Phone.id)
    )
    return list(found)


def _changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What differs; phones compare as sets (their order is not the customer's data)."""
    changed = {}
    for field, value in new.items():
        was = old[field]
        same = set(was) == set(value) if field == "phones" else was == value
        if not same:
            changed[field] = {"from": was, "to": value}
    return changed


async def _apply(
    session: AsyncSession,
    customer_id: int,
    email: str | None,
    phones: tuple[str, ...],
    address: str | None,
    before: list[str],
) -> None:
    await session.execute(
        update(Customer)
        .where(Customer.id == customer_id)
        .values(email=email, address=address)
        .execution_options(synchronize_session=False)
    )
    gone = [n for n in before if n not in phones]
    if gone:
        await session.execute(
            delete(Phone).where(Phone.customer_id == customer_id, Phone.e164.in_(gone))
        )
    session.add_all(Phone(customer_id=customer_id, e164=n) for n in phones if n not in before)


def _line(field: str, change: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(value) or "none"
        return str(value) if value else "none"

    return f"{LABELS[field]}: {shown(change['from'])} → {shown(change['to'])}"
