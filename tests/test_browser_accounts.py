"""Accounts in real Chromium: two browsers (no shared cookies) on one account follow one reply."""

from __future__ import annotations

import pytest

from helpers.accounts import PASSWORD
from helpers.browser import SLOW, send, shown_reply, streamed, wait_finished, wait_for_text
from helpers.chats import charges, latest_reply

pytestmark = pytest.mark.browser


def fill_account_form(page, url: str, form: str, email: str) -> None:
    page.goto(f"{url}/{form}")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("form.auth-form button[type=submit]")
    page.wait_for_selector("#account-link")


def test_a_reply_started_on_one_device_streams_live_on_another(live_server, browser_context):
    server = live_server(**SLOW)
    first = browser_context().new_page()
    fill_account_form(first, server.url, "signup", "ada@example.com")
    first.goto(f"{server.url}/agent/helper")
    send(first, "Follow me to my phone")
    wait_for_text(first, 40)
    chat_path = first.evaluate("location.pathname")

    second = browser_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
    fill_account_form(second, server.url, "signin", "ada@example.com")
    second.goto(f"{server.url}/")
    assert second.locator(f'.chat-list a[href="{chat_path}"]').count() == 1, "the account's chat list is here"
    second.click(f'.chat-list a[href="{chat_path}"]')
    second.wait_for_selector(".message.assistant.status-streaming")
    shown_on_arrival = second.inner_text(".message.assistant .content")
    assert shown_on_arrival, "what was already said is there at once"

    wait_finished(second, timeout=30_000)
    wait_finished(first, timeout=30_000)
    stored = latest_reply(server.app, chat_path.rstrip("/").split("/")[-1])
    assert stored.status == "complete"
    assert streamed(first) == [shown_reply(first)], "the first device watched the whole reply"
    assert streamed(second) == [shown_reply(second)], "the second device shows the same reply, formatted alike"
    assert second.inner_text(".message.assistant .content").startswith(shown_on_arrival.rstrip())
    assert len(charges(server.app, titles=False)) == 1, "billed once"
