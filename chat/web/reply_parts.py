"""A reply as the page shows it: text pieces and tool calls, in order. Pure: no I/O.

Built from the stored reply (its text and its tool-call rows) or from its log (events, folded
one by one), so a page rendered at a cursor and a stream resumed from it show the same thing:
a call sits where its first event is, and text after a call is a new piece.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..models import ToolCall, interleaved
from ..streams import TOOL_EVENTS, Event
from ..vocabulary import ToolStatus

LONG_RESULT_CHARS = 600  # a result longer than this (or than LONG_RESULT_LINES) starts collapsed
LONG_RESULT_LINES = 12


@dataclass
class ToolCallView:
    call_id: str
    name: str
    arguments_text: str = ""
    arguments: Any = None
    started: bool = False  # its `tool-call` came: the arguments were valid and it ran
    status: str | None = None  # a ToolStatus once settled
    result: str | None = None
    asked: bool = False  # its `approval` came: it waited for a person's answer

    @property
    def state(self) -> str:
        """What it is doing, as its badge says it."""
        if self.status is not None:
            return self.status
        if self.started:
            return ToolStatus.RUNNING
        return ToolStatus.WAITING if self.asked else "writing"

    @property
    def shown_arguments(self) -> str:
        if self.started or self.asked:
            return json.dumps(self.arguments, indent=2, ensure_ascii=False)
        return self.arguments_text

    @property
    def long_result(self) -> bool:
        result = self.result or ""
        return len(result) > LONG_RESULT_CHARS or result.count("\n") > LONG_RESULT_LINES

    def apply(self, event: Event) -> None:
        data = event.payload()
        if event.type == "tool-input":
            self.arguments_text += data["text"]
        elif event.type == "approval":
            self.asked, self.arguments = True, data["arguments"]
        elif event.type == "tool-call":
            self.started, self.arguments = True, data["arguments"]
        elif event.type == "tool-result":
            self.status, self.result = data["status"], data["result"]


@dataclass
class ReplyParts:
    parts: list[str | ToolCallView] = field(default_factory=list)

    @classmethod
    def stored(cls, content: str, calls: Sequence[ToolCall]) -> ReplyParts:
        parts: list[str | ToolCallView] = []
        for part in interleaved(content, calls) or [""]:
            if isinstance(part, str):
                parts.append(part)
            else:
                asked = part.decide_by is not None
                arguments = json.loads(part.arguments) if part.executed or asked else None
                status = None if part.status in (ToolStatus.RUNNING, ToolStatus.WAITING) else part.status
                parts.append(
                    ToolCallView(
                        part.call_id, part.name, part.arguments, arguments, part.executed, status, part.result, asked
                    )
                )
        return cls(parts)

    @classmethod
    def from_log(cls, events: Iterable[Event]) -> ReplyParts:
        folded = cls()
        for event in events:
            folded.apply(event)
        return folded

    def call(self, call_id: str) -> ToolCallView | None:
        return next((p for p in self.parts if isinstance(p, ToolCallView) and p.call_id == call_id), None)

    def apply(self, event: Event) -> tuple[ToolCallView | None, bool]:
        """Fold one log entry in: the call it changed (None for text) and whether that call is new."""
        if event.type == "delta":
            text = event.payload()["text"]
            if self.parts and isinstance(self.parts[-1], str):
                self.parts[-1] += text
            else:
                self.parts.append(text)
            return None, False
        if event.type not in TOOL_EVENTS:
            return None, False
        data = event.payload()
        call = self.call(data["toolCallId"])
        new = call is None
        if call is None:
            call = ToolCallView(data["toolCallId"], data.get("name", "tool"))
            self.parts.append(call)
        call.apply(event)
        return call, new

    @property
    def trailing_text(self) -> str:
        """The text after the last call (the piece still being written while a reply streams)."""
        return self.parts[-1] if self.parts and isinstance(self.parts[-1], str) else ""

    @property
    def before_trailing_text(self) -> list[str | ToolCallView]:
        return self.parts[:-1] if self.parts and isinstance(self.parts[-1], str) else list(self.parts)

    @property
    def has_calls(self) -> bool:
        return any(isinstance(part, ToolCallView) for part in self.parts)


def tool_element_id(scope: str, call_id: str) -> str:
    """A tool call's element id on the page (`scope`: its reply's stream, or message): the call
    id is the model's and may hold anything, so it is hashed."""
    return "tool-" + hashlib.sha256(f"{scope}\0{call_id}".encode()).hexdigest()[:16]
