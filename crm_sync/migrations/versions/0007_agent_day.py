"""An agent's day: calls and outcomes by agent and time (crm_sync.workday).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

Without it "My day" reads every interaction of the day, or every one of the agent's.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_interactions_agent_time", "interactions", ["agent", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_interactions_agent_time", "interactions")
