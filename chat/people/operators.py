"""What an operator does in the console (chat/views/admin.py), each action in one transaction
with its audit row. Only accounts with the admin flag get here (the view answers 404 otherwise)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ..extensions import db
from ..models import Chat, Identity, record_admin_action, streaming_message, streaming_replies, utcnow
from ..refusals import Refused
from ..replies import replies
from ..streams import StreamRef
from ..vocabulary import AdminActionKind
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


def grant_credits(admin: Identity, account_id: uuid.UUID, micros: int, note: str) -> Identity:
    """Give an account credits (a ledger row with the operator's note) and audit it.

    :raise Refused: 404 for no such account.
    """
    account = db.session.get(Identity, account_id)
    if account is None or account.email is None:
        raise Refused(404, "No such account.")
    before = {"balance_micros": account.balance_micros}
    credits.grant(account.id, micros, f"admin-grant-{uuid.uuid4()}", note)
    db.session.flush()
    db.session.refresh(account)
    after = {"balance_micros": account.balance_micros, "granted_micros": micros, "note": note}
    record_admin_action(admin, AdminActionKind.GRANT, account.email, before, after)
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
