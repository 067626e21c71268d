"""Database tables (identities, chats, messages, the stream audit trail, the billing ledger) and
the queries on them: views and services call these named functions, never `select()` themselves.
The tables and their queries share this module (it is longer than most for that reason), so no
query is written twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    Uuid,
    bindparam,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.dml import Insert

from .extensions import db

if TYPE_CHECKING:  # what db.Model is at run time, for the type checker (it cannot see through db)
    from sqlalchemy.orm import DeclarativeBase as Model
else:
    Model = db.Model


def utcnow() -> datetime:
    return datetime.now(UTC)


MICROS_PER_CREDIT = 1_000_000


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    STREAMING = "streaming"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    ERROR = "error"


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(StrEnum):
    """Why a reply ended: the `finishReason` of the API's `finish` event, and the message's
    `finish_reason` column (`error` ends with an `error` event instead)."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    ERROR = "error"

    @property
    def status(self) -> MessageStatus:
        """The stored status of a reply that ended for this reason."""
        return {
            FinishReason.STOP: MessageStatus.COMPLETE,
            FinishReason.LENGTH: MessageStatus.COMPLETE,
            FinishReason.CANCELLED: MessageStatus.CANCELLED,
            FinishReason.INTERRUPTED: MessageStatus.INTERRUPTED,
            FinishReason.ERROR: MessageStatus.ERROR,
        }[self]


# The statuses a reply can end in short of complete; the page offers Retry on them.
FAILED_STATUSES = frozenset({MessageStatus.INTERRUPTED, MessageStatus.CANCELLED, MessageStatus.ERROR})


