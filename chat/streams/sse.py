"""Server-Sent Events wire encoding. Pure functions, no I/O."""

from __future__ import annotations

import re

EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# Redis stream ids are two unsigned 64-bit integers: a larger part is refused by Redis, and in
# the reader's shared XREAD that would refuse every client's read at once. (The largest id is
# refused too: no range starts after it.)
MAX_ID_PART = 2**64 - 1


def encode(event: str, data: str, event_id: str | None = None) -> str:
    """One SSE event. Every line of `data` gets its own `data:` line (HTML fragments span lines)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def comment(text: str = "keepalive") -> str:
    """A comment line: keeps proxies from closing an idle stream and reveals dead clients."""
    return f": {text}\n\n"


def retry(milliseconds: int) -> str:
    """Tell EventSource how long to wait before reconnecting."""
    return f"retry: {milliseconds}\n\n"


def parse_event_id(raw: str | None) -> tuple[int, int] | None:
    """Parse a `Last-Event-ID` (Redis stream id form `ms-seq`); None when absent.

    :raise ValueError: when it is present but not an id this server sent.
    """
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if not EVENT_ID.match(raw):
        raise ValueError(f"Last-Event-ID {raw[:40]!r} is not an event id this server sent")
    ms, seq = (int(part) for part in raw.split("-"))
    if ms > MAX_ID_PART or seq > MAX_ID_PART or (ms, seq) == (MAX_ID_PART, MAX_ID_PART):  # nothing follows it
        raise ValueError(f"Last-Event-ID {raw[:40]!r} is not an event id this server sent")
    return ms, seq


def format_event_id(cursor: tuple[int, int]) -> str:
    return f"{cursor[0]}-{cursor[1]}"
