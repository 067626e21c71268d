"""Finishing a reply: store the assistant message, its usage and its charge — exactly once.

Whoever finishes a reply (its producer, a stop request, a reader or the reaper that found the
producer dead) calls `record_reply`. The first caller's conditional UPDATE moves the message out
of `streaming`; every later caller's UPDATE matches no row, and they all get back what the first
one stored. The ledger row (unique per stream) is written in the same transaction, so a charge
can be neither doubled nor lost.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .agents import Agent, estimate_tokens
from .extensions import db
from .models import Chat, Identity, LedgerEntry, Message, MessageStatus, utcnow

STATUS_BY_REASON = {
    "stop": MessageStatus.COMPLETE,
    "length": MessageStatus.COMPLETE,
    "cancelled": MessageStatus.CANCELLED,
    "interrupted": MessageStatus.INTERRUPTED,
    "error": MessageStatus.ERROR,
}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class StoredReply:
    """The outcome as the database holds it, and the terminal stream event that tells it."""

    message_id: uuid.UUID
    status: str
    finish_reason: str
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    content: str

    @property
    def terminal_event(self) -> tuple[str, dict]:
        if self.status == MessageStatus.ERROR.value:
            return "error", {"message": self.error or "The reply failed."}
        return "finish", {
            "finishReason": self.finish_reason,
            "usage": {"promptTokens": self.prompt_tokens, "completionTokens": self.completion_tokens},
        }


def stored_reply(message: Message) -> StoredReply:
    return StoredReply(
        message_id=message.id, status=message.status, finish_reason=message.finish_reason or "stop",
        error=message.error, prompt_tokens=message.prompt_tokens or 0,
        completion_tokens=message.completion_tokens or 0, cost_micros=message.cost_micros or 0,
        content=message.content,
    )


def record_reply(stream_id: str, agents: Mapping[str, Agent], reason: str, text: str | None,
                 usage: Usage | None = None, error: str | None = None) -> StoredReply | None:
    """Store and bill the reply of `stream_id` unless it is already stored; return what is stored.

    `text` None means the log is lost: the provisional text saved by `save_partial` is used.
    Returns None when no message belongs to that stream (nothing to finish).
    """
    message = db.session.scalar(select(Message).where(Message.stream_id == stream_id))
    if message is None:
        return None
    if message.status != MessageStatus.STREAMING.value:
        return stored_reply(message)
    if text is None:
        text = message.content
    chat = db.session.get(Chat, message.chat_id)
    estimated = usage is None or usage.prompt_tokens is None or usage.completion_tokens is None
    prompt_tokens = usage.prompt_tokens if usage and usage.prompt_tokens is not None else (message.prompt_tokens or 0)
    completion_tokens = (usage.completion_tokens if usage and usage.completion_tokens is not None
                         else estimate_tokens(text))
    agent = agents.get(chat.agent_slug)
    # An agent removed from the config since the reply started is charged nothing, not crashed on.
    cost = agent.cost_micros(prompt_tokens, completion_tokens) if agent else 0
    now = utcnow()
    try:
        claimed = db.session.execute(
            update(Message)
            .where(Message.id == message.id, Message.status == MessageStatus.STREAMING.value)
            .values(content=text, status=STATUS_BY_REASON[reason].value, finish_reason=reason,
                    error=error, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    cost_micros=cost, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount == 1
        if claimed:
            charge(chat, stream_id, message.id, prompt_tokens, completion_tokens, estimated, cost)
            db.session.execute(update(Chat).where(Chat.id == chat.id).values(updated_at=now)
                               .execution_options(synchronize_session=False))
        db.session.commit()
    except IntegrityError:  # another finisher's ledger row won the race
        db.session.rollback()
    db.session.expire_all()
    return stored_reply(db.session.get(Message, message.id))


def charge(chat: Chat, charge_id: str, message_id: uuid.UUID, prompt_tokens: int, completion_tokens: int,
           estimated: bool, cost: int) -> None:
    """Add the ledger row (unique per `charge_id`) and debit the owner, in the caller's transaction."""
    db.session.add(LedgerEntry(
        identity_id=chat.identity_id, stream_id=charge_id, message_id=message_id, agent_slug=chat.agent_slug,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, usage_estimated=estimated,
        cost_micros=cost,
    ))
    db.session.execute(
        update(Identity).where(Identity.id == chat.identity_id)
        .values(balance_micros=Identity.balance_micros - cost)
        .execution_options(synchronize_session=False)
    )


def record_title(chat_id: uuid.UUID, message_id: uuid.UUID, agents: Mapping[str, Agent], title: str,
                 usage: Usage) -> bool:
    """Store a model-made chat title and charge its usage, once per chat; False if already done."""
    chat = db.session.get(Chat, chat_id)
    agent = agents.get(chat.agent_slug)
    estimated = usage.prompt_tokens is None or usage.completion_tokens is None
    prompt_tokens = usage.prompt_tokens if usage.prompt_tokens is not None else estimate_tokens(title) * 20
    completion_tokens = usage.completion_tokens if usage.completion_tokens is not None else estimate_tokens(title)
    cost = agent.cost_micros(prompt_tokens, completion_tokens) if agent else 0
    chat.title = title
    charge(chat, f"title-{chat_id}", message_id, prompt_tokens, completion_tokens, estimated, cost)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


def save_partial(stream_id: str, text: str) -> None:
    """Keep a still-streaming reply's text provisionally (not an outcome, nothing billed), for a
    finisher that later finds its log lost."""
    db.session.execute(
        update(Message).where(Message.stream_id == stream_id, Message.status == MessageStatus.STREAMING.value)
        .values(content=text).execution_options(synchronize_session=False)
    )
    db.session.commit()
