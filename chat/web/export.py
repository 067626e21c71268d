"""A chat as a file a person keeps: Markdown to read, JSON to process. Pure: no I/O."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence

from ..models import Chat, StoredFile, ToolCall, interleaved
from ..vocabulary import MessageRole

Calls = Mapping[uuid.UUID, Sequence[ToolCall]]
# A message's files, each with the link that downloads it (for its owner).
Attached = Mapping[uuid.UUID, Sequence[tuple[StoredFile, str]]]


def files_as_markdown(files: Sequence[tuple[StoredFile, str]]) -> str:
    lines = []
    for stored, link in files:
        name = stored.name.replace("[", "(").replace("]", ")")  # a name cannot end the link text
        lines.append(f"- Attached: [{name}](<{link}>) ({stored.media_type}, {stored.size:,} bytes)")
    return "\n".join(lines)


def call_as_markdown(call: ToolCall) -> str:
    """A tool call as a quoted block: the tool and how it ended, its arguments, its result."""
    fence = "`" * max(
        3, 1 + max((len(run) for run in re.findall(r"`+", call.arguments + (call.result or ""))), default=0)
    )
    lines = [f"**Tool call** `{call.name}` ({call.status})", "", f"{fence}json", call.arguments, fence]
    if call.result is not None:
        lines += ["", "Result:", "", fence, call.result, fence]
    return "\n".join(f"> {line}" if line else ">" for line in "\n".join(lines).split("\n"))


def content_as_markdown(content: str, calls: Sequence[ToolCall]) -> str:
    return "\n\n".join(
        part if isinstance(part, str) else call_as_markdown(part) for part in interleaved(content, calls)
    )


def as_markdown(chat: Chat, agent_name: str, calls: Calls | None = None, attached: Attached | None = None) -> str:
    """The conversation as Markdown: a heading, then each message under who said it (a reply's
    tool calls as quoted blocks in their place, a message's files as links after it)."""
    calls, attached = calls or {}, attached or {}
    parts = [f"# {chat.title}", f"_A chat with {agent_name}, started {chat.created_at:%Y-%m-%d %H:%M} UTC._"]
    for message in chat.messages:
        who = "You" if message.role == MessageRole.USER else agent_name
        status = "" if message.status == "complete" else f" _({message.status})_"
        if message.superseded:  # regenerated or edited since: kept, and marked for what it is
            status += " _(an earlier version)_"
        parts.append(f"## {who}{status}\n\n{content_as_markdown(message.content, calls.get(message.id, ()))}")
        if attached.get(message.id):
            parts.append(files_as_markdown(attached[message.id]))
    return "\n\n".join(parts) + "\n"


def call_as_json(call: ToolCall) -> dict:
    return {
        "toolCallId": call.call_id,
        "name": call.name,
        "arguments": call.arguments,
        "status": call.status,
        "result": call.result,
        "textOffset": call.text_offset,
        "startedAt": call.started_at.isoformat(),
        "finishedAt": call.finished_at.isoformat() if call.finished_at else None,
    }


def file_as_json(stored: StoredFile, link: str) -> dict:
    return {"fileId": str(stored.id), "name": stored.name, "type": stored.media_type, "size": stored.size, "url": link}


def as_json(chat: Chat, calls: Calls | None = None, attached: Attached | None = None) -> str:
    """The chat as data; a reply's `toolCalls` in order, each with where it sits in the text; a
    message's `files` with their download links."""
    calls, attached = calls or {}, attached or {}
    return json.dumps(
        {
            "id": str(chat.id),
            "title": chat.title,
            "agent": chat.agent_slug,
            "createdAt": chat.created_at.isoformat(),
            "messages": [
                {
                    "id": str(m.id),
                    "role": m.role,
                    "content": m.content,
                    "status": m.status,
                    "createdAt": m.created_at.isoformat(),
                    **({"toolCalls": [call_as_json(c) for c in calls[m.id]]} if calls.get(m.id) else {}),
                    **({"files": [file_as_json(*pair) for pair in attached[m.id]]} if attached.get(m.id) else {}),
                }
                for m in chat.messages
            ],
        },
        indent=2,
        ensure_ascii=False,
    )


def file_name(chat: Chat, extension: str) -> str:
    """A safe download name from the title: letters, digits and dashes only."""
    stem = re.sub(r"[^a-z0-9]+", "-", chat.title.lower()).strip("-")[:60] or "chat"
    return f"{stem}.{extension}"
