"""The in-memory log (RESUMABLE_STREAMS=0): the same contract as Redis within one process."""

from __future__ import annotations

import threading

from chat.streams import APPENDED, SEALED, StreamRef, delta_event
from chat.streams.local_store import LocalStreams

REF = StreamRef("chat", "stream")


def test_a_follower_gets_the_events_after_its_cursor_and_stops_at_the_terminal_one():
    logs = LocalStreams(keepalive_seconds=1)
    start = logs.create(REF, {"chatId": "chat"})
    assert logs.append_deltas([(REF, delta_event(start, 1, "a")), (REF, delta_event(start, 2, "b"))]) == [
        APPENDED,
        APPENDED,
    ]
    start, first, _second = logs.read(REF)
    follower = iter(logs.subscribe(REF, first.id))
    assert next(follower).payload() == {"text": "b"}
    logs.end_log(REF, "finish", {"finishReason": "stop"})
    assert next(follower).type == "finish"
    assert list(follower) == []


def test_a_follower_waiting_for_the_producer_sees_new_deltas_and_keepalives():
    logs = LocalStreams(keepalive_seconds=0.01)
    start = logs.create(REF, {})
    follower = iter(logs.subscribe(REF, "0-0"))
    assert next(follower).type == "start"
    assert next(follower) is None  # nothing new for a while: a keepalive is due
    threading.Timer(0.02, lambda: logs.append_deltas([(REF, delta_event(start, 1, "late"))])).start()
    received = next(event for event in follower if event is not None)
    assert received.payload() == {"text": "late"}


def test_a_sealed_log_refuses_deltas_and_ends_once():
    logs = LocalStreams(keepalive_seconds=1)
    start = logs.create(REF, {})
    logs.claim_live(REF, 1000)
    logs.seal(REF)
    assert logs.append_deltas([(REF, delta_event(start, 1, "too late"))]) == [SEALED]
    ended = logs.end_log(REF, "finish", {})
    assert ended is not None and ended.type == "finish"
    assert logs.end_log(REF, "finish", {}) is None
    assert logs.log_ended(REF) and not logs.alive([REF])[0]


def test_following_a_log_this_process_does_not_have_gives_nothing():
    assert list(LocalStreams(keepalive_seconds=1).subscribe(REF, "0-0")) == []
