"""Markdown to safe HTML, on the server (markdown-it-py, then nh3); fenced code highlighted by
Pygments (colours in static/css/code.css, light and dark) under a label naming its language.

Raw HTML in a reply is shown as text, never run.
"""

from __future__ import annotations

import functools
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

CODE_FORMATTER = HtmlFormatter(nowrap=True)  # bare <span class="k">…: markdown-it wraps pre/code


def highlight_code(code: str, language: str, _attributes: str) -> str:
    """Pygments' spans for code in a language it knows; "" lets markdown-it escape it as is."""
    try:
        lexer = get_lexer_by_name(language) if language else None
    except ClassNotFound:
        return ""
    return highlight(code, lexer, CODE_FORMATTER) if lexer else ""


def fence_with_label(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """A fenced block inside `<div class="code-block">`, after a label naming its language (the
    page adds a copy button to each). A fence still open in a streaming reply (`env["open_fence"]`)
    is shown as plain code: highlighting it again at every delta would cost more than the rest of
    the stream; it is highlighted once it is closed."""
    language = tokens[idx].info.strip().split(maxsplit=1)[0] if tokens[idx].info.strip() else ""
    label = f'<div class="code-lang">{escape(language)}</div>' if language else ""
    if env.get("open_fence"):
        options = PLAIN_CODE_OPTIONS
    return f'<div class="code-block">{label}{RendererHTML.fence(renderer, tokens, idx, options, env)}</div>'


# `html=False`: raw HTML in the Markdown is escaped; nh3 (ammonia) then strips anything unsafe
# that Markdown itself produced (javascript: links and the like).
parser = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "breaks": True, "highlight": highlight_code}
).enable("table")
parser.add_render_rule("fence", fence_with_label)
PLAIN_CODE_OPTIONS = OptionsDict(parser.options)  # type: ignore[arg-type]  # a copy, without the highlighter
PLAIN_CODE_OPTIONS["highlight"] = None

