"""The Redis stream protocol (chat/streams/redis_store.py) against a real redis-server."""

from __future__ import annotations

import pytest
import redis

from chat.streams import APPENDED, LOST, SEALED, Hold, LogState, RedisStreams, StreamRef, chat_key, delta_event, log_key


def test_append_stream_id_keeps_the_newest_five_newest_first(store):
    streams = store()
    for n in range(1, 9):
        streams.append_stream_id("chat-a", f"s{n}")
    assert streams.load_streams("chat-a") == ["s8", "s7", "s6", "s5", "s4"]
    assert streams.load_streams("chat-b") == []
    assert 0 < streams.client.ttl(chat_key("chat-a", "streams")) <= 3600, "the chat list expires"


def test_every_key_of_a_chat_shares_one_cluster_hash_slot():
    ref = StreamRef("c1", "s1")
    keys = [
        chat_key("c1", "streams"),
        chat_key("c1", "live"),
        log_key(ref),
        RedisStreams._state_key(ref, "state"),
        RedisStreams._state_key(ref, "cancel"),
    ]
    assert {key[key.index("{") + 1 : key.index("}")] for key in keys} == {"c1"}


def test_read_after_a_cursor_returns_only_later_entries(store):
    streams = store()
    ref = StreamRef("c", "s")
    first = streams.create(ref, {"chatId": "c"})
    streams.append_deltas(
        [(ref, delta_event(first, 1, "a")), (ref, delta_event(first, 2, "b")), (ref, delta_event(first, 3, "c"))]
    )
    events = streams.read(ref)
    assert [e.type for e in events] == ["start", "delta", "delta", "delta"]
    assert [e.payload()["text"] for e in streams.read(ref, events[1].id)] == ["b", "c"]
    assert streams.read_text(ref) == "abc"


def test_sealed_stream_refuses_deltas_and_terminates_once(store):
    streams = store()
    ref = StreamRef("c", "s")
    first = streams.create(ref, {})
    assert streams.claim_live(ref, 5000)
    assert streams.append_deltas([(ref, delta_event(first, 1, "kept"))]) == [APPENDED]
    streams.seal(ref)
    assert streams.append_deltas([(ref, delta_event(first, 2, "refused"))]) == [SEALED]
    ended = streams.end_log(ref, "finish", {"finishReason": "stop"})
    assert streams.end_log(ref, "finish", {"finishReason": "interrupted"}) is None
    events = streams.read(ref)
    assert [e.type for e in events] == ["start", "delta", "finish"]
    assert ended == events[-1], "what end_log returns is the entry the log holds"
    assert events[-1].payload()["finishReason"] == "stop"
    assert streams.claim_live(StreamRef("c", "next"), 5000), "terminating frees the chat for the next reply"
    assert 0 < streams.client.ttl(log_key(ref)) <= 60, "a finished log expires after the retention TTL"


def test_claim_live_is_exclusive_and_expires_without_heartbeat(store):
    streams = store()
    first, second = StreamRef("c", "one"), StreamRef("c", "two")
    assert streams.claim_live(first, 300)
    assert not streams.claim_live(second, 300)
    assert streams.alive([first, second]) == [True, False]
    assert streams.heartbeat([first], 300) == [False]
    streams.request_cancel(first)
    assert streams.heartbeat([first], 300) == [True]
    assert streams.client.pttl(chat_key("c", "live")) > 0
    streams.client.pexpire(chat_key("c", "live"), 1)
    import time

    time.sleep(0.01)
    assert streams.alive([first]) == [False]
    assert streams.claim_live(second, 300)


def test_claim_and_create_starts_one_reply_per_chat_and_abandon_frees_the_chat(store):
    streams = store()
    first, second = StreamRef("c", "one"), StreamRef("c", "two")
    start_id = streams.claim_and_create(first, {"chatId": "c"}, 5000)
    assert start_id is not None and [e.type for e in streams.read(first)] == ["start"]
    assert streams.read(first)[0].id == start_id and streams.load_streams("c") == ["one"]
    assert streams.claim_and_create(second, {}, 5000) is None, "a second reply while one is live"
    assert not streams.exists(second) and streams.load_streams("c") == ["one"], "and it left nothing behind"
    streams.abandon(first)  # the first reply's database write failed
    assert not streams.exists(first) and streams.load_streams("c") == [] and streams.alive([first]) == [False]
    assert streams.claim_and_create(second, {}, 5000) is not None, "the chat is free at once"


