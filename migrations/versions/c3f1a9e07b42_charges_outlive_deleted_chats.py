"""charges outlive deleted chats: ledger_entries.message_id ON DELETE SET NULL

Revision ID: c3f1a9e07b42
Revises: 4b7e2c91d5a3
Create Date: 2026-12-02 15:45:00

Deleting a chat deletes its messages; the ledger rows that billed them stay (with no message),
so a balance is still minus the sum of its ledger's costs.
"""

from alembic import op

revision = "c3f1a9e07b42"
down_revision = "4b7e2c91d5a3"
branch_labels = None
depends_on = None

FOREIGN_KEY = "fk_ledger_entries_message_id_messages"


def replace_foreign_key(ondelete: str) -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_constraint(FOREIGN_KEY, type_="foreignkey")
        batch.create_foreign_key(FOREIGN_KEY, "messages", ["message_id"], ["id"], ondelete=ondelete)


def upgrade():
    replace_foreign_key("SET NULL")


def downgrade():
    replace_foreign_key("CASCADE")
