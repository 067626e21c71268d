"""Debian's Chromium for Playwright, a script that records what a person saw stream, and a
person's steps in a chat page."""

from __future__ import annotations

import os

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


def wait_for_text(page, minimum: int) -> str:
    page.wait_for_function(
        f"(document.querySelector('.streaming-text') || {{textContent: ''}}).textContent.length > {minimum}"
    )
    return page.inner_text(".streaming-text")


def wait_finished(page, timeout: float = 20_000) -> None:
    page.wait_for_selector(".message.assistant:not(.status-streaming)", timeout=timeout)
    page.wait_for_function("document.querySelector('.message.status-streaming') === null", timeout=timeout)


def streamed(page) -> list[str]:
    return page.evaluate("window.__streamed || []")
