"""Replies: start one, follow it from any cursor, resume a chat, stop it.

The facade the views call. It admits a request (ownership, agent, credit, one live reply per
chat), stores the turn and hands generation to chat/replies/producer.py; reading goes through this
process's follower, finishing through chat/replies/finish.py. Its machinery is built lazily, once per
process (chat/replies/runtime.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence

import redis
from flask import Flask, current_app
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from ..agents import Agent, estimate_tokens
from ..extensions import db
from ..models import (
    Chat,
    Identity,
    Message,
    chat_stream_ids,
    conversation,
    get_recent_stream_id,
    insert_chat_stream,
    insert_rows,
    latest_reply,
    newest_messages,
    next_position,
    reserve_credit,
    streaming_message,
    touch_chat,
    utcnow,
)
from ..people.identity import identity_or_guest, store_guest
from ..people.rate_limits import admit_new_guest
from ..refusals import Refused
from ..streams import Event, Hold, LogState, StreamRef, entry_cursor, joined_text
from ..streams.client_socket import ClientSocket
from ..vocabulary import MICROS_PER_CREDIT, FinishReason, MessageRole, MessageStatus
from ..web import metrics, structured_logs
from .finish import StoredReply, finish_reply, interrupt, stored_reply
from .producer import ReplyHandle, start_producer
from .runtime import Runtime

STORE_DOWN = "The stream store (Redis) is unreachable right now; try again in a moment."
CHAT_BUSY = "A reply is already being generated in this chat; wait for it or stop it."
TOO_MANY_STREAMS = "You have too many streams open at once; close a tab or wait for a reply to end."
TOO_MANY_LIVE = "You have too many replies being written at once; wait for one to finish."


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

    @property
    def left_out(self) -> list[uuid.UUID]:
        """Messages the model is not sent as history (the text to answer comes last anyway)."""
        return [*self.supersede, *([self.resent] if self.resent else [])]


class ReplyError(Refused):
    """A request the reply service refuses; `status` is the HTTP status that says why."""


class Replies:
    """One per app; `runtime` is this process's machinery, built on first use."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.config = app.config
        self.agents: dict[str, Agent] = app.extensions["agents"]
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        """Built and started once per process: after a fork the parent's threads are gone."""
        runtime = self._runtime
        if runtime is None or runtime.pid != os.getpid():
            with self._lock:
                if self._runtime is None or self._runtime.pid != os.getpid():
                    self._runtime = Runtime(self.app)
                    self._runtime.start()
                runtime = self._runtime
        return runtime

    def shutdown(self) -> None:
        """Stop this process's machinery (its live replies end `cancelled`); tests call it."""
        if self._runtime is not None and self._runtime.pid == os.getpid():
            self._runtime.stop()

    def release_readers(self) -> None:
        """End every stream this process serves (it is stopping): clients resume elsewhere."""
        if self._runtime is not None and self._runtime.pid == os.getpid() and self._runtime.hub is not None:
            self._runtime.hub.release_everyone()

    def drain(self) -> int:
        """A graceful stop of this process (gunicorn.conf.py calls it): see Runtime.drain."""
        if self._runtime is None or self._runtime.pid != os.getpid():
            return 0
        return self._runtime.drain(self.config["GRACEFUL_REPLY_SECONDS"])

    # -- starting a reply ---------------------------------------------------------------------
    def start(
        self,
        identity_id: uuid.UUID,
        chat_id: uuid.UUID,
        agent: Agent,
        text: str,
        revision: Revision | None = None,
        hold: Hold | None = None,
    ) -> ReplyHandle:
        """Store the user's message, claim the chat and start generating in the background.
        With a `revision`, the reply is a new version of the chat's last turn instead. With a
        `hold`, the caller's open-stream place for following the reply is taken in the claim's
        round trip (releasing it, whatever happens, is the caller's).

        :raise ReplyError: 404 foreign chat, 400 wrong agent, 402 too little credit, 429 no
            open-stream place left, 409 a reply is already live, 503 Redis unreachable.
            Nothing is stored then.
        """
        # A few starts at a time: the rest wait their turn, so a burst of messages is answered in
        # order (the first ones start at once instead of all of them late) and the tokens of
        # replies already streaming go out between starts instead of after the whole burst.
        with self.runtime.starting:
            backend = self.runtime.backend
            identity = identity_or_guest(identity_id)
            chat = db.session.get(Chat, chat_id)
            if chat is not None and chat.identity_id != identity.id:
                raise ReplyError(404, "No chat with that id.")
            if chat is not None and chat.agent_slug != agent.slug:
                raise ReplyError(400, f"This chat is with the agent '{chat.agent_slug}', not '{agent.slug}'.")
            history = self.history(chat, text, revision.left_out if revision else ())
            prompt_estimate = sum(estimate_tokens(m["content"]) for m in history) + estimate_tokens(agent.system_prompt)
            reserve = agent.cost_micros(prompt_estimate, agent.max_tokens)
            if identity.available_micros <= 0 or identity.available_micros < reserve:
                raise ReplyError(402, not_enough_credit(identity, reserve))
            if inspect(identity).transient:
                admit_new_guest()  # its first message brings its first credits
            reply = ReplyHandle(chat_id, uuid.uuid4().hex, uuid.uuid4())
            timeout_ms = self.config["PRODUCER_TIMEOUT_MS"]
            try:
                if hold is None:
                    start_id = backend.claim_and_create(reply.ref, reply.start_data, timeout_ms)
                else:
                    held, start_id = backend.hold_and_claim(hold, reply.ref, reply.start_data, timeout_ms)
                    self.refuse_unless_held(held)
            except redis.RedisError:
                metrics.REDIS_ERRORS.labels("request").inc()
                raise ReplyError(503, STORE_DOWN) from None
            if start_id is None:
                raise ReplyError(409, CHAT_BUSY)
            reply = dataclasses.replace(reply, start_id=start_id)
            try:
                self.store_turn(chat, identity, agent, text, reply, prompt_estimate, revision)
            except BaseException as exc:
                db.session.rollback()
                with contextlib.suppress(redis.RedisError):  # else its claim and log expire by themselves
                    backend.abandon(reply.ref)
                if isinstance(exc, IntegrityError):
                    raise ReplyError(409, CHAT_BUSY) from None
                raise
        start_producer(self.app, self.runtime, reply, agent, history)
        metrics.REPLIES_STARTED.inc()
        structured_logs.event("reply.start", chat=str(chat_id), stream=reply.stream_id, agent=agent.slug)
        return reply

    def regenerate(self, identity_id: uuid.UUID, chat: Chat, agent: Agent) -> ReplyHandle:
        """A new version of the chat's last reply, to the same message; the earlier one is kept.

        :raise ReplyError: 409 while a reply is being written, 400 when there is none yet.
        """
        turn = self.last_turn(chat)
        reply = turn[1] if turn else None
        if turn is None or reply is None:
            raise ReplyError(400, "There is no reply to regenerate yet.")
        prompt, _ = turn
        # The prompt stays (it is sent once, as the last message), the reply is replaced.
        revision = Revision(self.turn_of(turn), [reply.id], new_message=False, resent=prompt.id)
        return self.start(identity_id, chat.id, agent, prompt.content, revision)

    def edit_last_message(self, identity_id: uuid.UUID, chat: Chat, agent: Agent, text: str) -> ReplyHandle:
        """Send `text` in place of the chat's last message: a new version of the last turn.

        :raise ReplyError: 409 while a reply is being written, 400 when there is no message yet.
        """
        turn = self.last_turn(chat)
        if turn is None:
            raise ReplyError(400, "There is no message to edit yet.")
        supersede = [message.id for message in turn if message is not None]
        return self.start(identity_id, chat.id, agent, text, Revision(self.turn_of(turn), supersede, new_message=True))

    def last_turn(self, chat: Chat) -> tuple[Message, Message | None] | None:
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

    @staticmethod
    def turn_of(turn: tuple[Message, Message | None]) -> uuid.UUID:
        """The turn's id: its first message's (store_turn gives it to a turn's messages, in the
        transaction that stores the new version: nothing is written before the chat is claimed)."""
        return turn[0].turn_id or turn[0].id

    def history(self, chat: Chat | None, text: str, leaving_out: Sequence[uuid.UUID] = ()) -> list[dict[str, str]]:
        """The conversation sent to the model: newest messages that fit the character budget."""
        budget = self.config["HISTORY_CHAR_BUDGET"] - len(text)
        earlier = conversation(chat.id, budget, leaving_out=leaving_out) if chat is not None else []
        return [*({"role": m.role, "content": m.content} for m in earlier), {"role": "user", "content": text}]

    def store_turn(
        self,
        chat: Chat | None,
        identity: Identity,
        agent: Agent,
        text: str,
        reply: ReplyHandle,
        prompt_estimate: int,
        revision: Revision | None = None,
    ) -> None:
        """One transaction, with no round trip to anything else between its first write and its
        commit (on SQLite that would stall the worker, see chat/people/identity.py)."""
        if chat is not None:
            self.interrupt_leftover(chat)
        now = utcnow()
        store_guest(identity)
        # The most the reply can cost (its prompt and max_tokens), held until it is finished
        # (chat/replies/finish.py gives it back as it charges): a burst of messages cannot spend more
        # than the balance, however many start at once.
        reserve = agent.cost_micros(prompt_estimate, agent.max_tokens)
        if not reserve_credit(identity.id, reserve, self.config["LIVE_REPLIES_PER_IDENTITY"]):
            now_held = db.session.get_one(Identity, identity.id, populate_existing=True)
            if now_held.live_replies >= self.config["LIVE_REPLIES_PER_IDENTITY"]:
                raise ReplyError(429, TOO_MANY_LIVE, retry_after=5)
            raise ReplyError(402, not_enough_credit(now_held, reserve))
        if chat is None:
            title = Chat.title_from(text)
            new_chat = {"id": reply.chat_id, "identity_id": identity.id, "agent_slug": agent.slug, "title": title}
            insert_rows(Chat, [{**new_chat, "created_at": now, "updated_at": now}])
            position = 1  # next_position() of a chat without messages
        else:
            position = next_position(chat.id)
            touch_chat(chat.id, now)
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
        insert_chat_stream(reply.chat_id, reply.stream_id)
        db.session.commit()

    def interrupt_leftover(self, chat: Chat) -> None:
        """We hold the chat's live claim, so a reply still marked streaming has lost its producer."""
        leftover = streaming_message(chat.id)
        if leftover is not None and leftover.stream_id:
            interrupt(self.runtime.backend, self.agents, StreamRef(str(chat.id), leftover.stream_id))

    # -- stopping -----------------------------------------------------------------------------
    def stop(self, chat: Chat) -> StoredReply | None:
        """Stop the chat's live reply wherever it runs; None when nothing is live."""
        backend = self.runtime.backend
        pending = streaming_message(chat.id)
        if pending is None or not pending.stream_id:
            return None
        ref = StreamRef(str(chat.id), pending.stream_id)
        if not backend.shared and not backend.exists(ref):
            raise ReplyError(
                409,
                "This reply is generating in another server process; without "
                "RESUMABLE_STREAMS it can only be stopped there.",
            )
        structured_logs.event("reply.stop", chat=str(chat.id), stream=pending.stream_id)
        try:
            backend.request_cancel(ref)
            return finish_reply(backend, self.agents, ref, FinishReason.CANCELLED)
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None

    def delete(self, chat: Chat) -> None:
        """Delete the chat: its live reply is stopped first (stored and billed as cancelled; the
        ledger keeps the charge), then what Redis keeps of it, then its rows. Redis down: 503,
        and nothing is deleted."""
        self.stop(chat)
        try:
            self.runtime.backend.forget_chat(str(chat.id), chat_stream_ids(chat.id))
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None
        structured_logs.event("chat.delete", chat=str(chat.id))
        db.session.delete(chat)
        db.session.commit()

    # -- reading ------------------------------------------------------------------------------
    def follow_started(self, reply: ReplyHandle, client: ClientSocket | None = None) -> Iterator[Event | None]:
        """The reply this request just started: its start event at once, then the log after it.
        `client`: the response's socket, when entries may be written to it directly."""
        return continued([reply.start_event], self.runtime.follower.subscribe(reply.ref, reply.start_id, client))

    def follow(
        self,
        ref: StreamRef,
        after: str | None,
        ended: bool | None = None,
        read: list[Event] | None = None,
        client: ClientSocket | None = None,
    ) -> Iterable[Event | None]:
        """The log from the event after `after`; None items mean "nothing new for a while".
        `ended`: whether the log has ended, and `read`: its entries after `after`, when the caller
        has them already (then only what comes later is asked for)."""
        runtime = self.runtime
        after = after or "0-0"
        if runtime.backend.log_ended(ref) if ended is None else ended:
            return runtime.backend.read(ref, after) if read is None else read  # finished: possibly empty
        if not read:
            return runtime.follower.subscribe(ref, after, client)
        if read[-1].terminal:
            return read
        return continued(read, runtime.follower.subscribe(ref, read[-1].id, client))

    def live_log(self, chat: Chat) -> StreamRef | None:
        """The log of the chat's pending reply, if this process can read it (the browser stream)."""
        pending = streaming_message(chat.id)
        if pending is None or not pending.stream_id:
            return None
        ref = StreamRef(str(chat.id), pending.stream_id)
        try:
            return ref if self.runtime.backend.exists(ref) else None
        except redis.RedisError:
            return None

    def resume(
        self, identity_id: uuid.UUID, chat: Chat, cursor: str | None, client: ClientSocket | None = None
    ) -> HeldStream | None:
        """What GET /api/chat streams, holding one of the caller's open-stream places: the newest
        live or recent log, else the stored reply. None when the chat has neither (204).

        The place, the newest log and its entries after `cursor` take one round trip to Redis.

        :raise ReplyError: 429 when the caller holds every place, 503 when Redis is unreachable.
        """
        hold = self.new_hold(identity_id)
        try:
            held, newest = self.runtime.backend.hold_and_find_newest(hold, str(chat.id), cursor or "0-0")
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None
        self.refuse_unless_held(held)
        try:
            source = self.resume_source(chat, cursor, newest, client)
        except BaseException:
            self.release_stream(identity_id, hold.hold_id)
            raise
        if source is None:
            self.release_stream(identity_id, hold.hold_id)
            return None
        return self.while_held(identity_id, hold.hold_id, source)

    def resume_source(
        self, chat: Chat, cursor: str | None, newest: LogState | None, client: ClientSocket | None = None
    ) -> Iterable[Event | None] | None:
        """The events a resume sends, given the chat's newest log as Redis listed it."""
        backend = self.runtime.backend
        if backend.shared:
            try:
                if newest is None and (stream_id := get_recent_stream_id(chat.id)):  # Redis forgot the list
                    ref = StreamRef(str(chat.id), stream_id)
                    newest = LogState(ref, backend.exists(ref), ended=None)
                if newest is not None and newest.exists:
                    return self.follow(newest.ref, cursor, newest.ended, newest.events, client)
                if newest is not None and not backend.alive([newest.ref])[0]:
                    interrupt(backend, self.agents, newest.ref)  # its log is gone: it cannot go on
            except redis.RedisError:
                raise ReplyError(503, STORE_DOWN) from None
        reply = latest_reply(chat.id)
        if reply is None or reply.is_pending:
            return None  # nothing to send yet (an older turn's reply would be the wrong answer)
        return stored_reply(reply).as_events(after=cursor if cursor and cursor.startswith("0-") else None)

    def pending_text(self, message: Message) -> tuple[str, str | None]:
        """A streaming reply's text so far and the cursor after it (for rendering a page)."""
        backend = self.runtime.backend
        if not backend.shared or not message.stream_id:
            return message.content, None
        try:
            events = backend.read(StreamRef(str(message.chat_id), message.stream_id))
        except redis.RedisError:
            return "", None
        return joined_text(events), (events[-1].id if events else None)

    def text_until(self, ref: StreamRef, cursor: str) -> str:
        """The reply's text up to and including the entry `cursor` (what a client holding that
        cursor has seen); "" if Redis cannot say (the stream then starts over for the page)."""
        until = entry_cursor(cursor)
        try:
            events = self.runtime.backend.read(ref)
        except redis.RedisError:
            return ""
        return joined_text(event for event in events if event.cursor <= until)

    # -- open streams per identity ----------------------------------------------------------
    def hold_stream(self, identity_id: uuid.UUID) -> str:
        """Take one of the caller's STREAMS_PER_IDENTITY open-stream places; its id.

        :raise ReplyError: 429 when the caller holds them all, 503 when Redis is unreachable.
        """
        hold = self.new_hold(identity_id)
        try:
            held = self.runtime.backend.hold_stream(hold)
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None
        self.refuse_unless_held(held)
        return hold.hold_id

    def new_hold(self, identity_id: uuid.UUID) -> Hold:
        return Hold(str(identity_id), uuid.uuid4().hex, self.config["STREAMS_PER_IDENTITY"], self.hold_ttl_ms)

    def refuse_unless_held(self, held: bool) -> None:
        """:raise ReplyError: 429 when the caller held every open-stream place already."""
        if not held:
            raise ReplyError(429, TOO_MANY_STREAMS, retry_after=self.config["SSE_KEEPALIVE_SECONDS"])

    def release_stream(self, identity_id: uuid.UUID, hold_id: str) -> None:
        try:
            self.runtime.backend.release_hold(str(identity_id), hold_id)
        except redis.RedisError:
            pass  # it lapses by itself (hold_ttl_ms)

    def while_held(self, identity_id: uuid.UUID, hold_id: str, source: Iterable[Event | None]) -> HeldStream:
        """`source`, keeping its open-stream place until it ends or is closed (the client left)."""
        return HeldStream(self, identity_id, hold_id, source)

    @property
    def hold_ttl_ms(self) -> int:
        """How long a place stays held without a refresh: three keepalive intervals."""
        return 3 * self.config["SSE_KEEPALIVE_SECONDS"] * 1000

    def reap(self) -> int:
        """Finish every reply whose producer is gone; returns how many were finished."""
        return self.runtime.reap()


