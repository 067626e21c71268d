"""Fork from here: the chat up to a message, with its versions as they were, as a new chat of the
caller's; the original is untouched. A plain form post (works without JavaScript)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from chat.extensions import db
from chat.models import Chat, Message, turn_versions
from helpers.chats import new_chat_id, post_chat, wait_for
from helpers.sse import read_events


def messages_of(app, chat_id) -> list[tuple[str, str, bool]]:
    with app.app_context():
        rows = db.session.scalars(
            select(Message).where(Message.chat_id == uuid.UUID(str(chat_id))).order_by(Message.position)
        )
        return [(m.role, m.content, m.superseded) for m in rows]


def assistant_ids(app, chat_id) -> list[uuid.UUID]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(Message.id)
                .where(Message.chat_id == uuid.UUID(chat_id), Message.role == "assistant")
                .order_by(Message.position)
            )
        )


def fork(client, chat_id, message_id):
    return client.post(f"/agent/helper/{chat_id}/messages/{message_id}/fork")


def test_fork_at_the_first_a_middle_and_the_last_message_copies_up_to_it(app, client):
    chat_id = new_chat_id()
    for word in ("apple", "banana", "cherry"):
        read_events(post_chat(client, chat_id, word))
    assert client.post(f"/agent/helper/{chat_id}/regenerate").status_code == 303
    wait_for(lambda: messages_of(app, chat_id)[-1][1] != "", message="the new version")
    wait_for(lambda: read_events(client.get(f"/api/chat?chatId={chat_id}", buffered=False)).terminal, message="done")
    original = messages_of(app, chat_id)
    first, middle, *_, last = assistant_ids(app, chat_id)
    for message_id, expected in ((first, original[:2]), (middle, original[:4]), (last, original)):
        response = fork(client, chat_id, message_id)
        assert response.status_code == 303
        fork_id = response.headers["Location"].rsplit("/", 1)[-1]
        assert fork_id != chat_id
        assert messages_of(app, fork_id) == expected
        assert client.get(response.headers["Location"]).status_code == 200
    assert messages_of(app, chat_id) == original, "the original is untouched"
    with app.app_context():
        forked = db.session.scalars(select(Message).where(Message.chat_id == uuid.UUID(fork_id))).all()
        replies = [m for m in forked if m.role == "assistant"]
        assert len(turn_versions(replies[-1].turn_id)) == 2, "the last turn keeps both versions"
        assert all(m.cost_micros is None and m.stream_id is None for m in forked), "nothing in it was billed"
        assert db.session.get(Chat, uuid.UUID(fork_id)).title.endswith("(fork)")
    read_events(post_chat(client, fork_id, "durian"))  # the fork goes on as a chat of its own
    assert messages_of(app, fork_id)[-2][1] == "durian" and len(messages_of(app, chat_id)) == len(original)


def test_another_person_cannot_fork_your_chat_and_a_reply_being_written_cannot_be_forked(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=300, DEMO_MODEL_DELAY_MS=20)
    owner, stranger = app.test_client(), app.test_client()
    chat_id = new_chat_id()
    live = post_chat(owner, chat_id)
    read_events(live, stop_after=2)
    [streaming] = assistant_ids(app, chat_id)
    assert fork(stranger, chat_id, streaming).status_code == 404
    refused = fork(owner, chat_id, streaming)
    assert refused.status_code == 409 and "still being written" in refused.get_data(as_text=True)
    assert fork(owner, chat_id, uuid.uuid4()).status_code == 404
    live.close()
