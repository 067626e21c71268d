"""Agents: who people can chat with, and the one `generate()` shape every model speaks.

`generate()` yields text pieces as the model produces them and, last, one `Completion` with the
finish reason and the usage the provider reported (None where it reported none).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tools import McpServer, ToolSpec
from ..tools.builtin import BUILTIN_TOOLS
from ..vocabulary import MICROS_PER_CREDIT, FinishReason


class AgentConfigError(RuntimeError):
    """The agents file is unusable; the message names the file and the problem."""


class ProviderError(Exception):
    """A model call failed; `str(error)` is written for a person."""


@dataclass(frozen=True)
class Agent:
    slug: str
    name: str
    description: str
    model: str
    system_prompt: str
    temperature: float
    max_tokens: int
    price_prompt_per_1k: float
    price_completion_per_1k: float
    # What it may call: built-in names, `<server>/<tool>` or `<server>/*` (chat/tools/toolbox.py).
    tools: tuple[str, ...] = ()
    max_steps: int = 8  # model steps per reply: each may call tools, the last one answers
    # Tools whose calls wait for a person's yes (same names and patterns as `tools`), and how
    # long a call waits before it counts as denied.
    confirm: tuple[str, ...] = ()
    approval_timeout_seconds: int = 600
    # The attachments it takes (types, `image/*` patterns): text a model reads by default; images
    # only for a model that takes image inputs.
    accepts: tuple[str, ...] = ("application/pdf", "text/*")

    def needs_approval(self, tool: str) -> bool:
        server = tool.partition("/")[0]
        return tool in self.confirm or f"{server}/*" in self.confirm

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Cost in micro-credits, rounded up so no usage is ever free."""
        credits = (prompt_tokens * self.price_prompt_per_1k + completion_tokens * self.price_completion_per_1k) / 1000
        return math.ceil(credits * MICROS_PER_CREDIT)


@dataclass(frozen=True)
class Completion:
    finish_reason: FinishReason  # STOP or LENGTH
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class ToolInput:
    """A piece of a tool call's arguments as the model writes them (calls may interleave)."""

    call_id: str
    name: str  # our name for the tool (ToolSpec.name)
    text: str


Generation = Generator["str | ToolInput | Completion", None, None]
# The conversation sent to a model: role/content messages, and within a reply the assistant's
# tool calls and the tools' results, in the OpenAI chat shape.
ModelMessages = list[dict[str, Any]]

REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "slug": str,
    "name": str,
    "description": str,
    "model": str,
    "system_prompt": str,
    "temperature": (int, float),
    "max_tokens": int,
    "price_prompt_per_1k": (int, float),
    "price_completion_per_1k": (int, float),
}


OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "tools": list,
    "max_steps": int,
    "confirm": list,
    "approval_timeout_seconds": int,
    "accepts": list,
}
MEDIA_PATTERN = re.compile(r"^[a-z]+/([a-z0-9.+-]+|\*)$")
MCP_FIELDS: dict[str, type] = {
    "name": str,
    "command": list,
    "url": str,
    "headers": dict,
    "env": dict,
    "timeout_seconds": int | float,  # type: ignore[dict-item]
}
SERVER_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_agents(path: str | Path) -> dict[str, Agent]:
    """Read and validate the agents file; raise AgentConfigError saying exactly what is wrong."""
    return load_agents_file(path)[0]


