"""Customer store: customers, phones, one timeline of interactions.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("external_id", sa.String(64), unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("company_id", sa.Integer(), sa.ForeignKey("customers.id", ondelete="SET NULL")),
        sa.Column("email", sa.String(254)),
        sa.Column("address", sa.Text()),
        sa.Column("owner", sa.String(64)),
        sa.Column("language", sa.String(16)),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("lifecycle", sa.String(16), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customers_company_id", "customers", ["company_id"])
    op.create_table(
        "phones",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "customer_id",
            sa.Integer(),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("e164", sa.String(20), nullable=False),
        sa.Column("label", sa.String(32)),
        sa.UniqueConstraint("customer_id", "e164"),
    )
    op.create_index("ix_phones_e164", "phones", ["e164"])
    op.create_table(
        "interactions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "customer_id",
            sa.Integer(),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text()),
        sa.Column("status", sa.String(16)),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("owner", sa.String(64)),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("call_id", sa.String(80)),
        sa.Column("agent", sa.String(64)),
        sa.Column("external_id", sa.String(64), unique=True),
    )
    op.create_index("ix_interactions_customer_time", "interactions", ["customer_id", "occurred_at"])
    op.create_index("ix_interactions_call_id", "interactions", ["call_id"])


def downgrade() -> None:
    op.drop_table("interactions")
    op.drop_table("phones")
    op.drop_table("customers")
