"""The chat page as people use it: the view stays where the reader put it, focus is where typing
goes, feedback tells what happened, and every form ends on a page a reload can show — in real
Chromium where a person would notice, the test client where the server decides."""

from __future__ import annotations

import pytest

from chat.embedded_redis import free_port
from helpers.accounts import AccountActions
from helpers.axe import violations
from helpers.browser import finished_reply, send, wait_finished, wait_for_text
from helpers.chats import charges, latest_reply, new_chat_id, post_chat, wait_for
from helpers.sse import read_events

# A reply slow enough that a test sees it stream before it ends (the default test reply takes 60 ms).
VISIBLE = {"DEMO_MODEL_WORDS": 40, "DEMO_MODEL_DELAY_MS": 20}


@pytest.fixture
def long_replies(live_server):
    return live_server(DEMO_MODEL_WORDS=1500, DEMO_MODEL_DELAY_MS=10)


def scroll_state(page) -> dict:
    return page.evaluate(
        "(() => { const m = document.getElementById('messages');"
        " const b = document.getElementById('to-latest');"
        " return {top: m.scrollTop, bottom: m.scrollHeight - m.scrollTop - m.clientHeight,"
        " latest: getComputedStyle(b).display !== 'none' && b.getBoundingClientRect().height > 0}; })()"
    )


@pytest.mark.browser
@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}])
def test_scrolling_up_while_a_reply_streams_keeps_the_view_where_the_reader_put_it(
    long_replies, browser_context, viewport
):
    page = browser_context(viewport=viewport).new_page()
    page.goto(f"{long_replies.url}/agent/helper")
    send(page, "A long one please")
    wait_for(lambda: scroll_state(page)["top"] > 100, message="a reply taller than the view, followed")
    box = page.locator("#messages").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(6):  # a person scrolling up to reread, a turn of the wheel at a time
        page.mouse.wheel(0, -1000)
        page.wait_for_timeout(100)
    wait_for(lambda: scroll_state(page)["top"] == 0, message="the view at the top")
    wait_for(lambda: scroll_state(page)["latest"], message="the ↓ Latest button")
    before = page.evaluate("document.querySelector('.streaming').textContent.length")
    wait_for(
        lambda: page.evaluate("document.querySelector('.streaming').textContent.length") > before + 200,
        message="more of the reply",
    )
    assert scroll_state(page)["top"] == 0, "the view stayed where the reader put it"
    page.click("#to-latest")
    wait_for(lambda: scroll_state(page)["bottom"] < 48, message="back at the bottom")
    assert not scroll_state(page)["latest"]
    grown = page.evaluate("document.getElementById('messages').scrollHeight")
    wait_for(
        lambda: page.evaluate("document.getElementById('messages').scrollHeight") > grown + 100, message="more reply"
    )
    wait_for(lambda: scroll_state(page)["bottom"] < 48, message="at the bottom, it follows the reply again")


@pytest.mark.browser
def test_the_composer_has_the_focus_when_a_chat_opens_and_after_stop(long_replies, page):
    page.goto(f"{long_replies.url}/agent/helper")
    assert page.evaluate("document.activeElement.id") == "message-input", "focused when the chat opens"
    send(page, "Stop me")
    wait_for_text(page, 100)
    page.click("#composer button.stop")
    page.wait_for_selector(".message.assistant.status-cancelled")
    assert page.evaluate("document.activeElement.id") == "message-input", "focused after Stop"
    page.reload()
    assert page.evaluate("document.activeElement.id") == "message-input", "focused when an existing chat opens"


@pytest.mark.browser
def test_a_message_past_the_limit_is_counted_and_refused_not_cut(live_server, page):
    server = live_server(MAX_MESSAGE_CHARS=100)
    page.goto(f"{server.url}/agent/helper")
    page.fill("#message-input", "x" * 70)
    assert page.locator("#message-count").is_hidden(), "no counter far from the limit"
    page.fill("#message-input", "x" * 90)
    assert page.inner_text("#message-count") == "90 / 100"
    page.fill("#message-input", "x" * 120)
    page.keyboard.press("Enter")
    assert page.locator(".message").count() == 0, "nothing was sent"
    assert page.input_value("#message-input") == "x" * 120, "nothing was cut"
    assert "20 characters over the limit" in page.evaluate("document.getElementById('message-input').validationMessage")


