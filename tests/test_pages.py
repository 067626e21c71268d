"""Server-rendered pages, the no-JavaScript form, and escaping."""

from __future__ import annotations

import re
import uuid

from chat.agents import load_agents
from chat.agents.demo import demo_reply
from chat.config import Config
from helpers.chats import new_chat_id, post_chat, wait_for
from helpers.sse import read_events

AGENTS = load_agents(Config.AGENTS_FILE)


def test_home_lists_the_agents_and_sets_a_guest_cookie(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for agent in AGENTS.values():
        assert agent.name in page and f'href="/agent/{agent.slug}"' in page
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_new_chat_page_has_a_form_that_works_without_javascript(client):
    page = client.get("/agent/helper").get_data(as_text=True)
    form = re.search(r'<form id="composer"[^>]*action="(/agent/helper/[0-9a-f-]{36}/messages)"', page, re.S)
    assert form and 'method="post"' in page and 'name="message"' in page
    assert "Helper" in page and AGENTS["helper"].description in page


def test_unknown_agent_and_unknown_or_foreign_chat_are_404(client, app):
    assert client.get("/agent/nobody").status_code == 404
    assert client.get(f"/agent/helper/{uuid.uuid4()}").status_code == 404
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    assert client.get(f"/agent/helper/{chat_id}").status_code == 200
    assert client.get(f"/agent/coder/{chat_id}").status_code == 404
    assert app.test_client().get(f"/agent/helper/{chat_id}").status_code == 404


def test_form_post_redirects_and_the_page_eventually_shows_the_reply(client):
    chat_id = new_chat_id()
    response = client.post(f"/agent/helper/{chat_id}/messages", data={"message": "no javascript here"})
    assert response.status_code == 303 and response.headers["Location"] == f"/agent/helper/{chat_id}"
    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert "no javascript here" in page
    if "status-streaming" in page:
        assert '<meta http-equiv="refresh"' in page, "a pending reply refreshes itself without JavaScript"
    expected = demo_reply(AGENTS["helper"], "no javascript here", 12).split("\n\n")[1]

    def finished():
        html = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
        return html if "status-complete" in html and "status-streaming" not in html else None

    html = wait_for(finished)
    assert expected in html
    assert '<meta http-equiv="refresh"' not in html


def test_form_errors_are_shown_on_the_page_and_keep_the_draft(client):
    chat_id = new_chat_id()
    response = client.post(f"/agent/helper/{chat_id}/messages", data={"message": "x" * 9000})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "too long" in page and "x" * 100 in page


def test_htmx_send_returns_the_turn_fragment_with_a_stream_connection(client):
    chat_id = new_chat_id()
    response = client.post(
        f"/agent/helper/{chat_id}/messages", data={"message": "fragment please"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<html" not in html and "fragment please" in html
    assert f'sse-connect="/agent/helper/{chat_id}/stream' in html and 'sse-close="done"' in html
    assert response.headers["HX-Push-Url"] == f"/agent/helper/{chat_id}"
    assert "HX-Request" in response.headers["Vary"]


def test_user_text_is_escaped_and_reply_markdown_is_sanitised(client):
    chat_id = new_chat_id()
    evil = "<script>alert(1)</script> <img src=x onerror=alert(2)>"
    read_events(post_chat(client, chat_id, evil))
    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The demo reply echoes the message inside Markdown emphasis; it is rendered as text, not HTML.
    assert "<em>&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_browser_stream_always_answers_200_and_ends_with_done(client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    response = client.get(f"/agent/helper/{chat_id}/stream?lastEventId=garbage", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    transcript = read_events_until_done(response)
    assert transcript[-1] == "done"


def read_events_until_done(response) -> list[str]:
    from helpers.sse import parse_sse, response_lines

    names = []
    for event in parse_sse(response_lines(response)):
        names.append(event.event)
        if event.event == "done":
            break
    response.close()
    return names
