"""A stream log's entries as the rest of the app sees them: which log (StreamRef), one entry
(Event, its id the SSE `id:`), a reply's text from its deltas. Plain values, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as encode_json_string
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    pass


TERMINAL_EVENTS = frozenset({"finish", "error"})
# What a producer writes besides text (api.md, "Tool calls").
TOOL_EVENTS = frozenset({"tool-input", "tool-call", "approval", "tool-result"})


class StreamRef(NamedTuple):
    """A reply's log: its chat and its stream. A tuple, so hashing it (it keys every per-reply
    map the pump and the readers keep, several times per token) runs in C."""

    chat_id: str
    stream_id: str


@dataclass(frozen=True)
class LogState:
    """A reply's log as a reader finds it: whether it still exists, and whether it has ended
    (None: not asked)."""

    ref: StreamRef
    exists: bool
    ended: bool | None
    events: list[Event] | None = None  # its entries after the cursor asked for (None: not read)


@dataclass(frozen=True)
class Hold:
    """One of an identity's `cap` open-stream places, asked for: it lapses after `ttl_ms`
    unless refreshed, so a dead process's places free themselves."""

    owner: str
    hold_id: str
    cap: int
    ttl_ms: int


@dataclass(frozen=True)
class Event:
    """One entry of a reply's log; `data` is the JSON text sent as the SSE `data:`."""

    id: str
    type: str
    data: str

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    @property
    def cursor(self) -> tuple[int, int]:
        return entry_cursor(self.id)

    def payload(self) -> dict:
        return json.loads(self.data)


def entry_cursor(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# A stream entry as Redis sends it (decoded): its id and its fields as [name, value, name, value]
# (or as a dict, parsed by redis-py's cluster client, whose nodes parse replies themselves).
Entry = tuple[str, list[str] | dict[str, str]]


def to_event(entry_id: str, fields: list[str] | dict[str, str]) -> Event:
    """Every entry here is written as `e <type> d <data>`; anything else is read by name."""
    if isinstance(fields, dict):
        return Event(entry_id, fields["e"], fields["d"])
    if len(fields) == 4 and fields[0] == "e" and fields[2] == "d":
        return Event(entry_id, fields[1], fields[3])
    named = dict(zip(fields[::2], fields[1::2], strict=True))
    return Event(entry_id, named["e"], named["d"])


def delta_event(start_id: str, seq: int, text: str) -> Event:
    """The producer's `seq`-th entry (1, 2, …) as a delta: its id follows the log's `start` entry's id.

    Its data is exactly `json.dumps({"text": text})`, written by the C string encoder alone (a
    tenth of the cost: this runs once per delta of every reply)."""
    return producer_event(start_id, seq, "delta", '{"text": ' + encode_json_string(text) + "}")


def producer_event(start_id: str, seq: int, kind: str, data: str) -> Event:
    """The producer's `seq`-th entry of the log that starts at `start_id`, of any type."""
    ms, first = entry_cursor(start_id)
    return Event(f"{ms}-{first + seq}", kind, data)


def joined_text(events: Iterable[Event]) -> str:
    return "".join(event.payload()["text"] for event in events if event.type == "delta")
