"""The `RESUMABLE_STREAMS=0` backend: a reply's log lives in this process's memory only.

It has the same methods as RedisStreams (and follows a log like StreamHub), so generation and the
POST response are the same code in both modes; what it cannot do is let another process (or a
later request after the reply has finished) read the log, so GET /api/chat falls back to the
stored message.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence

from . import APPENDED, SEALED, Event, Hold, LogState, StreamRef, entry_cursor, joined_text
from .client_socket import ClientSocket


class LocalLog:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.sealed = False
        self.cancelled = False
        self.changed = threading.Condition()

    def add(self, event_type: str, data: dict) -> Event:
        event = Event(f"0-{len(self.events) + 1}", event_type, json.dumps(data))
        self.append(event)
        return event

    def append(self, event: Event) -> None:
        with self.changed:
            assert event.cursor == (0, len(self.events) + 1), "entry ids are positions"
            self.events.append(event)
            self.changed.notify_all()

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1].terminal


class LocalStreams:
    """A StreamBackend and a Follower in memory, for one process."""

    shared = False

    def __init__(self, keepalive_seconds: float) -> None:
        self.keepalive_seconds = keepalive_seconds
        self.logs: dict[StreamRef, LocalLog] = {}
        self.live: dict[str, str] = {}
        self.holds: dict[str, set[str]] = {}
        self.lock = threading.RLock()

    def append_stream_id(self, chat_id: str, stream_id: str) -> None:
        """Nothing to record: without Redis there is no stream for another request to resume."""

    def load_streams(self, chat_id: str) -> list[str]:
        return []

    def newest_log(self, chat_id: str, after: str | None = None) -> LogState | None:
        return None

    def hold_and_find_newest(self, hold: Hold, chat_id: str, after: str) -> tuple[bool, LogState | None]:
        return self.hold_stream(hold), None

    def forget_chat(self, chat_id: str, stream_ids: Iterable[str]) -> None:
        with self.lock:
            for stream_id in stream_ids:
                self.logs.pop(StreamRef(chat_id, stream_id), None)

    def claim_live(self, ref: StreamRef, timeout_ms: int) -> bool:
        with self.lock:
            if ref.chat_id in self.live:
                return False
            self.live[ref.chat_id] = ref.stream_id
            return True

    def release_live(self, ref: StreamRef) -> None:
        with self.lock:
            if self.live.get(ref.chat_id) == ref.stream_id:
                del self.live[ref.chat_id]

    def alive(self, refs: Sequence[StreamRef]) -> list[bool]:
        return [self.live.get(ref.chat_id) == ref.stream_id for ref in refs]

    def heartbeat(self, refs: Sequence[StreamRef], timeout_ms: int) -> list[bool]:
        return [self.logs[ref].cancelled or self.logs[ref].sealed if ref in self.logs else True for ref in refs]

    def fence(self, ref: StreamRef) -> str | None:
        """One process, one producer at a time: the next producer numbers on from the last entry."""
        log = self.logs.get(ref)
        return log.events[-1].id if log and log.events and not log.sealed else None

    def keep_waiting(self, ref: StreamRef, wait_ms: int) -> None:
        """Memory keeps a log until it ends: nothing to extend."""

    def request_cancel(self, ref: StreamRef) -> None:
        if ref in self.logs:
            self.logs[ref].cancelled = True

    def create(self, ref: StreamRef, start_data: dict) -> str:
        log = self.logs[ref] = LocalLog()
        return log.add("start", start_data).id

    def claim_and_create(self, ref: StreamRef, start_data: dict, timeout_ms: int) -> str | None:
        return self.create(ref, start_data) if self.claim_live(ref, timeout_ms) else None

    def hold_and_claim(self, hold: Hold, ref: StreamRef, start_data: dict, timeout_ms: int) -> tuple[bool, str | None]:
        held = self.hold_stream(hold)
        return held, self.claim_and_create(ref, start_data, timeout_ms) if held else None

    def abandon(self, ref: StreamRef) -> None:
        self.release_live(ref)
        with self.lock:
            self.logs.pop(ref, None)

    def append_deltas(self, batch: Sequence[tuple[StreamRef, Event]]) -> list[str]:
        """Memory never fails half-way: a delta is new and its id is the next position's."""
        outcomes = []
        for ref, event in batch:
            log = self.logs.get(ref)
            if log is None or log.sealed:
                outcomes.append(SEALED)
            else:
                log.append(event)
                outcomes.append(APPENDED)
        return outcomes

    def seal(self, ref: StreamRef) -> None:
        if ref in self.logs:
            self.logs[ref].sealed = True

    def end_log(self, ref: StreamRef, event: str, data: dict, before: Sequence[tuple[str, dict]] = ()) -> Event | None:
        with self.lock:
            log = self.logs.get(ref)
            if log is None or log.done:
                return None
            log.sealed = True
            for kind, body in before:
                log.add(kind, body)
            entry = log.add(event, data)
            # Readers already following keep their reference; nobody new can find a finished log.
            del self.logs[ref]
            self.release_live(ref)
            return entry

    def log_ended(self, ref: StreamRef) -> bool:
        return ref not in self.logs

    def exists(self, ref: StreamRef) -> bool:
        return ref in self.logs

    def read(self, ref: StreamRef, after: str = "0-0", count: int | None = None) -> list[Event]:
        log = self.logs.get(ref)
        events = [e for e in log.events if e.cursor > entry_cursor(after)] if log else []
        return events[:count] if count else events

    def read_text(self, ref: StreamRef) -> str:
        return joined_text(self.read(ref))

    def hold_stream(self, hold: Hold) -> bool:
        """This process's open streams only: without Redis nothing else is counted."""
        with self.lock:
            holds = self.holds.setdefault(hold.owner, set())
            if len(holds) >= hold.cap:
                return False
            holds.add(hold.hold_id)
            return True

    def refresh_hold(self, owner: str, hold_id: str, ttl_ms: int) -> None:
        """Nothing lapses in memory: a hold ends when its stream does."""

    def release_hold(self, owner: str, hold_id: str) -> None:
        with self.lock:
            self.holds.get(owner, set()).discard(hold_id)

    def subscribe(self, ref: StreamRef, after: str, client: ClientSocket | None = None) -> Iterator[Event | None]:
        """Follow the log until its terminal event; None means "nothing new for a while".
        (Every entry goes through the response: `client` is not written to here.)"""
        log = self.logs.get(ref)
        if log is None:
            return
        position = entry_cursor(after)[1]
        while True:
            with log.changed:
                if position >= len(log.events):
                    log.changed.wait(self.keepalive_seconds)
                fresh = log.events[position:]
            if not fresh:
                yield None
                continue
            for event in fresh:
                position += 1
                yield event
                if event.terminal:
                    return
