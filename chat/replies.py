"""Replies: start one, follow it from any cursor, stop it, finish it once, reap dead ones.

The views call these; these call the stream backend (Redis, or memory when RESUMABLE_STREAMS=0)
and chat/finish.py. Generation runs in a background thread/greenlet, independent of any client.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import redis
from flask import Flask, current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .agents import Agent, Completion, ProviderError, estimate_tokens, generate, suggest_title
from .extensions import db, redis_client
from .finish import StoredReply, Usage, record_reply, record_title, save_partial, stored_reply
from .identity import ensure_identity
from .local_streams import LocalStreams
from .models import Chat, Message, MessageStatus, get_recent_stream_id, insert_chat_stream, utcnow
from .runtime import Pump, StreamHub, start_daemon
from .streams import Event, RedisStreams, StreamBackend, StreamRef, entry_cursor, joined_text

log = logging.getLogger(__name__)

STORE_DOWN = "The stream store (Redis) is unreachable right now; try again in a moment."
REDIS_LOST = "The connection to the stream store (Redis) was lost mid-reply."


class ReplyError(Exception):
    """A request the reply service refuses; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ReplyHandle:
    chat_id: uuid.UUID
    stream_id: str
    message_id: uuid.UUID

    @property
    def ref(self) -> StreamRef:
        return StreamRef(str(self.chat_id), self.stream_id)


def chat_title(text: str, words: int = 6) -> str:
    head = " ".join(text.split()[:words])
    return (head[:80] + ("…" if len(text.split()) > words else "")) or "New chat"


def stored_events(message: Message) -> list[Event]:
    """A finished reply told as a stream: its whole text as one delta, then its terminal event."""
    event, data = stored_reply(message).terminal_event
    return [Event("0-1", "delta", json.dumps({"text": message.content})), Event("0-2", event, json.dumps(data))]


def after_cursor(events: Iterable[Event], cursor: str | None) -> list[Event]:
    if cursor is None:
        return list(events)
    return [event for event in events if event.cursor > entry_cursor(cursor)]


