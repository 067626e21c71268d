"""The offline demo model: a deterministic reply, paced like a real model, with no network.

The same (agent, message, words) always gives the same text, so tests and the benchmark can
predict it; DEMO_MODEL_WORDS sets its length and DEMO_MODEL_DELAY_MS the time between words.
"""

from __future__ import annotations

import hashlib
import time

from ..vocabulary import FinishReason
from . import Agent, Completion, Generation, estimate_tokens

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


def generate_demo(agent: Agent, history: list[dict[str, str]], words: int, delay_ms: int) -> Generation:
    """Yield piece i at `start + (i + 1) × delay`: deadlines, not pauses, so a busy process makes
    later pieces late (that is lag) without pushing every following piece later too (drift)."""
    last_user = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
    completion_tokens = 0
    start = time.monotonic()
    for index, piece in enumerate(demo_words(agent, last_user, words)):
        if delay_ms:
            wait = start + (index + 1) * delay_ms / 1000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        completion_tokens += estimate_tokens(piece)
        yield piece
    prompt_tokens = sum(estimate_tokens(m["content"]) for m in history)
    yield Completion(FinishReason.STOP, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
