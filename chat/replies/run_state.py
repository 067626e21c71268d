"""What a reply's run needs to go on from a step boundary: the conversation sent to the model so
far, the calls of the current step still to make, the steps taken and their usage. Kept (as JSON
on the row of a call waiting for a person's answer) so the run goes on from there on whichever
worker gets the answer. Plain data, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..agents import Completion, ModelMessages, estimate_tokens
from .acting import RequestedCall
from .finish import Usage


@dataclass
class StepUsage:
    """Usage summed over a reply's model steps; a step that reported none makes the sum unknown
    (the finisher then estimates it, as for a reply without usage)."""

    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    steps: int = 0

    def add(self, completion: Completion) -> None:
        self.steps += 1
        self.prompt_tokens = plus(self.prompt_tokens, completion.prompt_tokens)
        self.completion_tokens = plus(self.completion_tokens, completion.completion_tokens)

    def usage(self, unfinished_text: str = "", carried: bool = False) -> Usage | None:
        """What ran, with the text of a step cut short (a stop) estimated; None before any step
        (the finisher then estimates from the whole text) — except for a Continue, whose carried
        text was billed already: only its own text is estimated."""
        if not self.steps:
            return Usage(None, estimate_tokens(unfinished_text)) if carried else None
        return Usage(self.prompt_tokens, plus(self.completion_tokens, estimate_tokens(unfinished_text)))


def plus(total: int | None, more: int | None) -> int | None:
    return None if total is None or more is None else total + more


@dataclass(frozen=True)
class CarriedCall:
    """A settled tool call of the reply a Continue carries on: told again, never run again."""

    call_id: str
    name: str
    arguments: str
    status: str
    result: str
    executed: bool


@dataclass(frozen=True)
class Carried:
    """An interrupted reply's text and settled calls, in order, that a Continue starts from: its
    new log tells them first, and the model is sent them as the steps it already took."""

    parts: tuple[str | CarriedCall, ...]

    def events(self) -> list[tuple[str, dict]]:
        told: list[tuple[str, dict]] = []
        for part in self.parts:
            if isinstance(part, str):
                told.append(("delta", {"text": part}))
                continue
            told.append(("tool-input", {"toolCallId": part.call_id, "name": part.name, "text": part.arguments}))
            if part.executed:
                arguments = json.loads(part.arguments)
                told.append(("tool-call", {"toolCallId": part.call_id, "name": part.name, "arguments": arguments}))
            told.append(("tool-result", {"toolCallId": part.call_id, "status": part.status, "result": part.result}))
        return told

    def model_messages(self, model_names: dict[str, str]) -> ModelMessages:
        """The steps already taken, as the model's own messages: each call with the text before
        it, then its result (an interrupted call's says it may or may not have taken effect)."""
        messages: ModelMessages = []
        text = ""
        for part in self.parts:
            if isinstance(part, str):
                text += part
                continue
            name = model_names.get(part.name, part.name)
            call = {"id": part.call_id, "type": "function", "function": {"name": name, "arguments": part.arguments}}
            messages.append({"role": "assistant", "content": text or None, "tool_calls": [call]})
            messages.append({"role": "tool", "tool_call_id": part.call_id, "content": part.result})
            text = ""
        if text:
            messages.append({"role": "assistant", "content": text})
        return messages


@dataclass
class Run:
    messages: ModelMessages
    step: int = 1  # the number of the next model step
    used: StepUsage = field(default_factory=StepUsage)
    queued: list[RequestedCall] = field(default_factory=list)  # the current step's calls still to make
    calls_made: int = 0
    question: str = ""  # a chat's first message, when this is its first reply (for its title)
    carried: bool = False  # it carries on an interrupted reply: only its own steps are billed

    def to_json(self, calls_made: int) -> str:
        return json.dumps(
            {
                "messages": self.messages,
                "step": self.step,
                "used": [self.used.prompt_tokens, self.used.completion_tokens, self.used.steps],
                "queued": [call.as_dict() for call in self.queued],
                "calls_made": calls_made,
                "question": self.question,
                "carried": self.carried,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Run:
        data: dict[str, Any] = json.loads(text)
        prompt, completion, steps = data["used"]
        return cls(
            messages=data["messages"],
            step=data["step"],
            used=StepUsage(prompt, completion, steps),
            queued=[RequestedCall.from_dict(call) for call in data["queued"]],
            calls_made=data["calls_made"],
            question=data["question"],
            carried=data.get("carried", False),
        )
