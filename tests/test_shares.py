"""Share links: a read-only link to a chat; its viewers watch a reply live from wherever they
joined, each token once; revoking closes it at once; viewers are nobody (no cookie)."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from chat.models import Message
from helpers.chats import latest_reply, new_chat_id, post_chat, wait_for
from helpers.sse import parse_sse, read_events, response_lines


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match, f"the page shows {pattern}"
    return match.group(1)


def share(owner, slug: str, chat_id: str) -> str:
    """Create a link as the owner (the page's form); its path, as the page shows it once."""
    page = owner.get(f"/agent/{slug}/{chat_id}/shares").get_data(as_text=True)
    token = found(r'name="csrf_token" value="([^"]+)"', page)
    made = owner.post(f"/agent/{slug}/{chat_id}/shares", data={"csrf_token": token})
    assert made.status_code == 303
    shown = owner.get(made.headers["Location"]).get_data(as_text=True)
    link = found(r'id="new-link" type="text" readonly value="([^"]+)"', shown)
    assert owner.get(made.headers["Location"]).get_data(as_text=True).count("new-link") == 0, "shown once"
    return "/s/" + link.rsplit("/s/", 1)[1]


def revoke_all(owner, slug: str, chat_id: str) -> None:
    page = owner.get(f"/agent/{slug}/{chat_id}/shares").get_data(as_text=True)
    token = found(r'name="csrf_token" value="([^"]+)"', page)
    for action in re.findall(r'action="(/agent/[^"]+/revoke)"', page):
        assert owner.post(action, data={"csrf_token": token}).status_code == 303


def test_a_shared_page_is_read_only_sets_no_cookie_and_names_no_chat_of_the_owner(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=5)
    owner = app.test_client()
    other_chat, chat_id = new_chat_id(), new_chat_id()
    read_events(post_chat(owner, other_chat, "my other chat"))
    read_events(post_chat(owner, chat_id, "What is 6 * 7?", agent="analyst"))
    path = share(owner, "analyst", chat_id)

    viewer = app.test_client(use_cookies=False)
    answer = viewer.get(path)
    assert answer.status_code == 200
    assert "Set-Cookie" not in answer.headers, "a viewer gets no cookie of any kind"
    assert answer.headers["X-Robots-Tag"].startswith("noindex") and 'name="robots" content="noindex' in (
        page := answer.get_data(as_text=True)
    )
    assert "What is 6 * 7?" in page and "tool-call tool-ok" in page, "the conversation, tool calls included"
    assert other_chat not in page and chat_id not in page, "no chat id of the owner's"
    assert 'class="cost"' not in page and 'class="balance"' not in page and 'class="regenerate"' not in page
    assert 'id="composer"' not in page and 'value="approve"' not in page
    assert "Fork from here" in page
    assert viewer.get(path.replace("/s/", "/s/x")).status_code == 404
    assert app.test_client().get(f"/agent/analyst/{chat_id}").status_code == 404, "the link opens only itself"


def test_revoking_answers_404_at_once_and_ends_a_live_viewers_stream(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=200, DEMO_MODEL_DELAY_MS=20)
    owner = app.test_client()
    chat_id = new_chat_id()
    post = post_chat(owner, chat_id, "a long one")
    path = share(owner, "helper", chat_id)
    viewer = app.test_client(use_cookies=False)
    watching = viewer.get(path + "/stream", buffered=False)
    events = parse_sse(response_lines(watching))
    assert next(e for e in events if e.event in ("block", "tail"))
    revoke_all(owner, "helper", chat_id)
    revoked_at = time.monotonic()
    assert viewer.get(path).status_code == 404
    ending = next(e for e in events if e.event == "done")
    assert ending.data == "gone" and time.monotonic() - revoked_at < 3
    assert latest_reply(app, chat_id).status == "streaming", "the owner's reply goes on"
    assert read_events(post).terminal.json()["finishReason"] == "stop"


def test_a_viewer_forks_a_shared_chat_into_a_chat_of_their_own(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=4)
    owner = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(owner, chat_id, "first"))
    read_events(post_chat(owner, chat_id, "second"))
    path = share(owner, "helper", chat_id)
    with app.app_context():
        first_reply = Message.query.filter_by(chat_id=uuid.UUID(chat_id), position=2).one()
    viewer = app.test_client()
    refused = viewer.post(f"{path}/fork/{first_reply.id}", headers={"Origin": "https://elsewhere.example"})
    assert refused.status_code == 403, "another site's page cannot fork for the viewer"
    forked = viewer.post(f"{path}/fork/{first_reply.id}", headers={"Origin": "http://localhost"})
    assert forked.status_code == 303 and "Set-Cookie" in forked.headers, "the fork's owner is made now"
    page = viewer.get(forked.headers["Location"]).get_data(as_text=True)
    assert "first" in page and "second" not in page
    assert owner.get(f"/agent/helper/{chat_id}").get_data(as_text=True).count('class="message user') == 2


@pytest.mark.browser
def test_viewers_joining_mid_reply_see_it_whole_exactly_once(app_factory, live_server, browser_context):
    """Three viewers join a shared chat at different moments of a reply (and the owner watches):
    each sees what streamed equal the stored reply, every token once."""
    from helpers.axe import violations
    from helpers.browser import send, shown_reply, streamed, wait_finished, wait_for_text

    server = live_server(app_factory(DEMO_MODEL_WORDS=240, DEMO_MODEL_DELAY_MS=40))
    owner = browser_context().new_page()
    owner.goto(f"{server.url}/agent/helper")
    send(owner, "Tell me something long, with Markdown")
    wait_for(lambda: "/agent/helper/" in owner.url and len(owner.url) > 60, message="the chat's address")
    chat_id = owner.url.rsplit("/", 1)[1]
    owner.goto(f"{server.url}/agent/helper/{chat_id}/shares")
    owner.click("text=Create a link")
    link = owner.input_value("#new-link")
    owner.goto(f"{server.url}/agent/helper/{chat_id}")
    viewers = []
    for minimum in (10, 120, 260):
        viewer_context = browser_context()
        viewer = viewer_context.new_page()
        wait_for_text(owner, minimum, timeout=20)
        viewer.goto(link)
        viewers.append(viewer)
        assert viewer_context.cookies() == [], "a viewer gets no cookie"
    assert violations(viewers[0]) == []
    for page in (*viewers, owner):
        wait_finished(page, timeout=30_000)
    stored = latest_reply(server.app, chat_id)
    assert stored.status == "complete"
    for viewer in viewers:
        assert streamed(viewer) == [shown_reply(viewer)], "what streamed is the stored reply, each token once"
        assert viewer.locator("#composer").count() == 0 and viewer.locator(".cost").count() == 0
