"""Share links: read-only links to a chat. Only a SHA-256 of a link's token is stored (a copy of
the database opens no chat); revoking keeps the row, so the owner's list says what was revoked."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import DateTime, ForeignKey, String, Uuid, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import Model, utcnow
from .chats import Chat


class ShareLink(Model):
    __tablename__ = "share_links"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    chat_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), nullable=False, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


def share_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_share_link(chat_id: uuid.UUID) -> str:
    """A new link to the chat, committed; its token (128 random bits), which only the caller sees."""
    token = secrets.token_urlsafe(16)
    db.session.add(ShareLink(chat_id=chat_id, token_hash=share_token_hash(token), created_at=utcnow()))
    db.session.commit()
    return token


def share_links(chat_id: uuid.UUID) -> list[ShareLink]:
    return list(
        db.session.scalars(select(ShareLink).where(ShareLink.chat_id == chat_id).order_by(ShareLink.created_at))
    )


def revoke_share_link(chat_id: uuid.UUID, link_id: uuid.UUID) -> bool:
    """Revoke a link of the chat, and commit; False when it has none such (or it was revoked)."""
    revoked = db.session.execute(
        update(ShareLink)
        .where(ShareLink.id == link_id, ShareLink.chat_id == chat_id, ShareLink.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return cast(CursorResult, revoked).rowcount == 1


def shared_chat(token: str) -> tuple[ShareLink, Chat] | None:
    """The live link a token opens, and its chat; None for an unknown or revoked one."""
    row = db.session.execute(
        select(ShareLink, Chat)
        .join(Chat, Chat.id == ShareLink.chat_id)
        .where(ShareLink.token_hash == share_token_hash(token), ShareLink.revoked_at.is_(None))
    ).first()
    return (row[0], row[1]) if row is not None else None


def share_link_live(link_id: uuid.UUID) -> bool:
    return db.session.scalar(select(ShareLink.revoked_at.is_(None)).where(ShareLink.id == link_id)) is True
