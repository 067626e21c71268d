"""Managing one's chats: export as Markdown and JSON, rename, delete, search, pages (yours only)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from chat.extensions import db
from chat.models import Identity, LedgerEntry
from helpers.browser import send, submit, wait_finished
from helpers.chats import charges, latest_reply, new_chat_id, post_chat, wait_for
from helpers.fake_openai import FakeOpenAI
from helpers.sse import read_events


def test_a_chat_exports_as_markdown_and_json_with_every_message(app, client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "What is a stream?"))
    read_events(post_chat(client, chat_id, "And a cursor?"))
    reply = latest_reply(app, chat_id)
    markdown = client.get(f"/agent/helper/{chat_id}/export.md")
    assert markdown.status_code == 200 and markdown.mimetype == "text/markdown"
    assert markdown.headers["Content-Disposition"] == 'attachment; filename="what-is-a-stream.md"'
    text = markdown.get_data(as_text=True)
    assert text.startswith("# What is a stream?") and "## You\n\nAnd a cursor?" in text
    assert f"## Helper\n\n{reply.content}" in text
    exported = json.loads(client.get(f"/agent/helper/{chat_id}/export.json").get_data(as_text=True))
    assert exported["id"] == chat_id and exported["agent"] == "helper"
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant", "user", "assistant"]
    assert exported["messages"][-1]["content"] == reply.content


def test_another_persons_chat_does_not_export(app, client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    stranger = app.test_client()
    for kind in ("md", "json"):
        assert stranger.get(f"/agent/helper/{chat_id}/export.{kind}").status_code == 404
    assert client.get(f"/agent/helper/{chat_id}/export.txt").status_code == 404


@pytest.mark.browser
def test_the_export_link_downloads_the_markdown(live_server, page):
    server = live_server(DEMO_MODEL_WORDS=40, DEMO_MODEL_DELAY_MS=20)  # seen streaming before it ends
    page.goto(f"{server.url}/agent/helper")
    submit(page, "Download me")
    wait_finished(page)
    page.reload()  # the chat's own page (a new chat's first turn arrives as a fragment)
    with page.expect_download() as download:
        page.click(".export a:text('Markdown')")
    content = Path(download.value.path()).read_text(encoding="utf-8")
    assert download.value.suggested_filename == "download-me.md"
    stored = latest_reply(server.app, page.evaluate("location.pathname").rstrip("/").split("/")[-1])
    assert content.startswith("# Download me") and stored.content in content


def background(page) -> str:
    return page.evaluate("getComputedStyle(document.documentElement).backgroundColor")


@pytest.mark.browser
def test_the_theme_follows_the_system_and_the_persons_choice_persists(live_server, browser_context):
    server = live_server()
    dark = browser_context(color_scheme="dark").new_page()
    dark.goto(f"{server.url}/agent/helper")
    assert background(dark) == "rgb(17, 19, 24)", "a dark system gets the dark theme, without JavaScript's help"
    light = browser_context(color_scheme="light").new_page()
    light.goto(f"{server.url}/agent/helper")
    assert background(light) == "rgb(246, 247, 249)"
    light.click("#theme-toggle")
    assert background(light) == "rgb(17, 19, 24)"
    light.reload()
    assert background(light) == "rgb(17, 19, 24)", "the choice persists across pages"
    light.click("#theme-toggle")
    assert background(light) == "rgb(246, 247, 249)"


def chat_keys(redis_url: str, chat_id: str) -> list[str]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return client.keys(f"chat:{{{chat_id}}}:*")


def test_rename_changes_the_title_everywhere_and_refuses_an_empty_one(app, client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "first words"))
    renamed = client.post(f"/agent/helper/{chat_id}/title", data={"title": "  Streams   and cursors "})
    assert renamed.status_code == 303 and renamed.headers["Location"].endswith(f"/agent/helper/{chat_id}")
    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert 'value="Streams and cursors"' in page and ">Streams and cursors</a>" in page
    fragment = client.post(f"/agent/helper/{chat_id}/title", data={"title": "Shorter"}, headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert 'id="chat-title"' in body and body.count('hx-swap-oob="true"') == 2 and ">Shorter</a>" in body
    for bad in ("", "   ", "x" * 201):
        refused = client.post(f"/agent/helper/{chat_id}/title", data={"title": bad}, headers={"HX-Request": "true"})
        assert refused.status_code == 400 and "1 to 200 characters" in refused.get_data(as_text=True)
    assert client.get("/chats").get_data(as_text=True).count(">Shorter</a>") == 1


def test_deleting_a_chat_with_a_live_reply_stops_it_bills_it_once_and_forgets_everything(app_factory, redis_url):
    app = app_factory(DEMO_MODEL_WORDS=400, DEMO_MODEL_DELAY_MS=10)
    client = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id), stop_after=4)
    assert chat_keys(redis_url, chat_id), "a live reply keeps its log in Redis"
    confirm = client.get(f"/agent/helper/{chat_id}/delete").get_data(as_text=True)
    assert "stopped first" in confirm
    deleted = client.post(f"/agent/helper/{chat_id}/delete")
    assert deleted.status_code == 303 and deleted.headers["Location"].endswith("/chats")
    assert client.get(f"/agent/helper/{chat_id}").status_code == 404
    assert client.get(f"/api/chat?chatId={chat_id}").status_code == 404
    assert chat_id not in client.get("/chats").get_data(as_text=True)
    time.sleep(0.3)  # the producer sees the stop at its next heartbeat and ends
    assert chat_keys(redis_url, chat_id) == []
    [charge] = charges(app, titles=False)  # the stopped reply was billed, and the charge stays
    assert charge.message_id is None and charge.cost_micros > 0
    with app.app_context():
        owner = db.session.get(Identity, charge.identity_id)
        ledger = db.session.scalars(select(LedgerEntry).where(LedgerEntry.identity_id == owner.id))
        assert owner.balance_micros == -sum(row.cost_micros for row in ledger)


def test_search_finds_titles_and_message_text_of_ones_own_chats_only(app, client):
    about_redis, about_bread = new_chat_id(), new_chat_id()
    read_events(post_chat(client, about_redis, "Tell me about Redis streams"))
    read_events(post_chat(client, about_bread, "How do I bake bread?"))
    read_events(post_chat(client, about_bread, "Should the dough be 100% hydrated?"))
    stranger = app.test_client()
    read_events(post_chat(stranger, new_chat_id(), "Redis too"))

    def found(query: str) -> set[str]:
        page = client.get("/chats", query_string={"q": query}).get_data(as_text=True)
        return {chat for chat in (about_redis, about_bread) if chat in page}

    assert found("redis") == {about_redis}, "case-insensitive, in the title; not the stranger's"
    assert found("DOUGH") == {about_bread}, "in a later message's text"
    assert found("100%") == {about_bread} and found("%") == {about_bread}, "% is a character, not a wildcard"
    assert found("nothing like this") == set()
    live = client.get("/chats", query_string={"q": "bread"}, headers={"HX-Request": "true"})
    assert live.get_data(as_text=True).startswith('<ul class="chat-list" id="chat-list"')


def listed(page: str) -> list[str]:
    """The titles of the chat list of a page."""
    chat_list = page.split('<ul class="chat-list"')[1].split("</ul>")[0]
    return re.findall(r'<a href="/agent/[^"]+">([^<]+)</a>', chat_list)


def test_the_chat_list_comes_in_pages_of_thirty(app, client):
    for n in range(33):
        read_events(post_chat(client, new_chat_id(), f"chat number {n}"))
    first = client.get("/chats").get_data(as_text=True)
    assert listed(first) == [f"chat number {n}" for n in range(32, 2, -1)], "thirty, newest first"
    assert "Older →" in first and "← Newer" not in first
    second = client.get("/chats?page=2").get_data(as_text=True)
    assert listed(second) == ["chat number 2", "chat number 1", "chat number 0"]
    assert "← Newer" in second and "Older →" not in second


@pytest.mark.browser
def test_in_the_browser_rename_search_and_delete_a_chat_with_a_live_reply(live_server, page):
    server = live_server(DEMO_MODEL_WORDS=400, DEMO_MODEL_DELAY_MS=30)
    page.goto(f"{server.url}/agent/helper")
    submit(page, "Keep this one")
    wait_finished(page, timeout=30_000)
    page.goto(f"{server.url}/agent/helper")
    send(page, "Throw this away")
    page.reload()  # the chat's own page, its reply still streaming
    chat_id = page.evaluate("location.pathname").rstrip("/").split("/")[-1]

    page.fill("#title-input", "Renamed inline")
    page.click("#chat-title button.rename")
    page.wait_for_selector("#chat-list a:text('Renamed inline')")
    assert page.input_value("#title-input") == "Renamed inline"

    page.fill("#search-sidebar", "keep")  # searches as one types
    wait_for(lambda: page.locator("#chat-list li a").all_inner_texts() == ["Keep this one"], message="the search")
    page.fill("#search-sidebar", "")
    wait_for(lambda: len(page.locator("#chat-list li a").all_inner_texts()) == 2, message="the full list again")

    assert page.locator(".message.assistant.status-streaming").count() == 1
    page.click("a.delete-chat")
    page.click("button:text('Delete chat')")
    page.wait_for_selector("h1:text('Your chats')")
    assert page.locator("#chat-list li a").all_inner_texts() == ["Keep this one"]
    assert page.goto(f"{server.url}/agent/helper/{chat_id}").status == 404
    assert latest_reply(server.app, chat_id) is None
    assert [charge.message_id for charge in charges(server.app, titles=False)].count(None) == 1, "billed once"


def test_fenced_code_is_highlighted_under_its_language_and_stays_inert():
    from chat.web.markdown import render_markdown

    html = render_markdown(
        '```python\ndef f():\n    return "<b>"\n```\n\n```"><img src=x>\nx < y\n```\n\n```\nplain\n```'
    )
    assert '<div class="code-lang">python</div>' in html
    assert '<span class="k">def</span>' in html and "&lt;b&gt;" in html, "highlighted, and still escaped"
    assert "<img" not in html and "x &lt; y" in html, "a hostile language name or body stays text"
    assert html.count('<div class="code-block">') == 3


@pytest.mark.browser
def test_a_code_block_in_a_reply_is_highlighted_and_its_copy_button_copies_the_code(live_server, browser_context):
    fake = FakeOpenAI()
    fake.words = ["Here:\n\n", "```python\n", "def add(a, b):\n", "    return a + b\n", "```\n", "Done."]
    try:
        server = live_server(OPENAI_API_KEY="sk-test-not-a-real-key", OPENAI_BASE_URL=fake.base_url)
        page = browser_context(permissions=["clipboard-read", "clipboard-write"]).new_page()
        page.goto(f"{server.url}/agent/helper")
        submit(page, "Show me code")
        wait_finished(page)
        block = page.locator(".message.assistant .code-block")
        assert block.locator(".code-lang").inner_text() == "python"
        assert block.locator("span.k").first.inner_text() == "def"
        block.locator("button.copy-code").click()
        assert page.evaluate("navigator.clipboard.readText()") == "def add(a, b):\n    return a + b\n"
    finally:
        fake.close()
