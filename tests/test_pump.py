"""The pump, driven step by step (not started): what it writes, and what it does with Redis's answer."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from chat.replies.pump import LogLost, Pump
from chat.streams import LOST, Event, StreamRef
from chat.streams.local_store import LocalStreams

REF = StreamRef("chat", "stream")
START = "0-1"  # the id LocalStreams gives a log's start event


def pump_over(backend: LocalStreams) -> Pump:
    return Pump(backend, flush_ms=50, flush_chars=10, heartbeat_ms=1000, timeout_ms=5000)


def test_a_flush_writes_each_replys_waiting_text_as_one_numbered_delta():
    logs = LocalStreams(keepalive_seconds=1)
    logs.create(REF, {})
    pump = pump_over(logs)
    state = pump.register(REF, START)
    pump.push(state, "Hello, ")
    pump.push(state, "world")
    pump.flush([state])
    assert [e.payload() for e in logs.read(REF) if e.type == "delta"] == [{"text": "Hello, world"}]
    assert state.text == "Hello, world" and state.idle and state.last_seq == 1


def test_without_a_coalescing_window_any_text_wakes_the_pump():
    pump = Pump(LocalStreams(keepalive_seconds=1), flush_ms=0, flush_chars=400, heartbeat_ms=1000, timeout_ms=5000)
    state = pump.register(REF, START)
    pump.wakeup.clear()
    pump.push(state, "a")
    assert pump.wakeup.is_set()


class Recorder:
    """A Fanout that remembers what the pump handed over."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def produced_here(self, ref: StreamRef, start_id: str) -> None:
        self.calls.append(("here", start_id))

    def deliver(self, ref: StreamRef, events: list[Event]) -> None:
        self.calls.append(("deliver", [(e.id, e.payload()["text"]) for e in events]))

    def produced_elsewhere(self, ref: StreamRef) -> None:
        self.calls.append(("elsewhere",))


def test_only_deltas_the_log_accepted_are_handed_to_local_readers():
    logs = LocalStreams(keepalive_seconds=1)
    logs.create(REF, {})
    fanout = Recorder()
    pump = Pump(logs, flush_ms=0, flush_chars=400, heartbeat_ms=1000, timeout_ms=5000, fanout=fanout)
    state = pump.register(REF, START)
    pump.push(state, "kept")
    pump.flush([state])
    logs.seal(REF)
    pump.push(state, "refused")
    pump.flush([state])
    pump.unregister(state)
    assert fanout.calls == [("here", START), ("deliver", [("0-2", "kept")]), ("elsewhere",)]


def test_enough_waiting_text_wakes_the_pump_before_its_timer():
    pump = pump_over(LocalStreams(keepalive_seconds=1))
    state = pump.register(REF, START)
    pump.wakeup.clear()
    pump.push(state, "short")
    assert not pump.wakeup.is_set()
    pump.push(state, "and long enough")
    assert pump.wakeup.is_set()


class FailingOnce(LocalStreams):
    """Redis failing one round trip (the write may or may not have landed)."""

    def __init__(self) -> None:
        super().__init__(keepalive_seconds=1)
        self.sent: list[tuple[str, str]] = []

    def append_deltas(self, batch: Sequence[tuple[StreamRef, Event]]) -> list[str]:
        self.sent += [(event.payload()["text"], event.id) for _, event in batch]
        if len(self.sent) == 1:
            raise redis.ConnectionError("connection reset")
        return super().append_deltas(batch)


def test_a_delta_whose_write_failed_is_sent_again_with_the_same_id():
    logs = FailingOnce()
    logs.create(REF, {})
    pump = pump_over(logs)
    state = pump.register(REF, START)
    pump.push(state, "one")
    try:
        pump.flush([state])
    except redis.ConnectionError:
        pass
    pump.push(state, " two")  # arrives while the first is unconfirmed: it waits its turn
    pump.flush([state])
    pump.flush([state])
    assert logs.sent == [("one", "0-2"), ("one", "0-2"), (" two", "0-3")]
    assert state.text == "one two"


def test_a_sealed_log_stops_the_producer():
    logs = LocalStreams(keepalive_seconds=1)
    logs.create(REF, {})
    logs.seal(REF)  # a stop request is finishing this reply
    pump = pump_over(logs)
    state = pump.register(REF, START)
    pump.push(state, "ignored")
    pump.flush([state])
    assert state.sealed and state.should_stop and state.text == ""


def test_a_lost_log_fails_the_producer_and_releases_its_drain():
    state = pump_over(LocalStreams(keepalive_seconds=1)).register(REF, START)
    state.push("text")
    state.take()
    state.settle(LOST)
    assert isinstance(state.failure, LogLost) and state.drained.is_set() and state.should_stop
