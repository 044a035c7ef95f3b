"""The unified customer store's tables (SQLAlchemy 2, portable to SQLite and PostgreSQL).

A customer is a person (consumer, or a contact of a company account) or a company. Every
channel writes to one timeline (``interactions``): calls, web orders, tickets, e-mails, notes,
call outcomes and follow-ups. Phone numbers are stored in E.164 and indexed for the pop.
What the IVR needs sits beside it: a customer's PIN (hashed) and account balance, and the
post-call survey's answers (``call_scores``). The supervisors' controls (pause, queue log-in,
listen) leave one row each in ``audit_log``, their ratings of agents one in ``agent_ratings``.
Schema changes go through Alembic (``crm_sync/migrations``); these classes are the truth the
migrations are checked against.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import true

KINDS = ("person", "company")
TIERS = ("vip", "regular", "low")
LIFECYCLES = ("prospect", "new", "active", "lapsed", "lost", "won_back")
QUADRANTS = ("loyal", "hostage", "mercenary", "defecting")
INTERACTION_KINDS = ("call", "order", "ticket", "email", "note", "outcome", "followup")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    email: Mapped[str | None] = mapped_column(String(254))
    address: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    tier: Mapped[str] = mapped_column(String(16), default="regular")
    lifecycle: Mapped[str] = mapped_column(String(16), default="active")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    pin_hash: Mapped[str | None] = mapped_column(String(128))  # scrypt$n$r$p$salt$hash
    balance: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    currency: Mapped[str | None] = mapped_column(String(3))  # ISO 4217, of the balance
    # Segments (crm_sync.segments): tier and lifecycle above, the satisfaction/loyalty
    # quadrant, the reasons shown on the card, and whether new data awaits a recompute.
    quadrant: Mapped[str | None] = mapped_column(String(16))
    segment_why: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    segment_stale: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true(), index=True
    )
    segmented_at: Mapped[datetime | None]

    phones: Mapped[list[Phone]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", lazy="raise"
    )
    company: Mapped[Customer | None] = relationship(remote_side=[id], lazy="raise")


class Phone(Base):
    __tablename__ = "phones"
    __table_args__ = (UniqueConstraint("customer_id", "e164"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    e164: Mapped[str] = mapped_column(String(20), index=True)
    label: Mapped[str | None] = mapped_column(String(32))

    customer: Mapped[Customer] = relationship(back_populates="phones", lazy="raise")


class CustomerTerm(Base):
    """A folded word of a customer's name, found by its start (crm_sync.search)."""

    __tablename__ = "customer_terms"

    term: Mapped[str] = mapped_column(
        String(32).with_variant(String(32, collation="C"), "postgresql"), primary_key=True
    )
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Interaction(Base):
    """One entry of a customer's timeline, whatever the channel."""

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_customer_time", "customer_id", "occurred_at"),
        Index("ix_interactions_kind_status", "kind", "status", "due_at"),  # open work
        Index("ix_interactions_agent_time", "agent", "occurred_at"),  # an agent's day
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # None only for an outcome whose disposition needs no customer (a wrong number)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime]
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(16))  # open | closed for tickets, follow-ups
    due_at: Mapped[datetime | None]
    owner: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    call_id: Mapped[str | None] = mapped_column(String(80), index=True)
    agent: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    direction: Mapped[str | None] = mapped_column(String(8))  # calls: inbound | outbound
    closed_at: Mapped[datetime | None]  # follow-ups: when the work ended
    result: Mapped[str | None] = mapped_column(String(64))  # follow-ups: how it ended


class CallScore(Base):
    """One answer of a post-call survey: a call's score for one question."""

    __tablename__ = "call_scores"
    __table_args__ = (
        UniqueConstraint("pbx", "call_id", "question", name="uq_call_scores_call_question"),
        Index("ix_call_scores_agent_time", "agent", "created_at"),  # the wallboard's query
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pbx: Mapped[str] = mapped_column(String(64))
    call_id: Mapped[str] = mapped_column(String(80))
    agent: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    question: Mapped[str] = mapped_column(String(32))
    score: Mapped[int]
    created_at: Mapped[datetime]


class AuditEntry(Base):
    """One supervisor or agent control: who asked what of which PBX, and how it ended."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),  # the listing: newest first
        Index("ix_audit_log_login_at", "login", "at"),  # an actor's denied attempts, folded
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]  # UTC
    login: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))  # pause, unpause, queue_add, …, listen
    agent: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(64))
    pbx: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(String(200))  # the reason, the mode, the penalty
    result: Mapped[str] = mapped_column(String(300))  # ok | denied: … | refused: … | failed: …
    sent: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)  # the AMI actions, as sent
    attempts: Mapped[int] = mapped_column(default=1, server_default="1")  # denied ones folded
    last_at: Mapped[datetime | None]  # UTC: the last attempt this row counts (None: before 0010)


class AgentRating(Base):
    """A supervisor's rating of an agent's work (1..5), the score's "supervisor rating"."""

    __tablename__ = "agent_ratings"
    __table_args__ = (Index("ix_agent_ratings_agent_at", "agent", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]  # UTC
    agent: Mapped[str] = mapped_column(String(64))
    rater: Mapped[str] = mapped_column(String(64))  # the supervisor's login
    score: Mapped[int]
    note: Mapped[str] = mapped_column(Text)


class OutboxRow(Base):
    """One change to tell the external CRM, written in the transaction that made it
    (crm_sync.outbox); the relay delivers it and marks it delivered or dead."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "state", "id", "next_at"),  # due rows, oldest first
        Index("ix_outbox_customer", "customer_id", "state", "id"),  # per-customer order
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)  # the idempotency key
    topic: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[int | None]  # no foreign key: the row outlives a merged customer
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(12))  # pending | delivered | dead
    attempts: Mapped[int]
    next_at: Mapped[datetime]  # pending: not before; claimed: the lease's end
    last_error: Mapped[str | None] = mapped_column(String(300))
    delivered_at: Mapped[datetime | None]


class CustomerMerge(Base):
    """A duplicate customer folded into another: who, when, from where, and what moved."""

    __tablename__ = "customer_merges"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    survivor_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    merged_id: Mapped[int]  # the removed customer's id, kept for the record
    merged_external_id: Mapped[str | None] = mapped_column(String(64), index=True)
    merged_name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # crm | import | agent
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class WebSession(Base):
    """A logged-in browser of the screen pop (screenpop.auth), kept so it survives a restart.
    Only the sha256 of its token is stored: a copy of the database gives no live session."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_last_seen", "last_seen"),)  # the sweep

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256, hex
    login: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # as at login: a changed role ends it
    agent_id: Mapped[str] = mapped_column(String(64))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen: Mapped[datetime]  # written at most every minute or so, not per request
