"""Replies: start one, follow it from any cursor, resume a chat, stop it.

The facade the views call. It admits a request (ownership, agent, credit, one live reply per
chat), stores the turn and hands generation to chat/replies/producer.py; reading goes through this
process's follower, finishing through chat/replies/finish.py. Its machinery is built lazily, once per
process (chat/replies/runtime.py).

Each request of the views is one method here (`start_and_follow`, `resume`, `open_page_stream`,
`stop`, …), so it is longer than most modules: the turn's storage is in turns.py, the open-stream
places in following.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence

import redis
from flask import Flask, current_app
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from ..agents import Agent, estimate_tokens
from ..agents.attachments import prompt_tokens_estimate
from ..background import every
from ..extensions import db
from ..files import forget_unsent
from ..files import store as file_store
from ..models import (
    Chat,
    Message,
    StoredFile,
    calls_of_replies,
    chat_file_hashes,
    chat_stream_ids,
    copy_calls,
    copy_files,
    files_of_messages,
    forget_unheld_blobs,
    fork_chat,
    get_recent_stream_id,
    interleaved,
    latest_reply,
    streaming_message,
    utcnow,
)
from ..people.credits import credits_to_micros
from ..people.identity import identity_or_guest, store_guest
from ..people.rate_limits import admit_new_guest
from ..streams import Event, Hold, LogState, StreamRef, entry_cursor
from ..streams.client_socket import ClientSocket
from ..vocabulary import FinishReason, MessageStatus, ToolStatus
from ..web import metrics, structured_logs
from . import runs
from .finish import StoredReply, finish_reply, interrupt, stored_reply
from .following import HeldStream, OpenStreams, PageStream, continued
from .producer import ReplyHandle, start_producer
from .run_state import Carried, CarriedCall
from .runtime import Runtime
from .turns import (
    CHAT_BUSY,
    ReplyError,
    Revision,
    check_limits,
    last_turn,
    model_history,
    not_enough_credit,
    store_turn,
    turn_of,
)

STORE_DOWN = "The stream store (Redis) is unreachable right now; try again in a moment."


class Replies:
    """One per app; `runtime` is this process's machinery, built on first use."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.config = app.config
        self.agents: dict[str, Agent] = app.extensions["agents"]
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self.open_streams = OpenStreams(
            lambda: self.runtime.backend, app.config["STREAMS_PER_IDENTITY"], app.config["SSE_KEEPALIVE_SECONDS"]
        )

    @property
    def runtime(self) -> Runtime:
        """Built and started once per process: after a fork the parent's threads are gone."""
        runtime = self._runtime
        if runtime is None or runtime.pid != os.getpid():
            with self._lock:
                if self._runtime is None or self._runtime.pid != os.getpid():
                    built = self._runtime = Runtime(self.app)
                    built.chores.append(lambda: runs.deny_overdue(self.app, built))
                    built.chores.append(lambda: runs.adopt_parked(self.app, built))
                    built.chores.append(every(3600, forget_unsent))
                    built.recover = lambda ref: runs.recover(self.app, built, ref)
                    built.start()
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
        files: Sequence[StoredFile] = (),
    ) -> ReplyHandle:
        """Store the user's message, claim the chat and start generating in the background.
        With a `revision`, the reply is a new version of the chat's last turn instead. With a
        `hold`, the caller's open-stream place for following the reply is taken in the claim's
        round trip (releasing it, whatever happens, is the caller's). `files`: the message's
        attachments (files.for_message chose them).

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
            resent = (
                files_of_messages([revision.resent]).get(revision.resent, []) if revision and revision.resent else []
            )
            history = model_history(
                chat,
                text,
                self.config["HISTORY_CHAR_BUDGET"],
                revision.left_out if revision else (),
                files or resent,
            )
            prompt_estimate = prompt_tokens_estimate(history) + estimate_tokens(agent.system_prompt)
            reserve = agent.cost_micros(prompt_estimate, agent.max_tokens)  # the most the reply can cost
            check_limits(identity, agent, credits_to_micros(self.config["MONTHLY_SPEND_CAP"]))
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
                    self.open_streams.refuse_unless_held(held)
            except redis.RedisError:
                metrics.REDIS_ERRORS.labels("request").inc()
                raise ReplyError(503, STORE_DOWN) from None
            if start_id is None:
                raise ReplyError(409, CHAT_BUSY)
            reply = dataclasses.replace(reply, start_id=start_id)
            try:
                if chat is not None:
                    self.interrupt_leftover(chat)
                live_cap = self.config["LIVE_REPLIES_PER_IDENTITY"]
                store_turn(chat, identity, agent, text, reply, prompt_estimate, reserve, live_cap, revision, files)
            except BaseException as exc:
                db.session.rollback()
                with contextlib.suppress(redis.RedisError):  # else its claim and log expire by themselves
                    backend.abandon(reply.ref)
                if isinstance(exc, IntegrityError):
                    raise ReplyError(409, CHAT_BUSY) from None
                raise
        carried = self.carry_over(revision.carried, reply) if revision and revision.carried else None
        start_producer(self.app, self.runtime, reply, agent, history, carried)
        metrics.REPLIES_STARTED.inc()
        structured_logs.event("reply.start", chat=str(chat_id), stream=reply.stream_id, agent=agent.slug)
        return reply

    def start_and_follow(
        self,
        identity_id: uuid.UUID,
        chat_id: uuid.UUID,
        agent: Agent,
        text: str,
        environ: dict,
        files: Sequence[StoredFile] = (),
    ) -> HeldStream:
        """What POST /api/chat streams: the reply `start` begins, followed from its first event,
        holding one of the caller's open-stream places (taken in the claim's round trip).
        `environ`: the request's, whose socket idle entries may be written to directly.

        :raise ReplyError: as `start`; nothing is stored and no place is kept then.
        """
        hold = self.open_streams.new(identity_id)
        try:
            reply = self.start(identity_id, chat_id, agent, text, hold=hold, files=files)
        except BaseException:
            self.open_streams.release(identity_id, hold.hold_id)
            raise
        return self.open_streams.keep(identity_id, hold.hold_id, self.follow_started(reply, ClientSocket.of(environ)))

    def continue_and_follow(self, identity_id: uuid.UUID, chat: Chat, agent: Agent, environ: dict) -> HeldStream:
        """What POST /api/chat/continue streams: `continue_reply`, followed from its first event."""
        hold = self.open_streams.new(identity_id)
        try:
            reply = self.continue_reply(identity_id, chat, agent, hold)
        except BaseException:
            self.open_streams.release(identity_id, hold.hold_id)
            raise
        return self.open_streams.keep(identity_id, hold.hold_id, self.follow_started(reply, ClientSocket.of(environ)))

    def regenerate(self, identity_id: uuid.UUID, chat: Chat, agent: Agent) -> ReplyHandle:
        """A new version of the chat's last reply, to the same message; the earlier one is kept.

        :raise ReplyError: 409 while a reply is being written, 400 when there is none yet.
        """
        turn = last_turn(chat)
        reply = turn[1] if turn else None
        if turn is None or reply is None:
            raise ReplyError(400, "There is no reply to regenerate yet.")
        prompt, _ = turn
        # The prompt stays (it is sent once, as the last message), the reply is replaced.
        revision = Revision(turn_of(turn), [reply.id], new_message=False, resent=prompt.id)
        return self.start(identity_id, chat.id, agent, prompt.content, revision)

    def continue_reply(self, identity_id: uuid.UUID, chat: Chat, agent: Agent, hold: Hold | None = None) -> ReplyHandle:
        """Carry on the chat's interrupted last reply: a new version of that turn whose stream
        tells the interrupted text and settled tool calls first (never run again), then the
        model's next steps — the only ones billed.

        :raise ReplyError: 409 while a reply is being written, 400 when the last reply was not
            interrupted.
        """
        turn = last_turn(chat)
        reply = turn[1] if turn else None
        if turn is None or reply is None or reply.status != MessageStatus.INTERRUPTED:
            raise ReplyError(400, "Only an interrupted reply can be continued; regenerate this one instead.")
        prompt, _ = turn
        revision = Revision(turn_of(turn), [reply.id], new_message=False, resent=prompt.id, carried=reply.id)
        return self.start(identity_id, chat.id, agent, prompt.content, revision, hold)

    def carry_over(self, interrupted_id: uuid.UUID, reply: ReplyHandle) -> Carried:
        """The interrupted reply's parts for its Continue, its calls recorded for the new stream."""
        interrupted = db.session.get_one(Message, interrupted_id)
        calls = calls_of_replies([interrupted_id])[interrupted_id]
        copy_calls(calls, reply.message_id, reply.stream_id)
        db.session.commit()
        parts = tuple(
            part
            if isinstance(part, str)
            else CarriedCall(part.call_id, part.name, part.arguments, part.status, part.result or "", part.executed)
            for part in interleaved(interrupted.content, calls)
        )
        return Carried(parts)

    def edit_last_message(self, identity_id: uuid.UUID, chat: Chat, agent: Agent, text: str) -> ReplyHandle:
        """Send `text` in place of the chat's last message: a new version of the last turn.

        :raise ReplyError: 409 while a reply is being written, 400 when there is no message yet.
        """
        turn = last_turn(chat)
        if turn is None:
            raise ReplyError(400, "There is no message to edit yet.")
        supersede = [message.id for message in turn if message is not None]
        return self.start(identity_id, chat.id, agent, text, Revision(turn_of(turn), supersede, new_message=True))

    def interrupt_leftover(self, chat: Chat) -> None:
        """We hold the chat's live claim, so a reply still marked streaming has lost its producer."""
        leftover = streaming_message(chat.id)
        if leftover is not None and leftover.stream_id:
            interrupt(self.runtime.backend, self.agents, StreamRef(str(chat.id), leftover.stream_id))

    def fork(self, identity_id: uuid.UUID, chat: Chat, message_id: uuid.UUID) -> uuid.UUID:
        """A new chat of the caller's with `chat` up to `message_id` (its versions as they were);
        the original is untouched. Returns the new chat's id.

        :raise ReplyError: 404 no such message in the chat, 409 while it is being written.
        """
        message = db.session.get(Message, message_id)
        if message is None or message.chat_id != chat.id:
            raise ReplyError(404, "No such message in this chat.")
        if message.is_pending:
            raise ReplyError(409, "This reply is still being written; fork from it once it has finished.")
        identity = identity_or_guest(identity_id)
        if inspect(identity).transient:
            admit_new_guest()  # a first chat brings a guest's first credits
        fork_id = uuid.uuid4()
        store_guest(identity)
        copied = fork_chat(chat, message, identity.id, fork_id, utcnow())
        # A reply's tool calls go with it (a forked message has no stream: its copy's key is its id).
        for old_id, calls in calls_of_replies(list(copied)).items():
            copy_calls(calls, copied[old_id], f"fork-{copied[old_id].hex}")
        copy_files(copied, identity.id)  # the same bytes, the fork's owner's files
        db.session.commit()
        structured_logs.event("chat.fork", chat=str(chat.id), fork=str(fork_id))
        return fork_id

    # -- answering ----------------------------------------------------------------------------
    def answer(self, chat: Chat, call_id: str, approved: bool) -> ToolStatus:
        """A person's answer to a call of the chat's live reply that waits for one; its run goes
        on in this process. `running` (approved) or `denied`.

        :raise ReplyError: 404 for no such call in the chat, 409 when it is not waiting (any more).
        """
        structured_logs.event("reply.answer", chat=str(chat.id), call=call_id, approved=approved)
        try:
            return runs.answer(self.app, self.runtime, chat, call_id, approved)
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None

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
        hashes = chat_file_hashes(chat.id)
        db.session.delete(chat)
        db.session.flush()  # its messages, and their files, go with it (ON DELETE CASCADE)
        gone = forget_unheld_blobs(hashes)
        db.session.commit()
        file_store.forget(gone)

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

    def resume(self, identity_id: uuid.UUID, chat: Chat, cursor: str | None, environ: dict) -> HeldStream | None:
        """What GET /api/chat streams, holding one of the caller's open-stream places: the newest
        live or recent log from the event after `cursor`, else the stored reply. None when the
        chat has neither (204). The place, the newest log and its entries after `cursor` take one
        round trip to Redis.

        :raise ReplyError: 429 when the caller holds every place, 503 when Redis is unreachable.
        """
        return self.held(identity_id, chat, cursor, ClientSocket.of(environ), stored=True)

    def open_page_stream(self, identity_id: uuid.UUID, chat: Chat, cursor: str | None) -> PageStream | None:
        """What a chat page's stream follows: `resume` without the stored reply (the page shows
        that itself), with the text up to `cursor` that the page already shows (read only when
        it resumes from a cursor). None when no log is left to follow. Its entries always pass
        through the response (no direct writes to its socket): the page renders them first.

        :raise ReplyError: 429 when the caller holds every place, 503 when Redis is unreachable.
        """
        source = self.held(identity_id, chat, cursor, None, stored=False)
        if source is None:
            return None
        ref = source.ref
        assert ref is not None, "a page follows a log"
        return PageStream(ref.stream_id, self.events_until(ref, cursor) if cursor else [], source)

    def held(
        self, identity_id: uuid.UUID, chat: Chat, cursor: str | None, client: ClientSocket | None, stored: bool
    ) -> HeldStream | None:
        """Resuming, written once: take a place and find the newest log in one round trip, then
        follow it from `cursor` (or tell the stored reply, when `stored`); `client`: the socket
        idle entries may be written to directly, as they are sent."""
        hold = self.open_streams.new(identity_id)
        try:
            held, newest = self.runtime.backend.hold_and_find_newest(hold, str(chat.id), cursor or "0-0")
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None
        self.open_streams.refuse_unless_held(held)
        try:
            found = self.resume_source(chat, cursor, newest, client, stored)
        except BaseException:
            self.open_streams.release(identity_id, hold.hold_id)
            raise
        if found is None:
            self.open_streams.release(identity_id, hold.hold_id)
            return None
        ref, source = found
        return self.open_streams.keep(identity_id, hold.hold_id, source, ref)

    def resume_source(
        self, chat: Chat, cursor: str | None, newest: LogState | None, client: ClientSocket | None, stored: bool
    ) -> tuple[StreamRef | None, Iterable[Event | None]] | None:
        """The log a resume follows and the events it sends, given the chat's newest log as Redis
        listed it; with `stored`, the stored reply when no log is left."""
        backend = self.runtime.backend
        try:
            # Redis forgot the chat's list, or the store is this process's own (RESUMABLE_STREAMS=0,
            # where the API resumes nothing but a page of the process follows its reply): the
            # database names the log.
            from_database = newest is None and (backend.shared or not stored)
            stream_id = self.newest_stream_id(chat) if from_database else None
            if stream_id:
                ref = StreamRef(str(chat.id), stream_id)
                newest = LogState(ref, backend.exists(ref), ended=None)
            if newest is not None and newest.exists:
                return newest.ref, self.follow(newest.ref, cursor, newest.ended, newest.events, client)
            if backend.shared and newest is not None and not backend.alive([newest.ref])[0]:
                interrupt(backend, self.agents, newest.ref)  # its log is gone: it cannot go on
        except redis.RedisError:
            raise ReplyError(503, STORE_DOWN) from None
        if not stored:
            return None
        reply = latest_reply(chat.id)
        if reply is None or reply.is_pending:
            return None  # nothing to send yet (an older turn's reply would be the wrong answer)
        after = cursor if cursor and cursor.startswith("0-") else None
        return None, stored_reply(reply).as_events(after, calls_of_replies([reply.id])[reply.id])

    def newest_stream_id(self, chat: Chat) -> str | None:
        """The chat's newest log as the database knows it: the audit trail's newest stream on a
        shared store, the reply in progress on this process's own."""
        if self.runtime.backend.shared:
            return get_recent_stream_id(chat.id)
        pending = streaming_message(chat.id)
        return pending.stream_id if pending is not None else None

    def pending_events(self, message: Message) -> tuple[list[Event], str | None]:
        """A streaming reply's log so far and the cursor after it (for rendering a page); without
        a shared log, its provisional text as one delta."""
        backend = self.runtime.backend
        if not backend.shared or not message.stream_id:
            return [Event("0-1", "delta", json.dumps({"text": message.content}))], None
        try:
            events = backend.read(StreamRef(str(message.chat_id), message.stream_id))
        except redis.RedisError:
            return [], None
        return events, (events[-1].id if events else None)

    def events_until(self, ref: StreamRef, cursor: str) -> list[Event]:
        """The reply's log up to and including the entry `cursor` (what a client holding that
        cursor has seen); [] if Redis cannot say (the stream then starts over for the page)."""
        until = entry_cursor(cursor)
        try:
            events = self.runtime.backend.read(ref)
        except redis.RedisError:
            return []
        return [event for event in events if event.cursor <= until]

    def reap(self) -> int:
        """Finish every reply whose producer is gone; returns how many were finished."""
        return self.runtime.reap()


def replies() -> Replies:
    return current_app.extensions["replies"]