class Replies:
    """One per app. Background machinery is started lazily, once per process (fork-safe)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.config = app.config
        self.resumable: bool = app.config["RESUMABLE_STREAMS"]
        self.agents: dict[str, Agent] = app.extensions["agents"]
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- per-process machinery ---------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            config = self.config
            self.backend: StreamBackend
            if self.resumable:
                self.backend = RedisStreams(
                    redis_client(self.app), maxlen=config["STREAM_MAXLEN"], ttl_seconds=config["STREAM_TTL_SECONDS"],
                    max_reply_seconds=config["MAX_REPLY_SECONDS"],
                    chat_streams_ttl_seconds=config["CHAT_STREAMS_TTL_SECONDS"],
                )
                self.hub = StreamHub(
                    self.backend, block_ms=config["READER_BLOCK_MS"],
                    keepalive_seconds=config["SSE_KEEPALIVE_SECONDS"],
                    liveness_seconds=config["HEARTBEAT_INTERVAL_MS"] / 1000,
                    outage_seconds=config["PRODUCER_TIMEOUT_MS"] / 1000, on_dead=self.finish_dead,
                )
            else:
                self.backend = LocalStreams()
            self.pump = Pump(
                self.backend, flush_ms=config["STREAM_FLUSH_MS"], flush_chars=config["STREAM_FLUSH_CHARS"],
                heartbeat_ms=config["HEARTBEAT_INTERVAL_MS"], timeout_ms=config["PRODUCER_TIMEOUT_MS"],
            )
            if config["REAPER_INTERVAL_SECONDS"] > 0:
                start_daemon(self._reap_forever, "durable-chat-reaper")
            self._pid = os.getpid()

    def _ready(self) -> None:
        if self._pid != os.getpid():
            self._start()

    def shutdown(self) -> None:
        """Stop this process's background loops (tests; replies in flight are left to the reaper)."""
        self._stopping.set()
        if self._pid == os.getpid():
            self.pump.stop()
            if self.resumable:
                self.hub.stop()

    # -- starting a reply ---------------------------------------------------------------------
    def start(self, identity_id: uuid.UUID, chat_id: uuid.UUID, agent: Agent, text: str) -> ReplyHandle:
        """Store the user's message, claim the chat and start generating in the background.

        :raise ReplyError: 404 foreign chat, 400 wrong agent, 402 too little credit,
            409 a reply is already live, 503 Redis unreachable. Nothing is stored then.
        """
        self._ready()
        identity = ensure_identity(identity_id)
        chat = db.session.get(Chat, chat_id)
        if chat is not None and chat.identity_id != identity.id:
            raise ReplyError(404, "No chat with that id.")
        if chat is not None and chat.agent_slug != agent.slug:
            raise ReplyError(400, f"This chat is with the agent '{chat.agent_slug}', not '{agent.slug}'.")
        history = self.history(chat, text)
        prompt_estimate = sum(estimate_tokens(m["content"]) for m in history) + estimate_tokens(agent.system_prompt)
        if identity.balance_micros <= 0 or identity.balance_micros < agent.cost_micros(prompt_estimate, 0):
            raise ReplyError(402, f"Not enough credit: your balance is {identity.balance:.4f} credits.")
        handle = ReplyHandle(chat_id, uuid.uuid4().hex, uuid.uuid4())
        try:
            claimed = self.backend.claim_live(handle.ref, self.config["PRODUCER_TIMEOUT_MS"])
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None
        if not claimed:
            raise ReplyError(409, "A reply is already being generated in this chat; wait for it or stop it.")
        try:
            self._store_turn(chat, identity.id, agent, text, handle, prompt_estimate)
            self.backend.create(handle.ref, {"chatId": str(chat_id), "streamId": handle.stream_id,
                                             "messageId": str(handle.message_id)})
            self.backend.append_stream_id(str(chat_id), handle.stream_id)
        except IntegrityError:
            db.session.rollback()
            self.backend.release_live(handle.ref)
            raise ReplyError(409, "A reply is already being generated in this chat; wait for it or stop it.") from None
        except redis.RedisError:
            record_reply(handle.stream_id, self.agents, "error", "", error=STORE_DOWN)
            raise ReplyError(503, STORE_DOWN) from None
        app = current_app._get_current_object()
        start_daemon(lambda: self.produce(app, handle, agent, history), "durable-chat-producer")
        return handle

    def history(self, chat: Chat | None, text: str) -> list[dict[str, str]]:
        """The conversation sent to the model: newest messages that fit the character budget."""
        budget = self.config["HISTORY_CHAR_BUDGET"] - len(text)
        turns: list[dict[str, str]] = []
        if chat is not None:
            rows = db.session.scalars(
                select(Message).where(Message.chat_id == chat.id, Message.content != "")
                .order_by(Message.position.desc()).limit(200)
            )
            for message in rows:
                budget -= len(message.content)
                if budget < 0:
                    break
                turns.append({"role": message.role, "content": message.content})
        return [*reversed(turns), {"role": "user", "content": text}]

    def _store_turn(self, chat: Chat | None, identity_id: uuid.UUID, agent: Agent, text: str,
                    handle: ReplyHandle, prompt_estimate: int) -> None:
        if chat is None:
            chat = Chat(id=handle.chat_id, identity_id=identity_id, agent_slug=agent.slug, title=chat_title(text))
            db.session.add(chat)
            db.session.flush()
        else:
            self._interrupt_leftover(chat)
        position = (db.session.scalar(select(func.max(Message.position)).where(Message.chat_id == chat.id)) or 0) + 1
        now = utcnow()
        chat.updated_at = now
        db.session.add(Message(chat_id=chat.id, position=position, role="user", content=text, created_at=now))
        db.session.add(Message(
            id=handle.message_id, chat_id=chat.id, position=position + 1, role="assistant", content="",
            status=MessageStatus.STREAMING.value, stream_id=handle.stream_id, prompt_tokens=prompt_estimate,
            created_at=now,
        ))
        insert_chat_stream(chat.id, handle.stream_id)
        db.session.commit()

    def _interrupt_leftover(self, chat: Chat) -> None:
        """We hold the chat's live claim, so a reply still marked streaming has lost its producer."""
        leftover = db.session.scalar(select(Message.stream_id).where(
            Message.chat_id == chat.id, Message.status == MessageStatus.STREAMING.value))
        if leftover:
            self.finalize(StreamRef(str(chat.id), leftover), "interrupted")

    # -- generating ---------------------------------------------------------------------------
    def produce(self, app: Flask, handle: ReplyHandle, agent: Agent, history: list[dict[str, str]]) -> None:
        """Run the model, feeding the pump; then record the outcome. Runs without any client."""
        with app.app_context():
            state = self.pump.register(handle.ref)
            reason, usage, error = "stop", None, None
            deadline = time.monotonic() + self.config["MAX_REPLY_SECONDS"]
            generation = generate(agent, history, self.config)
            try:
                for piece in generation:
                    if isinstance(piece, Completion):
                        reason, usage = piece.finish_reason, Usage(piece.prompt_tokens, piece.completion_tokens)
                    elif state.should_stop:
                        break
                    else:
                        self.pump.push(state, piece)
                        if time.monotonic() > deadline:
                            reason = "length"
                            break
            except ProviderError as exc:
                reason, error = "error", str(exc)
            except Exception:
                log.exception("generation failed for %s", handle.ref)
                reason, error = "error", "The reply failed unexpectedly."
            finally:
                generation.close()  # a stopped reply hangs up on the provider now, not at GC
            if state.cancelled:
                reason, usage, error = "cancelled", None, None
            self.pump.drain(state)
            try:
                if state.failure is not None:
                    self._finish_without_pump(handle, usage, state.text)
                elif not state.sealed:
                    stored = self.finalize(handle.ref, reason, usage, error, text=state.text)
                    if stored is not None and stored.status == MessageStatus.COMPLETE.value and len(history) == 1:
                        self._title(handle, agent, history[0]["content"], stored.content)
            except Exception:
                log.exception("could not finish %s", handle.ref)
            finally:
                self.pump.unregister(state)

    def _title(self, handle: ReplyHandle, agent: Agent, question: str, answer: str) -> None:
        """After a chat's first reply, ask the model for a title (the demo model keeps first words)."""
        try:
            suggestion = suggest_title(agent, question, answer, self.config)
        except ProviderError as exc:
            log.info("no title for chat %s: %s", handle.chat_id, exc)
            return
        if suggestion:
            title, completion = suggestion
            record_title(handle.chat_id, handle.message_id, self.agents, title,
                         Usage(completion.prompt_tokens, completion.completion_tokens))

    def _finish_without_pump(self, handle: ReplyHandle, usage: Usage | None, written: str) -> None:
        """Redis failed under the pump for longer than the producer timeout, or lost the log.
        Keep what the pump knows it wrote as a provisional text; the outcome is recorded from the
        log (what readers can get) if there is one, by us now or by whoever finishes once Redis
        answers again."""
        save_partial(handle.stream_id, written)
        try:
            self.finalize(handle.ref, "error", usage, REDIS_LOST)
        except redis.RedisError:
            pass  # the reaper or a reader finishes it once Redis answers

    def finalize(self, ref: StreamRef, reason: str, usage: Usage | None = None, error: str | None = None,
                 text: str | None = None) -> StoredReply | None:
        """Record the reply once and end its log with the stored outcome. Safe to call again.

        `text` is the producer's own record of what reached the log; anyone else seals the log
        first so that the text read from it is final. The log decides the text, never a client.
        """
        log_exists = True
        if text is None:
            self.backend.seal(ref)
            log_exists = self.backend.exists(ref)
            # A log Redis has lost leaves the provisional text saved in the database (or none).
            text = self.backend.read_text(ref) if log_exists else None
        stored = record_reply(ref.stream_id, self.agents, reason, text, usage, error)
        if stored is not None and log_exists:  # no stub log: resumers then get the stored reply
            self.backend.terminate(ref, *stored.terminal_event)
        return stored

    def finish_dead(self, ref: StreamRef) -> None:
        with self.app.app_context():
            self.finalize(ref, "interrupted")

    def stop(self, chat: Chat) -> StoredReply | None:
        """Stop the chat's live reply wherever it runs; None when nothing is live."""
        self._ready()
        stream_id = db.session.scalar(select(Message.stream_id).where(
            Message.chat_id == chat.id, Message.status == MessageStatus.STREAMING.value))
        if stream_id is None:
            return None
        ref = StreamRef(str(chat.id), stream_id)
        if not self.resumable and not self.backend.exists(ref):
            raise ReplyError(409, "This reply is generating in another server process; without "
                                  "RESUMABLE_STREAMS it can only be stopped there.")
        try:
            self.backend.request_cancel(ref)
            return self.finalize(ref, "cancelled")
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None

    # -- reading ------------------------------------------------------------------------------
    def follow(self, ref: StreamRef, after: str | None) -> Iterable[Event | None]:
        """The log from the event after `after`; None items mean "nothing new for a while"."""
        self._ready()
        after = after or "0-0"
        if self.resumable:
            if self.backend.is_terminated(ref):
                return self.backend.read(ref, after)  # finished: one XRANGE, possibly empty
            return self.hub.subscribe(ref, after)
        return self.backend.subscribe(ref, after, self.config["SSE_KEEPALIVE_SECONDS"])

    def log_exists(self, ref: StreamRef) -> bool:
        self._ready()
        try:
            return self.backend.exists(ref)
        except redis.RedisError:
            return False

    def resume(self, chat: Chat, cursor: str | None) -> Iterable[Event | None] | None:
        """What GET /api/chat streams: the newest live or recent log, else the stored reply.

        Returns None when the chat has neither (204).
        """
        self._ready()
        if self.resumable:
            try:
                ref = self.latest_stream(chat)
                if ref is not None and self.backend.exists(ref):
                    return self.follow(ref, cursor)
                if ref is not None:
                    self._finish_lost(ref)
            except redis.RedisError:
                raise ReplyError(503, STORE_DOWN) from None
        reply = db.session.scalar(
            select(Message).where(Message.chat_id == chat.id, Message.role == "assistant")
            .order_by(Message.position.desc()).limit(1))
        if reply is None or reply.is_pending:
            return None  # nothing to send yet (an older turn's reply would be the wrong answer)
        return after_cursor(stored_events(reply), cursor if cursor and cursor.startswith("0-") else None)

    def latest_stream(self, chat: Chat) -> StreamRef | None:
        """The chat's most recent stream: Redis's list first, the audit table when Redis lost it."""
        recent = self.backend.load_streams(str(chat.id))
        stream_id = recent[0] if recent else get_recent_stream_id(chat.id)
        return StreamRef(str(chat.id), stream_id) if stream_id else None

    def _finish_lost(self, ref: StreamRef) -> None:
        """The log is gone (expired, or Redis restarted); a reply still streaming cannot go on."""
        if not self.backend.alive([ref])[0]:
            self.finalize(ref, "interrupted")

    def pending_text(self, message: Message) -> tuple[str, str | None]:
        """A streaming reply's text so far and the cursor after it (for rendering a page)."""
        self._ready()
        ref = StreamRef(str(message.chat_id), message.stream_id)
        try:
            events = self.backend.read(ref)
        except redis.RedisError:
            return "", None
        return joined_text(events), (events[-1].id if events else None)

    # -- reaping ------------------------------------------------------------------------------
    def reap(self) -> int:
        """Finish every reply whose producer is gone; returns how many were finished."""
        self._ready()
        rows = db.session.execute(select(Message.chat_id, Message.stream_id, Message.created_at).where(
            Message.status == MessageStatus.STREAMING.value).limit(500)).all()
        if not rows:
            return 0
        refs = [StreamRef(str(chat_id), stream_id) for chat_id, stream_id, _ in rows]
        alive = self.backend.alive(refs)
        stale_before = utcnow() - timedelta(seconds=self.config["MAX_REPLY_SECONDS"] + 60)
        finished = 0
        for ref, is_alive, (_, _, created_at) in zip(refs, alive, rows, strict=True):
            # Without Redis, another process's producer is invisible: only age tells it is gone.
            if is_alive or (not self.resumable and created_at.replace(tzinfo=stale_before.tzinfo) > stale_before):
                continue
            self.finalize(ref, "interrupted")
            finished += 1
        return finished

    def _reap_forever(self) -> None:
        while not self._stopping.wait(self.config["REAPER_INTERVAL_SECONDS"]):
            try:
                with self.app.app_context():
                    self.reap()
            except redis.RedisError as exc:  # replies wait for Redis; they are finished once it is back
                log.warning("reaper: Redis unavailable: %s", exc)
            except Exception:
                log.exception("reaper failed")


def replies() -> Replies:
    return current_app.extensions["replies"]

