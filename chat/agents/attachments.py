"""Attachments as a model is given them. A user message of the conversation may carry `files`
(chat/replies/turns.py writes them): each with its id, name, type and size, and a document's
extracted text (with `cut`: how many characters were left out to fit the history budget). The
text of a message is its own text and its documents' text; its images go as image inputs.
"""

from __future__ import annotations

from typing import Any

from . import estimate_tokens

# What an image costs in prompt tokens when the provider reports no usage: a 512-pixel tile at
# OpenAI's high detail (85 + 170 × 4), so the estimate and the reservation count images too.
IMAGE_TOKEN_ESTIMATE = 765


def attached(message: dict[str, Any]) -> list[dict[str, Any]]:
    return list(message.get("files") or ())


def is_image(file: dict[str, Any]) -> bool:
    return str(file["type"]).startswith("image/")


def document_block(file: dict[str, Any]) -> str:
    """A document as text the model reads after the message, saying so when it was cut."""
    cut = f"\n[… {file['cut']:,} more characters were cut to fit the conversation]" if file.get("cut") else ""
    return f"\n\n--- Attached file {file['name']} ({file['type']}, {file['size']:,} bytes) ---\n{file['text']}{cut}"


def message_text(message: dict[str, Any]) -> str:
    """The message's text and the text of its documents."""
    content = message.get("content") or ""
    return str(content) + "".join(document_block(file) for file in attached(message) if "text" in file)


def prompt_tokens_estimate(messages: list[dict[str, Any]]) -> int:
    return sum(
        estimate_tokens(message_text(message)) + IMAGE_TOKEN_ESTIMATE * sum(map(is_image, attached(message)))
        for message in messages
    )


def without_files(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key != "files"}
