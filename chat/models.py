"""Database tables: identities, chats, messages, the stream audit trail and the billing ledger."""
from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, Uuid, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db


def utcnow() -> datetime:
    return datetime.now(UTC)


MICROS_PER_CREDIT = 1_000_000


class MessageStatus(str, enum.Enum):
    COMPLETE = "complete"
    STREAMING = "streaming"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    ERROR = "error"


class Identity(db.Model):
    """A guest (cookie) identity; owns chats and a credit balance."""

    __tablename__ = "identities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    balance_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    chats: Mapped[list[Chat]] = relationship(back_populates="owner", passive_deletes=True)

    @property
    def balance(self) -> float:
        return self.balance_micros / MICROS_PER_CREDIT


class Chat(db.Model):
    __tablename__ = "chats"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), nullable=False, index=True
    )
    agent_slug: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False, default="New chat")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    owner: Mapped[Identity] = relationship(back_populates="chats")
    messages: Mapped[list[Message]] = relationship(
        back_populates="chat", order_by="Message.position", passive_deletes=True
    )


class Message(db.Model):
    """One turn. An assistant message is created `streaming` when its reply starts and is
    completed exactly once by chat/finish.py (a conditional UPDATE on that status)."""

    __tablename__ = "messages"
    __table_args__ = (
        # At most one reply in progress per chat, enforced by the database itself.
        Index(
            "uq_messages_one_streaming_per_chat", "chat_id", unique=True,
            sqlite_where=db.text("status = 'streaming'"),
            postgresql_where=db.text("status = 'streaming'"),
        ),
        Index("ix_messages_chat_position", "chat_id", "position"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    chat_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # "user" | "assistant"
    content: Mapped[str] = mapped_column(Text, nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=MessageStatus.COMPLETE.value)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    stream_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    chat: Mapped[Chat] = relationship(back_populates="messages")

    @property
    def is_pending(self) -> bool:
        return self.status == MessageStatus.STREAMING.value

    @property
    def cost(self) -> float | None:
        return None if self.cost_micros is None else self.cost_micros / MICROS_PER_CREDIT


class ChatStream(db.Model):
    """Audit trail of every reply stream, kept after Redis has let the stream expire."""

    __tablename__ = "chat_streams"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    chat_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chats.id", ondelete="CASCADE"), nullable=False, index=True
    )
    stream_id: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class LedgerEntry(db.Model):
    """One charge per reply stream; the unique stream_id makes a second charge impossible."""

    __tablename__ = "ledger_entries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), nullable=False, index=True
    )
    stream_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), nullable=False)
    agent_slug: Mapped[str] = mapped_column(String(64), nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    cost_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


def insert_chat_stream(chat_id: uuid.UUID, stream_id: str) -> ChatStream:
    """Record a stream in the audit table (the caller's transaction commits it)."""
    row = ChatStream(chat_id=chat_id, stream_id=stream_id)
    db.session.add(row)
    return row


def get_recent_stream_id(chat_id: uuid.UUID) -> str | None:
    """The chat's newest stream id from the database, for when Redis has forgotten it."""
    return db.session.scalar(
        select(ChatStream.stream_id)
        .where(ChatStream.chat_id == chat_id)
        .order_by(ChatStream.created_at.desc(), ChatStream.id.desc())
        .limit(1)
    )