class Identity(Model):
    """Whoever owns chats and credits: a guest (a cookie), or an account (a guest that signed up:
    email and password set). Flask-Login's user object for accounts."""

    __tablename__ = "identities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    balance_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)  # lower-cased; None for guests
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    # Part of every session's user id: raising it signs the account out everywhere.
    session_epoch: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Credit held by replies being written (their prompt plus max_tokens, at most what was
    # available), and how many: what a new reply may spend is balance - reserved.
    reserved_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    live_replies: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # A guest that signed in to an account: its chats and balance moved there, once.
    merged_into: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"))

    chats: Mapped[list[Chat]] = relationship(back_populates="owner", passive_deletes=True)

    @property
    def balance(self) -> float:
        return self.balance_micros / MICROS_PER_CREDIT

    @property
    def available_micros(self) -> int:
        """What a new reply may spend: the balance less what live replies hold."""
        return self.balance_micros - self.reserved_micros

    # -- Flask-Login -------------------------------------------------------------------------
    @property
    def is_authenticated(self) -> bool:
        return self.email is not None

    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        """The session's user id: the account and its current epoch (see `session_epoch`)."""
        return f"{self.id}:{self.session_epoch}"


CHAT_TITLE_MAX = 200


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

    owner: Mapped[Identity] = relationship(back_populates="chats")

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
    completed exactly once by chat/finish.py (a conditional UPDATE on that status)."""

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


class AppSecret(Model):
    """A secret every host that shares this database must agree on (the session-signing key)."""

    __tablename__ = "app_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class ChatStream(Model):
    """Audit trail of every reply stream, kept after Redis has let the stream expire."""

    __tablename__ = "chat_streams"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    chat_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), nullable=False, index=True)
    stream_id: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class LedgerKind(StrEnum):
    CHARGE = "charge"  # a reply or a chat title
    GRANT = "grant"  # credits given: to a new guest, at sign-up, by an operator
    TRANSFER = "transfer"  # a guest's balance moved into the account it signed in to


class LedgerEntry(Model):
    """Every change of a balance, so a balance is always minus the sum of its `cost_micros`.

    `stream_id` is the entry's unique key: the reply's stream for a charge (so a reply can be
    charged only once), `title-…`, `grant-…` or `transfer-…` otherwise.
    """

    __tablename__ = "ledger_entries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[LedgerKind] = mapped_column(
        String(16), nullable=False, default=LedgerKind.CHARGE, server_default=LedgerKind.CHARGE.value
    )
    stream_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    agent_slug: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # What the entry takes from the balance: negative for grants and incoming transfers.
    cost_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class ApiToken(Model):
    """A personal API token (`Authorization: Bearer …`); only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    identity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


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


# -- every reply's start and finish ---------------------------------------------------------------
# These run once or twice per reply on the worker's one loop, so they are built once, with their
# values bound at execution: building a statement costs SQLAlchemy about four times what running a
# built one does (it works out the statement's cache key anew each time), and an ORM flush more.


def table(model: type[Model]) -> Table:
    return model.__table__  # type: ignore[return-value]


REPLY_AND_CHAT = (
    select(Message, Chat).join(Chat, Chat.id == Message.chat_id).where(Message.stream_id == bindparam("stream_id"))
)
NEXT_POSITION = select(func.max(Message.position)).where(Message.chat_id == bindparam("chat_id"))
# The SET clause comes from the parameters given (column names); the keys below are not columns.
FINISH_STREAMING = update(table(Message)).where(
    table(Message).c.id == bindparam("message_key"), table(Message).c.status == MessageStatus.STREAMING
)
TOUCH_CHAT = update(table(Chat)).where(table(Chat).c.id == bindparam("chat_key"))
ADD_TO_BALANCE = (
    update(table(Identity))
    .where(table(Identity).c.id == bindparam("identity_key"))
    .values(balance_micros=table(Identity).c.balance_micros + bindparam("micros"))
)
RESERVE_CREDIT = (
    update(table(Identity))
    .where(
        table(Identity).c.id == bindparam("identity_key"),
        table(Identity).c.balance_micros - table(Identity).c.reserved_micros > 0,
        table(Identity).c.balance_micros - table(Identity).c.reserved_micros >= bindparam("micros"),
        table(Identity).c.live_replies < bindparam("live_cap"),
    )
    .values(
        reserved_micros=table(Identity).c.reserved_micros + bindparam("micros"),
        live_replies=table(Identity).c.live_replies + 1,
    )
)
RELEASE_CREDIT = (
    update(table(Identity))
    .where(table(Identity).c.id == bindparam("identity_key"))
    .values(
        reserved_micros=table(Identity).c.reserved_micros - bindparam("micros"),
        live_replies=table(Identity).c.live_replies - 1,
    )
)
INSERT: dict[type[Model], Insert] = {}
INSERT_OR_IGNORE: dict[tuple[type[Model], str], Insert] = {}


def reply_and_chat(stream_id: str) -> tuple[Message, Chat] | None:
    """The reply of a stream and its chat, in one query (finishing needs both)."""
    row = db.session.execute(REPLY_AND_CHAT, {"stream_id": stream_id}).first()
    return (row[0], row[1]) if row is not None else None


def next_position(chat_id: uuid.UUID) -> int:
    return (db.session.scalar(NEXT_POSITION, {"chat_id": chat_id}) or 0) + 1


def insert_rows(model: type[Model], rows: Sequence[Mapping[str, object]]) -> None:
    """INSERT rows of `model` (columns left out take their defaults), in the caller's
    transaction, without the ORM's unit of work: nothing here needs the objects afterwards."""
    statement = INSERT.get(model)
    if statement is None:
        statement = INSERT[model] = insert(table(model))
    db.session.execute(statement, list(rows))


def finish_streaming(message_id: uuid.UUID, **columns: object) -> bool:
    """Set `columns` of a reply that is still streaming; False when it is not (any more)."""
    result = db.session.execute(FINISH_STREAMING, {"message_key": message_id, **columns})
    return cast(CursorResult, result).rowcount == 1


def touch_chat(chat_id: uuid.UUID, now: datetime) -> None:
    db.session.execute(TOUCH_CHAT, {"chat_key": chat_id, "updated_at": now})


def add_to_balance(identity_id: uuid.UUID, micros: int) -> None:
    db.session.execute(ADD_TO_BALANCE, {"identity_key": identity_id, "micros": micros})


def reserve_credit(identity_id: uuid.UUID, micros: int, live_cap: int) -> bool:
    """Hold `micros` of the identity's available credit for a reply, and one of its `live_cap`
    live replies; False (nothing held) when either is not there. One conditional UPDATE: two
    replies starting at once cannot both take the same credit."""
    result = db.session.execute(RESERVE_CREDIT, {"identity_key": identity_id, "micros": micros, "live_cap": live_cap})
    return cast(CursorResult, result).rowcount == 1


def release_credit(identity_id: uuid.UUID, micros: int) -> None:
    """Give back a finished reply's reservation (in the transaction that charges it)."""
    db.session.execute(RELEASE_CREDIT, {"identity_key": identity_id, "micros": micros})


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


def app_secret(name: str) -> str | None:
    """A shared secret, read on a connection of its own (outside any request's transaction)."""
    with db.engine.connect() as connection:
        return connection.scalar(select(AppSecret.value).where(AppSecret.name == name))


def create_app_secret(name: str, value: str) -> str:
    """Insert `name` unless a concurrent host did first; either way return the stored value."""
    try:
        with db.engine.begin() as connection:
            connection.execute(insert(AppSecret).values(name=name, value=value))
    except IntegrityError:
        pass  # another host won the race: its value is the value
    stored = app_secret(name)
    assert stored is not None, f"{name} was inserted or already present"
    return stored


def replace_app_secret(name: str, previous_name: str, value: str) -> None:
    """Make `value` the secret `name`, keeping the old one as `previous_name`, in one transaction."""
    with db.engine.begin() as connection:
        old = connection.scalar(select(AppSecret.value).where(AppSecret.name == name))
        connection.execute(delete(AppSecret).where(AppSecret.name.in_([name, previous_name])))
        if old:
            connection.execute(insert(AppSecret).values(name=previous_name, value=old))
        connection.execute(insert(AppSecret).values(name=name, value=value))


def account_by_email(email: str) -> Identity | None:
    return db.session.scalar(select(Identity).where(Identity.email == email))


def ledger(identity_id: uuid.UUID, limit: int = 50) -> list[LedgerEntry]:
    """The identity's newest ledger entries, newest first."""
    return list(
        db.session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.identity_id == identity_id)
            .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id)
            .limit(limit)
        )
    )


