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

# Records the streamed text of a reply just before its final render replaces it, so tests can
# check the text a person watched arrive, not only the re-rendered result; and every toast shown.
CAPTURE_STREAMED = """
window.__toasts = [];
document.addEventListener('DOMContentLoaded', function () {
  var box = document.getElementById('toasts');
  if (!box) return;
  new MutationObserver(function (records) {
    records.forEach(function (r) { r.addedNodes.forEach(function (n) { window.__toasts.push(n.textContent); }); });
  }).observe(box, {childList: true});
});
document.addEventListener('htmx:beforeRequest', function (e) {
  var el = e.detail.elt;
  if (el.matches && el.matches('.message.status-streaming')) {
    (window.__streamed = window.__streamed || []).push(el.querySelector('.streaming-text').textContent);
  }
});
"""

# Replies slow enough to act on mid-reply.
SLOW = {"DEMO_MODEL_WORDS": 60, "DEMO_MODEL_DELAY_MS": 60}


def send(page, text: str) -> None:
    page.fill("#message-input", text)
    page.keyboard.press("Enter")
    page.wait_for_selector(".message.assistant.status-streaming")


# Waits poll from the test, never with `page.wait_for_function`: that evaluates a string inside
# the page, which the app's Content-Security-Policy (no eval) refuses.
def wait_for_text(page, minimum: int, timeout: float = 15.0) -> str:
    def shown() -> str:
        text = page.evaluate("(document.querySelector('.streaming-text') || {textContent: ''}).textContent")
        return text if len(text) > minimum else ""

    return wait_for(shown, timeout=timeout, message=f"more than {minimum} characters streamed")


def wait_finished(page, timeout: float = 20_000) -> None:
    page.wait_for_selector(".message.assistant:not(.status-streaming)", timeout=timeout)
    page.wait_for_selector(".message.status-streaming", state="detached", timeout=timeout)


def wait_for_toast(page, words: str, timeout: float = 15.0) -> None:
    wait_for(lambda: any(words in toast for toast in page.evaluate("window.__toasts")), timeout=timeout, message=words)


def streamed(page) -> list[str]:
    return page.evaluate("window.__streamed || []")
