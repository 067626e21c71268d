"""Debian's Chromium for Playwright, a script that records what a person saw stream, and a
person's steps in a chat page."""

from __future__ import annotations

import os

from .chats import wait_for

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Records the streamed reply (its rendered HTML, copy buttons left out) just before the stored
# message replaces it, so tests can check what a person watched arrive against what is stored;
# every text a streaming message showed, as the DOM changed (`frames`); and every toast shown.
# `__rendered(el)` is the same reading of any message's content.
CAPTURE_STREAMED = """
window.__rendered = function (content) {
  var copy = content.cloneNode(true);
  copy.querySelectorAll('button.copy-code').forEach(function (b) { b.remove(); });
  copy.querySelectorAll('.htmx-added, .htmx-settling').forEach(function (e) {  // htmx's, for a moment
    e.classList.remove('htmx-added', 'htmx-settling');
    if (!e.classList.length) e.removeAttribute('class');
  });
  var parts = copy.querySelectorAll('.md-blocks, .md-tail');
  return parts.length ? Array.prototype.map.call(parts, function (p) { return p.innerHTML; }).join('') : copy.innerHTML;
};
window.__toasts = [];
window.__frames = [];
document.addEventListener('DOMContentLoaded', function () {
  new MutationObserver(function () {
    document.querySelectorAll('.message.status-streaming .content').forEach(function (content) {
      var text = content.textContent.replace(/\\s+/g, ' ').trim();
      if (window.__frames[window.__frames.length - 1] !== text) window.__frames.push(text);
    });
  }).observe(document.body, {childList: true, subtree: true, characterData: true});
  var box = document.getElementById('toasts');
  if (!box) return;
  new MutationObserver(function (records) {
    records.forEach(function (r) { r.addedNodes.forEach(function (n) { window.__toasts.push(n.textContent); }); });
  }).observe(box, {childList: true});
});
document.addEventListener('htmx:beforeRequest', function (e) {
  var el = e.detail.elt;
  if (el.matches && el.matches('.message.status-streaming')) {
    (window.__streamed = window.__streamed || []).push(window.__rendered(el.querySelector('.content')));
  }
});
"""

# Replies slow enough to act on mid-reply.
SLOW = {"DEMO_MODEL_WORDS": 60, "DEMO_MODEL_DELAY_MS": 60}


def finished_reply(page, server_url: str, text: str) -> None:
    """Open a new chat with the helper, send `text` and wait until the reply has ended."""
    page.goto(f"{server_url}/agent/helper")
    submit(page, text)
    wait_finished(page)


def send(page, text: str) -> None:
    """Send `text` and wait until its reply shows streaming (for slow replies acted on mid-reply)."""
    page.fill("#message-input", text)
    page.keyboard.press("Enter")
    page.wait_for_selector(".message.assistant.status-streaming")


def submit(page, text: str) -> None:
    """Send `text` and wait until its reply is on the page, streaming or already over: a short
    reply can end before a loaded machine paints its streaming state."""
    replies = page.locator(".message.assistant").count()
    page.fill("#message-input", text)
    page.keyboard.press("Enter")
    wait_for(lambda: page.locator(".message.assistant").count() > replies, timeout=15.0, message="the reply appeared")


# Waits poll from the test, never with `page.wait_for_function`: that evaluates a string inside
# the page, which the app's Content-Security-Policy (no eval) refuses.
def wait_for_text(page, minimum: int, timeout: float = 15.0) -> str:
    def shown() -> str:
        text = page.evaluate("(document.querySelector('.streaming') || {textContent: ''}).textContent")
        return text if len(text) > minimum else ""

    return wait_for(shown, timeout=timeout, message=f"more than {minimum} characters streamed")


def wait_finished(page, timeout: float = 20_000) -> None:
    page.wait_for_selector(".message.assistant:not(.status-streaming)", timeout=timeout)
    page.wait_for_selector(".message.status-streaming", state="detached", timeout=timeout)


def wait_for_toast(page, words: str, timeout: float = 15.0) -> None:
    wait_for(lambda: any(words in toast for toast in page.evaluate("window.__toasts")), timeout=timeout, message=words)


def streamed(page) -> list[str]:
    """The HTML of every reply the page streamed, as it stood when its stored message replaced it."""
    return page.evaluate("window.__streamed || []")


def frames(page) -> list[str]:
    """Every text a streaming message showed (whitespace collapsed), after each change of the DOM."""
    return page.evaluate("window.__frames")


def shown_reply(page) -> str:
    """The HTML of the page's last reply as shown now (read as `streamed` reads it)."""
    return page.evaluate(
        "window.__rendered(document.querySelectorAll('.message.assistant .content').item("
        "document.querySelectorAll('.message.assistant .content').length - 1))"
    )
