"""run checkpoints: a run at its last step boundary, for another worker to go on from

Revision ID: f1c6d9a3b8e2
Revises: e8b1c4d7f2a3
Create Date: 2026-12-07 01:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "f1c6d9a3b8e2"
down_revision = "e8b1c4d7f2a3"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "run_checkpoints",
        sa.Column("message_id", sa.Uuid(), sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stream_id", sa.String(64), nullable=False, unique=True),
        sa.Column("run_state", sa.Text(), nullable=False),
        sa.Column("results", sa.Text(), nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("run_checkpoints")
