"""Debian's Chromium for Playwright, and a script that records what a person saw stream."""

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
