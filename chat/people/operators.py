"""What an operator does in the console (chat/views/admin.py), each action in one transaction
with its audit row. Only accounts with the admin flag get here (the view answers 404 otherwise)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ..extensions import db
from ..models import (
    Chat,
    Identity,
    active_admins,
    live_chats_of,
    record_admin_action,
    streaming_message,
    streaming_replies,
    utcnow,
)
from ..refusals import Refused
from ..replies import replies
from ..streams import StreamRef
from ..vocabulary import MICROS_PER_CREDIT, AdminActionKind
from . import credits


@dataclass(frozen=True)
class LiveReply:
    chat_id: uuid.UUID
    stream_id: str
    age_seconds: float
    producing: bool  # its producer still heart-beats (else the reaper will interrupt it)


def live_replies() -> list[LiveReply]:
    """Every reply still marked generating, and whether its producer lives (`flask replies
    status` and the console print this)."""
    pending = streaming_replies()
    refs = [StreamRef(str(reply.chat_id), reply.stream_id) for reply in pending]
    alive = replies().runtime.backend.alive(refs) if refs else []
    now = utcnow()
    return [
        LiveReply(
            reply.chat_id, reply.stream_id, (now - reply.created_at.replace(tzinfo=now.tzinfo)).total_seconds(), up
        )
        for reply, up in zip(pending, alive, strict=True)
    ]


def account_or_404(account_id: uuid.UUID) -> Identity:
    account = db.session.get(Identity, account_id)
    if account is None or account.email is None:
        raise Refused(404, "No such account.")
    return account


def adjust_credits(admin: Identity, account_id: uuid.UUID, micros: int, note: str) -> Identity:
    """Give an account credits (`micros` > 0) or take them (< 0, at most what it has free): a
    ledger row with the operator's note, audited.

    :raise Refused: 404 for no such account, 400 for taking more than it has available.
    """
    account = account_or_404(account_id)
    if micros < 0 and -micros > account.available_micros:
        raise Refused(
            400, f"{account.email} has only {max(account.available_micros, 0) / MICROS_PER_CREDIT:.2f} credits to take."
        )
    before = {"balance_micros": account.balance_micros}
    credits.grant(account.id, micros, f"admin-{'grant' if micros > 0 else 'take'}-{uuid.uuid4()}", note)
    db.session.flush()
    db.session.refresh(account)
    after = {"balance_micros": account.balance_micros, "granted_micros": micros, "note": note}
    kind = AdminActionKind.GRANT if micros > 0 else AdminActionKind.TAKE
    record_admin_action(admin, kind, account.email or "", before, after)
    db.session.commit()
    return account


def keep_an_admin(account: Identity) -> None:
    """:raise Refused: 409 when `account` is the last working admin (the console needs one)."""
    if account.is_admin and account.is_active and active_admins() <= 1:
        raise Refused(409, f"{account.email} is the last admin; make another account an admin first.")


def set_disabled(admin: Identity, account_id: uuid.UUID, disabled: bool) -> Identity:
    """Disable an account (signed out everywhere, its tokens refused, its live replies stopped
    as cancelled) or enable it again, audited.

    :raise Refused: 404 no such account, 409 the last admin.
    """
    account = account_or_404(account_id)
    if disabled:
        keep_an_admin(account)
    before = {"disabled": not account.is_active}
    account.disabled_at = utcnow() if disabled else None
    if disabled:
        account.session_epoch += 1
    kind = AdminActionKind.DISABLE if disabled else AdminActionKind.ENABLE
    record_admin_action(admin, kind, account.email or "", before, {"disabled": disabled})
    db.session.commit()
    for chat in live_chats_of(account.id) if disabled else []:
        replies().stop(chat)  # stored and billed as cancelled, as the owner's Stop would
    return account


def set_admin(admin: Identity, account_id: uuid.UUID, make: bool) -> Identity:
    """Make an account an admin or take that away (never from the last one), audited."""
    account = account_or_404(account_id)
    if not make:
        keep_an_admin(account)
    before = {"admin": account.is_admin}
    account.is_admin = make
    kind = AdminActionKind.MAKE_ADMIN if make else AdminActionKind.UNMAKE_ADMIN
    record_admin_action(admin, kind, account.email or "", before, {"admin": make})
    db.session.commit()
    return account


def set_limits(admin: Identity, account_id: uuid.UUID, cap_micros: int | None, agents: list[str] | None) -> Identity:
    """An account's own monthly spend cap (None: the default) and the agents it may use (None:
    all), audited."""
    account = account_or_404(account_id)
    before = {"monthly_cap_micros": account.monthly_cap_micros, "allowed_agents": account.allowed_agents}
    account.monthly_cap_micros = cap_micros
    account.allowed_agents = None if agents is None else ",".join(agents)
    after = {"monthly_cap_micros": account.monthly_cap_micros, "allowed_agents": account.allowed_agents}
    record_admin_action(admin, AdminActionKind.LIMITS, account.email or "", before, after)
    db.session.commit()
    return account


def stop_reply(admin: Identity, chat_id: uuid.UUID) -> bool:
    """Stop a chat's live reply (stored and billed as cancelled, like the owner's Stop), audited;
    False when nothing was live."""
    chat = db.session.get(Chat, chat_id)
    pending = streaming_message(chat_id) if chat is not None else None
    if chat is None or pending is None:
        return False
    stored = replies().stop(chat)
    after = {"status": stored.status if stored else "not live"}
    record_admin_action(admin, AdminActionKind.STOP_REPLY, f"chat {chat_id}", {"status": "streaming"}, after)
    db.session.commit()
    return True


def reap(admin: Identity) -> int:
    """Interrupt now every reply whose producer is gone (what the reaper does), audited."""
    finished = replies().reap()
    record_admin_action(admin, AdminActionKind.REAP, "replies", {}, {"interrupted": finished})
    db.session.commit()
    return finished
