"""The reader on a Redis Cluster: sharded pub/sub per master instead of one blocking XREAD.

One XREAD cannot span hash slots, and every chat's keys are a slot of their own, so on a cluster
the hub follows logs another way: each stored entry is also published on its log's shard channel
(chat/streams/redis_store.py, ClusterRedisStreams); each master gets one subscribed connection here, read by
a thread of its own, and the hub's thread keeps the subscriptions equal to the followed logs.

Pub/sub delivers at most once, so a message is handed on only when it is the delta right after
the log's cursor (delta ids are consecutive, `T-n`). Anything else — a gap after a reconnect, a
log followed from an older cursor, the terminal event — is read with XRANGE from the cursor, as
is every log once its subscription is confirmed, so nothing written before it is missed.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable

import redis

from ..background import start_daemon
from ..streams import ClusterRedisStreams, Event, StreamRef, entry_cursor, published_event
from ..web import metrics
from .reader import StreamHub

log = logging.getLogger(__name__)


class ClusterStreamHub(StreamHub):
    """StreamHub whose logs come from shard channels (one NodeListener per master)."""

    store: ClusterRedisStreams

    def __init__(self, store: ClusterRedisStreams, **options) -> None:
        super().__init__(store, **options)
        self.listeners: dict[str, NodeListener] = {}
        self.subscribed: dict[StreamRef, str] = {}  # followed logs with a subscription, by master
        self.fresh: set[StreamRef] = set()  # newly followed: read from their cursor once subscribed

    def read_from_store(self, ref: StreamRef) -> None:
        with self.lock:
            self.fresh.add(ref)
        self.has_work.set()

    def wake(self) -> None:
        self.has_work.set()

    def stop(self) -> None:
        super().stop()
        for listener in list(self.listeners.values()):
            listener.close()

    def step(self) -> None:
        """Subscribe to newly followed logs, unsubscribe from the rest, read the fresh ones."""
        self.has_work.wait(self.liveness_seconds)
        self.has_work.clear()
        with self.lock:
            wanted = set(self.cursors)
            fresh, self.fresh = self.fresh & wanted, set()
            gone = {ref: self.subscribed.pop(ref) for ref in list(self.subscribed) if ref not in wanted}
            new = [ref for ref in wanted if ref not in self.subscribed]
        for node, refs in by_node(gone.items()).items():
            self.listener(node).unsubscribe(refs)
        placed = {ref: self.store.node_of(self.store.channel(ref)) for ref in new}
        for node, refs in by_node(placed.items()).items():
            self.listener(node).subscribe(refs)  # each is read from its cursor once confirmed
            with self.lock:
                self.subscribed.update(dict.fromkeys(refs, node))
        for ref in fresh - placed.keys():
            self.catch_up(ref)
        self.check_liveness_when_due()

    def listener(self, node: str) -> NodeListener:
        if node not in self.listeners:
            self.listeners[node] = NodeListener(self, node)
        return self.listeners[node]

    def catch_up(self, ref: StreamRef) -> None:
        """Read `ref` from its cursor and hand on what was missed."""
        with self.lock:
            cursor = self.cursors.get(ref)
        if cursor is not None:
            try:
                events = self.store.read(ref, cursor)
            except redis.ResponseError:  # this log's cursor, not the node: only its clients end
                self.refuse(ref)
                return
            if events:
                self.dispatch({ref: cursor}, {ref: events})

    def published(self, ref: StreamRef, event: Event) -> None:
        with self.lock:
            cursor = self.cursors.get(ref)
        if cursor is None:
            return
        ms, seq = entry_cursor(cursor)
        if event.cursor <= (ms, seq):
            return  # already handed on (by a read from the cursor)
        if event.type == "delta" and event.cursor == (ms, seq + 1):
            self.dispatch({ref: cursor}, {ref: [event]})
        else:
            self.catch_up(ref)

    def lost(self, node: str) -> None:
        """`node`'s subscriptions are gone (its connection dropped, or its slots moved): the next
        step subscribes to its logs again, wherever they live now, and reads each from its cursor."""
        with self.lock:
            for ref in [ref for ref, where in self.subscribed.items() if where == node]:
                del self.subscribed[ref]
        self.has_work.set()


class NodeListener:
    """One master's shard-channel subscriptions and the thread that reads their messages."""

    def __init__(self, hub: ClusterStreamHub, node: str) -> None:
        self.hub = hub
        self.node = node
        self.channels: dict[str, StreamRef] = {}
        self.subscriber = hub.store.subscriber(node)
        start_daemon(self.run, f"durable-chat-shard-{node}")

    def subscribe(self, refs: list[StreamRef]) -> None:
        channels = {self.hub.store.channel(ref): ref for ref in refs}
        self.channels.update(channels)
        self.subscriber.send("SSUBSCRIBE", channels)

    def unsubscribe(self, refs: list[StreamRef]) -> None:
        channels = [self.hub.store.channel(ref) for ref in refs]
        for channel in channels:
            self.channels.pop(channel, None)
        self.subscriber.send("SUNSUBSCRIBE", channels)

    def close(self) -> None:
        self.subscriber.close()

    def run(self) -> None:
        failing_since = None
        while not self.hub.stopping.is_set():
            try:
                for kind, channel, payload in self.subscriber.receive(timeout=1.0):
                    self.handle(kind, channel, payload)
                failing_since = None
            except redis.RedisError as exc:
                if self.hub.stopping.is_set():
                    return
                now = time.monotonic()
                failing_since = failing_since or now
                metrics.REDIS_ERRORS.labels("reader").inc()
                log.warning("reader: shard channels of %s failed: %s", self.node, exc)
                if isinstance(exc, redis.exceptions.MovedError):
                    self.hub.store.cluster.nodes_manager.initialize()
                else:
                    self.subscriber.close()  # reconnects on its next use
                if now - failing_since >= self.hub.outage_seconds:
                    self.hub.fail_everyone()
                    failing_since = None
                self.channels.clear()
                self.hub.lost(self.node)
                time.sleep(0.2)
            except Exception:
                log.exception("reader: unexpected failure on %s", self.node)
                time.sleep(0.5)

    def handle(self, kind: str, channel: str, payload: str) -> None:
        ref = self.channels.get(channel)
        if ref is None:
            return  # no longer followed
        if kind == "smessage":
            self.hub.published(ref, published_event(payload))
        elif kind == "ssubscribe":
            self.hub.catch_up(ref)
        elif kind == "sunsubscribe":  # not asked for: Redis dropped it (its slot moved)
            self.hub.store.cluster.nodes_manager.initialize()
            self.hub.lost(self.node)


def by_node(placed: Iterable[tuple[StreamRef, str]]) -> dict[str, list[StreamRef]]:
    groups: dict[str, list[StreamRef]] = defaultdict(list)
    for ref, node in placed:
        groups[node].append(ref)
    return groups
