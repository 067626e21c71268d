"""The pump, driven step by step (not started): what it writes, and what it does with Redis's answer."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from chat.local_streams import LocalStreams
from chat.pump import LogLost, Pump
from chat.streams import LOST, StreamRef

REF = StreamRef("chat", "stream")


def pump_over(backend: LocalStreams) -> Pump:
    return Pump(backend, flush_ms=50, flush_chars=10, heartbeat_ms=1000, timeout_ms=5000)


def test_a_flush_writes_each_replys_waiting_text_as_one_numbered_delta():
    logs = LocalStreams(keepalive_seconds=1)
    logs.create(REF, {})
    pump = pump_over(logs)
    state = pump.register(REF)
    pump.push(state, "Hello, ")
    pump.push(state, "world")
    pump.flush([state])
    assert [e.payload() for e in logs.read(REF) if e.type == "delta"] == [{"text": "Hello, world"}]
    assert state.text == "Hello, world" and state.idle and state.last_seq == 1


def test_enough_waiting_text_wakes_the_pump_before_its_timer():
    pump = pump_over(LocalStreams(keepalive_seconds=1))
    state = pump.register(REF)
    pump.wakeup.clear()
    pump.push(state, "short")
    assert not pump.wakeup.is_set()
    pump.push(state, "and long enough")
    assert pump.wakeup.is_set()


class FailingOnce(LocalStreams):
    """Redis failing one round trip (the write may or may not have landed)."""

    def __init__(self) -> None:
        super().__init__(keepalive_seconds=1)
        self.sent: list[tuple[str, int]] = []

    def append_deltas(self, batch: Sequence[tuple[StreamRef, str, int]]) -> list[str]:
        self.sent += [(text, seq) for _, text, seq in batch]
        if len(self.sent) == 1:
            raise redis.ConnectionError("connection reset")
        return super().append_deltas(batch)


def test_a_delta_whose_write_failed_is_sent_again_with_the_same_number():
    logs = FailingOnce()
    logs.create(REF, {})
    pump = pump_over(logs)
    state = pump.register(REF)
    pump.push(state, "one")
    try:
        pump.flush([state])
    except redis.ConnectionError:
        pass
    pump.push(state, " two")  # arrives while the first is unconfirmed: it waits its turn
    pump.flush([state])
    pump.flush([state])
    assert logs.sent == [("one", 1), ("one", 1), (" two", 2)]
    assert state.text == "one two"


def test_a_sealed_log_stops_the_producer():
    logs = LocalStreams(keepalive_seconds=1)
    logs.create(REF, {})
    logs.seal(REF)  # a stop request is finishing this reply
    pump = pump_over(logs)
    state = pump.register(REF)
    pump.push(state, "ignored")
    pump.flush([state])
    assert state.sealed and state.should_stop and state.text == ""


def test_a_lost_log_fails_the_producer_and_releases_its_drain():
    state = pump_over(LocalStreams(keepalive_seconds=1)).register(REF)
    state.push("text")
    state.take()
    state.settle(LOST)
    assert isinstance(state.failure, LogLost) and state.drained.is_set() and state.should_stop