def test_an_over_long_message_is_refused_with_a_sentence(app_factory):
    client = app_factory(MAX_MESSAGE_CHARS=10).test_client()
    refused = post_chat(client, new_chat_id(), "x" * 11)
    assert refused.status_code == 400 and refused.get_json()["error"].startswith("Your message is too long")


def test_a_reply_that_never_reached_the_model_costs_nothing_and_says_why(app_factory):
    app = app_factory(OPENAI_API_KEY="sk-test-not-a-real-key", OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    client = app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "anyone there?"))
    assert transcript.terminal.event == "error"
    assert transcript.terminal.json()["message"].startswith("Could not reach the model")
    assert "lost" not in transcript.terminal.json()["message"], "no connection was ever made"
    reply = latest_reply(app, chat_id)
    assert reply.status == "error" and reply.cost_micros == 0
    assert [charge.cost_micros for charge in charges(app, titles=False)] == [0]
    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert 'class="copy"' not in page.split(f'id="message-{reply.id}"')[1].split("</article>")[0], "nothing to copy"


def test_a_new_token_is_shown_once_and_a_reload_shows_the_account(app):
    person = AccountActions(app.test_client())
    person.sign_up()
    created = person.client.post("/account/tokens", data={"name": "script"})
    assert created.status_code == 303 and created.headers["Location"] == "/account"
    first = person.client.get("/account").get_data(as_text=True)
    assert 'id="new-token"' in first
    again = person.client.get("/account")
    assert again.status_code == 200 and 'id="new-token"' not in again.get_data(as_text=True), "shown once"
    signed_out = person.client.post("/account/sign-out-everywhere")
    assert signed_out.status_code == 303
    notice = person.client.get(signed_out.headers["Location"]).get_data(as_text=True)
    assert "signed out on every device" in notice
    assert "signed out on every device" not in person.client.get("/signin").get_data(as_text=True)


