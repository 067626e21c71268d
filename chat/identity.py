"""Guest identities: a signed session cookie names one; chats belong to exactly one.

The caller's identity is read once per request and kept in `g`; a caller without one is given
a new id (set as a cookie on this response) the first time anything asks for it.
"""

from __future__ import annotations

import uuid

from flask import current_app, g, session
from sqlalchemy import inspect

from .extensions import db
from .models import MICROS_PER_CREDIT, Identity, insert_or_ignore, utcnow

SESSION_KEY = "identity"


def current_identity_id() -> uuid.UUID:
    """The caller's identity id; a caller without one is given one (set on this response)."""
    if "identity_id" not in g:
        g.identity_id = identity_from_session() or new_guest_session()
    return g.identity_id


def identity_from_session() -> uuid.UUID | None:
    raw = session.get(SESSION_KEY)
    if raw:
        try:
            return uuid.UUID(raw)
        except ValueError:
            pass
    return None


def new_guest_session() -> uuid.UUID:
    identity_id = uuid.uuid4()
    session[SESSION_KEY] = str(identity_id)
    session.permanent = True
    return identity_id


def current_identity() -> Identity | None:
    """The caller's row (None until their first message creates it), loaded once per request."""
    if "identity" not in g:
        g.identity = db.session.get(Identity, current_identity_id())
    return g.identity


def identity_or_guest(identity_id: uuid.UUID) -> Identity:
    """The identity's row, or a new guest (with the credit grant) not stored yet: the caller adds
    it with `store_guest` in the transaction of its first message.

    Writing nothing here matters on SQLite under gevent: a write transaction held open across
    the Redis round trips that follow would stall every other request of the worker.
    """
    identity = db.session.get(Identity, identity_id)
    if identity is None:
        grant = current_app.config["GUEST_CREDIT_GRANT"] * MICROS_PER_CREDIT
        identity = Identity(id=identity_id, balance_micros=grant, created_at=utcnow())
    return identity


def store_guest(identity: Identity) -> None:
    """Add a guest from `identity_or_guest` unless it is stored (or a concurrent request of the
    same guest stored it first), in the caller's transaction."""
    if inspect(identity).transient:
        insert_or_ignore(
            Identity, id=identity.id, balance_micros=identity.balance_micros, created_at=identity.created_at
        )
        g.pop("identity", None)
