"""The producer pump: writes every local reply's deltas to its log and keeps producers alive.

One pump per process. Producers (chat/replies/producer.py) push text into their ProducerState; the pump
writes all pending text of all local replies in one round trip, refreshes their heartbeats and
sees stop requests. Nothing here speaks Redis itself: it calls the stream backend.

It writes as soon as the previous write has returned (no timer): an idle Redis gets each token at
once, a busy one gets larger batches by itself. A delta Redis has accepted is handed straight to
this process's readers (`Fanout`), so a reader beside its producer never waits for a read of the
log: it gets only what is stored, as early as it is stored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import NamedTuple, Protocol, cast

import redis

from ..background import start_daemon
from ..streams import (
    APPENDED,
    SEALED,
    Event,
    StreamBackend,
    StreamRef,
    delta_event,
    joined_text,
    producer_event,
)
from ..web import metrics

log = logging.getLogger(__name__)


class LogLost(Exception):
    """Redis came back without the reply's log; the producer stops and keeps its own text."""


class Fanout(Protocol):
    """Where the pump hands what it wrote, for the readers in this process (chat/replies/reader.py)."""

    def produced_here(self, ref: StreamRef, start_id: str) -> None: ...
    def deliver(self, ref: StreamRef, events: list[Event]) -> None: ...
    def produced_elsewhere(self, ref: StreamRef) -> None: ...


class ToolEvent(NamedTuple):
    """A producer entry that is not text (api.md, "Tool calls"): its type and its JSON data."""

    type: str
    data: str


class ProducerState:
    """What one generating reply shares with the pump: entries waiting to be written, and flags.

    The producer appends to `pending` and only the pump takes from it; deques make both safe
    without a lock, under gevent and real threads alike. Consecutive text is written as one
    delta; a tool event is an entry of its own, in its place.
    """

    def __init__(self, ref: StreamRef, start_id: str) -> None:
        self.ref = ref
        self.start_id = start_id
        self.pending: deque[str | ToolEvent] = deque()
        self.text_pushed = 0  # characters of text pushed so far: where a tool call sits in the reply
        self.unsent: tuple[Event, str] | None = None  # taken, numbered, not yet confirmed by Redis
        self.last_seq = 0
        self.accepted: list[str] = []  # exactly the deltas that reached the log, in order
        self.cancelled = False  # a stop request was seen
        self.interrupted = False  # this process is shutting down past its grace period
        self.sealed = False  # somebody else is recording this reply's outcome
        self.failure: Exception | None = None
        self.finishing = False
        self.drained = threading.Event()
        # Characters pushed since the pump was last woken for them; the producer's alone (summing
        # `pending` instead read a deque the pump was emptying in another thread: "deque mutated
        # during iteration" ended a reply as an error under the threaded dev server).
        self.unannounced = 0

    def push(self, text: str) -> None:
        self.pending.append(text)
        self.unannounced += len(text)
        self.text_pushed += len(text)

    def take(self) -> Event | None:
        """The next entry to write: the unconfirmed one again, or the pending text up to the next
        tool event (or that event), numbered."""
        if self.unsent is None and self.pending:
            if isinstance(self.pending[0], ToolEvent):
                tool_event = cast(ToolEvent, self.pending.popleft())
                self.last_seq += 1
                self.unsent = (producer_event(self.start_id, self.last_seq, *tool_event), "")
                return self.unsent[0]
            pieces = []
            while self.pending and not isinstance(self.pending[0], ToolEvent):
                pieces.append(cast(str, self.pending.popleft()))
            text = "".join(pieces)
            self.last_seq += 1
            self.unsent = (delta_event(self.start_id, self.last_seq, text), text)
        return self.unsent[0] if self.unsent else None

    def settle(self, outcome: str) -> Event | None:
        """Record what Redis said of the delta `take()` handed out; the delta if it was stored."""
        assert self.unsent is not None, "settle() follows take()"
        (event, text), self.unsent = self.unsent, None
        if outcome == APPENDED:
            self.accepted.append(text)
            return event
        if outcome == SEALED:
            self.sealed = True
        else:
            self.failure = LogLost(outcome)
            self.drained.set()  # nothing more will be written
        return None

    @property
    def idle(self) -> bool:
        return not self.pending and self.unsent is None

    @property
    def should_stop(self) -> bool:
        return self.cancelled or self.interrupted or self.sealed or self.failure is not None

    @property
    def text(self) -> str:
        return "".join(self.accepted)


