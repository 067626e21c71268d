"""Identities (guests and accounts), their API tokens, the billing ledger and app secrets, with
the queries and writes on them: services call these named functions, never `select()` themselves.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    Uuid,
    bindparam,
    delete,
    false,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..vocabulary import MICROS_PER_CREDIT, LedgerKind
from .base import Model, table, utcnow


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
    # Set by an operator (the console): a disabled account cannot sign in or use its tokens.
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What it may spend in a calendar month (None: MONTHLY_SPEND_CAP), and the agents it may use
    # (None: every agent; else slugs, comma-separated).
    monthly_cap_micros: Mapped[int | None] = mapped_column(BigInteger)
    allowed_agents: Mapped[str | None] = mapped_column(Text)

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

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    is_anonymous = False

    def may_use(self, agent_slug: str) -> bool:
        return self.allowed_agents is None or agent_slug in self.allowed_agents.split(",")

    def get_id(self) -> str:
        """The session's user id: the account and its current epoch (see `session_epoch`)."""
        return f"{self.id}:{self.session_epoch}"


class AppSecret(Model):
    """A secret every host that shares this database must agree on (the session-signing key)."""

    __tablename__ = "app_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


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


def add_to_balance(identity_id: uuid.UUID, micros: int) -> None:
    db.session.execute(ADD_TO_BALANCE, {"identity_key": identity_id, "micros": micros})


def reserve_credit(identity_id: uuid.UUID, micros: int, live_cap: int) -> bool:
    """Hold `micros` of the identity's available credit for a reply, and one of its `live_cap`
    live replies; False (nothing held) when either is not there. One conditional UPDATE: two
    replies starting at once cannot both take the same credit."""
    return matched(
        db.session.execute(RESERVE_CREDIT, {"identity_key": identity_id, "micros": micros, "live_cap": live_cap})
    )


def release_credit(identity_id: uuid.UUID, micros: int) -> None:
    """Give back a finished reply's reservation (in the transaction that charges it)."""
    db.session.execute(RELEASE_CREDIT, {"identity_key": identity_id, "micros": micros})


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


def spent_since(identity_id: uuid.UUID, since: datetime) -> int:
    """What the identity's replies and titles were charged since `since`, in micro-credits."""
    return int(
        db.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.cost_micros), 0)).where(
                LedgerEntry.identity_id == identity_id,
                LedgerEntry.kind == LedgerKind.CHARGE,
                LedgerEntry.created_at >= since,
            )
        )
        or 0
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


def matched(result: object) -> bool:
    """Whether a conditional UPDATE matched its row."""
    return cast(CursorResult, result).rowcount == 1


def mark_guest_merged(guest_id: uuid.UUID, account_id: uuid.UUID) -> bool:
    """Mark a guest merged into the account; False when it is not a guest (any more): the one
    conditional UPDATE that lets a merge happen once however often it is asked for."""
    return matched(
        db.session.execute(
            update(Identity)
            .where(Identity.id == guest_id, Identity.email.is_(None), Identity.merged_into.is_(None))
            .values(merged_into=account_id)
        )
    )


def bump_session_epoch(account_id: uuid.UUID) -> None:
    """End every session of the account (their user id names the old epoch)."""
    db.session.execute(
        update(Identity).where(Identity.id == account_id).values(session_epoch=Identity.session_epoch + 1)
    )


def add_api_token(account_id: uuid.UUID, name: str, token_hash: str) -> None:
    db.session.add(ApiToken(identity_id=account_id, name=name, token_hash=token_hash))


def revoke_api_token(account_id: uuid.UUID, token_id: uuid.UUID) -> bool:
    """Revoke one of the account's working tokens; False when it has no such token."""
    return matched(
        db.session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.identity_id == account_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    )