def test_an_empty_search_says_no_chats_match(client):
    read_events(post_chat(client, new_chat_id(), "about gardening"))
    listing = client.get("/chats?q=astronomy", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "No chats match" in listing and "No chats yet" not in listing


@pytest.mark.browser
def test_finished_reply_and_balance_show_two_decimals(live_server, page):
    server = live_server(**VISIBLE)
    finished_reply(page, server.url, "hello")
    balance = page.inner_text("#balance").split()[0]
    assert len(balance.split(".")[1]) == 2, balance


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_on_a_phone_the_header_is_one_row_and_the_menu_is_a_sheet_within_the_screen(
    live_server, browser_context, scheme
):
    server = live_server(**VISIBLE)
    page = browser_context(viewport={"width": 390, "height": 844}, is_mobile=True, color_scheme=scheme).new_page()
    finished_reply(page, server.url, "hello from a phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "nothing wider than the screen"
    header = page.locator(".topbar").bounding_box()
    assert header is not None and header["height"] < 60, f"one row: {header}"
    title = page.locator(".agent-header").bounding_box()
    assert title is not None and title["height"] < 110, f"the chat's header keeps to two rows: {title}"
    assert not page.locator(".export").is_visible()
    page.click(".chat-more summary")
    assert page.locator(".chat-more-menu :text('Export as Markdown')").is_visible(), "export and delete behind ⋯"
    menu = page.locator(".chat-more-menu").bounding_box()
    assert menu is not None and menu["x"] >= 0 and menu["x"] + menu["width"] <= 390, f"within the screen: {menu}"
    page.click(".chat-more summary")
    page.click(".drawer summary")
    sheet = page.locator(".drawer .sheet").bounding_box()
    assert sheet is not None and sheet["x"] >= 0 and sheet["x"] + sheet["width"] <= 390, f"within the screen: {sheet}"
    for wanted in ("+ New chat", "All chats", "Sign in", "Sign up"):
        assert page.locator(f".drawer .sheet :text('{wanted}')").is_visible(), wanted
    page.fill("#search-drawer", "zzz-nothing")
    wait_for(lambda: "No chats match" in page.inner_text("#chat-list-drawer"), message="the menu's search")
    page.fill("#search-drawer", "phone")
    wait_for(lambda: page.locator("#chat-list-drawer li a").count() == 1, message="the chat found")
    page.click("#chat-list-drawer li a")
    page.wait_for_selector(".message.assistant")


@pytest.mark.browser
def test_a_new_chat_gets_its_header_and_tab_title_at_once_and_a_rename_updates_both(live_server, page):
    server = live_server(**VISIBLE)
    page.goto(f"{server.url}/agent/helper")
    assert page.locator("#title-input").count() == 0, "a chat not stored yet has nothing to rename"
    send(page, "Plans for the garden")
    page.wait_for_selector("#title-input")
    assert page.locator(".export a:text('Markdown')").is_visible(), "export and delete without a reload"
    wait_for(lambda: page.title().startswith("Plans for the garden"), message="the tab's title")
    wait_finished(page)
    page.fill("#title-input", "Garden 2027")
    page.click("#chat-title button.rename")
    wait_for(lambda: page.title().startswith("Garden 2027"), message="the tab's title after a rename")


@pytest.mark.browser
def test_editing_the_last_message_sends_on_enter_and_cancel_closes_it(live_server, page):
    server = live_server(**VISIBLE)
    finished_reply(page, server.url, "first wording")
    page.click(".message.user .edit-message summary")
    page.click(".message.user .edit-message .cancel-edit")
    assert not page.locator(".message.user .edit-message").evaluate("d => d.open"), "Cancel closed it"
    page.click(".message.user .edit-message summary")
    page.fill(".message.user .edit-message textarea", "second wording")
    page.keyboard.press("Enter")
    wait_for(lambda: "second wording" in page.inner_text(".message.user"), message="the edited message sent")


def test_a_search_keeps_the_open_chats_highlight_and_the_export_marks_earlier_versions(client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "about gardening"))
    listing = client.get(f"/chats?q=&current={chat_id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'aria-current="page"' in listing, "clearing the search keeps the open chat marked"
    assert client.post(f"/agent/helper/{chat_id}/regenerate").status_code == 303
    wait_for(lambda: latest_reply(client.application, chat_id).status == "complete", message="the new version")
    exported = client.get(f"/agent/helper/{chat_id}/export.md").get_data(as_text=True)
    assert exported.count("_(an earlier version)_") == 1


@pytest.mark.browser
def test_a_skip_link_leads_the_keyboard_to_the_content(live_server, page):
    server = live_server(**VISIBLE)
    page.goto(f"{server.url}/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    assert page.locator(".skip-link").is_visible(), "visible once focused"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"


@pytest.mark.browser
@pytest.mark.parametrize(
    "viewport, scheme",
    [
        ({"width": 1280, "height": 800}, "light"),
        ({"width": 1280, "height": 800}, "dark"),
        ({"width": 390, "height": 844}, "light"),
        ({"width": 390, "height": 844}, "dark"),
    ],
    ids=["desktop-light", "desktop-dark", "phone-light", "phone-dark"],
)
def test_every_page_is_clean_under_axe_core(live_server, browser_context, viewport, scheme):
    server = live_server(**VISIBLE)
    page = browser_context(viewport=viewport, color_scheme=scheme).new_page()
    page.goto(f"{server.url}/agent/helper")
    send(page, "hello")
    assert violations(page) == [], "while streaming"
    wait_finished(page)
    assert violations(page) == [], "the chat, finished"
    if viewport["width"] < 700:
        page.click(".drawer summary")
        assert violations(page) == [], "the phone's menu"
    for path in ("/", "/chats", "/chats?q=nothing-matches", "/signup", "/signin"):
        page.goto(f"{server.url}{path}")
        assert violations(page) == [], path
