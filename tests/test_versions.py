"""Regenerate the last reply and edit-and-resend the last message: each is a new version of the
turn, streamed, resumable and billed once; earlier versions stay readable and are never sent to
the model again; a regenerate while a reply is live is a 409."""

from __future__ import annotations

import re

import pytest

from helpers.browser import submit, wait_finished
from helpers.chats import charges, latest_reply, new_chat_id, post_chat, wait_for
from helpers.sse import read_events


def sent_to_model(provider) -> list[tuple[str, str]]:
    """The conversation of the model's last streamed request (system prompt left out)."""
    body = [request for request in provider.requests if request["body"].get("stream")][-1]["body"]
    return [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]


def finished(app, chat_id: str):
    return wait_for(lambda: (r := latest_reply(app, chat_id)) and not r.is_pending and r, message="the reply to end")


def test_regenerate_makes_a_second_version_billed_once_more_and_the_first_stays_readable(model_app, provider):
    client = model_app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "Explain cursors"))
    first = latest_reply(model_app, chat_id)
    provider.words = ["A ", "second ", "answer."]
    regenerated = client.post(f"/agent/helper/{chat_id}/regenerate")
    assert regenerated.status_code == 303
    second = finished(model_app, chat_id)
    assert second.id != first.id and second.content == "A second answer." and second.status == "complete"
    assert sent_to_model(provider) == [("user", "Explain cursors")], "the earlier reply is not sent again"
    assert len(charges(model_app, titles=False)) == 2, "each version billed once"
    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert "A second answer." in page and first.content not in page and "2 / 2" in page
    assert page.count("Explain cursors") >= 1 and page.count('class="message user') == 1
    older = re.search(r'href="([^"]+version=1)"', page).group(1).replace("&amp;", "&")
    shown = client.get(older).get_data(as_text=True)
    assert first.content in shown and "1 / 2" in shown and "A second answer." not in shown


def test_edit_and_resend_replaces_the_last_turn_and_keeps_the_earlier_version(model_app, provider):
    client = model_app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "First question"))
    read_events(post_chat(client, chat_id, "Second question with a typo"))
    edited = client.post(f"/agent/helper/{chat_id}/edit", data={"message": "Second question, fixed"})
    assert edited.status_code == 303
    finished(model_app, chat_id)
    history = sent_to_model(provider)
    assert history[-1] == ("user", "Second question, fixed")
    assert all("typo" not in text for _, text in history), "the replaced message is not sent again"
    assert history[0] == ("user", "First question"), "earlier turns still are"
    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert "Second question, fixed" in page and "typo" not in page and "2 / 2" in page
    assert len(charges(model_app, titles=False)) == 3
    assert client.post(f"/agent/helper/{chat_id}/edit", data={"message": "  "}).status_code == 400


def test_regenerate_or_edit_while_a_reply_is_live_is_a_409_and_changes_nothing(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=400, DEMO_MODEL_DELAY_MS=10)
    client = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id), stop_after=3)
    live = latest_reply(app, chat_id)
    for path, form in (("regenerate", {}), ("edit", {"message": "changed my mind"})):
        refused = client.post(f"/agent/helper/{chat_id}/{path}", data=form, headers={"HX-Request": "true"})
        assert refused.status_code == 409, path
        assert "reply" in refused.get_data(as_text=True).lower()
    assert latest_reply(app, chat_id).id == live.id
    client.post(f"/agent/helper/{chat_id}/stop")


@pytest.mark.browser
def test_in_the_browser_regenerate_switch_versions_and_edit(live_server, page):
    server = live_server(DEMO_MODEL_WORDS=30, DEMO_MODEL_DELAY_MS=20)
    page.goto(f"{server.url}/agent/helper")
    submit(page, "Tell me about streams")
    wait_finished(page)
    page.click(".message.assistant form.regenerate button")
    # A 0.6 s reply may be over before a loaded machine shows the page: wait for its outcome.
    page.wait_for_selector(".message.assistant .versions .version:text('2 / 2')", timeout=20_000)
    wait_finished(page)
    assert page.inner_text(".message.assistant .versions .version") == "2 / 2"
    page.click(".message.assistant .versions a[rel=prev]")
    page.wait_for_selector(".versions .version:text('1 / 2')")
    page.click(".message.assistant .versions a[rel=next]")
    page.wait_for_selector(".versions .version:text('2 / 2')")
    page.click(".message.user .edit-message summary")
    page.fill(".message.user .edit-message textarea", "Tell me about cursors instead")
    page.click(".message.user .edit-message button")
    page.wait_for_selector(".message.assistant .versions .version:text('3 / 3')", timeout=20_000)
    wait_finished(page)
    assert page.locator(".message.user").all_inner_texts()[-1].count("cursors instead") == 1
    assert page.inner_text(".message.assistant .versions .version") == "3 / 3"
    chat_id = page.evaluate("location.pathname").rstrip("/").split("/")[-1]
    assert len(charges(server.app, titles=False)) == 3
    assert "cursors instead" in latest_reply(server.app, chat_id).content
