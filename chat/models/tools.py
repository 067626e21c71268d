"""A reply's tool calls: one row per call, written *before* the call starts and settled once.

The row is the at-most-once guard: a call runs only if this process inserted its row (the key is
the stream and the model's `toolCallId`), so no retry, resume or second worker can run it again.
A row still `running` when its reply is finished is settled by the finisher (`interrupted`, or
`cancelled` after a stop): it may or may not have taken effect, and nothing runs it again.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..vocabulary import UNSETTLED_TOOL_STATUSES, ToolStatus
from .base import Model, insert_or_ignore, utcnow
from .chats import Message


class ToolCall(Model):
    __tablename__ = "tool_calls"
    __table_args__ = (UniqueConstraint("stream_id", "call_id", name="uq_tool_calls_stream_call"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), nullable=False, index=True
    )
    stream_id: Mapped[str] = mapped_column(String(64), nullable=False)
    call_id: Mapped[str] = mapped_column(String(128), nullable=False)  # the API's toolCallId
    position: Mapped[int] = mapped_column(Integer, nullable=False)  # its order within the reply
    text_offset: Mapped[int] = mapped_column(Integer, nullable=False)  # reply characters before it
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    arguments: Mapped[str] = mapped_column(Text, nullable=False)  # the JSON text the model wrote
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # a ToolStatus
    # Whether it was started (its arguments were valid): only then is there a `tool-call` event.
    executed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    result: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A call waiting for a person's answer: until when (then it counts as denied), and what its
    # reply's run needs to go on from here, on whichever worker gets the answer (replies/runs.py).
    decide_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    run_state: Mapped[str | None] = mapped_column(Text)


def insert_call(
    message_id: uuid.UUID,
    stream_id: str,
    call_id: str,
    position: int,
    text_offset: int,
    name: str,
    arguments: str,
    status: ToolStatus,
    **more: object,
) -> bool:
    """INSERT a call's row unless its stream has one with that id, in the caller's transaction;
    whether it went in. `more`: the other columns (a settled call is finished when it starts)."""
    now = utcnow()
    columns: dict[str, object] = {"started_at": now, "finished_at": None if status in UNSETTLED_TOOL_STATUSES else now}
    columns.update(more)
    return insert_or_ignore(
        ToolCall,
        id=uuid.uuid4(),
        message_id=message_id,
        stream_id=stream_id,
        call_id=call_id,
        position=position,
        text_offset=text_offset,
        name=name,
        arguments=arguments,
        status=status,
        **columns,
    )


class ParkedRun(Model):
    """A run handed over between two model steps by a worker that stops (replies/runs.py)."""

    __tablename__ = "parked_runs"

    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(64), nullable=False)
    run_state: Mapped[str] = mapped_column(Text, nullable=False)
    parked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


def park_run(message_id: uuid.UUID, stream_id: str, run_state: str) -> None:
    """Hand a run over, and commit."""
    db.session.add(ParkedRun(message_id=message_id, stream_id=stream_id, run_state=run_state, parked_at=utcnow()))
    db.session.commit()


def take_parked_runs(limit: int = 20) -> list[ParkedRun]:
    """Runs handed over, each taken by one caller only (its row deleted, and committed)."""
    taken = []
    for parked in list(db.session.scalars(select(ParkedRun).order_by(ParkedRun.parked_at).limit(limit))):
        db.session.expunge(parked)
        deleted = db.session.execute(delete(ParkedRun).where(ParkedRun.message_id == parked.message_id))
        db.session.commit()
        if cast(CursorResult, deleted).rowcount == 1:
            taken.append(parked)
    return taken


class RunCheckpoint(Model):
    """A run at its last step boundary, saved before the next model step starts (replies/runs.py):
    if its worker dies before that step writes anything, another worker goes on from here."""

    __tablename__ = "run_checkpoints"

    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    run_state: Mapped[str] = mapped_column(Text, nullable=False)
    # The toolCallIds of the results the run has had, in order: the log must show exactly these
    # results, and end with the last of them, for the run to be at this boundary still.
    results: Mapped[str] = mapped_column(Text, nullable=False)  # JSON list
    saved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    @property
    def result_ids(self) -> list[str]:
        return list(json.loads(self.results))


DELETE_CHECKPOINT = delete(RunCheckpoint).where(RunCheckpoint.message_id == bindparam("message_key"))


def save_checkpoint(message_id: uuid.UUID, stream_id: str, run_state: str, result_ids: Sequence[str]) -> None:
    """Replace the run's checkpoint with this boundary's, and commit."""
    db.session.execute(DELETE_CHECKPOINT, {"message_key": message_id})
    db.session.add(
        RunCheckpoint(
            message_id=message_id,
            stream_id=stream_id,
            run_state=run_state,
            results=json.dumps(list(result_ids)),
            saved_at=utcnow(),
        )
    )
    db.session.commit()


def checkpoint_of(stream_id: str) -> RunCheckpoint | None:
    return db.session.scalar(select(RunCheckpoint).where(RunCheckpoint.stream_id == stream_id))


def take_checkpoint(checkpoint: RunCheckpoint) -> bool:
    """Take the checkpoint to go on from it (its row deleted, committed); False when another
    worker took it first."""
    deleted = db.session.execute(
        delete(RunCheckpoint).where(
            RunCheckpoint.message_id == checkpoint.message_id, RunCheckpoint.saved_at == checkpoint.saved_at
        )
    )
    db.session.commit()
    return cast(CursorResult, deleted).rowcount == 1


def forget_checkpoint(message_id: uuid.UUID) -> None:
    """The run ended (or cannot go on): its checkpoint is of no use any more; committed."""
    db.session.execute(DELETE_CHECKPOINT, {"message_key": message_id})
    db.session.commit()


def claim_call(
    message_id: uuid.UUID,
    stream_id: str,
    call_id: str,
    position: int,
    text_offset: int,
    name: str,
    arguments: str,
    status: ToolStatus = ToolStatus.RUNNING,
    result: str | None = None,
    executed: bool = False,
    decide_by: datetime | None = None,
    run_state: str | None = None,
) -> bool:
    """Record a call before it starts, and commit; False when its row exists already (it was
    claimed before: it must not run again)."""
    claimed = insert_call(
        message_id,
        stream_id,
        call_id,
        position,
        text_offset,
        name,
        arguments,
        status,
        result=result,
        executed=executed,
        decide_by=decide_by,
        run_state=run_state,
    )
    db.session.commit()
    return claimed


def add_unrecorded_calls(message_id: uuid.UUID, stream_id: str, calls: Sequence[tuple[str, str, int, str]]) -> None:
    """Rows, `running`, for calls a reply's log shows (call id, name, text offset, arguments so
    far) that have none: their producer died or was stopped while the model wrote them. In the
    caller's transaction; its finisher then settles them with the rest."""
    known = set(db.session.scalars(select(ToolCall.call_id).where(ToolCall.stream_id == stream_id)))
    for position, (call_id, name, text_offset, arguments) in enumerate(calls):
        if call_id not in known:
            insert_call(message_id, stream_id, call_id, position, text_offset, name, arguments, ToolStatus.RUNNING)


