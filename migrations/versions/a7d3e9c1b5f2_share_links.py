"""share links: read-only links to a chat, stored as a SHA-256 of their token

Revision ID: a7d3e9c1b5f2
Revises: f2b8d4e6a1c7
Create Date: 2026-12-06 21:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "a7d3e9c1b5f2"
down_revision = "f2b8d4e6a1c7"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "share_links",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("chat_id", sa.Uuid(), sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_share_links_chat_id", "share_links", ["chat_id"])


def downgrade():
    op.drop_index("ix_share_links_chat_id", table_name="share_links")
    op.drop_table("share_links")
