"""The chat in real Chromium: streaming, reload, offline, tabs, stop, mobile, no-JS, escaping."""

from __future__ import annotations

import time

import pytest

from chat.models import Message
from chat.vocabulary import credits_text
from helpers.browser import SLOW, frames, send, shown_reply, streamed, submit, wait_finished, wait_for_text
from helpers.chats import latest_reply

pytestmark = pytest.mark.browser


@pytest.fixture
def server(live_server):
    return live_server(**SLOW)


def stored_reply(app, page) -> Message:
    """The reply the database holds for the chat the page shows."""
    reply = latest_reply(app, page.evaluate("location.pathname").rstrip("/").split("/")[-1])
    assert reply is not None, "the chat has a reply"
    return reply


def start_reply(page, url: str, message: str, shown: int) -> None:
    """Open a new chat at `url`, send `message`, and wait until `shown` characters have streamed."""
    page.goto(f"{url}/agent/helper")
    send(page, message)
    wait_for_text(page, shown)


def test_send_shows_the_streamed_reply_and_it_equals_the_stored_message(server, page):
    page.goto(f"{server.url}/agent/helper")
    send(page, "Hello from Chromium")
    assert page.is_disabled("#composer button.send"), "send is disabled while a reply streams"
    assert page.is_visible("#composer button.stop")
    wait_finished(page)
    stored = stored_reply(server.app, page)
    assert stored.status == "complete"
    assert streamed(page) == [shown_reply(page)], "what streamed is exactly the stored reply, rendered"
    reply_text = " ".join(page.text_content(".message.assistant .content").split())
    shown = frames(page)
    assert len(shown) > 10, "the reply appeared word by word"
    assert all(reply_text.startswith(text) for text in shown), "no moment showed text twice or out of order"
    assert page.inner_text(".message.assistant .markdown strong") == "Helper"  # the final Markdown render
    assert page.evaluate("document.activeElement.id") == "message-input", "focus returns to the composer"
    assert page.evaluate("location.pathname").startswith("/agent/helper/")
    assert page.locator("#chat-list li a").count() == 1, "the new chat appears in the sidebar"
    grant = server.app.config["GUEST_CREDIT_GRANT"]
    assert page.inner_text("#balance") == f"{credits_text(grant - stored.cost)} credits", "the balance shows the charge"


def reload_mid_reply(page, server_url: str) -> None:
    page.goto(f"{server_url}/agent/helper")
    send(page, "Reload me")
    before = wait_for_text(page, 60)
    page.reload()
    # What was already shown is there at once, and the same reply continues from its cursor.
    assert page.evaluate("document.querySelector('.message.assistant .content').textContent").startswith(
        before.rstrip()
    )
    wait_finished(page)
    toasts = page.evaluate("window.__toasts")
    assert not any("Reconnected" in t for t in toasts), "a deliberate reload is not a dropped connection"


def test_reload_mid_reply_continues_without_duplicate_or_gap(server, page):
    reload_mid_reply(page, server.url)
    stored = stored_reply(server.app, page)
    assert stored.status == "complete" and streamed(page) == [shown_reply(page)]


def test_mobile_layout_reload_mid_reply_resumes_too(server, browser_context):
    page = browser_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    reload_mid_reply(page, server.url)
    assert not page.is_visible(".sidebar") and page.is_visible(".drawer summary")
    assert stored_reply(server.app, page).status == "complete"
    assert streamed(page) == [shown_reply(page)]


def test_network_drop_mid_reply_reconnects_from_the_cursor_and_completes(live_server, browser_context):
    from helpers.servers import FlakyProxy

    # Long enough (9 s) that the reply is still being written when the network comes back, however
    # slow the machine: a reply that ended meanwhile is shown from the database, not resumed.
    server = live_server(**{**SLOW, "DEMO_MODEL_WORDS": 150})
    proxy = FlakyProxy(server.server.server_port)
    try:
        context = browser_context()
        page = context.new_page()
        start_reply(page, proxy.url, "Survive the tunnel", 40)
        # The network goes away: open connections break and new ones fail, for two seconds.
        context.set_offline(True)
        proxy.cut()
        time.sleep(2)
        proxy.restore()
        context.set_offline(False)
        wait_finished(page, timeout=40_000)
        assert any("Reconnected" in t for t in page.evaluate("window.__toasts")), "the drop was noticed and resumed"
        stored = stored_reply(server.app, page)
        assert stored.status == "complete"
        assert streamed(page) == [shown_reply(page)], "no duplicate and no gap after the drop"
    finally:
        proxy.close()


