"""The multiplexed reader: one blocking XREAD per process, fanned out to every client following.

Every response that streams a live reply (the POST included) holds a Subscription; the process's
one StreamHub reads all followed logs in a single XREAD BLOCK and hands each new batch to the
subscriptions' queues. It also notices producers that stopped heart-beating.

A log whose producer runs in this process is not read at all while it writes: the pump hands
each delta over as soon as Redis has stored it (`deliver`), and its terminal event when the
producer writes that too. Should somebody else end the log (a stop from another process), the
producer hands it over (`produced_elsewhere`) and the log joins the XREAD from the last delta
handed over, which brings the terminal event.

A subscription whose response is idle is not woken for a delta at all: its bytes are written to
the client's socket right here (chat/streams/client_socket.py), encoded once for every such follower.

Longer than most modules: the hub, its subscriptions and the direct writes share one lock and
one ordering argument ("every entry once, in order"), which is reviewed in one file.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import redis

from ..background import start_daemon
from ..streams import Event, RedisStreams, StreamRef, entry_cursor, sse
from ..streams.client_socket import ClientSocket, chunk
from ..web import metrics

log = logging.getLogger(__name__)

STORE_UNAVAILABLE = "The stream store (Redis) is unavailable; reload to see the saved reply."
CURSOR_REFUSED = "This reply cannot be read from that position; reload the page to see it."
STORE_FAILED = object()  # queued to every subscriber when the reader loses Redis
REFUSED = object()  # queued to the subscribers of a log whose read Redis refuses (not the others)
SHUTTING_DOWN = object()  # queued to every subscriber when this process stops: resume elsewhere
QUIET = object()  # queued to a subscriber that was handed nothing for a while: time for a keepalive


class Batch(list):
    """Entries handed to subscribers together, stamped with when (for the reader-lag metric)."""

    __slots__ = ("at", "_wire")

    def __init__(self, events: Iterable[Event]) -> None:
        super().__init__(events)
        self.at = time.monotonic()
        self._wire: bytes | None = None

    @property
    def wire(self) -> bytes:
        """The entries as the SSE response sends them, one HTTP chunk; encoded once."""
        if self._wire is None:
            self._wire = chunk("".join(sse.encode(e.type, e.data, e.id) for e in self).encode())
        return self._wire


class Unsent(NamedTuple):
    """The rest of a write the hub began on a client's socket, for the response to finish."""

    data: bytes


class Subscription:
    """One client's view of a log: catch-up from its cursor, then entries the hub hands over."""

    LAG_SAMPLE = 32  # observe the reader lag of the first batch, then of one in this many

    def __init__(
        self, hub: StreamHub, ref: StreamRef, after: str, catch_up: bool, client: ClientSocket | None = None
    ) -> None:
        self.hub = hub
        self.ref = ref
        self.last = after
        self.catch_up = catch_up
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.taken = 0
        self.fed = False  # handed something through the queue since the hub's last keepalive round
        self.client = client
        self.written = False  # the response has written something: its headers are out
        self.idle = False  # waiting for entries with its last write complete: the hub may write for it

    def __iter__(self) -> Iterator[Event | None]:
        try:
            if self.catch_up:
                for event in self.hub.store.read(self.ref, self.last):
                    self.last = event.id
                    yield event
                    self.written = True
                    if event.terminal:
                        return
            while True:
                # No timeout here (a timer per wait was ~6% of a busy worker): the hub's keepalive
                # round queues QUIET to subscribers it handed nothing since its previous round.
                self.idle = self.written and self.client is not None
                batch = self.queue.get()
                self.idle = False
                if isinstance(batch, Unsent):
                    assert self.client is not None, "only a client's socket leaves a write unfinished"
                    self.client.send_all(batch.data)
                    continue
                if batch is QUIET:
                    if self.hub.store.log_ended(self.ref):
                        # The log ended while we were not looking (a cursor at its very end).
                        batch = self.hub.store.read(self.ref, self.last)
                        if not batch:
                            return
                    else:
                        yield None
                        self.written = True
                        continue
                if batch is STORE_FAILED:
                    yield self.failure_event()
                    return
                if batch is REFUSED:
                    yield self.failure_event(CURSOR_REFUSED)
                    return
                if batch is SHUTTING_DOWN:
                    return  # the response ends without a terminal event: the client resumes elsewhere
                # A batch read here after a quiet spell is a plain list: it waited in no queue.
                if self.taken % self.LAG_SAMPLE == 0 and isinstance(batch, Batch):
                    metrics.READER_LAG.observe(time.monotonic() - batch.at)
                self.taken += 1
                last = entry_cursor(self.last)
                for event in batch:
                    cursor = event.cursor
                    if cursor <= last:
                        continue  # already delivered by the catch-up read
                    self.last, last = event.id, cursor
                    yield event
                    self.written = True
                    if event.terminal:
                        return
        except redis.ResponseError:  # this client's own catch-up read was refused
            yield self.failure_event(CURSOR_REFUSED)
        except redis.RedisError:
            yield self.failure_event()
        finally:
            self.close()

    def close(self) -> None:
        """Stop following (the client left); safe to call more than once."""
        self.idle = False
        self.hub.unsubscribe(self)

    def hand(self, batch: Batch) -> None:
        """Pass entries on: written to the client's socket while the response is idle (nothing
        queued, nothing being written), queued for the response otherwise — always in order.
        The last entry is always queued (the response ends on it), and so is a batch that repeats
        entries the client has (after a catch-up read; a subscription is first idle only once it
        has yielded, by which time that is the only way): the response drops those."""
        if self.idle and not batch[-1].terminal and self.queue.empty() and batch[0].cursor > entry_cursor(self.last):
            assert self.client is not None, "idle only with a client's socket"
            data = batch.wire
            try:
                sent = self.client.try_send(data)
            except OSError:  # the client is gone: the response learns it from its own write
                self.client = None
            else:
                self.last = batch[-1].id
                if sent < len(data):
                    self.idle = False
                    self.queue.put(Unsent(data[sent:]))
                return
        self.fed = True
        self.queue.put(batch)

    def failure_event(self, message: str = STORE_UNAVAILABLE) -> Event:
        # Carries the last id delivered, so resuming from it continues exactly where this stopped.
        return Event(self.last, "error", json.dumps({"message": message}))


