"""IVR: customers' PIN hash and balance, post-call survey scores.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

The downgrade drops the columns with a plain ALTER TABLE … DROP COLUMN (SQLite 3.35+), not in
batch mode: a batch rebuild drops and recreates ``customers``, and with foreign keys on, SQLite
would cascade that drop to every phone and timeline entry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = ("pin_hash", "balance", "currency")


def upgrade() -> None:
    op.add_column("customers", sa.Column("pin_hash", sa.String(128)))
    op.add_column("customers", sa.Column("balance", sa.Numeric(12, 2)))
    op.add_column("customers", sa.Column("currency", sa.String(3)))
    op.create_table(
        "call_scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(80), nullable=False),
        sa.Column("agent", sa.String(64)),
        sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customers.id", ondelete="SET NULL")),
        sa.Column("question", sa.String(32), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("pbx", "call_id", "question", name="uq_call_scores_call_question"),
    )
    op.create_index("ix_call_scores_agent_time", "call_scores", ["agent", "created_at"])
    op.create_index("ix_call_scores_customer_id", "call_scores", ["customer_id"])


def downgrade() -> None:
    op.drop_table("call_scores")
    for name in _COLUMNS:
        op.drop_column("customers", name)
