"""CPU per delta of the browser stream: Markdown rendered block by block (chat/web/markdown.py
StreamingMarkdown, what the page's stream does) against plain escaped text (what it did before),
for replies of growing length with code in them, one token per delta.

    .venv/bin/python bench/markdown_cpu.py

Per-delta cost that stays flat as replies grow means total work grows linearly, not
quadratically. The worst case is shown too: a reply that is one long code block, whose open
block is rendered again at every delta.
"""

from __future__ import annotations

import html
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.web.markdown import StreamingMarkdown  # noqa: E402

PARAGRAPH = "Streams keep every token safe while browsers come and go; a reader resumes exactly there. "
CODE = ["def resume(cursor):\n", "    entries = log.after(cursor)\n", "    return [e.text for e in entries]\n"]


def tokens_mixed(count: int) -> list[str]:
    """Paragraphs of ~60 tokens, each followed by a 12-line Python block, cut into tokens."""
    out: list[str] = []
    while len(out) < count:
        out += [word + " " for word in (PARAGRAPH * 4).split()]
        out[-1] = out[-1].rstrip() + "\n\n"
        out.append("```python\n")
        for line in CODE * 4:
            out += [piece + " " for piece in line.rstrip("\n").split(" ")]
            out[-1] = out[-1].rstrip() + "\n"
        out.append("```\n\n")
    return out[:count]


def tokens_one_code_block(count: int) -> list[str]:
    out = ["```python\n"]
    while len(out) < count:
        for line in CODE:
            out += [piece + " " for piece in line.rstrip("\n").split(" ")]
            out[-1] = out[-1].rstrip() + "\n"
    return out[:count]


def per_delta_us(tokens: list[str], markdown: bool) -> float:
    started = time.process_time()
    if markdown:
        rendered = StreamingMarkdown()
        for token in tokens:
            rendered.feed(token)
    else:
        for token in tokens:
            html.escape(token, quote=False)
    return (time.process_time() - started) / len(tokens) * 1e6


def main() -> None:
    print(f"{'reply (tokens, one per delta)':<40}{'plain text':>14}{'Markdown':>14}")
    for shape, make in (("mixed paragraphs + code", tokens_mixed), ("one long code block", tokens_one_code_block)):
        for count in (500, 1000, 2000, 4000):
            tokens = make(count)
            plain, markdown = per_delta_us(tokens, False), per_delta_us(tokens, True)
            print(f"{shape + f', {count}':<40}{plain:>11.1f} µs{markdown:>11.1f} µs")


if __name__ == "__main__":
    main()
