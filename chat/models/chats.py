"""Chats, their messages (a reply is a message `streaming` until finished) and the stream audit
trail, with the queries and writes on them: services call these named functions, never `select()`.
Longer than most modules because every query on these three tables is here, written once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    bindparam,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..vocabulary import CHAT_TITLE_MAX, MICROS_PER_CREDIT, MessageRole, MessageStatus
from .base import Model, insert_rows, table, utcnow
from .people import Identity


class Chat(Model):
    __tablename__ = "chats"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), nullable=False, index=True
    )
    agent_slug: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(CHAT_TITLE_MAX), nullable=False, default="New chat")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    @staticmethod
    def title_from(first_message: str, words: int = 6) -> str:
        """A new chat's title: the first words of its first message (a model may rename it)."""
        head = " ".join(first_message.split()[:words])
        return (head[:80] + ("…" if len(first_message.split()) > words else "")) or "New chat"

    messages: Mapped[list[Message]] = relationship(
        back_populates="chat", order_by="Message.position", passive_deletes=True
    )


class Message(Model):
    """One turn. An assistant message is created `streaming` when its reply starts and is
    completed exactly once by chat/replies/finish.py (a conditional UPDATE on that status)."""

    __tablename__ = "messages"
    __table_args__ = (
        # At most one reply in progress per chat, enforced by the database itself.
        Index(
            "uq_messages_one_streaming_per_chat",
            "chat_id",
            unique=True,
            sqlite_where=db.text("status = 'streaming'"),
            postgresql_where=db.text("status = 'streaming'"),
        ),
        Index("ix_messages_chat_position", "chat_id", "position"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    chat_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # a MessageRole
    content: Mapped[str] = mapped_column(Text, nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=MessageStatus.COMPLETE)
    finish_reason: Mapped[str | None] = mapped_column(String(16))  # a FinishReason
    error: Mapped[str | None] = mapped_column(Text)
    stream_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    # A reply's credit reservation and the identity holding it, given back when it is finished.
    reserved_micros: Mapped[int | None] = mapped_column(BigInteger)
    reserved_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Versions of a turn (regenerate, edit and resend): every version's messages carry the turn's
    # first user message id; an earlier version is superseded (kept, shown on request only, never
    # sent to the model). None: a turn with one version.
    turn_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    superseded: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    chat: Mapped[Chat] = relationship(back_populates="messages")

    @property
    def is_pending(self) -> bool:
        return self.status == MessageStatus.STREAMING

    @property
    def cost(self) -> float | None:
        return None if self.cost_micros is None else self.cost_micros / MICROS_PER_CREDIT


class ChatStream(Model):
    """Audit trail of every reply stream, kept after Redis has let the stream expire."""

    __tablename__ = "chat_streams"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    chat_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), nullable=False, index=True)
    stream_id: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


# -- queries ------------------------------------------------------------------------------------
def owned_chat(chat_id: uuid.UUID, identity_id: uuid.UUID) -> Chat | None:
    """The chat if it exists and is the caller's; a foreign chat looks exactly like a missing one."""
    chat = db.session.get(Chat, chat_id)
    return chat if chat is not None and chat.identity_id == identity_id else None


def recent_chats(identity_id: uuid.UUID, limit: int = 30) -> list[Chat]:
    """The identity's chats, most recently active first."""
    return list(
        db.session.scalars(
            select(Chat).where(Chat.identity_id == identity_id).order_by(Chat.updated_at.desc()).limit(limit)
        )
    )


CHATS_PER_PAGE = 30


def chats_page(identity_id: uuid.UUID, page: int, query: str = "") -> tuple[list[Chat], bool]:
    """One page (from 1) of the identity's chats, most recently active first, and whether more
    follow. With `query`: only chats whose title or any message contains it (case-insensitive)."""
    statement = select(Chat).where(Chat.identity_id == identity_id)
    if query:
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # Only the caller's own chats' messages are read: a search costs what the caller has
        # written, not what every user has (the messages are found through ix_messages_chat_position).
        in_messages = (
            select(Message.chat_id)
            .join(Chat, Chat.id == Message.chat_id)
            .where(Chat.identity_id == identity_id, Message.content.ilike(pattern, escape="\\"))
        )
        statement = statement.where(or_(Chat.title.ilike(pattern, escape="\\"), Chat.id.in_(in_messages)))
    rows = list(
        db.session.scalars(
            statement.order_by(Chat.updated_at.desc(), Chat.id)
            .offset((page - 1) * CHATS_PER_PAGE)
            .limit(CHATS_PER_PAGE + 1)
        )
    )
    return rows[:CHATS_PER_PAGE], len(rows) > CHATS_PER_PAGE


