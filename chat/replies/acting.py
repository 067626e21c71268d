"""A reply's tool calls: each validated, recorded before it starts, run at most once, settled once,
and told in the reply's log in its place (api.md, "Tool calls").

The order for one call: its `tool-input` events stream while the model writes the arguments
(producer.py); then here the arguments are checked against the tool's schema (invalid: a
`tool-result` with status `error` the model sees, never a run); the call's row is inserted (the
at-most-once guard, chat/models/tools.py); `tool-call`; the run, which a stop reaches; the row
settled; `tool-result`. A finisher that ends the reply meanwhile settles the row itself
(finish.py) and the producer's own settling then changes nothing.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from ..agents import Agent
from ..models import claim_call, settle_call, utcnow
from ..tools import ToolOutcome, ToolSpec
from ..tools.toolbox import Toolbox
from ..vocabulary import ToolStatus
from .pump import ProducerState, Pump

log = logging.getLogger(__name__)


@dataclass
class RequestedCall:
    """A call as the model wrote it in one step: its id, tool, arguments' text and place."""

    call_id: str
    name: str
    text_offset: int  # reply characters before its first tool-input
    arguments: list[str] = field(default_factory=list)

    @property
    def arguments_text(self) -> str:
        return "".join(self.arguments)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestedCall:
        return cls(data["call_id"], data["name"], data["text_offset"], list(data["arguments"]))

    def as_model_call(self, model_name: str) -> dict[str, Any]:
        arguments = self.arguments_text or "{}"
        return {"id": self.call_id, "type": "function", "function": {"name": model_name, "arguments": arguments}}


@dataclass
class Acting:
    """The tool calls of one reply, run by its producer."""

    toolbox: Toolbox
    pump: Pump
    state: ProducerState
    message_id: uuid.UUID
    stream_id: str
    tools: dict[str, ToolSpec]  # by our name
    agent: Agent
    calls_made: int = 0

    def run(self, call: RequestedCall, snapshot: Callable[[], str]) -> ToolOutcome | None:
        """Check, record, run and settle one call; its outcome is what the model is told. None:
        the call waits for a person's answer (`approval`), its row holding `snapshot()`, what the
        run needs to go on from here on whichever worker gets the answer."""
        position, self.calls_made = self.calls_made, self.calls_made + 1
        spec = self.tools.get(call.name)
        parsed: dict[str, Any] | str = (
            self.toolbox.parse_arguments(spec, call.arguments_text)
            if spec is not None
            else f"This agent has no tool named {call.name!r}."
        )
        record = (self.message_id, self.stream_id, call.call_id, position, call.text_offset, call.name)
        if isinstance(parsed, str):
            claim_call(*record, call.arguments_text, status=ToolStatus.ERROR, result=parsed)
            return self.told(call.call_id, ToolOutcome(ToolStatus.ERROR, parsed))
        if self.agent.needs_approval(call.name):
            decide_by = utcnow() + timedelta(seconds=self.agent.approval_timeout_seconds)
            waits = claim_call(
                *record, json.dumps(parsed), status=ToolStatus.WAITING, decide_by=decide_by, run_state=snapshot()
            )
            if not waits:
                return ToolOutcome(ToolStatus.ERROR, "This call was made already; it is not run again.")
            data = {"toolCallId": call.call_id, "name": call.name, "arguments": parsed}
            self.pump.push_event(self.state, "approval", data)
            return None
        if not claim_call(*record, json.dumps(parsed), executed=True):
            # Its row exists: it was run (or is running) already. Never twice.
            return ToolOutcome(ToolStatus.ERROR, "This call was made already; it is not run again.")
        assert spec is not None
        return self.execute(call.call_id, spec, parsed)

    def answered(self, call: RequestedCall, approved: bool, denial: str) -> ToolOutcome:
        """Go on with a call a person answered (its row says so already, decide_call): approved,
        it runs now; denied, the model is told."""
        spec = self.tools.get(call.name)
        if not approved:
            return self.told(call.call_id, ToolOutcome(ToolStatus.DENIED, denial))
        parsed = self.toolbox.parse_arguments(spec, call.arguments_text) if spec else "The tool is gone."
        if spec is None or isinstance(parsed, str):  # the agents file changed meanwhile
            settle_call(self.stream_id, call.call_id, ToolStatus.ERROR, str(parsed))
            return self.told(call.call_id, ToolOutcome(ToolStatus.ERROR, str(parsed)))
        return self.execute(call.call_id, spec, parsed)

    def execute(self, call_id: str, spec: ToolSpec, arguments: dict[str, Any]) -> ToolOutcome:
        """Run a call whose row says `running`: `tool-call`, the run (a stop reaches it), the row
        settled, `tool-result`."""
        self.pump.push_event(
            self.state, "tool-call", {"toolCallId": call_id, "name": spec.name, "arguments": arguments}
        )
        try:
            outcome = self.toolbox.run(spec, arguments, should_stop=lambda: self.state.should_stop)
        except Exception:
            log.exception("tool %s failed", spec.name)
            outcome = ToolOutcome(ToolStatus.ERROR, "The tool failed unexpectedly.")
        if outcome.status == ToolStatus.CANCELLED and self.state.interrupted:
            outcome = ToolOutcome(ToolStatus.INTERRUPTED, "The server shut down during the call.")
        if not settle_call(self.stream_id, call_id, outcome.status, outcome.result):
            return outcome  # a finisher settled it (a stop): it told the log, not us
        return self.told(call_id, outcome)

    def told(self, call_id: str, outcome: ToolOutcome) -> ToolOutcome:
        self.pump.push_event(
            self.state,
            "tool-result",
            {"toolCallId": call_id, "status": outcome.status.value, "result": outcome.result},
        )
        return outcome
