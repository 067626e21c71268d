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
from dataclasses import dataclass, field

import redis
from flask import Flask

from ..agents import (
    Agent,
    Completion,
    ModelMessages,
    ProviderError,
    ToolInput,
    generate,
    suggest_title,
)
from ..background import spawn_daemon
from ..models import forget_checkpoint, park_run, save_checkpoint
from ..streams import Event, StreamRef
from ..tools import ToolSpec
from ..vocabulary import FinishReason, MessageStatus
from .acting import Acting, RequestedCall
from .finish import Usage, finish_reply, keep_provisional_text, record_title
from .pump import ProducerState
from .run_state import Carried, Run
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
    app: Flask,
    runtime: Runtime,
    reply: ReplyHandle,
    agent: Agent,
    history: ModelMessages,
    carried: Carried | None = None,
) -> None:
    """Register the reply with the pump now (so readers that follow it from this moment are fed
    by the pump), then generate in the background. `carried`: what a Continue starts from."""
    state = runtime.pump.register(reply.ref, reply.start_id)
    question = history[0]["content"] if len(history) == 1 and carried is None else ""
    run = Run(messages=list(history), question=question, carried=carried is not None)
    spawn_daemon(lambda: produce(app, runtime, state, reply, agent, run, carried=carried), "durable-chat-producer")


@dataclass(frozen=True)
class Answer:
    """A person's answer to the call the run waited for (the first of its queued calls)."""

    approved: bool
    denial: str = ""


def produce(
    app: Flask,
    runtime: Runtime,
    state: ProducerState,
    reply: ReplyHandle,
    agent: Agent,
    run: Run,
    answer: Answer | None = None,
    carried: Carried | None = None,
) -> None:
    """Run the model, feeding the pump; then finish the reply with what reached the log.

    The producer stays registered with the pump until its app context (and with it its database
    session) is gone, so whoever waits for the pump's producers also waits for their connections.
    A run that parked (a call waits for an answer) keeps the chat's live claim for as long as the
    answer may take: its readers wait, nobody interrupts it, and no new reply starts in the chat.
    """
    parked = False
    try:
        with app.app_context():
            parked = generate_and_finish(runtime, state, reply, agent, run, answer, carried)
    finally:
        runtime.pump.unregister(state)
    if parked:
        wait_ms = (agent.approval_timeout_seconds + 2 * runtime.reaper_interval + 30) * 1000
        try:
            runtime.backend.keep_waiting(reply.ref, int(wait_ms))
        except redis.RedisError:
            log.warning("could not keep %s claimed while it waits for an answer", reply.ref)


@dataclass
class Step:
    """One model step as it streamed: its text, the calls it made (in order), its completion."""

    text: list[str] = field(default_factory=list)
    calls: dict[str, RequestedCall] = field(default_factory=dict)
    completion: Completion | None = None


def run_step(
    runtime: Runtime,
    state: ProducerState,
    agent: Agent,
    messages: ModelMessages,
    tools: list[ToolSpec],
    deadline: float,
) -> Step:
    """Stream one model step into the log: text as deltas, call arguments as `tool-input`."""
    pump, step = runtime.pump, Step()
    generation = generate(agent, messages, runtime.app.config, tools)
    try:
        for piece in generation:
            if isinstance(piece, Completion):
                step.completion = piece
            elif state.should_stop:
                break
            elif isinstance(piece, ToolInput):
                call = step.calls.get(piece.call_id)
                if call is None:
                    call = step.calls[piece.call_id] = RequestedCall(piece.call_id, piece.name, state.text_pushed)
                if piece.text:
                    call.arguments.append(piece.text)
                    data = {"toolCallId": piece.call_id, "name": piece.name, "text": piece.text}
                    pump.push_event(state, "tool-input", data)
            else:
                step.text.append(piece)
                pump.push(state, piece)
                if time.monotonic() > deadline:
                    step.completion = Completion(FinishReason.LENGTH)
                    break
    finally:
        generation.close()  # a stopped reply hangs up on the provider now, not at GC
    return step


