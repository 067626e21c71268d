"""A turn as it is stored: the user's message and its reply's row, written in one transaction
with the reply's credit reservation; the history the model is sent; versions of a turn
(regenerate, edit). What the service refuses a turn with, and why, is here too."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import cast

from sqlalchemy import inspect

from .. import files as uploads
from ..agents import Agent, ModelMessages
from ..extensions import db
from ..models import (
    Chat,
    Identity,
    Message,
    StoredFile,
    attach_files,
    conversation,
    files_of_messages,
    insert_chat_stream,
    insert_rows,
    newest_messages,
    next_position,
    reserve_credit,
    spent_since,
    streaming_message,
    touch_chat,
    utcnow,
)
from ..people.identity import store_guest
from ..refusals import Refused
from ..vocabulary import MICROS_PER_CREDIT, MessageRole, MessageStatus
from .producer import ReplyHandle

CHAT_BUSY = "A reply is already being generated in this chat; wait for it or stop it."
TOO_MANY_STREAMS = "You have too many streams open at once; close a tab or wait for a reply to end."
TOO_MANY_LIVE = "You have too many replies being written at once; wait for one to finish."


class ReplyError(Refused):
    """A request the reply service refuses; `status` is the HTTP status that says why."""


def not_enough_credit(identity: Identity, reserve: int) -> str:
    held = f", {identity.reserved_micros / MICROS_PER_CREDIT:.2f} of it held by replies being written"
    return (
        f"Not enough credit: this reply may cost up to {reserve / MICROS_PER_CREDIT:.2f} credits and your "
        f"balance is {identity.balance:.2f}{held if identity.reserved_micros else ''}."
    )


@dataclasses.dataclass(frozen=True)
class Revision:
    """A reply that is a new version of the chat's last turn: its turn, the messages of the
    version it replaces, and whether the user's message is new too (an edit) or the same."""

    turn_id: uuid.UUID
    supersede: list[uuid.UUID]
    new_message: bool
    resent: uuid.UUID | None = None  # the user's message a regenerate sends again
    carried: uuid.UUID | None = None  # the interrupted reply a Continue carries on (its text and calls)

    @property
    def left_out(self) -> list[uuid.UUID]:
        """Messages the model is not sent as history (the text to answer comes last anyway)."""
        return [*self.supersede, *([self.resent] if self.resent else [])]


def check_limits(identity: Identity, agent: Agent, default_cap_micros: int) -> None:
    """What an operator set for the identity (chat/people/operators.py): the agents it may use,
    and what it may spend in a calendar month (its own cap, else the default; 0: none). A month's
    spend counts what was charged and what live replies hold: once it reaches the cap, no new
    reply starts (the one that crossed it ends as usual).

    :raise ReplyError: 403 for an agent it may not use; 402 once the cap is reached.
    """
    if not identity.may_use(agent.slug):
        raise ReplyError(403, f"Your account may not use {agent.name}; ask the operator of this server.")
    cap = identity.monthly_cap_micros if identity.monthly_cap_micros is not None else default_cap_micros
    if not cap or inspect(identity).transient:  # (a new guest has spent nothing)
        return
    now = utcnow()
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    spent = spent_since(identity.id, month) + identity.reserved_micros
    if spent >= cap:
        resets = (month + timedelta(days=32)).replace(day=1)
        raise ReplyError(
            402,
            f"You have reached your monthly spending cap of {cap / MICROS_PER_CREDIT:.2f} credits "
            f"({spent / MICROS_PER_CREDIT:.2f} spent or held this month); it resets on {resets:%Y-%m-%d} (UTC).",
        )


def last_turn(chat: Chat) -> tuple[Message, Message | None] | None:
    """The chat's last user message and its reply (None while it is being written: 409)."""
    if streaming_message(chat.id) is not None:
        raise ReplyError(409, CHAT_BUSY)
    messages = newest_messages(chat.id, 2)
    users = [m for m in messages if m.role == MessageRole.USER]
    if not users:
        return None
    prompt = users[-1]
    answer = messages[-1] if messages[-1].role == MessageRole.ASSISTANT else None
    return prompt, answer


def turn_of(turn: tuple[Message, Message | None]) -> uuid.UUID:
    """The turn's id: its first message's (store_turn gives it to a turn's messages, in the
    transaction that stores the new version: nothing is written before the chat is claimed)."""
    return turn[0].turn_id or turn[0].id


