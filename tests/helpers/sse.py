"""Reading Server-Sent Events as a browser's EventSource does, from test-client or requests responses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str

    def json(self):
        return json.loads(self.data)


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Parse SSE text line by line (as an EventSource does)."""
    event_id: str | None = None
    name = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(event_id, name, "\n".join(data))
            event_id, name, data = None, "message", []
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "id":
                event_id = value
            elif key == "event":
                name = value
            elif key == "data":
                data.append(value)


def response_lines(response) -> Iterator[str]:
    """Lines of a streaming test-client or requests response."""
    if isinstance(response, requests.Response):
        yield from (str(line) for line in response.iter_lines(decode_unicode=True))
        return
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            yield line


@dataclass
class Transcript:
    events: list[SseEvent] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e.json()["text"] for e in self.events if e.event == "delta")

    @property
    def terminal(self) -> SseEvent | None:
        return next((e for e in self.events if e.event in ("finish", "error")), None)

    @property
    def last_id(self) -> str | None:
        return self.events[-1].id if self.events else None


def read_events(response, stop_after: int | None = None) -> Transcript:
    """Read events until the terminal one (or `stop_after` events, then hang up)."""
    transcript = Transcript()
    for event in parse_sse(response_lines(response)):
        transcript.events.append(event)
        if event.event in ("finish", "error") or (stop_after is not None and len(transcript.events) >= stop_after):
            break
    response.close()
    return transcript