class HeldStream:
    """A stream holding one of its identity's open-stream places: refreshed well before it
    lapses, released when the stream ends or is closed — even if it was never read."""

    def __init__(self, service: Replies, identity_id: uuid.UUID, hold_id: str, source: Iterable[Event | None]):
        self.service, self.identity_id, self.hold_id = service, identity_id, hold_id
        self.events = iter(source)
        self.ttl_ms = service.hold_ttl_ms
        self.refresh_at = time.monotonic() + self.ttl_ms / 3000
        self.released = False
        metrics.OPEN_STREAMS.inc()

    def __iter__(self) -> HeldStream:
        return self

    def __next__(self) -> Event | None:
        try:
            event = next(self.events)
        except BaseException:
            self.close()
            raise
        if time.monotonic() >= self.refresh_at:
            self.refresh_at = time.monotonic() + self.ttl_ms / 3000
            with contextlib.suppress(redis.RedisError):
                self.service.runtime.backend.refresh_hold(str(self.identity_id), self.hold_id, self.ttl_ms)
        return event

    def close(self) -> None:
        if self.released:
            return
        self.released = True
        metrics.OPEN_STREAMS.dec()
        close = getattr(self.events, "close", None)
        if close:
            close()
        self.service.release_stream(self.identity_id, self.hold_id)


def continued(first: Iterable[Event | None], rest: Iterable[Event | None]) -> Iterator[Event | None]:
    """`first`, then `rest` (a subscription, already following): closing this (the client left)
    ends the subscription at once, even before it was reached."""
    try:
        yield from first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close:
            close()


def replies() -> Replies:
    return current_app.extensions["replies"]
