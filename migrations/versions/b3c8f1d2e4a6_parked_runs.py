"""parked runs: a reply's run between two model steps, handed over by a worker that stops

Revision ID: b3c8f1d2e4a6
Revises: a7d3e9c1b5f2
Create Date: 2026-12-06 22:00:00

A worker that stops gracefully parks each run that reaches a step boundary here (what it needs
to go on, chat/replies/run_state.py) instead of waiting for it or interrupting it; another
worker's reaper takes the row (deleting it: one taker) and goes on with the run.
"""

import sqlalchemy as sa
from alembic import op

revision = "b3c8f1d2e4a6"
down_revision = "a7d3e9c1b5f2"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "parked_runs",
        sa.Column("message_id", sa.Uuid(), sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("run_state", sa.Text(), nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("parked_runs")
