"""The producer pump: writes every local reply's deltas to its log and keeps producers alive.

One pump per process. Producers (chat/producer.py) push text into their ProducerState; the pump
writes all pending text of all local replies in one round trip, refreshes their heartbeats and
sees stop requests. Nothing here speaks Redis itself: it calls the stream backend.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from .background import start_daemon
from .streams import APPENDED, SEALED, StreamBackend, StreamRef

log = logging.getLogger(__name__)


class LogLost(Exception):
    """Redis came back without the reply's log; the producer stops and keeps its own text."""


class ProducerState:
    """What one generating reply shares with the pump: text waiting to be written, and flags."""

    def __init__(self, ref: StreamRef) -> None:
        self.ref = ref
        self.pending: list[str] = []
        self.unsent: tuple[str, int] | None = None  # taken, numbered, not yet confirmed by Redis
        self.last_seq = 0
        self.accepted: list[str] = []  # exactly the deltas that reached the log, in order
        self.lock = threading.Lock()
        self.cancelled = False  # a stop request was seen
        self.sealed = False  # somebody else is recording this reply's outcome
        self.failure: Exception | None = None
        self.finishing = False
        self.drained = threading.Event()

    def push(self, text: str) -> int:
        with self.lock:
            self.pending.append(text)
            return sum(map(len, self.pending))

    def take(self) -> tuple[str, int] | None:
        """The next delta to write: the unconfirmed one again, or the pending text, numbered."""
        with self.lock:
            if self.unsent is None and self.pending:
                self.last_seq += 1
                self.unsent, self.pending = ("".join(self.pending), self.last_seq), []
            return self.unsent

    def settle(self, outcome: str) -> None:
        """Record what Redis said of the delta `take()` handed out."""
        assert self.unsent is not None, "settle() follows take()"
        text, _ = self.unsent
        self.unsent = None
        if outcome == APPENDED:
            self.accepted.append(text)
        elif outcome == SEALED:
            self.sealed = True
        else:
            self.failure = LogLost(outcome)
            self.drained.set()  # nothing more will be written

    @property
    def idle(self) -> bool:
        return not self.pending and self.unsent is None

    @property
    def should_stop(self) -> bool:
        return self.cancelled or self.sealed or self.failure is not None

    @property
    def text(self) -> str:
        return "".join(self.accepted)


class Pump:
    """Writes every local producer's deltas: one pipeline per flush, heartbeats on a timer.

    A Redis outage shorter than the producer timeout is ridden out (unconfirmed deltas are sent
    again, and sequence numbers make that safe); a longer one fails the producers.
    """

    def __init__(
        self, backend: StreamBackend, *, flush_ms: int, flush_chars: int, heartbeat_ms: int, timeout_ms: int
    ) -> None:
        self.backend = backend
        self.flush_seconds = flush_ms / 1000
        self.flush_chars = flush_chars
        self.heartbeat_seconds = heartbeat_ms / 1000
        self.timeout_ms = timeout_ms
        self.producers: dict[StreamRef, ProducerState] = {}
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

    def register(self, ref: StreamRef) -> ProducerState:
        state = ProducerState(ref)
        with self.lock:
            self.producers[ref] = state
        self.wakeup.set()
        return state

    def unregister(self, state: ProducerState) -> None:
        with self.lock:
            self.producers.pop(state.ref, None)

    def push(self, state: ProducerState, text: str) -> None:
        if state.push(text) >= self.flush_chars:
            self.wakeup.set()

    def drain(self, state: ProducerState, timeout: float = 30.0) -> None:
        """Wait until everything `state` produced has been written (or refused)."""
        state.finishing = True
        self.wakeup.set()
        state.drained.wait(timeout)

    def run(self) -> None:
        while not self.stopping.is_set():
            if not self.producers:
                self.wakeup.wait()
            else:
                self.wakeup.wait(self.flush_seconds)
            self.wakeup.clear()
            with self.lock:
                states = [state for state in self.producers.values() if state.failure is None]
            try:
                self.flush(states)
                if time.monotonic() >= self.next_heartbeat and states:
                    self.next_heartbeat = time.monotonic() + self.heartbeat_seconds
                    cancels = self.backend.heartbeat([s.ref for s in states], self.timeout_ms)
                    for state, cancel in zip(states, cancels, strict=True):
                        state.cancelled = state.cancelled or cancel
                self.failing_since = None
            except redis.RedisError as exc:
                self.outage(states, exc)
            except Exception:  # a bug here must not silently stop every reply of the process
                log.exception("pump: unexpected failure")

    def outage(self, states: list[ProducerState], exc: redis.RedisError) -> None:
        now = time.monotonic()
        self.failing_since = self.failing_since or now
        if now - self.failing_since < self.timeout_ms / 1000:
            log.warning("pump: Redis failed (%s); retrying", exc)
            self.stopping.wait(0.1)
            return
        log.warning("pump: Redis unavailable for %.1fs; failing %d replies", now - self.failing_since, len(states))
        for state in states:
            state.failure = exc
            state.drained.set()

    def flush(self, states: list[ProducerState]) -> None:
        batch = [(state, delta) for state in states if (delta := state.take())]
        if batch:
            outcomes = self.backend.append_deltas([(state.ref, text, seq) for state, (text, seq) in batch])
            for (state, _), outcome in zip(batch, outcomes, strict=True):
                state.settle(outcome)
        for state in states:
            if state.finishing and (state.idle or state.should_stop):
                state.drained.set()
