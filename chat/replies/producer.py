"""Generation: run the model for one reply, feed the pump, then finish the reply.

Runs in a background thread (a greenlet under gevent), independent of any client: a reply goes
on when every browser has left, and ends with the text that reached its log.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass

import redis
from flask import Flask

from ..agents import Agent, Completion, ProviderError, generate, suggest_title
from ..background import spawn_daemon
from ..streams import Event, StreamRef
from ..vocabulary import FinishReason, MessageStatus
from .finish import Usage, finish_reply, keep_provisional_text, record_title
from .pump import ProducerState
from .runtime import Runtime

log = logging.getLogger(__name__)

REDIS_LOST = "The connection to the stream store (Redis) was lost mid-reply."


@dataclass(frozen=True)
class ReplyHandle:
    """A reply that has been started: its chat, its stream and its assistant message."""

    chat_id: uuid.UUID
    stream_id: str
    message_id: uuid.UUID
    start_id: str = ""  # the id of its log's `start` event, once the log exists

    @property
    def ref(self) -> StreamRef:
        return StreamRef(str(self.chat_id), self.stream_id)

    @property
    def start_data(self) -> dict[str, str]:
        return {"chatId": str(self.chat_id), "streamId": self.stream_id, "messageId": str(self.message_id)}

    @property
    def start_event(self) -> Event:
        return Event(self.start_id, "start", json.dumps(self.start_data))


def start_producer(
    app: Flask, runtime: Runtime, reply: ReplyHandle, agent: Agent, history: list[dict[str, str]]
) -> None:
    """Register the reply with the pump now (so readers that follow it from this moment are fed
    by the pump), then generate in the background."""
    state = runtime.pump.register(reply.ref, reply.start_id)
    spawn_daemon(lambda: produce(app, runtime, state, reply, agent, history), "durable-chat-producer")


def produce(
    app: Flask, runtime: Runtime, state: ProducerState, reply: ReplyHandle, agent: Agent, history: list[dict[str, str]]
) -> None:
    """Run the model, feeding the pump; then finish the reply with what reached the log.

    The producer stays registered with the pump until its app context (and with it its database
    session) is gone, so whoever waits for the pump's producers also waits for their connections.
    """
    try:
        with app.app_context():
            generate_and_finish(runtime, state, reply, agent, history)
    finally:
        runtime.pump.unregister(state)


def generate_and_finish(
    runtime: Runtime, state: ProducerState, reply: ReplyHandle, agent: Agent, history: list[dict[str, str]]
) -> None:
    config = runtime.app.config
    pump = runtime.pump
    reason, usage, error = FinishReason.STOP, None, None
    deadline = time.monotonic() + config["MAX_REPLY_SECONDS"]
    generation = generate(agent, history, config)
    try:
        for piece in generation:
            if isinstance(piece, Completion):
                reason = piece.finish_reason
                usage = Usage(piece.prompt_tokens, piece.completion_tokens)
            elif state.should_stop:
                break
            else:
                pump.push(state, piece)
                if time.monotonic() > deadline:
                    reason = FinishReason.LENGTH
                    break
    except ProviderError as exc:
        reason, error = FinishReason.ERROR, str(exc)
    except Exception:
        log.exception("generation failed for %s", reply.ref)
        reason, error = FinishReason.ERROR, "The reply failed unexpectedly."
    finally:
        generation.close()  # a stopped reply hangs up on the provider now, not at GC
    if state.cancelled:
        reason, usage, error = FinishReason.CANCELLED, None, None
    elif state.interrupted:
        reason, usage, error = FinishReason.INTERRUPTED, None, None
    pump.drain(state)
    stored = None
    try:
        if state.failure is not None:
            finish_without_log(runtime, reply, usage, state.text)
        elif not state.sealed:  # sealed: somebody else (a stop) is finishing it
            stored = finish_reply(
                runtime.backend,
                runtime.agents,
                reply.ref,
                reason,
                usage,
                error,
                text=state.text,
                on_ended=functools.partial(pump.ended, state),
            )
    except Exception:
        log.exception("could not finish %s", reply.ref)
    finally:
        pump.hand_over(state)  # before the title: readers here must not wait for a model call
    if stored is not None and stored.status == MessageStatus.COMPLETE and len(history) == 1:
        try:
            title_chat(runtime, reply, agent, history[0]["content"], stored.content)
        except Exception:
            log.exception("could not title chat %s", reply.chat_id)


def title_chat(runtime: Runtime, reply: ReplyHandle, agent: Agent, question: str, answer: str) -> None:
    """After a chat's first reply, ask the model for a title (the demo model keeps first words)."""
    try:
        suggestion = suggest_title(agent, question, answer, runtime.app.config)
    except ProviderError as exc:
        log.info("no title for chat %s: %s", reply.chat_id, exc)
        return
    if suggestion:
        title, completion = suggestion
        record_title(
            reply.chat_id,
            reply.message_id,
            runtime.agents,
            title,
            Usage(completion.prompt_tokens, completion.completion_tokens),
        )


def finish_without_log(runtime: Runtime, reply: ReplyHandle, usage: Usage | None, written: str) -> None:
    """Redis failed under the pump for longer than the producer timeout, or lost the log.

    Keep what the pump knows it wrote as a provisional text; the outcome is recorded from the log
    (what readers can get) if there is one, by us now or by whoever finishes once Redis answers.
    """
    keep_provisional_text(reply.stream_id, written)
    try:
        finish_reply(runtime.backend, runtime.agents, reply.ref, FinishReason.ERROR, usage, REDIS_LOST)
    except redis.RedisError:
        pass  # the reaper or a reader finishes it once Redis answers
