"""Accounts: sign up, sign in (taking the guest's chats and balance along), sign out everywhere,
passwords and personal API tokens. The views and `flask users …` call these; they commit.

A guest who signs up or signs in is merged into the account: one conditional UPDATE marks the
guest merged, and only the request whose UPDATE matched moves the chats and the balance, so a
double submit merges exactly once. An account never takes a guest's id: whoever still holds the
guest's cookie holds a merged guest that owns nothing (chat/people/identity.py starts them afresh).
"""

from __future__ import annotations

import functools
import re
import secrets
import uuid

from flask import current_app
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..background import off_loop
from ..extensions import db
from ..models import (
    Identity,
    account_by_email,
    add_api_token,
    bump_session_epoch,
    insert_or_ignore,
    mark_guest_merged,
    move_guest_chats,
    move_guest_files,
    revoke_api_token,
    utcnow,
)
from ..refusals import Refused
from . import credits
from .identity import token_hash

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
WRONG_CREDENTIALS = "Wrong email or password."


class AccountError(Refused):
    """Input the account service refuses; `status` is the HTTP status that says why."""


def normalized_email(raw: str) -> str:
    email = raw.strip().lower()
    if len(email) > 254 or not EMAIL.match(email):
        raise AccountError(400, "That is not an email address (it should look like name@example.com).")
    return email


def checked_password(raw: str) -> str:
    minimum = current_app.config["MIN_PASSWORD_LENGTH"]
    if len(raw) < minimum:
        raise AccountError(400, f"Choose a password of at least {minimum} characters.")
    if len(raw) > 1024:
        raise AccountError(400, "That password is too long (1,024 characters at most).")
    return raw


def sign_up(email: str, password: str, guest_id: uuid.UUID | None) -> Identity:
    """A new account with the sign-up grant; the caller's guest chats and balance move into it.

    The account gets an id of its own, never the guest's: a copy of the guest's cookie (taken on a
    shared computer, or planted before sign-up) then names a merged guest that owns nothing.

    :raise AccountError: 400 bad email or password, 409 the email already has an account.
    """
    email, password = normalized_email(email), checked_password(password)
    password_hash = off_loop(generate_password_hash, password)
    account_id = uuid.uuid4()
    try:
        db.session.add(Identity(id=account_id, email=email, password_hash=password_hash, balance_micros=0))
        db.session.flush()
        grant = credits.credits_to_micros(current_app.config["SIGNUP_CREDIT_GRANT"])
        credits.grant(account_id, grant, f"grant-signup-{account_id}", "Sign-up credits")
        if guest_id is not None:
            move_guest(guest_id, account_id)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        existing = account_by_email(email)
        if existing is None:
            raise
        return same_sign_up_again(existing, password, guest_id)
    return db.session.get_one(Identity, account_id)


def same_sign_up_again(account: Identity, password: str, guest_id: uuid.UUID | None) -> Identity:
    """The sign-up form sent twice from one browser: its first submit made this very account
    (and merged this guest into it, granted once); the same password signs in to it."""
    guest = db.session.get(Identity, guest_id) if guest_id is not None else None
    if guest is None or guest.merged_into != account.id or not password_matches(account, password):
        raise AccountError(409, "An account with that email already exists. Sign in instead.")
    return account


def sign_in(email: str, password: str, guest_id: uuid.UUID | None) -> Identity:
    """The account, after moving the caller's guest chats and balance into it (once).

    :raise AccountError: 401 with the same message for an unknown email and a wrong password.
    """
    account = account_by_email(email.strip().lower())
    if account is None:
        off_loop(check_password_hash, unused_hash(), password)  # as slow as a wrong password
        raise AccountError(401, WRONG_CREDENTIALS)
    if not password_matches(account, password):
        raise AccountError(401, WRONG_CREDENTIALS)
    if not account.is_active:
        raise AccountError(403, "This account is disabled; ask the operator of this server.")
    if guest_id is not None and guest_id != account.id:
        merge_guest(guest_id, account.id)
    return account


def password_matches(account: Identity, password: str) -> bool:
    return account.password_hash is not None and off_loop(check_password_hash, account.password_hash, password)


@functools.cache
def unused_hash() -> str:
    return generate_password_hash(secrets.token_hex(16))


def merge_guest(guest_id: uuid.UUID, account_id: uuid.UUID) -> bool:
    """Move a guest's chats and balance into the account and commit; True if this call did it."""
    claimed = move_guest(guest_id, account_id)
    db.session.commit()
    return claimed


def move_guest(guest_id: uuid.UUID, account_id: uuid.UUID) -> bool:
    """`merge_guest` in the caller's transaction. The guest's chats move while it is a guest, then
    one conditional UPDATE marks it merged; only the call whose UPDATE matched moves its balance,
    so a double submit moves once."""
    move_guest_chats(guest_id, account_id)
    move_guest_files(guest_id, account_id)
    claimed = mark_guest_merged(guest_id, account_id)
    if not claimed and db.session.get(Identity, guest_id) is None:
        # A guest that never sent a message has no row: one is kept, merged, so that its id is
        # never a guest again and a second submit of the same form is known for what it is.
        insert_or_ignore(Identity, id=guest_id, balance_micros=0, merged_into=account_id, created_at=utcnow())
    if claimed:
        guest = db.session.get_one(Identity, guest_id, populate_existing=True)
        credits.transfer_balance(guest, account_id, "Guest credits brought along")
    return claimed


def sign_out_everywhere(account: Identity) -> None:
    """Every session of the account stops working (their user id names the old epoch)."""
    bump_session_epoch(account.id)
    db.session.commit()


def set_password(account: Identity, password: str) -> None:
    """A new password; every session signed in with the old one ends."""
    account.password_hash = off_loop(generate_password_hash, checked_password(password))
    account.session_epoch += 1
    db.session.commit()


def create_account(email: str, password: str, admin: bool = False) -> Identity:
    """An operator's `flask users create`: an account with the sign-up grant."""
    account = sign_up(email, password, None)
    account.is_admin = admin
    db.session.commit()
    return account


def create_token(account: Identity, name: str) -> str:
    """A new personal API token; the only time its text exists outside the caller's hands."""
    name = name.strip()[:100] or "API token"
    token = "dct_" + secrets.token_urlsafe(32)
    add_api_token(account.id, name, token_hash(token))
    db.session.commit()
    return token


def revoke_token(account: Identity, token_id: uuid.UUID) -> bool:
    """Revoke one of the account's tokens; False when it has no such working token."""
    revoked = revoke_api_token(account.id, token_id)
    db.session.commit()
    return revoked
