"""An outcome may belong to no customer: a wrong number is not anybody's matter.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

``interactions.customer_id`` takes NULL. SQLite cannot change a column's NOT NULL in place,
so there the table is rebuilt in batch mode; nothing refers to ``interactions``, so the
rebuild cascades nowhere (unlike ``customers``: see 0002). The downgrade deletes the outcomes
without a customer first.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _nullable(nullable: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("interactions", recreate="always") as batch:
            batch.alter_column("customer_id", existing_type=sa.Integer(), nullable=nullable)
    else:
        op.alter_column(
            "interactions", "customer_id", existing_type=sa.Integer(), nullable=nullable
        )


def upgrade() -> None:
    _nullable(True)


def downgrade() -> None:
    op.execute("DELETE FROM interactions WHERE customer_id IS NULL")
    _nullable(False)
