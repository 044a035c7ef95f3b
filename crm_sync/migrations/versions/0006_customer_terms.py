"""Customer search: the folded words of every customer's name (crm_sync.search).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

The terms of the customers already stored are written here, a thousand customers a batch.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from crm_sync.search import terms

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    table = op.create_table(
        "customer_terms",
        sa.Column(
            "term",
            sa.String(32).with_variant(sa.String(32, collation="C"), "postgresql"),
            primary_key=True,
        ),
        sa.Column(
            "customer_id",
            sa.Integer(),
            sa.ForeignKey("customers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_index("ix_customer_terms_customer_id", "customer_terms", ["customer_id"])
    bind = op.get_bind()
    customers = sa.table("customers", sa.column("id", sa.Integer), sa.column("name", sa.String))
    last = 0
    while True:
        batch = bind.execute(
            sa.select(customers.c.id, customers.c.name)
            .where(customers.c.id > last)
            .order_by(customers.c.id)
            .limit(_BATCH)
        ).all()
        if not batch:
            break
        rows = [{"term": t, "customer_id": i} for i, name in batch for t in sorted(terms(name))]
        if rows:
            bind.execute(sa.insert(table), rows)
        last = batch[-1][0]


def downgrade() -> None:
    op.drop_table("customer_terms")
