"""Markdown rendered while a reply streams (chat/web/markdown.py StreamingMarkdown): finished blocks
once, the open block again per delta, and the same result however the text was cut."""

from __future__ import annotations

import random

from chat.agents.demo import MARKDOWN_SHOWCASE
from chat.web.markdown import StreamingMarkdown, render_markdown

DOCUMENT = (
    "".join(MARKDOWN_SHOWCASE)
    + "Some *text* here\nand more.\n\n- one\n- two\n\n  still two\n- three\n\nPara\n===\n\n1. x\n2. y\n\n"
    + "Line\r\nwith crlf\r\n\r\n> quote\ncontinued\n\n---\n```\nunclosed fence at the end"
)


def test_any_cutting_of_the_text_renders_what_the_whole_text_renders():
    whole = str(render_markdown(DOCUMENT))
    for seed in range(100):
        pieces, rng, at = [], random.Random(seed), 0
        while at < len(DOCUMENT):
            step = rng.randint(1, 9)
            pieces.append(DOCUMENT[at : at + step])
            at += step
        rendered = StreamingMarkdown()
        sent = "".join(rendered.feed(piece)[0] for piece in pieces)
        assert sent + str(rendered.tail) == whole, f"cut with seed {seed}"
        assert str(rendered.finished_html) == sent, "each finished block is sent once"
        at_once = StreamingMarkdown(DOCUMENT)
        assert str(at_once.finished_html) + str(at_once.tail) == whole, "a page rendered at a cursor agrees"


def test_an_unclosed_fence_streams_as_code_highlighted_once_closed_and_only_the_open_block_is_rendered_again():
    rendered = StreamingMarkdown("Intro paragraph.\n\n")
    finished, tail = rendered.feed("```python\ndef resume(cur")
    assert finished == "<p>Intro paragraph.</p>\n", "the paragraph is finished once the fence starts"
    assert '<div class="code-lang">python</div>' in tail and "<pre><code" in tail and "def resume(cur" in tail
    finished, tail = rendered.feed("sor):\n")
    assert finished == "" and "cursor" in tail and "Intro" not in tail
    finished, tail = rendered.feed("```")
    assert '<span class="k">def</span>' in tail, "highlighted once closed"


def test_raw_html_and_hostile_links_stay_inert_while_streaming():
    rendered = StreamingMarkdown()
    html = "".join(
        rendered.feed(piece)[0] for piece in ["<scr", "ipt>alert(1)</script>\n\n", "[x](javascript:alert(1))"]
    )
    html += str(rendered.tail)
    assert "<script" not in html and 'href="javascript' not in html and "&lt;script&gt;" in html


def test_a_long_code_listing_is_rendered_again_rarely_and_ends_exactly(monkeypatch):
    """Rendering the open block at every delta costs the square of its length; past LONG_BLOCK it
    is rendered again only after growing by 1/GROWTH, and the end renders what is missing."""
    listing = "```python\n" + "".join(f"value_{n} = compute({n})\n" for n in range(800)) + "```\n"
    tokens = [listing[at : at + 4] for at in range(0, len(listing), 4)]
    rendered = StreamingMarkdown()
    renders = 0
    original = rendered.render

    def counted():
        nonlocal renders
        renders += 1
        return original()

    monkeypatch.setattr(rendered, "render", counted)
    shown = ""
    for token in tokens:
        finished, tail = rendered.feed(token)
        shown += finished
    tail = rendered.flush()
    final = shown + (tail if tail is not None else str(rendered.tail))
    assert final == str(render_markdown(listing))
    assert len(tokens) > 4000 and renders < 1300, f"{renders} renders for {len(tokens)} deltas"