ALLOWED_TAGS = {
    "p",
    "br",
    "strong",
    "em",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "del",
    "div",
    "span",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "div": {"class"},
    "span": {"class"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
}


@functools.lru_cache(maxsize=256)
def render_markdown(text: str) -> Markup:
    """A finished message's HTML. Cached: a chat page shows the same messages at every visit."""
    return sanitised(parser.render(text))


def sanitised(html: str) -> Markup:
    return Markup(
        nh3.clean(
            html,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            link_rel="noopener noreferrer nofollow",
            url_schemes={"http", "https", "mailto"},
        )
    )


# A line as markdown-it counts lines (it reads \r\n, \r and \n alike as one line break).
LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


def open_fence(tokens: Sequence[Token], lines: Sequence[str]) -> bool:
    """Whether the last block is a code fence not closed yet (`lines`: the source's)."""
    if not tokens or tokens[-1].type != "fence" or tokens[-1].map is None:
        return False
    fence, (first, end) = tokens[-1], tokens[-1].map
    if end - 1 <= first:
        return True
    closing = lines[end - 1].strip() if end - 1 < len(lines) else ""
    return not (closing.startswith(fence.markup) and closing.strip(fence.markup[0]) == "")


class Rendered(NamedTuple):
    """What one `feed` produced and the state it left: the same for every watcher that fed the
    same text from the same state, so one render serves them all."""

    finished: str
    tail: str | None
    done: int
    rendered_up_to: int


class SharedRenders:
    """Per process: each stream's renders by (entry id, state before), and the CPU each stream's
    Markdown has cost. Twenty tabs watching one reply render each delta once, not twenty times,
    and a reply whose Markdown is pathological (thousands of `[`) stops costing the loop once it
    has used its budget: its open block is shown as escaped text from then on."""

    def __init__(self, budget_seconds: float, size: int = 2048) -> None:
        self.budget_seconds = budget_seconds
        self.size = size
        self.renders: OrderedDict[tuple, Rendered] = OrderedDict()
        self.spent: OrderedDict[str, float] = OrderedDict()

    def get(self, key: tuple) -> Rendered | None:
        return self.renders.get(key)

    def put(self, key: tuple, rendered: Rendered) -> None:
        self.renders[key] = rendered
        if len(self.renders) > self.size:
            self.renders.popitem(last=False)

    def charge(self, stream: str, seconds: float) -> None:
        self.spent[stream] = self.spent.pop(stream, 0.0) + seconds
        if len(self.spent) > self.size:
            self.spent.popitem(last=False)

    def over_budget(self, stream: str) -> bool:
        return self.spent.get(stream, 0.0) >= self.budget_seconds


SHARED = SharedRenders(budget_seconds=1.0)


class StreamingMarkdown:
    """A reply's Markdown rendered while it grows, block by block.

    Every top-level block before the last one is finished: appending text cannot change it, so
    it is rendered once and sent once (`feed` returns it). Only the open last block — a paragraph
    still being written, an unclosed code fence (rendered as code meanwhile) — is rendered again
    for every delta. Rendering the same text in one `feed` or in many gives the same blocks, so a
    page rendered at a cursor, and a stream resumed from it, show what a watcher saw.
    """

    # An open block longer than this (a long code listing) is rendered again only once it has
    # grown by 1/GROWTH: rendering it at every delta would cost the square of its length.
    LONG_BLOCK = 4096
    GROWTH = 32

    def __init__(self, text: str = "", stream: str | None = None, shared: SharedRenders = SHARED) -> None:
        """`stream` names the reply: its renders are shared and its CPU budgeted (see SharedRenders)."""
        self.text = ""
        self.done = 0  # characters of `text` rendered as finished blocks
        self.finished: list[str] = []  # their HTML, in order
        self.tail = Markup("")
        self.rendered_up_to = 0  # length of `text` when the tail was last rendered
        self.stream = stream
        self.shared = shared
        self.feed(text)

    def feed(self, delta: str, entry_id: str | None = None) -> tuple[str, str | None]:
        """Add `delta` (the log entry `entry_id`, when it is one); returns the HTML of the blocks
        it finished ("" if none) and of the tail (None: not rendered again this time, see
        LONG_BLOCK; `flush` renders it)."""
        key = None
        if self.stream is not None and entry_id is not None:
            key = (self.stream, entry_id, len(self.text), self.done, self.rendered_up_to)
            if (known := self.shared.get(key)) is not None:
                return self.adopt(delta, known)
        self.text += delta
        open_length = len(self.text) - self.done
        if open_length > self.LONG_BLOCK and len(self.text) - self.rendered_up_to < open_length // self.GROWTH:
            finished, tail = "", None
        else:
            finished, tail = self.render()
        if key is not None:
            self.shared.put(key, Rendered(finished, tail, self.done, self.rendered_up_to))
        return finished, tail

    def adopt(self, delta: str, known: Rendered) -> tuple[str, str | None]:
        """Take another watcher's render of the same entry from the same state."""
        self.text += delta
        if known.finished:
            self.finished.append(known.finished)
        if known.tail is not None:
            self.tail = Markup(known.tail)
        self.done, self.rendered_up_to = known.done, known.rendered_up_to
        return known.finished, known.tail

    def flush(self) -> str | None:
        """The tail's HTML if text arrived since it was last rendered (the reply has ended)."""
        return self.render()[1] if self.rendered_up_to < len(self.text) else None

    def render(self) -> tuple[str, str]:
        self.rendered_up_to = len(self.text)
        open_part = self.text[self.done :]
        if self.stream is not None and self.shared.over_budget(self.stream):
            self.tail = plain_text(open_part)
            return "", str(self.tail)
        started = time.thread_time()  # CPU time: a busy machine must not look like costly Markdown
        try:
            return self.render_markdown(open_part)
        finally:
            if self.stream is not None:
                self.shared.charge(self.stream, time.thread_time() - started)

    def render_markdown(self, open_part: str) -> tuple[str, str]:
        tokens = parser.parse(open_part)
        lines = LINE.findall(open_part)
        starts = [(index, token.map[0]) for index, token in enumerate(tokens) if token.level == 0 and token.map]
        finished = ""
        if len(starts) > 1:
            first_open, line = starts[-1]
            finished = str(sanitised(parser.renderer.render(tokens[:first_open], parser.options, {})))
            self.finished.append(finished)
            self.done += sum(len(text) for text in lines[:line])
            tokens = tokens[first_open:]
        env = {"open_fence": open_fence(tokens, lines)}
        self.tail = sanitised(parser.renderer.render(tokens, parser.options, env))
        return finished, str(self.tail)

    @property
    def finished_html(self) -> Markup:
        return Markup("".join(self.finished))


def closed_markdown(text: str) -> Markup:
    """A piece of a reply that a tool call closed, as its stream rendered it: its blocks, then its
    last block as it stood when the call came."""
    rendered = StreamingMarkdown(text)
    return rendered.finished_html + rendered.tail


def plain_text(text: str) -> Markup:
    """Text shown as it is, escaped, line breaks kept: what a reply's open block becomes once its
    Markdown has used up its CPU budget (the finished message is rendered in full once)."""
    return (
        Markup('<p class="plain">') + Markup("<br>\n").join(escape(line) for line in text.split("\n")) + Markup("</p>")
    )
