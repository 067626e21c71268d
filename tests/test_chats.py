"""Managing one's chats: export as Markdown and JSON (yours only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.browser import send, wait_finished
from helpers.chats import latest_reply, new_chat_id, post_chat
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
    server = live_server()
    page.goto(f"{server.url}/agent/helper")
    send(page, "Download me")
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