def ledger_sum(identity_id: uuid.UUID) -> int:
    """What the ledger says the balance is (minus the sum of its costs)."""
    return -(
        db.session.scalar(select(func.sum(LedgerEntry.cost_micros)).where(LedgerEntry.identity_id == identity_id)) or 0
    )


def api_tokens(identity_id: uuid.UUID) -> list[ApiToken]:
    """The account's tokens that still work, newest first."""
    return list(
        db.session.scalars(
            select(ApiToken)
            .where(ApiToken.identity_id == identity_id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.created_at.desc())
        )
    )


def account_by_token_hash(token_hash: str) -> Identity | None:
    """The account a working (unrevoked) token belongs to."""
    return db.session.scalar(
        select(Identity)
        .join(ApiToken, ApiToken.identity_id == Identity.id)
        .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None), Identity.email.is_not(None))
    )


def insert_or_ignore(model: type[Model], **values: object) -> None:
    """INSERT a row unless one with its key exists (a concurrent request added it first), in the
    caller's transaction: `INSERT … ON CONFLICT DO NOTHING` on SQLite and PostgreSQL alike."""
    dialect = db.session.get_bind().dialect.name
    statement = INSERT_OR_IGNORE.get((model, dialect))
    if statement is None:
        insert_into = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = INSERT_OR_IGNORE[model, dialect] = insert_into(table(model)).on_conflict_do_nothing()
    db.session.execute(statement, values)


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
