"""A process's tools: which an agent may call, whether a call's arguments are valid, running it.

MCP servers and their commands come only from the operator's agents file; a person can only pick
an agent. An MCP server's tool list is read on first use (and again after a failed read), so an
unreachable server costs its tools for that reply, not the app its start.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from ..vocabulary import ToolStatus
from . import McpServer, ToolOutcome, ToolSpec
from .builtin import BUILTIN_TOOLS
from .mcp_client import McpClient, McpUnavailable
from .results import capped

log = logging.getLogger(__name__)


class Toolbox:
    def __init__(self, servers: Mapping[str, McpServer], max_result_chars: int) -> None:
        self.max_result_chars = max_result_chars
        self.mcp = McpClient(servers, max_result_chars) if servers else None
        self.listed: dict[str, list[ToolSpec]] = {}
        self.validators: dict[str, Any] = {}
        self.lock = threading.Lock()

    def specs(self, wanted: Sequence[str]) -> list[ToolSpec]:
        """The tools an agent's `tools` list names, in its order, each once."""
        found: dict[str, ToolSpec] = {}
        for name in wanted:
            server, slash, tool = name.partition("/")
            if not slash:
                found.setdefault(name, BUILTIN_TOOLS[name][0])
                continue
            for spec in self.server_tools(server):
                if tool in ("*", spec.remote_name):
                    found.setdefault(spec.name, spec)
        return list(found.values())

    def server_tools(self, server: str) -> list[ToolSpec]:
        if server not in self.listed and self.mcp is not None:
            try:
                tools = self.mcp.list_tools(server)
            except McpUnavailable as exc:
                log.warning("%s", exc)
                return []
            with self.lock:
                self.listed[server] = [
                    ToolSpec(f"{server}/{tool['name']}", tool["description"], tool["inputSchema"], server, tool["name"])
                    for tool in tools
                ]
        return self.listed.get(server, [])

    def parse_arguments(self, spec: ToolSpec, text: str) -> dict[str, Any] | str:
        """The call's arguments, or why they are not valid (told to the model as the result)."""
        try:
            arguments = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            return f"The arguments are not valid JSON ({exc.msg} at character {exc.pos})."
        if not isinstance(arguments, dict):
            return "The arguments must be a JSON object."
        validator = self.validators.get(spec.name)
        if validator is None:
            cls = jsonschema.validators.validator_for(spec.parameters)
            validator = self.validators[spec.name] = cls(spec.parameters)
        error = best_match(validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path)
            return f"The arguments do not match the tool's schema{f' at {where}' if where else ''}: {error.message}"
        return arguments

    def run(
        self,
        spec: ToolSpec,
        arguments: dict[str, Any],
        should_stop: Callable[[], bool],
        on_progress: Callable[[], None] = lambda: None,
    ) -> ToolOutcome:
        """Run one call. A stop asked meanwhile reaches it: an MCP call is cancelled on its server."""
        if should_stop():
            return ToolOutcome(ToolStatus.CANCELLED, "Stopped before it started.")
        if not spec.server:
            outcome = BUILTIN_TOOLS[spec.name][1](arguments)
            return ToolOutcome(outcome.status, capped(outcome.result, self.max_result_chars))
        if self.mcp is None:
            return ToolOutcome(ToolStatus.ERROR, f"No MCP server {spec.server!r} is configured.")
        return self.mcp.call(spec.server, spec.remote_name, arguments, should_stop, on_progress)

    def close(self) -> None:
        if self.mcp is not None:
            self.mcp.close()
