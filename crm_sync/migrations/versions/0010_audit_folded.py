"""Audit rows say what was sent to Asterisk, and fold repeated denied attempts.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08

``audit_log`` gains ``sent`` (the AMI actions as handed to Asterisk, JSON), ``attempts`` (how
many attempts the row stands for: identical denied ones within a minute are counted on one
row, so a flood cannot bury the log) and ``last_at`` (the last of them). Rows written before
keep ``sent`` and ``last_at`` empty and count one attempt. Columns are added with plain ALTER
TABLE (see 0002 for why not in batch mode).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("sent", sa.JSON()))
    op.add_column(
        "audit_log", sa.Column("attempts", sa.Integer(), nullable=False, server_default="1")
    )
    op.add_column("audit_log", sa.Column("last_at", sa.DateTime(timezone=True)))
    op.create_index("ix_audit_log_login_at", "audit_log", ["login", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_login_at", "audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("last_at")
        batch.drop_column("attempts")
        batch.drop_column("sent")
