"""The offline demo model: a deterministic reply, paced like a real model, with no network.

The same (agent, message, words) always gives the same text, so tests and the benchmark can
predict it; DEMO_MODEL_WORDS sets its length and DEMO_MODEL_DELAY_MS the time between words.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..tools import ToolSpec
from ..vocabulary import FinishReason
from . import Agent, Completion, Generation, ModelMessages, ToolInput, estimate_tokens
from .attachments import attached, prompt_tokens_estimate

VOCABULARY = (
    "durable streams keep every token safe while browsers come and go across workers and hosts "
    "redis records each chunk so a reader resumes exactly where it left off without gaps or "
    "duplicates the reply is stored once and billed once whatever happens to the connection"
).split()


# What the demo shows when asked about Markdown: every kind of block the page renders while the
# reply streams, split as a model's tokens would be (a line in several pieces).
MARKDOWN_SHOWCASE = (
    "## A heading\n\n",
    "Some *emphasis* and `code`, then a list:\n\n",
    "- first item\n",
    "- second ",
    "item\n\n",
    "| stream | kept |\n",
    "|---|---|\n",
    "| Redis | 10 min |\n\n",
    "```python\n",
    "def resume(cursor):\n",
    "    return log.after(cursor)\n",
    "```\n\n",
)


def demo_words(agent: Agent, message: str, words: int) -> list[str]:
    """The reply's pieces: a header naming the agent, then `words` words picked by the message
    (after a Markdown showcase when the message mentions Markdown)."""
    digest = hashlib.sha256(f"{agent.slug}\0{message}".encode()).digest()
    snippet = " ".join(message.split()[:8])
    pieces = [f"**{agent.name}** (demo model) heard: _{snippet}_\n\n"]
    if "markdown" in message.lower():
        pieces.extend(MARKDOWN_SHOWCASE)
    for index in range(words):
        word = VOCABULARY[(digest[index % len(digest)] + index * 7) % len(VOCABULARY)]
        pieces.append(word + ("" if index == words - 1 else " "))
    return pieces


def demo_reply(agent: Agent, message: str, words: int) -> str:
    return "".join(demo_words(agent, message, words))


ARITHMETIC = re.compile(r"[\d+\-*/(). ]+")
WAIT = re.compile(r"^\s*wait:\s*(\d{1,4})\s*$", re.IGNORECASE)


def arithmetic_in(message: str) -> str | None:
    """The longest run of digits, `+ - * / ( ) .` and spaces with a digit and an operator in it."""
    runs = [run.strip() for run in ARITHMETIC.findall(message)]
    runs = [run for run in runs if re.search(r"\d", run) and re.search(r"[+\-*/]", run)]
    return max(runs, key=len) if runs else None


def planned_call(message: str, tools: Sequence[ToolSpec]) -> tuple[ToolSpec, dict[str, Any]] | None:
    """The call the demo model makes for `message` with these tools, as api.md describes."""
    by_name = {tool.name: tool for tool in tools}
    for tool in tools:
        if tool.name.endswith("/echo") and message.lstrip().lower().startswith("echo:"):
            return tool, {"message": message.lstrip()[5:].strip()}
    wait = WAIT.match(message)
    for tool in tools:
        if wait and tool.name.endswith("/trigger-long-running-operation"):
            seconds = int(wait.group(1))
            return tool, {"duration": seconds, "steps": seconds}
    expression = arithmetic_in(message)
    if expression and "calculator" in by_name:
        return by_name["calculator"], {"expression": expression}
    return None


def paced(pieces: Sequence[str], delay_ms: int) -> Iterator[str]:
    """Yield piece i at `start + (i + 1) × delay`: deadlines, not pauses, so a busy process makes
    later pieces late (that is lag) without pushing every following piece later too (drift)."""
    start = time.monotonic()
    for index, piece in enumerate(pieces):
        if delay_ms:
            wait = start + (index + 1) * delay_ms / 1000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        yield piece


def attachments_text(files: Sequence[dict[str, Any]]) -> str:
    """The demo's words on the files sent with the message: each one's name, type and size, and
    a document's first words (and that it was cut)."""
    lines = []
    for file in files:
        line = f"- **{file['name']}** ({file['type']}, {file['size']:,} bytes)"
        if "text" in file:
            words = " ".join(str(file["text"]).split()[:12])
            line += f": “{words}”" if words else ": no text in it"
        if file.get("cut"):
            line += f" (cut: {file['cut']:,} characters did not fit)"
        lines.append(line + "\n")
    return "Attached:\n\n" + "".join(lines) + "\n"


def tool_results_text(agent: Agent, messages: ModelMessages, tools: Sequence[ToolSpec]) -> str:
    """The demo's words on the tool results that end `messages` (its step after calling)."""
    names = {tool.model_name: tool.name for tool in tools}
    calls = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            calls[call["id"]] = names.get(call["function"]["name"], call["function"]["name"])
    lines = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        lines.append(f"- `{calls.get(message['tool_call_id'], 'tool')}` answered: {message['content']}\n")
    return f"**{agent.name}** (demo model) used its tools:\n\n" + "".join(reversed(lines)) + "\n"


def generate_demo(
    agent: Agent, messages: ModelMessages, words: int, delay_ms: int, tools: Sequence[ToolSpec] = ()
) -> Generation:
    """One step of the demo model: a tool call when the last message asks for one and the agent
    has the tool (api.md, "Offline demo model"), else text (after tool results: about them)."""
    user = next((m for m in reversed(messages) if m["role"] == "user"), {})
    last_user = str(user.get("content") or "")
    prompt_tokens = prompt_tokens_estimate(messages)
    after_tools = bool(messages) and messages[-1]["role"] == "tool"
    first_step = bool(messages) and messages[-1]["role"] == "user"  # (a Continue's is not)
    plan = planned_call(last_user, tools) if first_step else None
    if plan is not None:
        tool, arguments = plan
        text = json.dumps(arguments)
        third = max(1, len(text) // 3)
        chunks = [text[:third], text[third : 2 * third], text[2 * third :]]
        call_id = f"call_demo_{sum(1 for m in messages if m['role'] == 'tool') + 1}"
        for chunk in paced([c for c in chunks if c], delay_ms):
            yield ToolInput(call_id, tool.name, chunk)
        yield Completion(FinishReason.STOP, prompt_tokens=prompt_tokens, completion_tokens=estimate_tokens(text))
        return
    pieces = demo_words(agent, last_user, words)
    if after_tools:
        pieces = [tool_results_text(agent, messages, tools), *pieces[1:]]
    elif attached(user):
        pieces.insert(1, attachments_text(attached(user)))
    completion_tokens = 0
    for piece in paced(pieces, delay_ms):
        completion_tokens += estimate_tokens(piece)
        yield piece
    yield Completion(FinishReason.STOP, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
