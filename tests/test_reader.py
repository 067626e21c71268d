"""The hub's dispatch, driven by hand (not started), against a real Redis."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable

import gevent
import gevent.queue
import gevent.socket
import pytest

from chat.replies import continued, reader
from chat.replies.reader import StreamHub
from chat.streams import Event, RedisStreams, StreamRef, delta_event, sse
from chat.streams.client_socket import ClientSocket, chunk
from helpers.sse import SseEvent, parse_sse

REF = StreamRef("c", "s")


def hub_over(streams: RedisStreams) -> StreamHub:
    return StreamHub(
        streams, block_ms=10, keepalive_seconds=1, liveness_seconds=60, outage_seconds=5, on_dead=lambda ref: None
    )


def test_a_batch_goes_to_every_follower_and_moves_the_streams_cursor(store):
    streams = store()
    first = streams.create(REF, {})
    hub = hub_over(streams)
    one, two = hub.subscribe(REF, "0-0"), hub.subscribe(REF, "0-0")
    streams.append_deltas([(REF, delta_event(first, 1, "a"))])
    hub.step()
    for subscription in (one, two):
        assert [e.type for e in subscription.queue.get_nowait()] == ["start", "delta"]
    assert hub.cursors[REF] == streams.read(REF)[-1].id


def test_the_terminal_event_ends_the_following_of_a_stream(store):
    streams = store()
    streams.create(REF, {})
    hub = hub_over(streams)
    follower = hub.subscribe(REF, "0-0")
    streams.end_log(REF, "finish", {"finishReason": "stop"})
    hub.step()
    assert REF not in hub.followers and REF not in hub.cursors
    assert [e.type for e in follower if e is not None] == ["start", "finish"]


def test_a_local_reply_s_terminal_event_reaches_its_followers_without_the_xread(store):
    streams = store()
    start = streams.create(REF, {})
    hub = hub_over(streams)
    hub.produced_here(REF, start)
    follower = hub.subscribe(REF, start)
    streams.append_deltas([(REF, delta_event(start, 1, "a"))])
    hub.deliver(REF, [streams.read(REF)[-1]])
    ended = streams.end_log(REF, "finish", {"finishReason": "stop"})
    assert ended is not None
    hub.deliver(REF, [ended])
    hub.produced_elsewhere(REF)  # the producer hands over: nothing is left to read
    assert hub.followers == {} and hub.cursors == {} and hub.local == {}
    assert [e.type for e in follower if e is not None] == ["delta", "finish"]


def test_a_resume_whose_read_the_pump_overtook_gets_every_entry_once(store):
    """A resume reads what it missed, then follows from there (Replies.follow): a delta the pump
    handed over in between (written after the read) is read again, not lost, and none comes twice."""
    streams = store()
    start = streams.create(REF, {})
    hub = hub_over(streams)
    hub.produced_here(REF, start)
    streams.append_deltas([(REF, delta_event(start, 1, "a "))])
    read = streams.read(REF, start)  # the resume's read: "a "
    streams.append_deltas([(REF, delta_event(start, 2, "b "))])
    hub.deliver(REF, [streams.read(REF)[-1]])  # before the resume followed: nobody to hand it to
    source = continued(read, hub.subscribe(REF, read[-1].id))
    ended = streams.end_log(REF, "finish", {"finishReason": "stop"})
    assert ended is not None
    hub.deliver(REF, [ended])
    events = [e for e in source if e is not None]
    assert [(e.type, e.payload().get("text")) for e in events] == [("delta", "a "), ("delta", "b "), ("finish", None)]


def dechunk(raw: bytes) -> list[bytes]:
    """The chunks of a chunked HTTP/1.1 body, in order; fails on anything malformed."""
    chunks = []
    while raw:
        size, _, rest = raw.partition(b"\r\n")
        length = int(size, 16)
        assert rest[length : length + 2] == b"\r\n", "every chunk ends where its size says"
        chunks.append(rest[:length])
        raw = rest[length + 2 :]
    return chunks


class Served:
    """A subscription served as gunicorn's gevent worker serves it: its response in a greenlet
    writing each item as one chunk, to a socket that holds little, read by a client that can
    stop reading."""

    def __init__(self, subscribe: Callable[[ClientSocket], Iterable[Event | None]]) -> None:
        self.server_side, self.client_side = gevent.socket.socketpair()
        self.server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.subscription = subscribe(ClientSocket(self.server_side))
        self.written_by_response: list[str] = []
        self.received: list[bytes] = []
        self.responder = gevent.spawn(self.respond)
        self.reading = gevent.spawn(self.read_along)

    def respond(self) -> None:
        for event in self.subscription:
            if event is not None:
                self.written_by_response.append(event.id)
                self.server_side.sendall(chunk(sse.encode(event.type, event.data, event.id).encode()))

    def read_along(self) -> None:
        while data := self.client_side.recv(65536):
            self.received.append(data)

    def events(self) -> list[SseEvent]:
        """Everything the client gets once the response has ended (it reads again if it stopped)."""
        if self.reading.dead:
            self.reading = gevent.spawn(self.read_along)
        self.responder.get(timeout=5)
        self.server_side.close()
        self.reading.get(timeout=5)
        self.client_side.close()
        return list(parse_sse(iter(b"".join(dechunk(b"".join(self.received))).decode().split("\n"))))


def test_an_idle_response_is_written_to_directly_in_order_even_when_its_socket_is_full(store, monkeypatch):
    """Under gunicorn's gevent worker the hub writes a waiting response's entries to its socket
    itself; a socket that takes only part of a write leaves the rest to the response, and what
    comes meanwhile waits behind it: the client reads every entry once, in order, well framed."""
    monkeypatch.setattr(reader, "queue", gevent.queue)  # the response waits as in a gevent worker
    streams = store()
    start = streams.create(REF, {})
    hub = hub_over(streams)
    hub.produced_here(REF, start)
    served = Served(lambda client: hub.subscribe(REF, start, client))
    texts = [f"word{n} " * 200 for n in range(1, 41)]  # ~1.4 KB each: far more than the socket holds

    def produce(numbers: range) -> None:
        for n in numbers:
            streams.append_deltas([(REF, delta_event(start, n, texts[n - 1]))])
            hub.deliver(REF, [streams.read(REF)[-1]])
            gevent.sleep(0.001)  # the response and the client run between deliveries

    produce(range(1, 21))
    assert len(served.written_by_response) == 1, "after its first entry the response was never woken"
    served.reading.kill()  # the client stops reading: the socket fills up
    produce(range(21, 41))
    ended = streams.end_log(REF, "finish", {"finishReason": "stop"})
    assert ended is not None
    hub.deliver(REF, [ended])
    events = served.events()
    assert [e.json().get("text") for e in events] == [*texts, None]
    assert [e.id for e in events] == [e.id for e in streams.read(REF, start)]
    assert len(served.written_by_response) > 2, "a full socket left the rest, and what came meanwhile, to the response"


@pytest.mark.parametrize("joining", ["with a catch-up read", "after a resume's own read"])
def test_a_client_joining_behind_the_xread_gets_no_entry_twice(store, monkeypatch, joining):
    """A client that has the first three deltas (it caught up itself, or a resume read them
    before following) follows while the XREAD is still at the first: the next read brings the
    second and third again, and the client must get neither twice — written directly or not."""
    monkeypatch.setattr(reader, "queue", gevent.queue)
    streams = store()
    start = streams.create(REF, {})
    streams.append_deltas([(REF, delta_event(start, n, f"w{n} ")) for n in (1, 2, 3)])
    hub = hub_over(streams)
    hub.subscribe(REF, f"{start[:-2]}-1")  # another client keeps the XREAD at the first delta
    read = streams.read(REF, start)

    def follow(client: ClientSocket) -> Iterable[Event | None]:
        if joining == "with a catch-up read":
            return hub.subscribe(REF, start, client)
        return continued(read, hub.subscribe(REF, read[-1].id, client))

    served = Served(follow)
    gevent.sleep(0.01)
    streams.append_deltas([(REF, delta_event(start, 4, "w4 "))])
    hub.step()  # reads the second, third and fourth delta
    gevent.sleep(0.01)
    streams.end_log(REF, "finish", {"finishReason": "stop"})
    hub.step()
    assert [e.json().get("text") for e in served.events()] == ["w1 ", "w2 ", "w3 ", "w4 ", None]


def test_a_follower_that_leaves_is_forgotten(store):
    streams = store()
    streams.create(REF, {})
    hub = hub_over(streams)
    follower = hub.subscribe(REF, "0-0")
    hub.unsubscribe(follower)
    assert hub.followers == {} and hub.cursors == {}


@pytest.mark.timeout(10)  # without keepalive rounds the follower waits forever
def test_a_follower_hears_a_keepalive_while_its_reply_is_quiet_and_then_the_reply(store):
    streams = store()
    start = streams.create(REF, {})
    hub = StreamHub(
        streams, block_ms=10, keepalive_seconds=0.2, liveness_seconds=60, outage_seconds=5, on_dead=lambda ref: None
    )
    hub.start()
    try:
        follower = iter(hub.subscribe(REF, start))
        began = time.monotonic()
        assert next(follower) is None, "a keepalive, since nothing was written"
        assert time.monotonic() - began < 0.5, "within the keepalive interval"
        streams.append_deltas([(REF, delta_event(start, 1, "a"))])
        event = next(follower)
        while event is None:  # another keepalive may come first
            event = next(follower)
        assert event.payload() == {"text": "a"}
    finally:
        hub.stop()