def model_history(
    chat: Chat | None,
    text: str,
    char_budget: int,
    leaving_out: Sequence[uuid.UUID] = (),
    files: Sequence[StoredFile] = (),
) -> ModelMessages:
    """The conversation sent to the model: newest messages that fit the character budget, with
    their attachments. The new message's documents come first, then earlier messages, then their
    documents' text, newest first; a text is cut, saying so, where the budget runs out."""
    entries, budget = uploads.history_entries(files, uploads.texts_of(files), char_budget - len(text))
    history: ModelMessages = [{"role": "user", "content": text, **({"files": entries} if files else {})}]
    earlier = conversation(chat.id, budget, leaving_out=leaving_out) if chat is not None else []
    budget -= sum(len(message.content) for message in earlier)
    earlier_files = files_of_messages([m.id for m in earlier if m.role == MessageRole.USER])
    texts = uploads.texts_of([stored for held in earlier_files.values() for stored in held])
    for message in reversed(earlier):
        entry: dict = {"role": message.role, "content": message.content}
        if message.id in earlier_files:
            entry["files"], budget = uploads.history_entries(earlier_files[message.id], texts, budget)
        history.insert(0, entry)
    return history


def store_turn(
    chat: Chat | None,
    identity: Identity,
    agent: Agent,
    text: str,
    reply: ReplyHandle,
    prompt_estimate: int,
    reserve: int,
    live_cap: int,
    revision: Revision | None = None,
    files: Sequence[StoredFile] = (),
) -> None:
    """One transaction, with no round trip to anything else between its first write and its
    commit (on SQLite that would stall the worker, see chat/people/identity.py). `reserve`: the
    credit the reply holds until it is finished; `live_cap`: the replies one identity may have
    being written; `files`: the new message's attachments (the caller's, unsent)."""
    now = utcnow()
    store_guest(identity)
    if chat is None:
        title = Chat.title_from(text)
        new_chat = {"id": reply.chat_id, "identity_id": identity.id, "agent_slug": agent.slug, "title": title}
        insert_rows(Chat, [{**new_chat, "created_at": now, "updated_at": now}])
        position = 1  # next_position() of a chat without messages
    else:
        position = next_position(chat.id)
        touch_chat(chat.id, now)
    # The reservation is held until the reply is finished (chat/replies/finish.py gives it back
    # as it charges): a burst of messages cannot spend more than the balance, however many start
    # at once. Taken after the chat's row, as every transaction that writes both takes them
    # (chat, then identity: a title's charge, a finish), so that none of them waits for another
    # that waits for it (PostgreSQL saw that deadlock).
    if not reserve_credit(identity.id, reserve, live_cap):
        now_held = db.session.get_one(Identity, identity.id, populate_existing=True)
        if now_held.live_replies >= live_cap:
            raise ReplyError(429, TOO_MANY_LIVE, retry_after=5)
        raise ReplyError(402, not_enough_credit(now_held, reserve))
    turn_id = None
    if revision is not None:
        turn_id = revision.turn_id
        for message_id in revision.left_out:  # the turn's earlier version, and a resent prompt
            earlier = db.session.get(Message, message_id)
            if earlier is not None:
                earlier.turn_id = turn_id
                earlier.superseded = message_id in revision.supersede
    # Both messages in one INSERT, so with the same columns (the user's: no stream, no usage).
    message: dict[str, object] = {
        "chat_id": reply.chat_id,
        "turn_id": turn_id,
        "created_at": now,
        "updated_at": now,
    }
    messages = [
        {
            **message,
            "id": reply.message_id,
            "position": position + 1,
            "role": MessageRole.ASSISTANT,
            "content": "",
            "status": MessageStatus.STREAMING,
            "stream_id": reply.stream_id,
            "prompt_tokens": prompt_estimate,
            "reserved_micros": reserve,
            "reserved_by": identity.id,
        }
    ]
    if revision is None or revision.new_message:
        user = {"id": uuid.uuid4(), "position": position, "role": MessageRole.USER, "content": text}
        messages.insert(
            0,
            {
                **message,
                **user,
                "status": MessageStatus.COMPLETE,
                "stream_id": None,
                "prompt_tokens": None,
                "reserved_micros": None,
                "reserved_by": None,
            },
        )
    insert_rows(Message, messages)
    if files and not attach_files([stored.id for stored in files], identity.id, cast(uuid.UUID, messages[0]["id"])):
        raise ReplyError(404, "One of the files was sent with another message meanwhile.")
    insert_chat_stream(reply.chat_id, reply.stream_id)
    db.session.commit()
