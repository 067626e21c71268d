"""Per-process background machinery: the producer pump, the multiplexed reader and the reaper.

Written with `threading`; under gunicorn's gevent worker (monkey-patched) every thread here is a
greenlet, under `flask run` and in tests it is a real thread. Nothing here touches Redis
directly: it calls the stream backend (chat/streams.py or chat/local_streams.py).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import redis

from .streams import APPENDED, SEALED, Event, RedisStreams, StreamBackend, StreamRef, entry_cursor

log = logging.getLogger(__name__)

STORE_UNAVAILABLE = "The stream store (Redis) is unavailable; reload to see the saved reply."
STORE_FAILED = object()  # queued to every subscriber when the reader loses Redis


def start_daemon(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


class LogLost(Exception):
    """Redis came back without the reply's log; the producer stops and keeps its own text."""


class ProducerState:
    """What one generating reply shares with the pump: text waiting to be written, and flags."""

    def __init__(self, ref: StreamRef) -> None:
        self.ref = ref
        self.pending: list[str] = []
        self.unsent: tuple[str, int] | None = None  # taken, numbered, not yet confirmed by Redis
        self.last_seq = 0
        self.accepted: list[str] = []   # exactly the deltas that reached the log, in order
        self.lock = threading.Lock()
        self.cancelled = False          # a stop request was seen
        self.sealed = False             # somebody else is recording this reply's outcome
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

    def __init__(self, backend: StreamBackend, *, flush_ms: int, flush_chars: int, heartbeat_ms: int, timeout_ms: int) -> None:
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
        start_daemon(self.run, "durable-chat-pump")

    def stop(self) -> None:
        self.stopping.set()
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


class Subscription:
    """One client's view of a log: catch-up from its cursor, then entries the hub hands over."""

    def __init__(self, hub: StreamHub, ref: StreamRef, after: str, catch_up: bool) -> None:
        self.hub = hub
        self.ref = ref
        self.last = after
        self.catch_up = catch_up
        self.queue: queue.SimpleQueue = queue.SimpleQueue()

    def __iter__(self) -> Iterator[Event | None]:
        try:
            if self.catch_up:
                for event in self.hub.store.read(self.ref, self.last):
                    self.last = event.id
                    yield event
                    if event.terminal:
                        return
            while True:
                try:
                    batch = self.queue.get(timeout=self.hub.keepalive_seconds)
                except queue.Empty:
                    if self.hub.store.is_terminated(self.ref):
                        # The log ended while we were not looking (a cursor at its very end).
                        batch = self.hub.store.read(self.ref, self.last)
                        if not batch:
                            return
                    else:
                        yield None
                        continue
                if batch is STORE_FAILED:
                    yield self.failure_event()
                    return
                last = entry_cursor(self.last)
                for event in batch:
                    cursor = event.cursor
                    if cursor <= last:
                        continue  # already delivered by the catch-up read
                    self.last, last = event.id, cursor
                    yield event
                    if event.terminal:
                        return
        except redis.RedisError:
            yield self.failure_event()
        finally:
            self.hub.unsubscribe(self)

    def failure_event(self) -> Event:
        # Carries the last id delivered, so resuming from it continues exactly where this stopped.
        return Event(self.last, "error", json.dumps({"message": STORE_UNAVAILABLE}))