class Pump:
    """Writes every local producer's deltas: one pipeline per round, heartbeats on a timer.

    With `flush_ms` 0 (the default) a round starts as soon as text is waiting and the previous
    round has returned; a positive `flush_ms` spaces rounds that far apart instead (fewer, larger
    writes), `flush_chars` of waiting text starting one early.

    A Redis outage shorter than the producer timeout is ridden out (unconfirmed deltas are sent
    again, and their ids make that safe); a longer one fails the producers.
    """

    def __init__(
        self,
        backend: StreamBackend,
        *,
        flush_ms: int,
        flush_chars: int,
        heartbeat_ms: int,
        timeout_ms: int,
        fanout: Fanout | None = None,
    ) -> None:
        self.backend = backend
        self.fanout = fanout
        self.flush_seconds = flush_ms / 1000
        self.flush_chars = flush_chars
        self.heartbeat_seconds = heartbeat_ms / 1000
        self.timeout_ms = timeout_ms
        self.producers: dict[StreamRef, ProducerState] = {}
        self.ready: deque[ProducerState] = deque()  # producers with text waiting (or finishing)
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.next_heartbeat = 0.0
        self.failing_since: float | None = None

    def start(self) -> None:
        start_daemon(self.run, "durable-chat-pump")

    def stop(self) -> None:
        """Write nothing more; producers waiting for their last write are released at once."""
        self.stopping.set()
        self.wakeup.set()
        with self.lock:
            states = list(self.producers.values())
        for state in states:
            state.drained.set()

    def cancel_all(self) -> None:
        """Ask every local producer to stop, as a stop request would."""
        with self.lock:
            states = list(self.producers.values())
        for state in states:
            state.cancelled = True
        self.wakeup.set()

    def interrupt_all(self) -> None:
        """End every local reply now, as `interrupted` with what it wrote (a shutdown's grace is over)."""
        with self.lock:
            states = list(self.producers.values())
        for state in states:
            state.interrupted = True
        self.wakeup.set()

    def register(self, ref: StreamRef, start_id: str, written: list[Event] | None = None) -> ProducerState:
        """A reply whose producer entries number from `start_id` is produced here from now on.
        `written`: the log so far, when a run goes on in a log that already has entries (runs.py;
        `start_id` is then its new epoch's base, StreamBackend.fence): the producer's text starts
        with theirs, and this process's readers keep reading the log from Redis (they may not
        have read all of it yet)."""
        state = ProducerState(ref, start_id)
        if written:  # its entries number from start_id as a fresh producer's do: 1, 2, …
            state.accepted = [joined_text(written)]
            state.text_pushed = len(state.accepted[0])
        with self.lock:
            self.producers[ref] = state
        metrics.LIVE_REPLIES.inc()
        if self.fanout is not None and not written:
            self.fanout.produced_here(ref, start_id)
        self.wakeup.set()  # its heartbeat is due: a model may take a while to say anything
        return state

    def unregister(self, state: ProducerState) -> None:
        """`state`'s producer is done here (a run that went on in this process meanwhile has
        registered a state of its own for the same log: that one stays)."""
        with self.lock:
            if self.producers.get(state.ref) is not state:
                return
            del self.producers[state.ref]
            metrics.LIVE_REPLIES.dec()
        if self.fanout is not None:
            self.fanout.produced_elsewhere(state.ref)

    def push(self, state: ProducerState, text: str) -> None:
        state.push(text)
        self.ready.append(state)
        if not self.flush_seconds or state.unannounced >= self.flush_chars:
            state.unannounced = 0
            self.wakeup.set()

    def push_event(self, state: ProducerState, kind: str, data: dict) -> None:
        """A tool event, written in its place among the text, without waiting for more text."""
        state.pending.append(ToolEvent(kind, json.dumps(data)))
        self.ready.append(state)
        self.wakeup.set()

    def drain(self, state: ProducerState, timeout: float = 30.0) -> None:
        """Wait until everything `state` produced has been written (or refused)."""
        state.finishing = True
        self.ready.append(state)
        self.wakeup.set()
        state.drained.wait(timeout)

    def ended(self, state: ProducerState, terminal: Event) -> None:
        """The producer wrote its log's terminal event: readers here get it now, not through a
        round trip of the XREAD (which a log would otherwise join just for its last entry)."""
        if self.fanout is not None:
            self.fanout.deliver(state.ref, [terminal])

    def hand_over(self, state: ProducerState) -> None:
        """The producer is done with its log: whatever is added to it from now on (a terminal
        event somebody else wrote) readers here read from Redis."""
        if self.fanout is not None:
            self.fanout.produced_elsewhere(state.ref)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wakeup.wait(self.next_wait())
            self.wakeup.clear()
            ready = self.take_ready()
            try:
                self.flush(ready)
                if time.monotonic() >= self.next_heartbeat:
                    self.beat()
                self.failing_since = None
            except redis.RedisError as exc:
                self.ready.extend(ready)  # their deltas are unconfirmed: sent again, same ids
                self.outage(exc)
            except Exception:  # a bug here must not silently stop every reply of the process
                log.exception("pump: unexpected failure")

    def take_ready(self) -> list[ProducerState]:
        """The producers with something to write (or finishing), each once, oldest first."""
        ready: dict[ProducerState, None] = {}
        while self.ready:
            ready[self.ready.popleft()] = None
        return [state for state in ready if state.failure is None]

    def beat(self) -> None:
        """Refresh every local producer's heartbeat; note which were asked to stop."""
        self.next_heartbeat = time.monotonic() + self.heartbeat_seconds
        with self.lock:
            states = [state for state in self.producers.values() if state.failure is None]
        if states:
            cancels = self.backend.heartbeat([s.ref for s in states], self.timeout_ms)
            for state, cancel in zip(states, cancels, strict=True):
                state.cancelled = state.cancelled or cancel

    def next_wait(self) -> float | None:
        """How long to sleep unless woken: the coalescing window, else until the next heartbeat."""
        if not self.producers:
            return None
        if self.flush_seconds:
            return self.flush_seconds
        return max(0.0, self.next_heartbeat - time.monotonic())

    def outage(self, exc: redis.RedisError) -> None:
        metrics.REDIS_ERRORS.labels("pump").inc()
        now = time.monotonic()
        self.failing_since = self.failing_since or now
        if now - self.failing_since < self.timeout_ms / 1000:
            log.warning("pump: Redis failed (%s); retrying", exc)
            self.stopping.wait(0.1)
            self.wakeup.set()
            return
        with self.lock:
            states = [state for state in self.producers.values() if state.failure is None]
        log.warning("pump: Redis unavailable for %.1fs; failing %d replies", now - self.failing_since, len(states))
        for state in states:
            state.failure = exc
            state.drained.set()

    def flush(self, states: list[ProducerState]) -> None:
        """Write the waiting text of `states` in one round trip; release those done finishing."""
        batch = [(state, delta) for state in states if (delta := state.take())]
        if batch:
            outcomes = self.backend.append_deltas([(state.ref, delta) for state, delta in batch])
            accepted = 0
            for (state, _), outcome in zip(batch, outcomes, strict=True):
                written = state.settle(outcome)
                if written is not None:
                    accepted += 1
                    if self.fanout is not None:
                        self.fanout.deliver(state.ref, [written])
            metrics.DELTAS_WRITTEN.inc(accepted)  # once per round: a metric write per delta costs
        for state in states:
            if state.pending and not state.should_stop:
                # More came meanwhile, or a tool event split the entries: the rest next round.
                self.ready.append(state)
                if not self.flush_seconds:
                    self.wakeup.set()
            elif state.finishing and (state.idle or state.should_stop):
                state.drained.set()