def chat_stream_ids(chat_id: uuid.UUID) -> list[str]:
    """Every stream the chat has had (the audit trail), for deleting what Redis still keeps."""
    return list(db.session.scalars(select(ChatStream.stream_id).where(ChatStream.chat_id == chat_id)))


def streaming_message(chat_id: uuid.UUID) -> Message | None:
    """The chat's reply in progress (at most one: a partial unique index says so)."""
    return db.session.scalar(
        select(Message).where(Message.chat_id == chat_id, Message.status == MessageStatus.STREAMING)
    )


class PendingReply(NamedTuple):
    chat_id: uuid.UUID
    stream_id: str
    created_at: datetime


STREAMING_REPLIES = (
    select(Message.chat_id, Message.stream_id, Message.created_at)
    .where(Message.status == MessageStatus.STREAMING)
    .limit(bindparam("limit"))
)


def streaming_replies(limit: int = 500) -> list[PendingReply]:
    """Replies still in progress in any chat (the reaper checks their producers every few
    seconds: three columns, not whole messages with their text)."""
    rows = db.session.execute(STREAMING_REPLIES, {"limit": limit})
    return [PendingReply(chat_id, str(stream_id), created_at) for chat_id, stream_id, created_at in rows]


def latest_reply(chat_id: uuid.UUID) -> Message | None:
    """The chat's newest assistant message, pending or not."""
    return db.session.scalar(
        select(Message)
        .where(Message.chat_id == chat_id, Message.role == MessageRole.ASSISTANT)
        .order_by(Message.position.desc())
        .limit(1)
    )


REPLY_AND_CHAT = (
    select(Message, Chat).join(Chat, Chat.id == Message.chat_id).where(Message.stream_id == bindparam("stream_id"))
)

NEXT_POSITION = select(func.max(Message.position)).where(Message.chat_id == bindparam("chat_id"))

# The SET clause comes from the parameters given (column names); the keys below are not columns.
FINISH_STREAMING = update(table(Message)).where(
    table(Message).c.id == bindparam("message_key"), table(Message).c.status == MessageStatus.STREAMING
)

TOUCH_CHAT = update(table(Chat)).where(table(Chat).c.id == bindparam("chat_key"))


def reply_and_chat(stream_id: str) -> tuple[Message, Chat] | None:
    """The reply of a stream and its chat, in one query (finishing needs both)."""
    row = db.session.execute(REPLY_AND_CHAT, {"stream_id": stream_id}).first()
    return (row[0], row[1]) if row is not None else None


def next_position(chat_id: uuid.UUID) -> int:
    return (db.session.scalar(NEXT_POSITION, {"chat_id": chat_id}) or 0) + 1


def finish_streaming(message_id: uuid.UUID, **columns: object) -> bool:
    """Set `columns` of a reply that is still streaming; False when it is not (any more)."""
    result = db.session.execute(FINISH_STREAMING, {"message_key": message_id, **columns})
    return cast(CursorResult, result).rowcount == 1


def touch_chat(chat_id: uuid.UUID, now: datetime) -> None:
    db.session.execute(TOUCH_CHAT, {"chat_key": chat_id, "updated_at": now})


def messages_page(chat_id: uuid.UUID, limit: int, before: int | None = None) -> tuple[list[Message], int | None]:
    """Up to `limit` current messages before position `before` (the newest without it), oldest
    first, and the position to page back from when earlier ones exist (else None)."""
    query = select(Message).where(Message.chat_id == chat_id, Message.superseded == false())
    if before is not None:
        query = query.where(Message.position < before)
    rows = list(db.session.scalars(query.order_by(Message.position.desc()).limit(limit + 1)))
    earlier = rows[limit - 1].position if len(rows) > limit else None
    return rows[:limit][::-1], earlier


def newest_messages(chat_id: uuid.UUID, limit: int) -> list[Message]:
    """The chat's last `limit` current messages, oldest first."""
    rows = db.session.scalars(
        select(Message)
        .where(Message.chat_id == chat_id, Message.superseded == false())
        .order_by(Message.position.desc())
        .limit(limit)
    ).all()
    return list(reversed(rows))


