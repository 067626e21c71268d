"""Who is calling: a signed-in account (Flask-Login's session, or `Authorization: Bearer` with
a personal API token), else a guest named by the signed session cookie. Chats belong to exactly
one identity.

The caller's identity is read once per request and kept in `g`; a guest without one is given a
new id (set as a cookie on this response) the first time anything asks for it.
"""

from __future__ import annotations

import hashlib
import uuid

from flask import Flask, current_app, g, request, session
from flask_login import LoginManager, current_user
from sqlalchemy import inspect

from ..extensions import db
from ..models import Identity, account_by_token_hash, utcnow
from ..vocabulary import MICROS_PER_CREDIT
from . import credits

GUEST_KEY = "identity"  # the session key naming a guest (never set for an account)
login_manager = LoginManager()


class AuthenticationRequired(Exception):
    """No usable identity: a bad API token, or no account where guests are not allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "account.sign_in"
    login_manager.login_message = "Sign in to see that page."


@login_manager.user_loader
def load_account(user_id: str) -> Identity | None:
    """The account of a session, unless it was signed out everywhere since (its epoch moved on)."""
    raw_id, _, epoch = user_id.partition(":")
    try:
        identity = db.session.get(Identity, uuid.UUID(raw_id))
    except ValueError:
        return None
    if identity is None or identity.email is None or str(identity.session_epoch) != epoch or not identity.is_active:
        return None
    return identity


@login_manager.request_loader
def load_token_account(req) -> Identity | None:
    """`Authorization: Bearer <token>`: the token's account, for scripts (no cookie involved)."""
    scheme, _, token = req.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    account = account_by_token_hash(token_hash(token.strip()))
    return account if account is not None and account.is_active else None  # a disabled account's: 401


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def current_identity_id() -> uuid.UUID:
    """The caller's identity id; a guest without one is given one (set on this response).

    :raise AuthenticationRequired: an Authorization header that names no working token, or no
        account while ALLOW_GUESTS is off.
    """
    if "identity_id" not in g:
        if current_user.is_authenticated:
            g.identity_id = current_user.id
        elif "Authorization" in request.headers:
            raise AuthenticationRequired("This API token is not valid: it was revoked, or it is mistyped.")
        elif not current_app.config["ALLOW_GUESTS"]:
            raise AuthenticationRequired("Sign in first: this server does not allow guests.")
        else:
            g.identity_id = guest_from_session() or new_guest_session()
    return g.identity_id


def guest_from_session() -> uuid.UUID | None:
    raw = session.get(GUEST_KEY)
    if raw:
        try:
            return uuid.UUID(raw)
        except ValueError:
            pass
    return None


def new_guest_session() -> uuid.UUID:
    identity_id = uuid.uuid4()
    session[GUEST_KEY] = str(identity_id)
    session.permanent = True
    return identity_id


def current_identity() -> Identity | None:
    """The caller's row (None until a guest's first message creates it), loaded once per request."""
    if "identity" not in g:
        identity = db.session.get(Identity, current_identity_id())
        if identity is not None and identity.merged_into is not None:
            renew_guest()
            identity = None
        g.identity = identity
    return g.identity


def renew_guest() -> uuid.UUID:
    """A new guest for a session whose guest was merged into an account: a copy of a cookie from
    before that sign-up or sign-in (the browser that signed in holds a fresh session). It owns
    nothing, so it is given a new start instead of a guest nobody can use."""
    g.pop("identity", None)
    g.identity_id = new_guest_session()
    return g.identity_id


def identity_or_guest(identity_id: uuid.UUID) -> Identity:
    """The identity's row, or a new guest (with the credit grant) not stored yet: the caller adds
    it with `store_guest` in the transaction of its first message.

    Writing nothing here matters on SQLite under gevent: a write transaction held open across
    the Redis round trips that follow would stall every other request of the worker.
    """
    identity = db.session.get(Identity, identity_id)
    if identity is not None and identity.merged_into is not None:
        identity, identity_id = None, renew_guest()
    if identity is None:
        grant = current_app.config["GUEST_CREDIT_GRANT"] * MICROS_PER_CREDIT
        identity = Identity(
            id=identity_id, balance_micros=grant, reserved_micros=0, live_replies=0, created_at=utcnow()
        )
    return identity


def store_guest(identity: Identity) -> None:
    """Add a guest from `identity_or_guest` (with its grant) unless it is stored already, in the
    caller's transaction."""
    if inspect(identity).transient:
        credits.store_guest(identity.id, identity.balance_micros, identity.created_at)
        g.pop("identity", None)
