"""account limits: disabled accounts, monthly spend caps, allowed agents

Revision ID: e8b1c4d7f2a3
Revises: d4f7a2c8e1b9
Create Date: 2026-12-07 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "e8b1c4d7f2a3"
down_revision = "d4f7a2c8e1b9"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("monthly_cap_micros", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("allowed_agents", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("identities") as batch:
        batch.drop_column("allowed_agents")
        batch.drop_column("monthly_cap_micros")
        batch.drop_column("disabled_at")