def prompt_before(reply: Message) -> Message | None:
    """The user's message that a reply answered (what Retry sends again, what a version shows)."""
    return db.session.scalar(
        select(Message)
        .where(Message.chat_id == reply.chat_id, Message.role == MessageRole.USER, Message.position < reply.position)
        .order_by(Message.position.desc())
        .limit(1)
    )


def turn_versions(turn_id: uuid.UUID) -> list[Message]:
    """Every reply a turn has had, oldest first: its versions."""
    return list(
        db.session.scalars(
            select(Message)
            .where(Message.turn_id == turn_id, Message.role == MessageRole.ASSISTANT)
            .order_by(Message.position)
        )
    )


def conversation(
    chat_id: uuid.UUID, char_budget: int, limit: int = 200, leaving_out: Sequence[uuid.UUID] = ()
) -> list[Message]:
    """The newest non-empty current messages (but `leaving_out`) that fit `char_budget`
    characters, oldest first."""
    kept: list[Message] = []
    for message in db.session.scalars(
        select(Message)
        .where(
            Message.chat_id == chat_id,
            Message.content != "",
            Message.superseded == false(),
            Message.id.not_in(leaving_out),
        )
        .order_by(Message.position.desc())
        .limit(limit)
    ):
        char_budget -= len(message.content)
        if char_budget < 0:
            break
        kept.append(message)
    return list(reversed(kept))


def insert_chat_stream(chat_id: uuid.UUID, stream_id: str) -> None:
    """Record a stream in the audit table (the caller's transaction commits it)."""
    insert_rows(ChatStream, [{"chat_id": chat_id, "stream_id": stream_id}])


def get_recent_stream_id(chat_id: uuid.UUID) -> str | None:
    """The chat's newest stream id from the database, for when Redis has forgotten it."""
    return db.session.scalar(
        select(ChatStream.stream_id)
        .where(ChatStream.chat_id == chat_id)
        .order_by(ChatStream.created_at.desc(), ChatStream.id.desc())
        .limit(1)
    )


def move_guest_chats(guest_id: uuid.UUID, account_id: uuid.UUID) -> None:
    """Give a guest's chats to the account it is merging into, while it is still an unmerged guest.

    It runs before the guest is marked merged: the chats' rows, then the identity's, the order of
    every transaction that writes both (a reply starting in one of these chats takes them so).
    A second merge of the same guest waits on these rows and then finds none of them its own.
    """
    still_a_guest = (
        select(Identity.id)
        .where(Identity.id == guest_id, Identity.email.is_(None), Identity.merged_into.is_(None))
        .exists()
    )
    db.session.execute(
        update(Chat)
        .where(Chat.identity_id == guest_id, still_a_guest)
        .values(identity_id=account_id)
        .execution_options(synchronize_session=False)
    )


def write_provisional_text(stream_id: str, text: str) -> None:
    """Keep a still-streaming reply's text provisionally (not an outcome, nothing billed), for a
    finisher that later finds its log lost."""
    db.session.execute(
        update(Message)
        .where(Message.stream_id == stream_id, Message.status == MessageStatus.STREAMING)
        .values(content=text)
        .execution_options(synchronize_session=False)
    )


def fork_chat(
    source: Chat, up_to: Message, owner_id: uuid.UUID, fork_id: uuid.UUID, now: datetime
) -> dict[uuid.UUID, uuid.UUID]:
    """Copy `source` up to and including `up_to` (every version of its turns as they were) into a
    new chat of `owner_id`, in the caller's transaction. The copy has no streams and no costs of
    its own: nothing in it was generated or billed for its owner. Returns each copied message's
    new id, by its old one."""
    rows = list(
        db.session.scalars(
            select(Message)
            .where(Message.chat_id == source.id, Message.position <= up_to.position)
            .order_by(Message.position)
        )
    )
    new_ids = {message.id: uuid.uuid4() for message in rows}
    title = f"{source.title} (fork)"[:CHAT_TITLE_MAX]
    chat = {"id": fork_id, "identity_id": owner_id, "agent_slug": source.agent_slug, "title": title}
    insert_rows(Chat, [{**chat, "created_at": now, "updated_at": now}])
    insert_rows(
        Message,
        [
            {
                "id": new_ids[message.id],
                "chat_id": fork_id,
                "position": message.position,
                "role": message.role,
                "content": message.content,
                "status": message.status,
                "finish_reason": message.finish_reason,
                "error": message.error,
                "turn_id": new_ids.get(message.turn_id) if message.turn_id else None,
                "superseded": message.superseded,
                "created_at": message.created_at,
                "updated_at": now,
            }
            for message in rows
        ],
    )
    return new_ids