def load_agents_file(path: str | Path) -> tuple[dict[str, Agent], dict[str, McpServer]]:
    """The agents and the MCP servers of the agents file, validated (AgentConfigError names the
    file, the entry and the field)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AgentConfigError(f"Agents file {path} does not exist (set AGENTS_FILE)") from None
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"Agents file {path} is not valid TOML: {exc}") from None
    servers = load_mcp_servers(path, data.get("mcp_servers", []))
    entries = data.get("agents")
    if not isinstance(entries, list) or not entries:
        raise AgentConfigError(f"Agents file {path} must define at least one [[agents]] table")
    agents: dict[str, Agent] = {}
    for index, entry in enumerate(entries, start=1):
        where = f"{path}, agent #{index}"
        for field, kind in REQUIRED_FIELDS.items():
            if field not in entry:
                raise AgentConfigError(f"{where}: missing `{field}`")
            if not isinstance(entry[field], kind) or isinstance(entry[field], bool):
                raise AgentConfigError(f"{where}: `{field}` has the wrong type ({entry[field]!r})")
        for field_name, kind in OPTIONAL_FIELDS.items():
            if field_name in entry and (not isinstance(entry[field_name], kind) or isinstance(entry[field_name], bool)):
                raise AgentConfigError(f"{where}: `{field_name}` has the wrong type ({entry[field_name]!r})")
        unknown = set(entry) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)
        if unknown:
            raise AgentConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        tools = tuple(entry.pop("tools", ()))
        for tool in tools:
            check_tool_reference(f"{where}, `tools`", tool, servers)
        confirm = tuple(entry.pop("confirm", ()))
        for tool in confirm:
            check_tool_reference(f"{where}, `confirm`", tool, servers)
        accepts = tuple(entry.pop("accepts", Agent.accepts))
        for pattern in accepts:
            if not isinstance(pattern, str) or not MEDIA_PATTERN.match(pattern):
                raise AgentConfigError(f"{where}, `accepts`: {pattern!r} is not a type like image/* or application/pdf")
        agent = Agent(**entry, tools=tools, confirm=confirm, accepts=accepts)
        if not 1 <= agent.max_steps <= 50:
            raise AgentConfigError(f"{where}: `max_steps` must be between 1 and 50")
        if agent.approval_timeout_seconds <= 0:
            raise AgentConfigError(f"{where}: `approval_timeout_seconds` must be positive")
        if not agent.slug.replace("-", "").isalnum() or agent.slug != agent.slug.lower():
            raise AgentConfigError(f"{where}: slug {agent.slug!r} must be lowercase letters, digits and dashes")
        if agent.slug in agents:
            raise AgentConfigError(f"{where}: slug {agent.slug!r} is used twice")
        if agent.max_tokens <= 0 or agent.price_prompt_per_1k < 0 or agent.price_completion_per_1k < 0:
            raise AgentConfigError(f"{where}: max_tokens must be positive and prices not negative")
        agents[agent.slug] = agent
    return agents, servers


def check_tool_reference(where: str, tool: Any, servers: dict[str, McpServer]) -> None:
    """A tool an agent names must be built in, or `<server>/<tool>` / `<server>/*` of a declared
    server (the server's own list is read at run time)."""
    if not isinstance(tool, str):
        raise AgentConfigError(f"{where}: {tool!r} is not a tool name")
    server, slash, _ = tool.partition("/")
    if not slash and tool not in BUILTIN_TOOLS:
        known = ", ".join(BUILTIN_TOOLS)
        raise AgentConfigError(f"{where}: unknown tool {tool!r} (built in: {known}; or `<mcp server>/<tool>`)")
    if slash and server not in servers:
        raise AgentConfigError(f"{where}: {tool!r} names the MCP server {server!r}, which no [[mcp_servers]] declares")


def load_mcp_servers(path: Path, entries: Any) -> dict[str, McpServer]:
    """The `[[mcp_servers]]` tables: a command (stdio) or a url (streamable HTTP); `${VAR}` in a
    header or env value is read from the environment, so no secret is written in the file."""
    if not isinstance(entries, list):
        raise AgentConfigError(f"{path}: `mcp_servers` must be [[mcp_servers]] tables")
    servers: dict[str, McpServer] = {}
    for index, entry in enumerate(entries, start=1):
        where = f"{path}, mcp server #{index}"
        for field_name, value in entry.items():
            kind = MCP_FIELDS.get(field_name)
            if kind is None:
                raise AgentConfigError(f"{where}: unknown field {field_name!r}")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise AgentConfigError(f"{where}: `{field_name}` has the wrong type ({value!r})")
        name = entry.get("name")
        if not isinstance(name, str) or not SERVER_NAME.match(name):
            raise AgentConfigError(f"{where}: `name` must be letters, digits, - and _ (at most 40)")
        if name in servers:
            raise AgentConfigError(f"{where}: the name {name!r} is used twice")
        command, url = entry.get("command", []), entry.get("url", "")
        if bool(command) == bool(url):
            raise AgentConfigError(f"{where}: give either `command` (stdio) or `url` (streamable HTTP)")
        if command and not all(isinstance(part, str) and part for part in command):
            raise AgentConfigError(f"{where}: `command` must be a list of strings")
        if url and not url.startswith(("http://", "https://")):
            raise AgentConfigError(f"{where}: `url` must start with http:// or https://")
        timeout = entry.get("timeout_seconds", 60)
        if timeout <= 0:
            raise AgentConfigError(f"{where}: `timeout_seconds` must be positive")
        servers[name] = McpServer(
            name=name,
            command=tuple(command),
            url=url,
            headers=from_environment(f"{where}, `headers`", entry.get("headers", {})),
            env=from_environment(f"{where}, `env`", entry.get("env", {})),
            timeout_seconds=float(timeout),
        )
    return servers


def from_environment(where: str, values: dict[str, Any]) -> dict[str, str]:
    """Values with each `${VAR}` replaced by that environment variable (which must be set)."""

    def variable(match: re.Match[str]) -> str:
        if match.group(1) not in os.environ:
            raise AgentConfigError(f"{where}: the environment variable {match.group(1)} is not set")
        return os.environ[match.group(1)]

    resolved = {}
    for key, value in values.items():
        if not isinstance(value, str):
            raise AgentConfigError(f"{where}: {key!r} must be a string")
        resolved[str(key)] = ENV_REFERENCE.sub(variable, value)
    return resolved


def estimate_tokens(text: str) -> int:
    """Rough token count (about four characters a token) for when a provider reports none."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def generate(agent: Agent, messages: ModelMessages, config: dict, tools: Sequence[ToolSpec] = ()) -> Generation:
    """Stream one model step of `agent`'s reply to `messages` from the configured model (the demo
    one without a key); `tools`: what it may call in this step."""
    if config.get("OPENAI_API_KEY"):
        from .openai_provider import generate_openai

        return generate_openai(agent, messages, config, tools)
    from .demo import generate_demo

    return generate_demo(agent, messages, config["DEMO_MODEL_WORDS"], config["DEMO_MODEL_DELAY_MS"], tools)


TITLE_PROMPT = "Write a title of at most six words for this conversation. Answer with the title only."


def suggest_title(agent: Agent, question: str, answer: str, config: dict) -> tuple[str, Completion] | None:
    """A short chat title from the model, with its usage; None with the demo model (whose chats
    keep the first words of their first message) or when the model gives nothing usable."""
    if not config.get("OPENAI_API_KEY"):
        return None
    from .openai_provider import complete_openai

    conversation = f"User: {question[:1500]}\n\nAssistant: {answer[:1500]}"
    text, completion = complete_openai(
        agent,
        [{"role": "system", "content": TITLE_PROMPT}, {"role": "user", "content": conversation}],
        config,
        max_tokens=20,
    )
    title = clean_title(text)
    return (title, completion) if title else None


def clean_title(text: str) -> str:
    line = next((line for line in text.splitlines() if line.strip()), "")
    return line.strip().strip("\"'*#` ").rstrip(".:;!").strip()[:80]