def test_a_page_frozen_mid_reply_continues_within_a_second_of_coming_back(live_server, page):
    """What a phone or a background tab does: the OS freezes the page (CDP's lifecycle state, as
    Chromium's tab freezing does), the reply goes on without it, and once the page is active
    again it catches up from its cursor and finishes with exactly the stored text."""
    server = live_server(DEMO_MODEL_WORDS=250, DEMO_MODEL_DELAY_MS=30)
    start_reply(page, server.url, "Freeze me", 30)
    before = len(page.evaluate("document.querySelector('.streaming').textContent"))
    lifecycle = page.context.new_cdp_session(page)
    lifecycle.send("Page.setWebLifecycleState", {"state": "frozen"})
    time.sleep(3)  # ~100 words are written meanwhile
    lifecycle.send("Page.setWebLifecycleState", {"state": "active"})
    woke = time.monotonic()
    wait_for_text(page, before + 300, timeout=5)
    assert time.monotonic() - woke < 1.0, "it caught up within a second of becoming active"
    wait_finished(page, timeout=30_000)
    stored = stored_reply(server.app, page)
    assert stored.status == "complete" and streamed(page) == [shown_reply(page)]


def test_second_tab_sees_the_same_reply_and_stop_in_one_tab_stops_both(live_server, browser_context):
    server = live_server(DEMO_MODEL_WORDS=400, DEMO_MODEL_DELAY_MS=40)
    context = browser_context()
    first = context.new_page()
    start_reply(first, server.url, "Two tabs", 30)
    second = context.new_page()
    second.goto(first.evaluate("location.href"))
    second.wait_for_selector(".message.assistant.status-streaming")
    wait_for_text(second, 60)
    second.click("#composer button.stop")
    for tab in (first, second):
        tab.wait_for_selector(".message.assistant.status-cancelled")
    stored = stored_reply(server.app, first)
    assert stored.status == "cancelled"
    assert streamed(first) == [shown_reply(first)] and streamed(second) == [shown_reply(second)]
    assert "You stopped this reply." in first.inner_text(".message.assistant")
    # One way to try again: Regenerate, a new version of the same turn (no second copy of the message).
    assert first.locator(".message.assistant form.retry").count() == 0, "no Retry beside Regenerate"
    first.click(".message.assistant form.regenerate button")
    first.wait_for_selector(".message.assistant.status-streaming")
    assert first.locator(".message.user").count() == 1
    assert first.locator(".message.user").last.inner_text().endswith("Two tabs")


def test_without_javascript_the_form_sends_and_the_page_shows_the_full_reply(server, browser_context):
    page = browser_context(java_script_enabled=False).new_page()
    page.goto(f"{server.url}/agent/helper")
    page.fill("#message-input", "No scripts at all")
    page.click("#composer button.send")
    page.wait_for_url(f"{server.url}/agent/helper/*")
    page.wait_for_selector(".message.assistant.status-complete", timeout=30_000)  # via <noscript> refresh
    stored = stored_reply(server.app, page)
    assert stored.status == "complete"
    assert page.inner_text(".message.assistant .markdown strong") == "Helper"
    assert stored.content.split("\n\n")[1][:40] in page.inner_text(".message.assistant .markdown")


def test_hostile_message_and_reply_render_inert(server, page):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server.url}/agent/helper")
    evil = "<script>alert('user')</script><img src=x onerror=alert('img')>"
    submit(page, evil)
    wait_finished(page)
    page.reload()
    page.wait_for_selector(".message.assistant.status-complete")
    assert dialogs == []
    assert page.locator(".message script, .message img").count() == 0
    assert evil in page.inner_text(".message.user .content")
    assert "<script>alert('user')</script>" in page.inner_text(".message.assistant .markdown")


