"""versions of a turn: messages.turn_id and messages.superseded (regenerate, edit and resend)

Revision ID: d81e5c2a9f03
Revises: c3f1a9e07b42
Create Date: 2026-12-02 16:00:00

A turn is a user message and its reply. Regenerating the reply or editing the message keeps the
earlier version, marked superseded (hidden from the conversation and from what the model is
sent), and gives every version of the turn the same turn_id (the turn's first user message).
Messages from before this revision have no turn_id: each is its own single-version turn.
"""

import sqlalchemy as sa
from alembic import op

revision = "d81e5c2a9f03"
down_revision = "c3f1a9e07b42"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("turn_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("superseded", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.create_index(batch.f("ix_messages_turn_id"), ["turn_id"])


def downgrade():
    with op.batch_alter_table("messages") as batch:
        batch.drop_index(batch.f("ix_messages_turn_id"))
        batch.drop_column("superseded")
        batch.drop_column("turn_id")