def test_newest_log_says_which_log_a_resume_follows_and_its_state(store):
    streams = store()
    assert streams.newest_log("c") is None, "a chat without streams"
    older, newer = StreamRef("c", "older"), StreamRef("c", "newer")
    streams.create(older, {})
    streams.create(newer, {})
    assert streams.newest_log("c") == LogState(newer, exists=True, ended=False)
    streams.end_log(newer, "finish", {"finishReason": "stop"})
    assert streams.newest_log("c") == LogState(newer, exists=True, ended=True)
    streams.client.delete(log_key(newer))  # Redis let it expire
    assert streams.newest_log("c") == LogState(newer, exists=False, ended=True)


def test_a_resume_takes_its_place_and_reads_what_it_missed_at_once(store):
    """One round trip gives a resuming client its open-stream place, the chat's newest log and the
    entries after its cursor; a caller holding every place gets neither."""
    streams = store()
    ref = StreamRef("r", "s")
    start = streams.create(ref, {})
    streams.append_deltas([(ref, delta_event(start, n, f"w{n} ")) for n in (1, 2, 3)])
    one, two = Hold("guest", "one", 1, 60_000), Hold("guest", "two", 1, 60_000)
    held, newest = streams.hold_and_find_newest(one, "r", f"{start[:-2]}-1")
    assert held and newest is not None and (newest.ref, newest.exists, newest.ended) == (ref, True, False)
    assert newest.events == streams.read(ref, f"{start[:-2]}-1") and len(newest.events) == 2
    assert streams.hold_and_find_newest(two, "r", "0-0") == (False, None), "every place is held"
    streams.release_hold("guest", "one")
    streams.end_log(ref, "finish", {"finishReason": "stop"})
    held, newest = streams.hold_and_find_newest(two, "r", streams.read(ref)[-1].id)
    assert held and newest is not None and newest.ended and newest.events == [], "a cursor at the very end"
    assert streams.hold_and_find_newest(Hold("other", "x", 1, 60_000), "none", "0-0") == (True, None)


def test_only_a_producer_gone_without_ending_its_log_is_stalled(store):
    streams = store()
    working, finished, gone = StreamRef("a", "working"), StreamRef("b", "finished"), StreamRef("c", "gone")
    for ref in (working, finished, gone):
        streams.claim_and_create(ref, {}, 5000)
    streams.end_log(finished, "finish", {"finishReason": "stop"})  # lets go of its chat
    streams.client.delete(chat_key("c", "live"))  # its heartbeat lapsed
    assert streams.stalled([working, finished, gone]) == [False, False, True]


def test_logs_are_capped_by_maxlen(store):
    streams = store(maxlen=100)
    ref = StreamRef("c", "s")
    first = streams.create(ref, {})
    for round_ in range(10):
        streams.append_deltas([(ref, delta_event(first, round_ * 100 + n, "x")) for n in range(1, 101)])
    assert streams.client.xlen(log_key(ref)) < 300, "approximate MAXLEN trimming keeps the log bounded"


def test_read_many_multiplexes_logs_and_wakes_on_demand(store):
    streams = store()
    a, b = StreamRef("a", "1"), StreamRef("b", "1")
    streams.create(a, {})
    streams.create(b, {})
    wake = streams.wake_key("reader")
    events, woken = streams.read_many({a: "0-0", b: "0-0"}, 10, wake, "0-0")
    assert {ref: [e.type for e in batch] for ref, batch in events.items()} == {a: ["start"], b: ["start"]}
    assert woken is None
    streams.wake(wake)
    cursors = {a: events[a][-1].id, b: events[b][-1].id}
    events, woken = streams.read_many(cursors, 1000, wake, "0-0")
    assert events == {} and woken is not None


def test_a_retried_append_is_written_once(store):
    """A pipeline whose reply was lost may have reached Redis: sending it again adds nothing."""
    streams = store()
    ref = StreamRef("c", "s")
    first = streams.create(ref, {})
    assert streams.append_deltas([(ref, delta_event(first, 1, "one ")), (ref, delta_event(first, 2, "two "))]) == [
        APPENDED,
        APPENDED,
    ]
    assert streams.append_deltas([(ref, delta_event(first, 2, "two ")), (ref, delta_event(first, 3, "three"))]) == [
        APPENDED,
        APPENDED,
    ]
    assert streams.read_text(ref) == "one two three"