class StreamHub:
    """One blocking XREAD per process over every log its clients follow, fanned out to queues.

    A subscriber registers first and then reads what it missed, so with the hub's deliveries
    (which only move forward) it sees every entry once: duplicates are dropped by id.
    """

    def __init__(self, store: RedisStreams, *, block_ms: int, keepalive_seconds: float,
                 liveness_seconds: float, outage_seconds: float, on_dead: Callable[[StreamRef], None]) -> None:
        self.store = store
        self.block_ms = block_ms
        self.keepalive_seconds = keepalive_seconds
        self.liveness_seconds = liveness_seconds
        self.outage_seconds = outage_seconds
        self.failing_since: float | None = None
        self.on_dead = on_dead
        self.followers: dict[StreamRef, set[Subscription]] = {}
        self.cursors: dict[StreamRef, str] = {}
        self.lock = threading.Lock()
        self.has_work = threading.Event()
        self.wake_key = store.wake_key(uuid.uuid4().hex)
        self.wake_cursor = "0-0"
        self.next_liveness = 0.0
        self.reaping: set[StreamRef] = set()
        self.stopping = threading.Event()
        self.thread = start_daemon(self.run, "durable-chat-reader")

    def stop(self) -> None:
        self.stopping.set()
        self.has_work.set()

    def subscribe(self, ref: StreamRef, after: str) -> Subscription:
        with self.lock:
            followed = ref in self.followers
            hub_cursor = self.cursors.get(ref, after)
            behind = followed and entry_cursor(after) < entry_cursor(hub_cursor)
            subscription = Subscription(self, ref, after, catch_up=behind)
            if not followed:
                self.followers[ref] = set()
                self.cursors[ref] = after
            self.followers[ref].add(subscription)
        if not followed:
            self.has_work.set()
            self.store.wake(self.wake_key)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self.lock:
            followers = self.followers.get(subscription.ref)
            if followers is not None:
                followers.discard(subscription)
                if not followers:
                    del self.followers[subscription.ref]
                    self.cursors.pop(subscription.ref, None)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.step()
                self.failing_since = None
            except redis.RedisError as exc:
                # Clients wait out a short outage; past the producers' timeout they are told.
                now = time.monotonic()
                self.failing_since = self.failing_since or now
                log.warning("reader: Redis failed: %s", exc)
                if now - self.failing_since >= self.outage_seconds:
                    self.fail_everyone()
                    self.failing_since = None
                time.sleep(0.2)
            except Exception:
                log.exception("reader: unexpected failure")
                time.sleep(0.5)

    def step(self) -> None:
        with self.lock:
            cursors = dict(self.cursors)
        if not cursors:
            self.has_work.wait(self.liveness_seconds)
            self.has_work.clear()
            return
        events, woken = self.store.read_many(cursors, self.block_ms, self.wake_key, self.wake_cursor)
        if woken:
            self.wake_cursor = woken
        self.dispatch(cursors, events)
        if time.monotonic() >= self.next_liveness:
            self.next_liveness = time.monotonic() + self.liveness_seconds
            self.check_liveness()

    def dispatch(self, read_from: dict[StreamRef, str], events: dict[StreamRef, list[Event]]) -> None:
        """Hand each stream's new entries to its subscribers and move its cursor on.

        A batch read from a cursor that is no longer the stream's (its last reader left and a new
        one followed it again from elsewhere while the read was in flight) is dropped: the next
        read starts from the new cursor, so nothing between the two is skipped.
        """
        with self.lock:
            for ref, batch in events.items():
                if ref not in self.followers or self.cursors.get(ref) != read_from[ref]:
                    continue
                self.cursors[ref] = batch[-1].id
                for subscription in self.followers[ref]:
                    subscription.queue.put(batch)
                if batch[-1].terminal:
                    # Subscribers end on the terminal event; stop reading a finished log.
                    del self.followers[ref]
                    del self.cursors[ref]

    def check_liveness(self) -> None:
        """Hand streams whose producer stopped heart-beating (without finishing) to `on_dead`."""
        with self.lock:
            refs = [ref for ref in self.followers if ref not in self.reaping]
        if not refs:
            return
        for ref, alive in zip(refs, self.store.alive(refs), strict=True):
            if not alive:
                self.reaping.add(ref)
                start_daemon(lambda ref=ref: self.reap(ref), "durable-chat-reap")

    def reap(self, ref: StreamRef) -> None:
        try:
            self.on_dead(ref)
        except Exception:
            log.exception("could not finish dead stream %s", ref)
        finally:
            self.reaping.discard(ref)

    def fail_everyone(self) -> None:
        with self.lock:
            subscriptions = [s for group in self.followers.values() for s in group]
            self.followers.clear()
            self.cursors.clear()
        for subscription in subscriptions:
            subscription.queue.put(STORE_FAILED)
