"""tool calls: one row per call of a reply, written before the call starts

Revision ID: f2b8d4e6a1c7
Revises: e5a7c3d19b60
Create Date: 2026-12-06 21:30:00

The row is the at-most-once guard of a tool call (unique per stream and toolCallId) and its
record: arguments, result, status and timings, and where it sits in the reply (its position and
the number of reply characters before it), so the stored reply tells text and calls in order.
A call that waits for a person's answer keeps its deadline and what its run needs to go on.
"""

import sqlalchemy as sa
from alembic import op

revision = "f2b8d4e6a1c7"
down_revision = "e5a7c3d19b60"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "tool_calls",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("message_id", sa.Uuid(), sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text_offset", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("executed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decide_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_state", sa.Text(), nullable=True),
        sa.UniqueConstraint("stream_id", "call_id", name="uq_tool_calls_stream_call"),
    )
    op.create_index("ix_tool_calls_message_id", "tool_calls", ["message_id"])
    op.create_index("ix_tool_calls_decide_by", "tool_calls", ["decide_by"])


def downgrade():
    op.drop_index("ix_tool_calls_decide_by", table_name="tool_calls")
    op.drop_index("ix_tool_calls_message_id", table_name="tool_calls")
    op.drop_table("tool_calls")
