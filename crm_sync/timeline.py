"""What the call center learns goes into the customer's timeline: calls and their outcomes.

Writes are idempotent by a key (``external_id``): a retried POST, a replayed CallEnded or a
restarted service never writes twice. An outcome is committed before the caller of
:func:`save_outcome` returns, so "saved" on the agent's screen means it is on disk; what the
external CRM must hear of it is in the outbox from that same commit. Notes and a new
customer's name follow crm_sync.text's rule, checked before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_sync.models import Customer, Interaction, Phone
from crm_sync.outbox import enqueue
from crm_sync.search import index_names
from crm_sync.text import FieldError, line, lines

MAX_NOTES = 4000  # an outcome's or a note's text
MAX_NAME = 200  # Customer.name


class OutcomeError(ValueError):
    """The outcome cannot be stored as given (message says why; nothing was written)."""


@dataclass(frozen=True, slots=True)
class OutcomeIn:
    key: str  # idempotency key chosen by the client, one per submission attempt series
    pbx: str
    call_id: str
    agent: str
    disposition: str
    notes: str
    customer_id: int | None  # the matched or picked customer
    new_customer_name: str | None  # or a new one, with the caller's number
    caller_e164: str | None
    followup_due: datetime | None = None
    followup_owner: str | None = None
    label: str | None = None  # the disposition as the agent read it: the follow-up's title
    # False for a disposition that needs nobody (a wrong number): with neither a customer nor
    # a new one's name, the outcome is stored without a customer, and no junk one is made
    needs_customer: bool = True


@dataclass(frozen=True, slots=True)
class OutcomeSaved:
    interaction_id: int
    customer_id: int | None  # None: a disposition that needs no customer, and none was named
    followup_id: int | None
    duplicate: bool


async def handled_by(
    sessions: async_sessionmaker[AsyncSession], pbx: str, call_id: str
) -> tuple[str, ...]:
    """Who the store says took this call (its call row, written when it ended): what a
    restarted service, whose pop has forgotten the call, knows of it."""
    async with sessions() as session:
        agent = await session.scalar(
            select(Interaction.agent).where(
                Interaction.external_id == f"call:{pbx}:{call_id}", Interaction.kind == "call"
            )
        )
    return (str(agent),) if agent else ()


async def save_outcome(
    sessions: async_sessionmaker[AsyncSession], outcome: OutcomeIn, *, now: datetime
) -> OutcomeSaved:
    """Commit the outcome (and its follow-up, and a new customer if asked). Raises
    OutcomeError on bad input; a repeated ``key`` returns the first result, unchanged."""
    check_outcome(outcome)
    key = f"outcome:{outcome.key}"
    first = await first_result(sessions, key)
    if first is not None:  # a retry of a saved outcome: answer as the first time
        return first
    try:
        async with sessions() as session, session.begin():
            customer_id = await _customer_for(session, outcome, now)
            row, followup = outcome_rows(session, outcome, customer_id, now)
            await session.flush()
            tell_crm(session, outcome, row, followup, now)
            saved = OutcomeSaved(row.id, customer_id, followup.id if followup else None, False)
        return saved
    except IntegrityError:
        pass  # saved meanwhile by a concurrent submission (a double click)
    first = await first_result(sessions, key)
    if first is None:
        raise OutcomeError("the outcome could not be stored")
    return first


def check_outcome(outcome: OutcomeIn) -> None:
    """Raise OutcomeError for what no store would take, crm_sync.text.FieldError for text
    it refuses (``notes``, ``new_customer_name``)."""
    lines(outcome.notes, "notes", MAX_NOTES)
    line(outcome.new_customer_name, "new_customer_name", MAX_NAME)
    if not outcome.disposition.strip():
        raise OutcomeError("a disposition code is required")
    if outcome.followup_due is not None and outcome.followup_due.tzinfo is None:
        raise OutcomeError("the follow-up date needs a time zone")
    nobody = outcome.customer_id is None and not (outcome.new_customer_name or "").strip()
    if nobody and outcome.followup_due is not None:
        raise OutcomeError("a follow-up needs a customer: pick one, or give a new one's name")


def outcome_rows(
    session: AsyncSession, outcome: OutcomeIn, customer_id: int | None, now: datetime
) -> tuple[Interaction, Interaction | None]:
    """Add the outcome's timeline entry, and its follow-up if one is due, to ``session``."""
    key = f"outcome:{outcome.key}"
    notes = lines(outcome.notes, "notes", MAX_NOTES)
    row = Interaction(
        customer_id=customer_id,
        kind="outcome",
        occurred_at=now,
        title=outcome.disposition.strip()[:200],
        body=notes,
        status="closed",
        call_id=outcome.call_id,
        agent=outcome.agent,
        external_id=key,
    )
    session.add(row)
    if outcome.followup_due is None:
        return row, None
    followup = Interaction(
        customer_id=customer_id,
        kind="followup",
        occurred_at=now,
        title=f"Follow up: {(outcome.label or outcome.disposition).strip()}"[:200],
        body=notes,
        status="open",
        due_at=outcome.followup_due.astimezone(UTC),
        owner=outcome.followup_owner or outcome.agent,
        call_id=outcome.call_id,
        agent=outcome.agent,
        external_id=key + ":followup",
    )
    session.add(followup)
    return row, followup


