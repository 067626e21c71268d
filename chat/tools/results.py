"""A tool's result as the model and the page get it: plain text, capped in size.

Whatever a tool returns is untrusted: it becomes text here, the page shows it escaped (never as
HTML) and the model reads it as a tool message. Non-text content is named, not passed on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def capped(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n… ({len(text) - max_chars:,} more characters left out)"


def result_text(content: Sequence[Any], structured: Any, max_chars: int) -> str:
    """An MCP tool result's content blocks as one text: text blocks as they are, others named."""
    parts = []
    for block in content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {getattr(block, 'mime_type', None) or 'unknown type'}]")
        elif kind == "resource_link":
            parts.append(f"[resource: {getattr(block, 'uri', '')}]")
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource: {getattr(resource, 'uri', '')}]")
        else:
            parts.append(f"[{kind or 'content'}]")
    if not parts and structured is not None:
        parts.append(json.dumps(structured, indent=2, ensure_ascii=False))
    return capped("\n".join(parts), max_chars)
