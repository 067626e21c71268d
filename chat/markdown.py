"""Markdown to safe HTML, on the server (markdown-it-py, then nh3); fenced code highlighted by
Pygments (colours in static/css/code.css, light and dark) under a label naming its language.

Raw HTML in a reply is shown as text, never run.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    page adds a copy button to each)."""
    language = tokens[idx].info.strip().split(maxsplit=1)[0] if tokens[idx].info.strip() else ""
    label = f'<div class="code-lang">{escape(language)}</div>' if language else ""
    return f'<div class="code-block">{label}{RendererHTML.fence(renderer, tokens, idx, options, env)}</div>'


# `html=False`: raw HTML in the Markdown is escaped; nh3 (ammonia) then strips anything unsafe
# that Markdown itself produced (javascript: links and the like).
parser = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "breaks": True, "highlight": highlight_code}
).enable("table")
parser.add_render_rule("fence", fence_with_label)

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


def render_markdown(text: str) -> Markup:
    html = parser.render(text)
    return Markup(
        nh3.clean(
            html,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            link_rel="noopener noreferrer nofollow",
            url_schemes={"http", "https", "mailto"},
        )
    )