def tell_crm(
    session: AsyncSession,
    outcome: OutcomeIn,
    row: Interaction,
    followup: Interaction | None,
    now: datetime,
) -> None:
    """The outbox rows of one outcome, in the order the CRM should apply them."""
    key = row.external_id or f"outcome:{row.id}"
    data: dict[str, object] = {
        "interaction_id": row.id,
        "pbx": outcome.pbx,
        "call_id": outcome.call_id,
        "agent": outcome.agent,
        "disposition": row.title,
        "notes": row.body,
        "saved_at": now.isoformat(),
    }
    enqueue(
        session, topic="outcome.saved", key=key, customer_id=row.customer_id, data=data, now=now
    )
    if followup is not None:
        enqueue(
            session,
            topic="followup.created",
            key=f"{key}:followup",
            customer_id=row.customer_id,
            data=followup_data(followup.id, followup, source="outcome"),
            now=now,
        )


class _FollowupFields(Protocol):
    @property
    def title(self) -> str: ...
    @property
    def body(self) -> str | None: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def due_at(self) -> datetime | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def call_id(self) -> str | None: ...


def followup_data(followup_id: int, followup: _FollowupFields, *, source: str) -> dict[str, object]:
    """A follow-up as the CRM hears of it (``source``: outcome, ivr, missed_call)."""
    return {
        "followup_id": followup_id,
        "title": followup.title,
        "body": followup.body,
        "owner": followup.owner,
        "due_at": followup.due_at.isoformat() if followup.due_at else None,
        "state": followup.status,
        "call_id": followup.call_id,
        "source": source,
    }


async def add_note(
    sessions: async_sessionmaker[AsyncSession],
    customer_id: int,
    *,
    agent: str,
    text: str,
    key: str,
    now: datetime,
) -> tuple[int, bool]:
    """A note on the customer's timeline written without a call (what the agent learned by
    other means), told to the CRM through the outbox in the same transaction. Idempotent by
    ``key`` (a retried submission): ``(interaction id, added now)``. Raises OutcomeError for an
    empty text, one crm_sync.text refuses, or an unknown customer."""
    try:
        checked = lines(text, "text", MAX_NOTES)  # a browser's form sends CR LF line ends
    except FieldError as exc:  # the page shows the message, next to the text kept
        raise OutcomeError(exc.problem) from exc
    if checked is None:
        raise OutcomeError("the note is empty")
    text = checked
    external_id = f"note:{key}"
    try:
        async with sessions() as session, session.begin():
            if await session.scalar(select(Customer.id).where(Customer.id == customer_id)) is None:
                raise OutcomeError(f"no customer {customer_id}")
            row = Interaction(
                customer_id=customer_id,
                kind="note",
                occurred_at=now,
                title=text.splitlines()[0][:200],
                body=text,
                agent=agent,
                external_id=external_id,
            )
            session.add(row)
            await session.flush()
            data = {"interaction_id": row.id, "agent": agent, "text": text, "at": now.isoformat()}
            enqueue(
                session, topic="note.added", key=external_id, customer_id=customer_id,
                data=data, now=now,
            )  # fmt: skip
            return row.id, True
    except IntegrityError:
        pass  # the same submission again
    async with sessions() as session:
        first = await session.scalar(
            select(Interaction.id).where(Interaction.external_id == external_id)
        )
    if first is None:
        raise OutcomeError("the note could not be stored")
    return first, False


async def first_result(sessions: async_sessionmaker[AsyncSession], key: str) -> OutcomeSaved | None:
    async with sessions() as session:
        first = await session.scalar(select(Interaction).where(Interaction.external_id == key))
        if first is None:
            return None
        later = await session.scalar(
            select(Interaction.id).where(Interaction.external_id == key + ":followup")
        )
        return OutcomeSaved(first.id, first.customer_id, later, duplicate=True)


async def _customer_for(session: AsyncSession, outcome: OutcomeIn, now: datetime) -> int | None:
    if outcome.customer_id is not None:
        found = await session.scalar(select(Customer.id).where(Customer.id == outcome.customer_id))
        if found is None:
            raise OutcomeError(f"no customer {outcome.customer_id}")
        return found
    name = line(outcome.new_customer_name, "new_customer_name", MAX_NAME) or ""
    if not name and not outcome.needs_customer:
        return None
    if not name:
        raise OutcomeError("pick the customer, or give the new customer's name")
    customer = Customer(
        kind="person",
        name=name,
        tier="regular",
        lifecycle="prospect",
        tags=[],
        created_at=now,
        updated_at=now,
    )
    session.add(customer)
    await session.flush()
    await index_names(session, [(customer.id, customer.name)], fresh=True)
    if outcome.caller_e164:
        session.add(Phone(customer_id=customer.id, e164=outcome.caller_e164, label="caller"))
    enqueue(
        session,
        topic="customer.created",
        key=f"customer.created:{customer.id}",
        customer_id=customer.id,
        data={
            "name": customer.name,
            "phones": [outcome.caller_e164] if outcome.caller_e164 else [],
            "lifecycle": customer.lifecycle,
        },
        now=now,
    )
    return customer.id
