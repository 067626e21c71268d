"""Tools agents can call: the built-in ones (builtin.py) and those of MCP servers (mcp_client.py,
mcp_gateway.py), resolved per agent and run by one Toolbox per process (toolbox.py).

The values every part shares are here: an MCP server as the operator's agents file declares it,
a tool as the model sees it, and what running one gave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..vocabulary import ToolStatus

# What OpenAI-compatible servers accept as a function name.
MODEL_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class McpServer:
    """One `[[mcp_servers]]` entry: a command the app starts (stdio) or a URL (streamable HTTP)."""

    name: str
    command: tuple[str, ...] = ()
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float = 60.0

    def settings(self) -> dict[str, Any]:
        """What the gateway process needs to connect."""
        return {"command": list(self.command), "url": self.url, "headers": self.headers, "env": self.env}


@dataclass(frozen=True)
class ToolSpec:
    """A tool an agent may call. `name` is ours (`calculator`, `everything/echo`: what events,
    the page and the agents file say); `model_name` is what the model is told."""

    name: str
    description: str
    parameters: dict[str, Any]
    server: str = ""  # the MCP server, or "" for a built-in tool
    remote_name: str = ""  # the tool's name on its MCP server

    @property
    def model_name(self) -> str:
        if MODEL_TOOL_NAME.match(self.name):
            return self.name
        return re.sub(r"[^a-zA-Z0-9_-]", "_", self.name.replace("/", "__"))[:64]

    def as_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.model_name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ToolOutcome:
    status: ToolStatus
    result: str
