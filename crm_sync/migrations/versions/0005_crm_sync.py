"""CRM sync: the outbox, customer segments, follow-up work state, merges of duplicates.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Columns are added with plain ALTER TABLE (see 0002 for why not in batch mode).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CUSTOMER_COLUMNS = ("quadrant", "segment_why", "segment_stale", "segmented_at")
_INTERACTION_COLUMNS = ("direction", "closed_at", "result")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(160), nullable=False, unique=True),
        sa.Column("topic", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.Integer()),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(300)),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_outbox_due", "outbox", ["state", "id", "next_at"])
    op.create_index("ix_outbox_customer", "outbox", ["customer_id", "state", "id"])
    op.add_column("customers", sa.Column("quadrant", sa.String(16)))
    op.add_column("customers", sa.Column("segment_why", sa.JSON()))
    op.add_column(
        "customers",
        sa.Column("segment_stale", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column("customers", sa.Column("segmented_at", sa.DateTime(timezone=True)))
    op.create_index("ix_customers_segment_stale", "customers", ["segment_stale"])
    op.add_column("interactions", sa.Column("direction", sa.String(8)))
    op.add_column("interactions", sa.Column("closed_at", sa.DateTime(timezone=True)))
    op.add_column("interactions", sa.Column("result", sa.String(64)))
    op.create_index("ix_interactions_kind_status", "interactions", ["kind", "status", "due_at"])
    op.create_table(
        "customer_merges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "survivor_id",
            sa.Integer(),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("merged_id", sa.Integer(), nullable=False),
        sa.Column("merged_external_id", sa.String(64)),
        sa.Column("merged_name", sa.String(200), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_customer_merges_survivor_id", "customer_merges", ["survivor_id"])
    op.create_index(
        "ix_customer_merges_merged_external_id", "customer_merges", ["merged_external_id"]
    )


def downgrade() -> None:
    op.drop_table("customer_merges")
    op.drop_index("ix_interactions_kind_status", "interactions")
    for name in _INTERACTION_COLUMNS:
        op.drop_column("interactions", name)
    op.drop_index("ix_customers_segment_stale", "customers")
    for name in _CUSTOMER_COLUMNS:
        op.drop_column("customers", name)
    op.drop_table("outbox")
