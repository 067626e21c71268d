"""The operator console's audit trail: every admin action, who did it, to what, before and after
(written in the action's own transaction, so an action without its row cannot happen)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, Text, Uuid, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import Model, utcnow
from .people import Identity


class AdminAction(Model):
    __tablename__ = "admin_actions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    admin_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"))
    admin_email: Mapped[str] = mapped_column(String(320), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)  # an AdminActionKind
    target: Mapped[str] = mapped_column(String(200), nullable=False)
    before: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    after: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False, index=True)


def record_admin_action(admin: Identity, action: str, target: str, before: dict, after: dict) -> None:
    """Add the audit row, in the caller's transaction."""
    db.session.add(
        AdminAction(
            admin_id=admin.id,
            admin_email=admin.email or "",
            action=action,
            target=target,
            before=json.dumps(before, sort_keys=True),
            after=json.dumps(after, sort_keys=True),
            created_at=utcnow(),
        )
    )


def admin_actions(limit: int = 100) -> list[AdminAction]:
    return list(db.session.scalars(select(AdminAction).order_by(AdminAction.created_at.desc()).limit(limit)))


def accounts_matching(query: str, limit: int = 50) -> list[Identity]:
    """Accounts (not guests) whose email contains `query`, newest first."""
    found = select(Identity).where(Identity.email.is_not(None))
    if query:
        found = found.where(or_(Identity.email.contains(query.strip().lower())))
    return list(db.session.scalars(found.order_by(Identity.created_at.desc()).limit(limit)))
