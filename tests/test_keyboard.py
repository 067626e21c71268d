"""Driving a chat from the keyboard, with the shortcuts people know from other chat apps, and
what a screen reader is told — in real Chromium."""

from __future__ import annotations

import pytest

from helpers.axe import violations
from helpers.browser import send, wait_finished, wait_for_text
from helpers.chats import wait_for

pytestmark = pytest.mark.browser

SLOW_ENOUGH = {"DEMO_MODEL_WORDS": 200, "DEMO_MODEL_DELAY_MS": 20}


def focused(page) -> str:
    return page.evaluate("document.activeElement.id || document.activeElement.tagName")


def test_every_shortcut_does_what_the_list_says(live_server, browser_context):
    server = live_server(**SLOW_ENOUGH)
    context = browser_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"{server.url}/agent/helper")
    send(page, "first question")
    wait_for_text(page, 50)
    page.keyboard.press("Escape")  # in the message box, meant to: stops the reply
    page.wait_for_selector(".message.assistant.status-cancelled")

    page.locator("#messages").click()  # out of the message box
    page.keyboard.press("r")  # regenerate
    page.wait_for_selector(".message.assistant.status-streaming")
    wait_for_text(page, 20)
    page.keyboard.press("Escape")
    page.wait_for_selector(".message.assistant.status-cancelled")

    page.locator("#messages").click()
    page.keyboard.press("e")  # edit the last message, focused at its end
    assert page.evaluate("document.activeElement.closest('details.edit-message') !== null")
    page.keyboard.press("Shift+Escape")  # the message box
    assert focused(page) == "message-input"

    page.keyboard.type("nothing fires while typing: n r e t c /")
    assert page.input_value("#message-input").endswith("n r e t c /") and "/agent/helper/" in page.url
    page.fill("#message-input", "")

    page.locator("#messages").click()
    page.keyboard.press("/")
    assert focused(page) == "search-sidebar"
    page.locator("#messages").click()

    before = page.evaluate("document.documentElement.dataset.theme || ''")
    page.keyboard.press("t")
    assert page.evaluate("document.documentElement.dataset.theme") not in ("", before), "the theme switched"

    page.keyboard.press("c")
    wait_for(lambda: page.evaluate("navigator.clipboard.readText()") != "", message="the last reply copied")
    reply_source = page.locator(".message.assistant button.copy:not(.copy-code)").last.get_attribute("data-copy")
    assert page.evaluate("navigator.clipboard.readText()") == reply_source, "the last reply, as Markdown"

    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    assert violations(page) == [], "the shortcut list is clean under axe-core"
    page.keyboard.press("Escape")
    assert not page.locator("#shortcuts").is_visible()

    page.locator("#messages").click()
    page.keyboard.press("n")  # a new chat
    page.wait_for_url(f"{server.url}/agent/helper")
    assert page.locator(".message").count() == 0


def test_a_screen_reader_hears_a_reply_start_and_end_once_not_every_token(live_server, page):
    server = live_server(DEMO_MODEL_WORDS=40, DEMO_MODEL_DELAY_MS=20)
    page.goto(f"{server.url}/agent/helper")
    page.evaluate(
        "window.__said = []; new MutationObserver(() => { const t = document.getElementById('announcer').textContent;"
        " if (t) window.__said.push(t); }).observe(document.getElementById('announcer'),"
        " {childList: true, characterData: true, subtree: true})"
    )
    send(page, "hello")
    assert page.locator(".message.status-streaming [aria-live]").count() == 0, "tokens are not read out one by one"
    wait_finished(page)
    wait_for(lambda: len(page.evaluate("window.__said")) >= 2, message="two announcements")
    assert page.evaluate("window.__said") == ["Helper is replying.", "The reply is finished."]