def settle_call(stream_id: str, call_id: str, status: ToolStatus, result: str) -> bool:
    """Settle a running call, and commit; False when somebody settled it first (a finisher)."""
    settled = db.session.execute(
        update(ToolCall)
        .where(ToolCall.stream_id == stream_id, ToolCall.call_id == call_id, ToolCall.status == ToolStatus.RUNNING)
        .values(status=status, result=result, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return cast(CursorResult, settled).rowcount == 1


def settle_running_calls(stream_id: str, status: ToolStatus, result: str) -> list[ToolCall]:
    """Settle every call of the stream still running or waiting for an answer, in the caller's
    transaction; those calls."""
    running = list(
        db.session.scalars(
            select(ToolCall)
            .where(ToolCall.stream_id == stream_id, ToolCall.status.in_(UNSETTLED_TOOL_STATUSES))
            .order_by(ToolCall.position)
        )
    )
    if running:
        db.session.execute(
            update(ToolCall)
            .where(ToolCall.id.in_([call.id for call in running]), ToolCall.status.in_(UNSETTLED_TOOL_STATUSES))
            .values(status=status, result=result, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return running


def copy_calls(calls: Sequence[ToolCall], message_id: uuid.UUID, stream_id: str) -> None:
    """Settled calls recorded again for another reply — one carrying on an interrupted reply, or
    a fork's copy (same ids, states and results: a call's row is its at-most-once guard there
    too), in the caller's transaction."""
    for call in calls:
        insert_call(
            message_id,
            stream_id,
            call.call_id,
            call.position,
            call.text_offset,
            call.name,
            call.arguments,
            ToolStatus(call.status),
            result=call.result,
            executed=call.executed,
            started_at=call.started_at,
            finished_at=call.finished_at,
        )


def chat_call(chat_id: uuid.UUID, call_id: str) -> ToolCall | None:
    """A tool call of any reply of the chat, by its id (None: the chat has no such call)."""
    return db.session.scalar(
        select(ToolCall)
        .join(Message, Message.id == ToolCall.message_id)
        .where(Message.chat_id == chat_id, ToolCall.call_id == call_id)
        .order_by(ToolCall.started_at.desc())
        .limit(1)
    )


def decide_call(stream_id: str, call_id: str, approved: bool, result: str) -> bool:
    """Answer a waiting call, and commit: approved, it is `running` (its run goes on and runs it);
    denied, it is settled `denied` with `result`. False when it was not waiting any more (answered
    already, timed out, or its reply was stopped): one answer wins."""
    values: dict[str, object] = {"status": ToolStatus.RUNNING, "executed": True}
    if not approved:
        values = {"status": ToolStatus.DENIED, "result": result, "finished_at": utcnow()}
    decided = db.session.execute(
        update(ToolCall)
        .where(ToolCall.stream_id == stream_id, ToolCall.call_id == call_id, ToolCall.status == ToolStatus.WAITING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return cast(CursorResult, decided).rowcount == 1


def overdue_calls(now: datetime, limit: int = 100) -> list[ToolCall]:
    """Calls still waiting for an answer past their deadline (each then counts as denied)."""
    return list(
        db.session.scalars(
            select(ToolCall)
            .where(ToolCall.status == ToolStatus.WAITING, ToolCall.decide_by < now)
            .order_by(ToolCall.decide_by)
            .limit(limit)
        )
    )


def calls_of_replies(message_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[ToolCall]]:
    """The tool calls of these replies, each reply's in order (one query for a page)."""
    ids = list(message_ids)
    found: dict[uuid.UUID, list[ToolCall]] = defaultdict(list)
    if ids:
        for call in db.session.scalars(
            select(ToolCall).where(ToolCall.message_id.in_(ids)).order_by(ToolCall.message_id, ToolCall.position)
        ):
            found[call.message_id].append(call)
    return found


def interleaved(content: str, calls: Sequence[ToolCall]) -> list[str | ToolCall]:
    """A stored reply in order: its text cut where each call sat (`text_offset`), the calls
    between the pieces; empty pieces left out."""
    parts: list[str | ToolCall] = []
    start = 0
    for call in sorted(calls, key=lambda c: c.position):
        offset = min(max(call.text_offset, start), len(content))
        if offset > start:
            parts.append(content[start:offset])
        parts.append(call)
        start = offset
    if start < len(content):
        parts.append(content[start:])
    return parts


def call_events(call: ToolCall) -> list[tuple[str, dict]]:
    """A stored call told as the stream told it: its arguments, the question it asked (when it
    waited for an answer), its start (when it ran), its result."""
    told: list[tuple[str, dict]] = [
        ("tool-input", {"toolCallId": call.call_id, "name": call.name, "text": call.arguments})
    ]
    if call.decide_by is not None:  # it waited for a person's answer
        asked = {"toolCallId": call.call_id, "name": call.name, "arguments": json.loads(call.arguments)}
        told.append(("approval", asked))
    if call.executed:
        arguments = json.loads(call.arguments)
        told.append(("tool-call", {"toolCallId": call.call_id, "name": call.name, "arguments": arguments}))
    told.append(result_event(call))
    return told


def result_event(call: ToolCall) -> tuple[str, dict]:
    return "tool-result", {"toolCallId": call.call_id, "status": call.status, "result": call.result or ""}
