"""admin actions: the operator console's audit trail

Revision ID: c9e2a7b4d1f8
Revises: b3c8f1d2e4a6
Create Date: 2026-12-06 22:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "c9e2a7b4d1f8"
down_revision = "b3c8f1d2e4a6"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "admin_actions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("admin_id", sa.Uuid(), sa.ForeignKey("identities.id", ondelete="SET NULL"), nullable=True),
        sa.Column("admin_email", sa.String(320), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("before", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_admin_actions_created_at", "admin_actions", ["created_at"])


def downgrade():
    op.drop_index("ix_admin_actions_created_at", table_name="admin_actions")
    op.drop_table("admin_actions")
