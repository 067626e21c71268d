"""Following a log on behalf of a client: the open-stream place a stream holds while it is open
(HeldStream), a page's stream (PageStream), and a stream that begins with entries already read."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import redis

from ..streams import Event, Hold, StreamBackend, StreamRef
from ..web import metrics
from .turns import ReplyError

TOO_MANY_STREAMS = "You have too many streams open at once; close a tab or wait for a reply to end."


class OpenStreams:
    """The open-stream places of every identity (STREAMS_PER_IDENTITY each): one per open
    stream, kept in the store, refreshed while the stream is open and lapsing by themselves if
    a worker dies, so that no client can hold a worker's connections without limit."""

    def __init__(self, backend: Callable[[], StreamBackend], cap: int, keepalive_seconds: int) -> None:
        self.backend = backend  # this process's store, built on first use
        self.cap = cap
        self.keepalive_seconds = keepalive_seconds

    @property
    def ttl_ms(self) -> int:
        """How long a place stays held without a refresh: three keepalive intervals."""
        return 3 * self.keepalive_seconds * 1000

    def new(self, identity_id: uuid.UUID) -> Hold:
        """A place to take (in the round trip of whatever the stream first asks the store)."""
        return Hold(str(identity_id), uuid.uuid4().hex, self.cap, self.ttl_ms)

    def refuse_unless_held(self, held: bool) -> None:
        """:raise ReplyError: 429 when the caller held every open-stream place already."""
        if not held:
            raise ReplyError(429, TOO_MANY_STREAMS, retry_after=self.keepalive_seconds)

    def refresh(self, identity_id: uuid.UUID, hold_id: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self.backend().refresh_hold(str(identity_id), hold_id, self.ttl_ms)

    def release(self, identity_id: uuid.UUID, hold_id: str) -> None:
        with contextlib.suppress(redis.RedisError):  # else it lapses by itself (ttl_ms)
            self.backend().release_hold(str(identity_id), hold_id)

    def keep(
        self, identity_id: uuid.UUID, hold_id: str, source: Iterable[Event | None], ref: StreamRef | None = None
    ) -> HeldStream:
        """`source`, keeping its place until it ends or is closed (the client left)."""
        return HeldStream(self, identity_id, hold_id, source, ref)


@dataclasses.dataclass(frozen=True)
class PageStream:
    """A page's stream: the reply's stream id (its tail element), the log's entries up to the
    cursor (what the page shows already), and the events after it."""

    stream_id: str
    events_before: list[Event]
    events: Iterable[Event | None]


class HeldStream:
    """A stream holding one of its identity's open-stream places: refreshed well before it
    lapses, released when the stream ends or is closed — even if it was never read."""

    def __init__(
        self,
        places: OpenStreams,
        identity_id: uuid.UUID,
        hold_id: str,
        source: Iterable[Event | None],
        ref: StreamRef | None = None,
    ):
        self.places, self.identity_id, self.hold_id, self.ref = places, identity_id, hold_id, ref
        self.events = iter(source)
        self.refresh_every = places.ttl_ms / 3000
        self.refresh_at = time.monotonic() + self.refresh_every
        self.released = False
        metrics.OPEN_STREAMS.inc()

    def __iter__(self) -> HeldStream:
        return self

    def __next__(self) -> Event | None:
        try:
            event = next(self.events)
        except BaseException:
            self.close()
            raise
        if time.monotonic() >= self.refresh_at:
            self.refresh_at = time.monotonic() + self.refresh_every
            self.places.refresh(self.identity_id, self.hold_id)
        return event

    def close(self) -> None:
        if self.released:
            return
        self.released = True
        metrics.OPEN_STREAMS.dec()
        close = getattr(self.events, "close", None)
        if close:
            close()
        self.places.release(self.identity_id, self.hold_id)


def continued(first: Iterable[Event | None], rest: Iterable[Event | None]) -> Iterator[Event | None]:
    """`first`, then `rest` (a subscription, already following): closing this (the client left)
    ends the subscription at once, even before it was reached."""
    try:
        yield from first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close:
            close()