def test_appending_to_a_log_redis_has_lost_is_refused(store):
    streams = store()
    ref = StreamRef("c", "s")
    assert streams.append_deltas([(ref, delta_event("1-0", 1, "orphan"))]) == [LOST]
    assert not streams.exists(ref), "no partial log is started"


def test_terminating_leaves_only_keys_that_expire_with_the_retention(store):
    streams = store(ttl_seconds=30)
    ref = StreamRef("c", "s")
    first = streams.create(ref, {})
    streams.claim_live(ref, 5000)
    streams.append_deltas([(ref, delta_event(first, 1, "x"))])
    streams.request_cancel(ref)
    streams.end_log(ref, "finish", {"finishReason": "cancelled"})
    keys = sorted(streams.client.scan_iter("chat:{c}:*"))
    assert keys == [log_key(ref), RedisStreams._state_key(ref, "state"), chat_key("c", "streams")]
    assert all(0 < streams.client.ttl(key) <= 30 for key in keys[:2])
    assert 0 < streams.client.ttl(keys[2]), "the chat's list of streams expires too (after a day)"


def test_a_read_in_flight_when_a_stream_is_followed_again_leaves_no_gap(store):
    """The reader's XREAD is in flight for a stream; its last reader leaves and another one
    follows it again from an earlier cursor; then the stale read lands. Nothing may be skipped."""
    from chat.replies.reader import StreamHub

    streams = store()
    ref = StreamRef("c", "s")
    first = streams.create(ref, {})
    streams.append_deltas([(ref, delta_event(first, 1, "a")), (ref, delta_event(first, 2, "b"))])
    start, a, _b = streams.read(ref)
    hub = StreamHub(
        streams, block_ms=10, keepalive_seconds=1, liveness_seconds=60, outage_seconds=5, on_dead=lambda ref: None
    )  # not started: the test drives the reader by hand
    earlier = hub.subscribe(ref, a.id)
    in_flight = dict(hub.cursors)
    stale, _ = streams.read_many(in_flight, 10)
    hub.unsubscribe(earlier)
    second = hub.subscribe(ref, start.id)
    hub.dispatch(in_flight, stale)
    streams.end_log(ref, "finish", {"finishReason": "stop"})
    hub.step()
    received = [event for event in second if event is not None]
    assert [e.type for e in received] == ["delta", "delta", "finish"]
    assert "".join(e.payload()["text"] for e in received if e.type == "delta") == "ab"


@pytest.mark.parametrize("protocol", [2, 3])
def test_reads_parse_both_redis_protocols(redis_url, protocol):
    """RESP3 (redis-py's default) answers XREAD with a map, RESP2 (`?protocol=2`) with pairs."""
    client = redis.Redis.from_url(redis_url, decode_responses=True, protocol=protocol)
    try:
        streams = RedisStreams(client, maxlen=100, ttl_seconds=60, max_reply_seconds=60, chat_streams_ttl_seconds=60)
        ref = StreamRef("p", f"resp{protocol}")
        first = streams.create(ref, {"chatId": "p"})
        streams.append_deltas([(ref, delta_event(first, 1, "multi\nline"))])
        start, delta = streams.read(ref)
        events, _ = streams.read_many({ref: start.id}, 10)
        assert [e.payload() for e in events[ref]] == [{"text": "multi\nline"}] and events[ref][0].id == delta.id
        assert streams.read_text(ref) == "multi\nline"
    finally:
        client.close()


def test_seals_and_heartbeats_survive_redis_forgetting_its_scripts(store):
    """After SCRIPT FLUSH (or a restart) the pipelined scripts are loaded again."""
    streams = store()
    ref = StreamRef("f", "s")
    first = streams.create(ref, {})
    streams.claim_live(ref, 5000)
    assert streams.append_deltas([(ref, delta_event(first, 1, "a"))]) == [APPENDED]
    streams.client.script_flush()
    assert streams.heartbeat([ref], 5000) == [False]
    streams.client.script_flush()
    streams.seal(ref)
    assert streams.append_deltas([(ref, delta_event(first, 2, "b"))]) == [SEALED]
    assert streams.read_text(ref) == "a"
    streams.client.script_flush()
    held, newest = streams.hold_and_find_newest(Hold("f", "h", 1, 5000), "f", "0-0")
    assert held and newest is not None and [e.type for e in newest.events or []] == ["start", "delta"]


