"""A chat as a file a person keeps: Markdown to read, JSON to process. Pure: no I/O."""

from __future__ import annotations

import json
import re

from ..models import Chat
from ..vocabulary import MessageRole


def as_markdown(chat: Chat, agent_name: str) -> str:
    """The conversation as Markdown: a heading, then each message under who said it."""
    parts = [f"# {chat.title}", f"_A chat with {agent_name}, started {chat.created_at:%Y-%m-%d %H:%M} UTC._"]
    for message in chat.messages:
        who = "You" if message.role == MessageRole.USER else agent_name
        status = "" if message.status == "complete" else f" _({message.status})_"
        if message.superseded:  # regenerated or edited since: kept, and marked for what it is
            status += " _(an earlier version)_"
        parts.append(f"## {who}{status}\n\n{message.content}")
    return "\n\n".join(parts) + "\n"


def as_json(chat: Chat) -> str:
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
