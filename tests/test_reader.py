"""The hub's dispatch, driven by hand (not started), against a real Redis."""

from __future__ import annotations

import time

import pytest

from chat.reader import StreamHub
from chat.replies import continued
from chat.streams import RedisStreams, StreamRef, delta_event

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