class StreamHub:
    """One blocking XREAD per process over every log its clients follow, fanned out to queues.

    A subscriber registers first and then reads what it missed, so with the hub's deliveries
    (which only move forward) it sees every entry once: duplicates are dropped by id.
    """

    def __init__(
        self,
        store: RedisStreams,
        *,
        block_ms: int,
        keepalive_seconds: float,
        liveness_seconds: float,
        outage_seconds: float,
        on_dead: Callable[[StreamRef], None],
    ) -> None:
        self.store = store
        self.block_ms = block_ms
        self.keepalive_seconds = keepalive_seconds
        self.liveness_seconds = liveness_seconds
        self.outage_seconds = outage_seconds
        self.failing_since: float | None = None
        self.on_dead = on_dead
        self.followers: dict[StreamRef, set[Subscription]] = {}
        self.cursors: dict[StreamRef, str] = {}  # logs read by the XREAD, from these ids
        self.local: dict[StreamRef, str] = {}  # logs the pump feeds: the last id it handed over
        self.lock = threading.Lock()
        self.has_work = threading.Event()
        self.wake_key = store.wake_key(uuid.uuid4().hex)
        self.wake_cursor = "0-0"
        self.next_liveness = 0.0
        self.reaping: set[StreamRef] = set()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = start_daemon(self.run, "durable-chat-reader")
        start_daemon(self.keep_alive, "durable-chat-keepalive")

    def keep_alive(self) -> None:
        """Every half keepalive interval, wake the subscribers that were handed nothing since the
        previous round: each client hears from its stream at least once per interval."""
        while not self.stopping.wait(self.keepalive_seconds / 2):
            with self.lock:
                subscriptions = [s for group in self.followers.values() for s in group]
            for subscription in subscriptions:
                if not subscription.fed:
                    subscription.queue.put(QUIET)
                subscription.fed = False

    def stop(self) -> None:
        self.stopping.set()
        self.has_work.set()

    def subscribe(self, ref: StreamRef, after: str, client: ClientSocket | None = None) -> Subscription:
        with self.lock:
            followed = ref in self.followers
            local_cursor = self.local.get(ref)
            if local_cursor is not None:
                behind = entry_cursor(after) < entry_cursor(local_cursor)
            else:
                behind = followed and entry_cursor(after) < entry_cursor(self.cursors.get(ref, after))
            subscription = Subscription(self, ref, after, catch_up=behind, client=client)
            if not followed:
                self.followers[ref] = set()
                if local_cursor is None:
                    self.cursors[ref] = after
            self.followers[ref].add(subscription)
        if not followed and local_cursor is None:
            self.read_from_store(ref)
        return subscription

    def read_from_store(self, ref: StreamRef) -> None:
        """`ref` is newly followed through the store (its cursor is in `cursors`)."""
        self.wake()

    def wake(self) -> None:
        """Interrupt the blocking XREAD so that it reads the newly followed logs too.

        Best effort: without it the next XREAD (within READER_BLOCK_MS) reads them anyway, and a
        Redis outage is the reader loop's to handle, never a producer's or a request's.
        """
        self.has_work.set()
        try:
            self.store.wake(self.wake_key)
        except redis.RedisError as exc:
            log.info("reader: could not wake the XREAD (%s); it reads the new logs on its next turn", exc)

    # -- the pump's side (chat/replies/pump.py Fanout) --------------------------------------------------
    def produced_here(self, ref: StreamRef, start_id: str) -> None:
        with self.lock:
            self.local[ref] = start_id

    def deliver(self, ref: StreamRef, events: list[Event]) -> None:
        """Hand entries this process just wrote to the log's followers, in the order written."""
        with self.lock:
            if ref not in self.local:
                return
            batch = Batch(events)
            followers = self.followers.get(ref, set())
            if batch[-1].terminal:
                # The log is finished: its followers end on this, and nothing is left for the XREAD.
                del self.local[ref]
                followers = self.followers.pop(ref, set())
            else:
                self.local[ref] = batch[-1].id
            for subscription in followers:
                subscription.hand(batch)

    def produced_elsewhere(self, ref: StreamRef) -> None:
        """The pump writes no more to `ref`: its followers go on through the XREAD."""
        with self.lock:
            last = self.local.pop(ref, None)
            if last is None or ref not in self.followers:
                return
            self.cursors[ref] = last
        self.read_from_store(ref)

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
            except redis.ResponseError as exc:
                # Redis answered, and refused the read: one log's cursor, not an outage. Its
                # clients are told; everyone else's read goes on at the next turn.
                metrics.REDIS_ERRORS.labels("reader").inc()
                log.warning("reader: Redis refused the read: %s", exc)
                self.isolate_refused()
            except redis.RedisError as exc:
                # Clients wait out a short outage; past the producers' timeout they are told.
                now = time.monotonic()
                self.failing_since = self.failing_since or now
                metrics.REDIS_ERRORS.labels("reader").inc()
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
        if not cursors:  # nothing followed, or only logs the pump feeds
            self.has_work.wait(self.liveness_seconds)
            self.has_work.clear()
            return
        events, woken = self.store.read_many(cursors, self.block_ms, self.wake_key, self.wake_cursor)
        if woken:
            self.wake_cursor = woken
        self.dispatch(cursors, events)
        self.check_liveness_when_due()

    def isolate_refused(self) -> None:
        """Read each followed log alone from its cursor; end the followers of those Redis refuses."""
        with self.lock:
            cursors = dict(self.cursors)
        for ref, cursor in cursors.items():
            try:
                self.store.read(ref, cursor, count=1)
            except redis.ResponseError:
                self.refuse(ref)

    def refuse(self, ref: StreamRef) -> None:
        """Stop reading `ref` (Redis refuses its cursor); its followers end with an error event."""
        with self.lock:
            followers = self.followers.pop(ref, set())
            self.cursors.pop(ref, None)
        for subscription in followers:
            subscription.queue.put(REFUSED)

    def check_liveness_when_due(self) -> None:
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
            for ref, entries in events.items():
                if ref not in self.followers or self.cursors.get(ref) != read_from[ref]:
                    continue
                batch = Batch(entries)
                self.cursors[ref] = batch[-1].id
                for subscription in self.followers[ref]:
                    subscription.hand(batch)
                if batch[-1].terminal:
                    # Subscribers end on the terminal event; stop reading a finished log.
                    del self.followers[ref]
                    del self.cursors[ref]

    def check_liveness(self) -> None:
        """Hand streams whose producer stopped heart-beating (without finishing) to `on_dead`."""
        with self.lock:
            refs = [ref for ref in self.followers if ref not in self.reaping and ref not in self.local]
        if not refs:
            return
        for ref, stalled in zip(refs, self.store.stalled(refs), strict=True):
            if stalled:
                self.reaping.add(ref)
                start_daemon(functools.partial(self.hand_over_dead, ref), "durable-chat-interrupt")

    def hand_over_dead(self, ref: StreamRef) -> None:
        try:
            self.on_dead(ref)
        except Exception:
            log.exception("could not finish dead stream %s", ref)
        finally:
            self.reaping.discard(ref)

    def release_everyone(self) -> None:
        """End every subscription now (this process is stopping), without a terminal event, so
        each client resumes from its cursor on another worker."""
        with self.lock:
            subscriptions = [s for group in self.followers.values() for s in group]
        for subscription in subscriptions:
            subscription.queue.put(SHUTTING_DOWN)

    def fail_everyone(self) -> None:
        with self.lock:
            subscriptions = [s for group in self.followers.values() for s in group]
            self.followers.clear()
            self.cursors.clear()
        for subscription in subscriptions:
            subscription.queue.put(STORE_FAILED)