def test_with_resumable_streams_off_the_page_still_streams_and_finishes(live_server, page):
    server = live_server(resumable=False, **SLOW)
    page.goto(f"{server.url}/agent/helper")
    send(page, "Direct, no Redis")
    wait_finished(page)
    stored = stored_reply(server.app, page)
    assert stored.status == "complete" and streamed(page) == [shown_reply(page)]
    page.reload()  # no resume without Redis: the stored reply is shown
    assert page.inner_text(".message.assistant .markdown strong") == "Helper"


def test_markdown_is_formatted_while_streaming_and_a_reload_shows_the_same_dom(live_server, browser_context):
    """A heading, a list, a table and highlighted code appear formatted before the reply ends; a
    tab that reloads mid-reply ends with the very DOM of a tab that watched from the start, and
    the stored message that replaces the stream changes nothing of it."""
    server = live_server(DEMO_MODEL_WORDS=150, DEMO_MODEL_DELAY_MS=40)
    context = browser_context()
    watcher = context.new_page()
    watcher.goto(f"{server.url}/agent/helper")
    send(watcher, "Show me Markdown please")
    streaming = ".message.status-streaming .streaming"
    watcher.wait_for_selector(f"{streaming} pre code span.k")
    for selector in ("h2", "ul li", "table td", ".code-lang", "em"):
        assert watcher.locator(f"{streaming} {selector}").count() >= 1, f"{selector} while streaming"
    reloader = context.new_page()
    reloader.goto(watcher.url)
    wait_for_text(reloader, 300)
    reloader.reload()  # mid-reply again: the page renders up to its cursor, the stream continues
    wait_for_text(reloader, 320)
    assert reloader.locator(f"{streaming} table td").count() >= 1, "formatted at once after the reload"
    wait_finished(watcher, timeout=30_000)
    wait_finished(reloader, timeout=30_000)
    assert stored_reply(server.app, watcher).status == "complete"
    [watched] = streamed(watcher)
    assert watched == shown_reply(watcher), "the final swap changed nothing"
    assert streamed(reloader) == [watched], "the reloaded tab ends with the watcher's DOM"
    assert shown_reply(reloader) == watched


def set_hidden(page, hidden: bool) -> None:
    """What the browser does when a tab goes to the background or comes back (headless Chromium
    keeps every tab visible, so the page is told as the browser would tell it)."""
    page.evaluate(
        "hidden => { Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});"
        " Object.defineProperty(document, 'visibilityState', {value: hidden ? 'hidden' : 'visible',"
        " configurable: true}); document.dispatchEvent(new Event('visibilitychange')); }",
        hidden,
    )


def test_eight_tabs_over_http_1_1_do_not_stall_hidden_ones_let_go_of_their_stream(live_server, browser_context):
    """A browser gives HTTP/1.1 six connections per host and every streaming tab holds one: here
    eight tabs of one chat are opened one after another, each earlier one going to the
    background; all load and stream, and once shown again each ends with the stored reply."""
    server = live_server(DEMO_MODEL_WORDS=400, DEMO_MODEL_DELAY_MS=30)
    context = browser_context()
    tabs = [context.new_page()]
    start_reply(tabs[0], server.url, "Many tabs", 20)
    for _ in range(7):
        set_hidden(tabs[-1], True)
        tab = context.new_page()
        tab.goto(tabs[0].url, timeout=5_000)  # a seventh stream would wait for a free connection
        wait_for_text(tab, 40, timeout=5)
        tabs.append(tab)
    for tab in tabs[:-1]:
        set_hidden(tab, False)
    for tab in tabs:
        wait_finished(tab, timeout=30_000)
    assert stored_reply(server.app, tabs[0]).status == "complete"
    shown = shown_reply(tabs[0])
    for n, tab in enumerate(tabs):
        assert shown_reply(tab) == shown, f"tab {n + 1} shows the stored reply"
    assert streamed(tabs[-1]) == [shown], "the tab in front streamed it to the end"
