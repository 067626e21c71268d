"""Finishing a reply: its assistant message stored and billed, and its log ended — exactly once.

The words, each meaning one thing everywhere in this code:

- **seal** (`StreamBackend.seal`): the log accepts no more deltas, so the text read from it next is
  the reply's final text.
- **record** (`record_outcome`): the message leaves `streaming` with its text, status, usage and
  cost, its tool calls still running are settled (`interrupted`, or `cancelled` by a stop), its
  ledger row is written and its credit reservation given back, in one transaction. The first caller's conditional UPDATE
  matches; every later caller's matches no row and gets back what the first one stored. The
  ledger row is unique per stream, so a charge can be neither doubled nor lost.
- **end** (`StreamBackend.end_log`): the terminal event (`finish` or `error`, telling the recorded
  outcome) is appended to the log, once; readers stop there. Before it go the results of tool
  calls the log does not tell yet (a call whose producer died, or that a stop ended): so the log
  tells the reply as stored, calls included.
- **finish** (`finish_reply`) = seal + record + end. Whoever finishes a reply calls it: its
  producer, a stop request, a reader or the reaper that found the producer gone.
- **interrupt** (`interrupt`): finish as `interrupted` because the producer is gone.
- **reap** (`reap_orphans`): interrupt every reply whose producer is gone (a periodic sweep).
- **provisional text** (`keep_provisional_text`): a producer that lost Redis keeps what it wrote,
  unbilled, for whoever finishes the reply once Redis answers.

Longer than most modules on purpose: every step that ends a reply or charges for one lives here,
so "exactly once" is reviewed in one file.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from sqlalchemy.exc import IntegrityError

from ..agents import Agent, estimate_tokens
from ..extensions import db
from ..models import (
    Chat,
    Message,
    ToolCall,
    add_unrecorded_calls,
    call_events,
    calls_of_replies,
    finish_streaming,
    interleaved,
    release_credit,
    reply_and_chat,
    result_event,
    settle_running_calls,
    streaming_replies,
    touch_chat,
    utcnow,
    write_provisional_text,
)
from ..people.credits import charge
from ..streams import Event, StreamBackend, StreamRef, entry_cursor, joined_text
from ..vocabulary import FinishReason, MessageStatus
from ..web import metrics, structured_logs


@dataclasses.dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclasses.dataclass(frozen=True)
class StoredReply:
    """The outcome as the database holds it, and the terminal stream event that tells it."""

    message_id: uuid.UUID
    status: MessageStatus
    finish_reason: FinishReason
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    content: str

    def columns(self) -> dict[str, object]:
        """The message columns this outcome sets (its fields are named after them)."""
        return {name: value for name, value in dataclasses.asdict(self).items() if name != "message_id"}

    @property
    def terminal_event(self) -> tuple[str, dict]:
        if self.status == MessageStatus.ERROR:
            return "error", {"message": self.error or "The reply failed."}
        return "finish", {
            "finishReason": self.finish_reason,
            "usage": {"promptTokens": self.prompt_tokens, "completionTokens": self.completion_tokens},
        }

    def as_events(self, after: str | None = None, calls: Sequence[ToolCall] = ()) -> list[Event]:
        """The stored reply told as a stream (its log expired or was never shared): its text as
        deltas with its tool calls' events between them, in order, then its terminal event; only
        those after the cursor `after`."""
        told: list[tuple[str, dict]] = []
        for part in interleaved(self.content, calls) or [""]:
            told.extend([("delta", {"text": part})] if isinstance(part, str) else call_events(part))
        told.append(self.terminal_event)
        events = [Event(f"0-{number}", kind, json.dumps(data)) for number, (kind, data) in enumerate(told, start=1)]
        return [e for e in events if after is None or e.cursor > entry_cursor(after)]


def stored_reply(message: Message) -> StoredReply:
    return StoredReply(
        message_id=message.id,
        status=MessageStatus(message.status),
        finish_reason=FinishReason(message.finish_reason or FinishReason.STOP),
        error=message.error,
        prompt_tokens=message.prompt_tokens or 0,
        completion_tokens=message.completion_tokens or 0,
        cost_micros=message.cost_micros or 0,
        content=message.content,
    )


def finish_reply(
    backend: StreamBackend,
    agents: Mapping[str, Agent],
    ref: StreamRef,
    reason: FinishReason,
    usage: Usage | None = None,
    error: str | None = None,
    text: str | None = None,
    on_ended: Callable[[Event], None] | None = None,
    without_calls: bool = False,
) -> StoredReply | None:
    """Seal, record and end the reply of `ref`; safe to call again (it returns what is stored).

    `text` is the producer's own record of what reached the log; anyone else seals the log first
    so that the text read from it is final. The log decides the text, never a client.
    `on_ended` gets the terminal entry when this call wrote it (the producer hands it to the
    readers in its process at once). `without_calls`: the caller (the producer) knows the reply
    called no tool, so no call needs settling (a query less in a finish of every reply).
    """
    log_exists, results_told, logged_calls = True, None, None
    if text is None:
        backend.seal(ref)
        log_exists = backend.exists(ref)
        # A log Redis has lost leaves the provisional text kept in the database (or none).
        logged = backend.read(ref) if log_exists else []
        text = joined_text(logged) if log_exists else None
        results_told = {e.payload()["toolCallId"] for e in logged if e.type == "tool-result"}
        logged_calls = calls_in_log(logged)
    stored = record_outcome(ref.stream_id, agents, reason, text, usage, error, without_calls, logged_calls)
    if stored is not None and log_exists:  # no stub log: resumers then get the stored reply
        # Calls the producer could not tell the log about (it died, or a stop sealed the log
        # first) get their result from the database, so the log tells the reply as stored.
        untold = (
            [result_event(call) for call in calls_of_replies([stored.message_id])[stored.message_id]]
            if results_told is not None
            else []
        )
        before = [(kind, data) for kind, data in untold if data["toolCallId"] not in (results_told or set())]
        ended = backend.end_log(ref, *stored.terminal_event, before=before)
        if ended is not None and on_ended is not None:
            on_ended(ended)
    return stored


def calls_in_log(logged: Sequence[Event]) -> list[tuple[str, str, int, str]]:
    """The tool calls a log shows, in order: id, name, the reply characters before the first of
    its entries, and the arguments written so far."""
    calls: dict[str, list] = {}
    text_length = 0
    for event in logged:
        if event.type == "delta":
            text_length += len(event.payload()["text"])
        elif event.type == "tool-input":
            data = event.payload()
            call = calls.setdefault(data["toolCallId"], [data["toolCallId"], data["name"], text_length, ""])
            call[3] += data["text"]
    return [(call_id, name, offset, arguments) for call_id, name, offset, arguments in calls.values()]


def interrupt(backend: StreamBackend, agents: Mapping[str, Agent], ref: StreamRef) -> StoredReply | None:
    """Finish a reply whose producer is gone, with the text that reached its log."""
    return finish_reply(backend, agents, ref, FinishReason.INTERRUPTED)


def reap_orphans(
    backend: StreamBackend,
    agents: Mapping[str, Agent],
    max_reply_seconds: int,
    recover: Callable[[StreamRef], None] | None = None,
) -> int:
    """Interrupt every reply whose producer is gone (or hand it to `recover`, which may go on
    with its run instead); returns how many were found."""
    pending = streaming_replies()
    if not pending:
        return 0
    refs = [StreamRef(str(message.chat_id), str(message.stream_id)) for message in pending]
    stale_before = utcnow() - timedelta(seconds=max_reply_seconds + 60)
    finished = 0
    for ref, alive, message in zip(refs, backend.alive(refs), pending, strict=True):
        # A store other processes cannot see hides their producers: only age tells they are gone.
        too_young = not backend.shared and message.created_at.replace(tzinfo=stale_before.tzinfo) > stale_before
        if alive or too_young:
            continue
        if recover is None:
            interrupt(backend, agents, ref)
        else:
            recover(ref)
        finished += 1
    return finished


def record_outcome(
    stream_id: str,
    agents: Mapping[str, Agent],
    reason: FinishReason,
    text: str | None,
    usage: Usage | None = None,
    error: str | None = None,
    without_calls: bool = False,
    logged_calls: Sequence[tuple[str, str, int, str]] | None = None,
) -> StoredReply | None:
    """Store and bill the reply of `stream_id` unless it is already stored; return what is stored.
    `logged_calls`: the calls its log shows (calls_in_log), so that each has a row, settled.

    `text` None means the log is lost: the provisional text kept by `keep_provisional_text` is used.
    Returns None when no message belongs to that stream (nothing to finish).
    """
    started = time.monotonic()
    found = reply_and_chat(stream_id)
    if found is None:
        return None
    message, chat = found
    if message.status != MessageStatus.STREAMING:
        return stored_reply(message)
    if text is None:
        text = message.content
    estimated = usage is None or usage.prompt_tokens is None or usage.completion_tokens is None
    prompt_tokens = usage.prompt_tokens if usage and usage.prompt_tokens is not None else (message.prompt_tokens or 0)
    completion_tokens = (
        usage.completion_tokens if usage and usage.completion_tokens is not None else estimate_tokens(text)
    )
    if reason == FinishReason.ERROR and not text and estimated:
        prompt_tokens = completion_tokens = 0  # it never reached the model: nothing to bill
    agent = agents.get(chat.agent_slug)
    # An agent removed from the config since the reply started is charged nothing, not crashed on.
    cost = agent.cost_micros(prompt_tokens, completion_tokens) if agent else 0
    now = utcnow()
    # Read before the commit: afterwards each would cost a query to load the expired rows again.
    chat_id, started_at = str(chat.id), message.created_at
    outcome = StoredReply(
        message_id=message.id,
        status=reason.status,
        finish_reason=reason,
        error=error,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_micros=cost,
        content=text,
    )
    try:
        claimed = finish_streaming(message.id, **outcome.columns(), updated_at=now)
        if claimed:
            if logged_calls:
                add_unrecorded_calls(message.id, stream_id, logged_calls)
            if not without_calls:  # a call still running lost its producer (or is stopped): it ends so, once
                settle_running_calls(stream_id, reason.tool_status, reason.tool_result)
            touch_chat(chat.id, now)  # the chat's row before the identity's, as everywhere (turns.py)
            charge(chat, stream_id, message.id, prompt_tokens, completion_tokens, estimated, cost)
            if message.reserved_by is not None:
                release_credit(message.reserved_by, message.reserved_micros or 0)
        db.session.commit()
    except IntegrityError:  # another finisher's ledger row won the race
        db.session.rollback()
        claimed = False
    db.session.expire_all()
    if not claimed:  # somebody else recorded it first: what they stored is the outcome
        return stored_reply(db.session.get_one(Message, message.id))
    metrics.REPLIES_FINISHED.labels(reason.value).inc()
    structured_logs.event(
        "reply.finish",
        chat=chat_id,
        stream=stream_id,
        outcome=reason.value,
        seconds=round((now - started_at.replace(tzinfo=now.tzinfo)).total_seconds(), 3),
        completion_tokens=completion_tokens,
    )
    metrics.FINISH_SECONDS.observe(time.monotonic() - started)
    return outcome


def record_title(
    chat_id: uuid.UUID, message_id: uuid.UUID, agents: Mapping[str, Agent], title: str, usage: Usage
) -> bool:
    """Store a model-made chat title and charge its usage, once per chat; False if already done."""
    chat = db.session.get_one(Chat, chat_id)
    agent = agents.get(chat.agent_slug)
    estimated = usage.prompt_tokens is None or usage.completion_tokens is None
    prompt_tokens = usage.prompt_tokens if usage.prompt_tokens is not None else estimate_tokens(title) * 20
    completion_tokens = usage.completion_tokens if usage.completion_tokens is not None else estimate_tokens(title)
    cost = agent.cost_micros(prompt_tokens, completion_tokens) if agent else 0
    chat.title = title
    db.session.flush()  # the chat's row before the identity's (the charge), as everywhere (turns.py)
    try:
        charge(chat, f"title-{chat_id}", message_id, prompt_tokens, completion_tokens, estimated, cost)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False
    return True


def keep_provisional_text(stream_id: str, text: str) -> None:
    """Keep a still-streaming reply's text provisionally (not an outcome, nothing billed), for a
    finisher that later finds its log lost."""
    write_provisional_text(stream_id, text)
    db.session.commit()
