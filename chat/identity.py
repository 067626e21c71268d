"""Guest identities: a signed session cookie names one; chats belong to exactly one."""
from __future__ import annotations

import uuid

from flask import current_app, session
from sqlalchemy.exc import IntegrityError

from .extensions import db
from .models import MICROS_PER_CREDIT, Chat, Identity

SESSION_KEY = "identity"


def current_identity_id() -> uuid.UUID:
    """The caller's identity id; a caller without one is given one (set on this response)."""
    raw = session.get(SESSION_KEY)
    if raw:
        try:
            return uuid.UUID(raw)
        except ValueError:
            pass
    identity_id = uuid.uuid4()
    session[SESSION_KEY] = str(identity_id)
    session.permanent = True
    return identity_id


def find_identity(identity_id: uuid.UUID) -> Identity | None:
    return db.session.get(Identity, identity_id)


def ensure_identity(identity_id: uuid.UUID) -> Identity:
    """The identity's row, created with the guest credit grant on first use."""
    identity = db.session.get(Identity, identity_id)
    if identity is not None:
        return identity
    grant = current_app.config["GUEST_CREDIT_GRANT"] * MICROS_PER_CREDIT
    db.session.add(Identity(id=identity_id, balance_micros=grant))
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent request of the same guest created it first
        db.session.rollback()
    return db.session.get(Identity, identity_id)


def owned_chat(chat_id: uuid.UUID, identity_id: uuid.UUID) -> Chat | None:
    """The chat if it exists and is the caller's; a foreign chat looks exactly like a missing one."""
    chat = db.session.get(Chat, chat_id)
    return chat if chat is not None and chat.identity_id == identity_id else None
