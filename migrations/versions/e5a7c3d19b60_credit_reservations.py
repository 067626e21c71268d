"""credit reservations: identities.reserved_micros and live_replies, messages.reserved_micros and reserved_by

Revision ID: e5a7c3d19b60
Revises: d81e5c2a9f03
Create Date: 2026-12-06 18:30:00

A reply reserves credit when it starts (its prompt plus `max_tokens` at the agent's price, at
most what is available) and gives the reservation back when it is finished, in the transaction
that charges it: a burst of messages cannot spend more than the balance. The reservation is
kept on the identity that made it (`reserved_by`), which a merge into an account never moves.
"""

import sqlalchemy as sa
from alembic import op

revision = "e5a7c3d19b60"
down_revision = "d81e5c2a9f03"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("reserved_micros", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("live_replies", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reserved_micros", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("reserved_by", sa.Uuid(), nullable=True))


def downgrade():
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("reserved_by")
        batch.drop_column("reserved_micros")
    with op.batch_alter_table("identities") as batch:
        batch.drop_column("live_replies")
        batch.drop_column("reserved_micros")