def test_a_post_whose_place_is_refused_leaves_its_chat_free(store):
    """The place and the claim go in one round trip: a refused place undoes the claim."""
    streams = store()
    assert streams.hold_stream(Hold("owner", "first", 1, 5000))
    ref = StreamRef("busy-owner", "s")
    assert streams.hold_and_claim(Hold("owner", "second", 1, 5000), ref, {}, 5000) == (False, None)
    assert not streams.exists(ref) and streams.load_streams("busy-owner") == []
    assert streams.claim_live(ref, 5000), "nobody holds the chat"


def test_a_post_claims_its_chat_once_when_redis_knows_only_some_scripts(store):
    """After SCRIPT FLUSH, the claim's script loaded again alone (a page's start): the place's
    script is refused, and only it is sent again — a second claim would refuse the chat."""
    streams = store()
    streams.client.script_flush()
    streams.create(StreamRef("other", "s"), {})  # redis-py loads this one script by itself
    ref = StreamRef("post", "s")
    held, start_id = streams.hold_and_claim(Hold("owner", "h", 1, 5000), ref, {"chatId": "post"}, 5000)
    assert held and start_id is not None
    assert [(e.id, e.type) for e in streams.read(ref)] == [(start_id, "start")]


def test_a_sealed_log_tells_a_retried_delta_that_landed_from_one_that_did_not(store):
    """A write retried after its round trip failed is refused by its id either way; the log says
    whether the first try landed (keep it) or the seal came first (the producer must stop)."""
    streams = store()
    ref = StreamRef("c", "s")
    first = streams.create(ref, {})
    streams.append_deltas([(ref, delta_event(first, 1, "landed "))])
    streams.seal(ref)
    retried, new = delta_event(first, 1, "landed "), delta_event(first, 2, "too late")
    assert streams.append_deltas([(ref, retried), (ref, new)]) == [APPENDED, SEALED]
    assert streams.end_log(ref, "finish", {"finishReason": "cancelled"}), "the terminal event still goes in"
    assert [e.type for e in streams.read(ref)] == ["start", "delta", "finish"]
    assert streams.read_text(ref) == "landed "


def test_delta_ids_follow_the_start_event_and_increase():
    assert [delta_event("1700000000000-0", n, "x").id for n in (1, 2, 10)] == [
        "1700000000000-1",
        "1700000000000-2",
        "1700000000000-10",
    ]


def test_a_producer_whose_log_was_taken_over_cannot_write(store):
    """Fencing: a new producer takes a log on (a run handed over, or answered elsewhere) while
    the old one might still be writing: the old one's next entries are refused (it stops), the
    new one's go in after everything already written."""
    streams = store()
    ref = StreamRef("f" * 32, "fenced")
    start = streams.create(ref, {"chatId": ref.chat_id})
    assert streams.append_deltas([(ref, delta_event(start, 1, "old "))]) == [APPENDED]
    base = streams.fence(ref)
    assert base is not None and base.endswith("-0")
    stale = streams.append_deltas([(ref, delta_event(start, 2, "stale "))])
    fresh = streams.append_deltas([(ref, delta_event(base, 1, "new"))])
    assert stale == [SEALED] and fresh == [APPENDED]
    assert streams.read_text(ref) == "old new"
    other = StreamRef("f" * 32, "fenced-then-sealed")  # a seal right after a fence holds too
    other_base = streams.fence(other) if streams.create(other, {}) else None
    assert other_base is not None
    streams.seal(other)
    assert streams.append_deltas([(other, delta_event(other_base, 1, "x"))]) == [SEALED]
    streams.seal(ref)  # somebody finishes the reply: nobody may start a new epoch over the seal
    assert streams.fence(ref) is None
    assert streams.append_deltas([(ref, delta_event(base, 2, " late"))]) == [SEALED]
