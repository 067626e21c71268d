"""attachments: files and their content-addressed bytes

Revision ID: d4f7a2c8e1b9
Revises: c9e2a7b4d1f8
Create Date: 2026-12-07 00:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "d4f7a2c8e1b9"
down_revision = "c9e2a7b4d1f8"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "file_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("thumbnail", sa.LargeBinary(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("identity_id", sa.Uuid(), sa.ForeignKey("identities.id", ondelete="CASCADE"), nullable=False),
        sa.Column("message_id", sa.Uuid(), sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("text_chars", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_files_identity_id", "files", ["identity_id"])
    op.create_index("ix_files_message_id", "files", ["message_id"])
    op.create_index("ix_files_sha256", "files", ["sha256"])


def downgrade():
    op.drop_index("ix_files_sha256", table_name="files")
    op.drop_index("ix_files_message_id", table_name="files")
    op.drop_index("ix_files_identity_id", table_name="files")
    op.drop_table("files")
    op.drop_table("file_blobs")
