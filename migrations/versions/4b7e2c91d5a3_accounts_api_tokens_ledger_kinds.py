"""accounts (email, password, session epoch, merged guests), API tokens, grants in the ledger

Revision ID: 4b7e2c91d5a3
Revises: 8d06aff2cb9d
Create Date: 2026-12-02 11:00:00

Existing guests stay valid as they are. Every identity gets one opening grant in the ledger
equal to what its balance had beyond its charges, so from here on a balance is always minus the
sum of its ledger's costs.
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "4b7e2c91d5a3"
down_revision = "8d06aff2cb9d"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch.add_column(sa.Column("password_hash", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("session_epoch", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("merged_into", sa.Uuid(), nullable=True))
        batch.create_unique_constraint(batch.f("uq_identities_email"), ["email"])
        batch.create_foreign_key(
            batch.f("fk_identities_merged_into_identities"), "identities", ["merged_into"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), server_default="charge", nullable=False))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.alter_column("message_id", existing_type=sa.Uuid(), nullable=True)
        batch.alter_column("agent_slug", existing_type=sa.String(length=64), nullable=True)
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("identity_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_api_tokens_identity_id_identities"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_identity_id"), "api_tokens", ["identity_id"], unique=False)
    record_opening_grants()


def record_opening_grants():
    connection = op.get_bind()
    identities = sa.table("identities", sa.column("id", sa.Uuid()), sa.column("balance_micros", sa.BigInteger()))
    ledger = sa.table(
        "ledger_entries",
        sa.column("id", sa.Uuid()),
        sa.column("identity_id", sa.Uuid()),
        sa.column("kind", sa.String()),
        sa.column("stream_id", sa.String()),
        sa.column("prompt_tokens", sa.Integer()),
        sa.column("completion_tokens", sa.Integer()),
        sa.column("usage_estimated", sa.Boolean()),
        sa.column("cost_micros", sa.BigInteger()),
        sa.column("note", sa.Text()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    charged = (
        sa.select(ledger.c.identity_id, sa.func.sum(ledger.c.cost_micros).label("spent"))
        .group_by(ledger.c.identity_id)
        .subquery()
    )
    rows = connection.execute(
        sa.select(identities.c.id, identities.c.balance_micros, charged.c.spent).outerjoin(
            charged, charged.c.identity_id == identities.c.id
        )
    ).all()
    now = datetime.now(UTC)
    grants = [
        {
            "id": uuid.uuid4(),
            "identity_id": identity_id,
            "kind": "grant",
            "stream_id": f"grant-opening-{identity_id}",
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "usage_estimated": False,
            "cost_micros": -(balance + (spent or 0)),
            "note": "Credits held before the ledger recorded grants",
            "created_at": now,
        }
        for identity_id, balance, spent in rows
        if balance + (spent or 0) != 0
    ]
    if grants:
        op.bulk_insert(ledger, grants)


def downgrade():
    op.execute("DELETE FROM ledger_entries WHERE kind <> 'charge'")
    op.drop_index(op.f("ix_api_tokens_identity_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.alter_column("agent_slug", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("message_id", existing_type=sa.Uuid(), nullable=False)
        batch.drop_column("note")
        batch.drop_column("kind")
    with op.batch_alter_table("identities") as batch:
        batch.drop_constraint(batch.f("fk_identities_merged_into_identities"), type_="foreignkey")
        batch.drop_constraint(batch.f("uq_identities_email"), type_="unique")
        batch.drop_column("merged_into")
        batch.drop_column("session_epoch")
        batch.drop_column("is_admin")
        batch.drop_column("password_hash")
        batch.drop_column("email")