def generate_and_finish(
    runtime: Runtime,
    state: ProducerState,
    reply: ReplyHandle,
    agent: Agent,
    run: Run,
    answer: Answer | None = None,
    carried: Carried | None = None,
) -> bool:
    """Model steps until one answers without calling a tool (or `max_steps`, whose last step is
    offered no tools), each step's calls made in between; then finish with what reached the log.
    True when the run parked instead (a call waits for a person's answer, or this worker is
    stopping and the run is between two steps: runs.py goes on with it)."""
    config = runtime.app.config
    pump = runtime.pump
    reason, error = FinishReason.STOP, None
    deadline = time.monotonic() + config["MAX_REPLY_SECONDS"]
    tools = runtime.toolbox.specs(agent.tools) if agent.tools else []
    by_name = {t.name: t for t in tools}
    acting = Acting(runtime.toolbox, pump, state, reply.message_id, reply.stream_id, by_name, agent, run.calls_made)
    model_names = {tool.name: tool.model_name for tool in tools}
    step = Step(completion=Completion(FinishReason.STOP))
    checkpointed = False
    if carried is not None:  # a Continue: its log tells the interrupted reply first, the model too
        for kind, data in carried.events():
            if kind == "delta":
                pump.push(state, data["text"])
            else:
                pump.push_event(state, kind, data)
        run.messages.extend(carried.model_messages(model_names))
    try:
        if answer is not None:
            call = run.queued.pop(0)
            outcome = acting.answered(call, answer.approved, answer.denial)
            run.messages.append({"role": "tool", "tool_call_id": call.call_id, "content": outcome.result})
        while True:
            while run.queued and not state.should_stop:
                call = run.queued[0]
                made = acting.run(call, lambda: run.to_json(acting.calls_made))
                if made is None:
                    pump.drain(state)  # the `approval` event is in the log before the run lets go
                    pump.hand_over(state)
                    forget_checkpoint(reply.message_id)  # the call's row holds the run now
                    return True
                run.queued.pop(0)
                run.messages.append({"role": "tool", "tool_call_id": call.call_id, "content": made.result})
            if state.should_stop or run.step > agent.max_steps:
                break
            if runtime.handing_off and run.step > 1:  # this worker stops: another takes the run on
                forget_checkpoint(reply.message_id)
                park_run(reply.message_id, reply.stream_id, run.to_json(acting.calls_made))
                pump.drain(state)
                pump.hand_over(state)
                return True
            if run.step > 1:  # a boundary: should this worker die now, another goes on from here
                results = [m["tool_call_id"] for m in run.messages if m["role"] == "tool"]
                save_checkpoint(reply.message_id, reply.stream_id, run.to_json(acting.calls_made), results)
                checkpointed = True
            offered = tools if run.step < agent.max_steps else []
            step = run_step(runtime, state, agent, run.messages, offered, deadline)
            run.step += 1
            if step.completion is None:  # stopped mid-step
                break
            run.used.add(step.completion)
            reason = step.completion.finish_reason
            if not step.calls or reason == FinishReason.LENGTH:
                break
            calls = list(step.calls.values())
            tool_calls = [call.as_model_call(model_names.get(call.name, call.name)) for call in calls]
            run.messages.append({"role": "assistant", "content": "".join(step.text) or None, "tool_calls": tool_calls})
            run.queued = calls
    except ProviderError as exc:
        reason, error = FinishReason.ERROR, str(exc)
    except Exception:
        log.exception("generation failed for %s", reply.ref)
        reason, error = FinishReason.ERROR, "The reply failed unexpectedly."
    usage = run.used.usage("".join(step.text) if step.completion is None else "", run.carried)
    if state.cancelled:
        reason, error = FinishReason.CANCELLED, None
    elif state.interrupted:
        reason, error = FinishReason.INTERRUPTED, None
    pump.drain(state)
    if checkpointed:
        forget_checkpoint(reply.message_id)
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
                without_calls=acting.calls_made == 0,
            )
    except Exception:
        log.exception("could not finish %s", reply.ref)
    finally:
        pump.hand_over(state)  # before the title: readers here must not wait for a model call
    if stored is not None and stored.status == MessageStatus.COMPLETE and run.question:
        try:
            title_chat(runtime, reply, agent, run.question, stored.content)
        except Exception:
            log.exception("could not title chat %s", reply.chat_id)
    return False


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
