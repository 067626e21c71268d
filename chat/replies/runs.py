"""A parked run goes on where it is picked up: an answer, the timeout, or a hand-over.

A call an agent must have approved parks its run (acting.py, producer.py): the call's row holds
what the run needs (run_state.py) and the chat stays claimed, but no greenlet or worker waits.
The answer — from any tab, device or instance (`answer`), or the timeout, which the reaper of any
worker applies (`deny_overdue`) — is settled once in the database (`decide_call`: one answer
wins, and a stop that came first wins over it), and then the run goes on in *this* process,
writing into the same log after its last entry, so every reader just keeps reading.

A worker that stops gracefully parks the runs that reach a step boundary during its grace
period (`handing_off`, producer.py) instead of waiting for them; the reaper of another worker
takes each one (`adopt_parked`) and goes on with it the same way.

A worker that dies leaves its runs behind without a word. A run saves a checkpoint at each step
boundary (producer.py); when its producer is found dead (`recover`), a run whose log still ends
at that boundary — every result the checkpoint names is in the log and nothing came after the
last — goes on from it on the finder's worker; the step that had started wrote nothing, so
nothing is lost or told twice, and no tool call runs again. Any other run is interrupted.
"""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask

from ..agents import Agent
from ..background import spawn_daemon
from ..extensions import db
from ..models import (
    Chat,
    Message,
    chat_call,
    checkpoint_of,
    decide_call,
    forget_checkpoint,
    overdue_calls,
    take_checkpoint,
    take_parked_runs,
    utcnow,
)
from ..streams import StreamRef
from ..vocabulary import ToolStatus
from .finish import interrupt
from .producer import Answer, ReplyHandle, produce
from .run_state import Run
from .runtime import Runtime
from .turns import ReplyError

log = logging.getLogger(__name__)

DENIED = "The person denied this call."
NOT_WAITING = "This tool call is not waiting for an answer any more."


def answer(app: Flask, runtime: Runtime, chat: Chat, call_id: str, approved: bool) -> ToolStatus:
    """Answer a call of the chat's live reply; the run goes on here.

    :raise ReplyError: 404 for a call the chat's reply does not have, 409 when it is not waiting.
    """
    call = chat_call(chat.id, call_id)
    if call is None:
        raise ReplyError(404, "This chat has no such tool call.")
    if call.status != ToolStatus.WAITING or not decide_call(call.stream_id, call_id, approved, DENIED):
        raise ReplyError(409, NOT_WAITING)
    wait_until_asked(runtime, StreamRef(str(chat.id), call.stream_id), call_id)
    go_on(app, runtime, chat, call.message_id, call.stream_id, call.run_state, Answer(approved, DENIED))
    return ToolStatus.RUNNING if approved else ToolStatus.DENIED


def wait_until_asked(runtime: Runtime, ref: StreamRef, call_id: str, timeout: float = 5.0) -> None:
    """An answer can come before the parking producer's `approval` entry is written (its row
    is recorded first): going on now would fence that entry out of the log. Wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.type == "approval" and e.payload()["toolCallId"] == call_id for e in runtime.backend.read(ref)):
            return
        time.sleep(0.05)


def deny_overdue(app: Flask, runtime: Runtime) -> int:
    """Deny every call whose answer is overdue (this worker wins it once) and go on with its run."""
    denied = 0
    for call in overdue_calls(utcnow()):
        message = db.session.get(Message, call.message_id)
        agent = runtime.agents.get(message.chat.agent_slug) if message else None
        timeout = agent.approval_timeout_seconds if agent else 0
        reason = f"No answer within {timeout} seconds: the call counts as denied."
        if message is not None and decide_call(call.stream_id, call.call_id, False, reason):
            go_on(app, runtime, message.chat, call.message_id, call.stream_id, call.run_state, Answer(False, reason))
            denied += 1
    return denied


def adopt_parked(app: Flask, runtime: Runtime) -> int:
    """Go on, here, with the runs a stopping worker handed over (each taken by one worker)."""
    if runtime.handing_off:
        return 0  # this worker is stopping itself: it hands over, it does not take
    adopted = 0
    for parked in take_parked_runs():
        message = db.session.get(Message, parked.message_id)
        if message is not None:
            go_on(app, runtime, message.chat, parked.message_id, parked.stream_id, parked.run_state, None)
            adopted += 1
    return adopted


def recover(app: Flask, runtime: Runtime, ref: StreamRef) -> None:
    """A reply whose producer stopped heart-beating: go on with its run here when its log ends at
    the run's last checkpoint, else interrupt it (its text so far is stored)."""
    checkpoint = checkpoint_of(ref.stream_id)
    if checkpoint is None:
        if not runtime.backend.alive([ref])[0]:  # (alive: another worker took its run on just now)
            interrupt(runtime.backend, runtime.agents, ref)
        return
    written = runtime.backend.read(ref)
    results = [e.payload()["toolCallId"] for e in written if e.type == "tool-result"]
    at_boundary = bool(written) and written[-1].type == "tool-result" and results == checkpoint.result_ids
    if not at_boundary:  # a step was under way when the worker died: its text is not reproducible
        forget_checkpoint(checkpoint.message_id)
        interrupt(runtime.backend, runtime.agents, ref)
        return
    # Its dead producer's claim on the chat lapsed: claim it again first (heartbeats refresh only
    # a claim that exists, and whoever looks now sees the reply alive), unless a new reply holds
    # the chat already; then take the checkpoint, which only one worker gets.
    backend = runtime.backend
    if not backend.claim_live(ref, runtime.app.config["PRODUCER_TIMEOUT_MS"]) and not backend.alive([ref])[0]:
        forget_checkpoint(checkpoint.message_id)
        interrupt(backend, runtime.agents, ref)
        return
    if not take_checkpoint(checkpoint):
        return  # another worker found it first and goes on with it
    message = db.session.get(Message, checkpoint.message_id)
    if message is None:
        return
    log.info("the producer of %s died between two steps: its run goes on here", ref)
    go_on(app, runtime, message.chat, checkpoint.message_id, checkpoint.stream_id, checkpoint.run_state, None)


def go_on(
    app: Flask,
    runtime: Runtime,
    chat: Chat,
    message_id: uuid.UUID,
    stream_id: str,
    run_state: str | None,
    decided: Answer | None,
) -> None:
    """Continue a parked run in this process, after its log's last entry (`decided`: the answer
    to the call it waited for; None for a run handed over between steps)."""
    agent: Agent | None = runtime.agents.get(chat.agent_slug)
    ref = StreamRef(str(chat.id), stream_id)
    written = runtime.backend.read(ref)
    if agent is None or run_state is None or not written:
        log.warning("the run of %s cannot go on (its agent or its log is gone): interrupted", ref)
        interrupt(runtime.backend, runtime.agents, ref)
        return
    # A producer still writing somewhere is refused from now on. No epoch over an ended or sealed
    # log: whoever ended or sealed it (a stop) records the outcome, not us.
    base = None if written[-1].terminal else runtime.backend.fence(ref)
    if base is None:
        return
    reply = ReplyHandle(chat.id, stream_id, message_id, written[0].id)
    state = runtime.pump.register(ref, base, written=written)
    run = Run.from_json(run_state)
    spawn_daemon(lambda: produce(app, runtime, state, reply, agent, run, decided), "durable-chat-producer")
