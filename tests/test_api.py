"""The HTTP contract of api.md: POST/GET /api/chat, stop, errors, healthz."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from chat.agents import load_agents
from chat.agents.demo import demo_reply
from chat.config import Config
from chat.extensions import db
from chat.models import Chat, ChatStream, Message
from chat.streams.sse import parse_event_id
from helpers.chats import charges, new_chat_id, post_chat, wait_for
from helpers.sse import read_events

AGENTS = load_agents(Config.AGENTS_FILE)


def stored_messages(app, chat_id):
    with app.app_context():
        return [
            (m.role, m.content, m.status)
            for m in db.session.scalars(
                select(Message).where(Message.chat_id == uuid.UUID(chat_id)).order_by(Message.position)
            )
        ]


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model)) or 0


def test_post_streams_start_deltas_finish_with_increasing_ids(app, client):
    chat_id = new_chat_id()
    response = post_chat(client, chat_id, "tell me about streams")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    transcript = read_events(response)

    kinds = [e.event for e in transcript.events]
    assert kinds[0] == "start" and kinds[-1] == "finish" and set(kinds[1:-1]) == {"delta"}
    ids = [parse_event_id(e.id) for e in transcript.events]
    assert all(e.id for e in transcript.events), "every event carries an id"
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids increase within a stream"

    start = transcript.events[0].json()
    assert start["chatId"] == chat_id and start["streamId"] and start["messageId"]
    finish = transcript.terminal.json()
    assert finish["finishReason"] == "stop"
    assert finish["usage"]["promptTokens"] > 0 and finish["usage"]["completionTokens"] > 0
    assert transcript.text == demo_reply(AGENTS["helper"], "tell me about streams", 12)


def test_reply_is_stored_once_with_status_and_usage(app, client):
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "store me"))
    assert stored_messages(app, chat_id) == [
        ("user", "store me", "complete"),
        ("assistant", transcript.text, "complete"),
    ]
    with app.app_context():
        reply = db.session.scalar(select(Message).where(Message.role == "assistant"))
        assert reply.id == uuid.UUID(transcript.events[0].json()["messageId"])
        assert reply.completion_tokens == transcript.terminal.json()["usage"]["completionTokens"]
        assert db.session.scalar(select(ChatStream.stream_id)) == transcript.events[0].json()["streamId"]
    assert len(charges(app)) == 1


def test_second_message_continues_the_same_chat(app, client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "first"))
    read_events(post_chat(client, chat_id, "second"))
    roles = [role for role, _, _ in stored_messages(app, chat_id)]
    assert roles == ["user", "assistant", "user", "assistant"]


@pytest.mark.parametrize(
    "body, status, error",
    [
        ("not json", 400, "must be a JSON object"),
        ({"agent": "helper", "message": "hi"}, 400, "chatId is required"),
        ({"chatId": "1234", "agent": "helper", "message": "hi"}, 400, "is not a UUID"),
        ({"chatId": str(uuid.uuid4()), "agent": "nobody", "message": "hi"}, 404, "Unknown agent"),
        ({"chatId": str(uuid.uuid4()), "agent": "helper", "message": "   "}, 400, "must be non-empty"),
        ({"chatId": str(uuid.uuid4()), "agent": "helper", "message": "x" * 8001}, 400, "too long"),
    ],
)
def test_bad_input_is_refused_with_a_message_and_nothing_stored(app, client, body, status, error):
    if isinstance(body, str):
        response = client.post("/api/chat", data=body, content_type="application/json")
    else:
        response = client.post("/api/chat", json=body)
    assert response.status_code == status
    assert error in response.get_json()["error"]
    assert count(app, Chat) == 0 and count(app, Message) == 0


def test_a_chat_of_another_identity_is_404_everywhere(app, client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    stranger = app.test_client()
    assert stranger.get(f"/api/chat?chatId={chat_id}").status_code == 404
    assert stranger.post("/api/chat/stop", json={"chatId": chat_id}).status_code == 404
    response = post_chat(stranger, chat_id, "let me in")
    assert response.status_code == 404
    assert stranger.get(f"/agent/helper/{chat_id}").status_code == 404
    assert count(app, Message) == 2


def test_wrong_agent_for_existing_chat_is_400(app, client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    response = post_chat(client, chat_id, agent="coder")
    assert response.status_code == 400 and "helper" in response.get_json()["error"]


def test_second_post_while_live_is_409_and_starts_nothing(app_factory):
    app = app_factory(DEMO_MODEL_DELAY_MS=50)
    client = app.test_client()
    chat_id = new_chat_id()
    first = post_chat(client, chat_id, "same message")
    again = post_chat(client, chat_id, "same message")
    assert again.status_code == 409
    assert "already being generated" in again.get_json()["error"]
    read_events(first)
    assert [r for r, _, _ in stored_messages(app, chat_id)] == ["user", "assistant"]


def test_get_without_any_reply_is_204_and_unknown_chat_is_404(app, client):
    assert client.get(f"/api/chat?chatId={new_chat_id()}").status_code == 404
    assert client.get("/api/chat?chatId=nope").status_code == 400
    assert client.get("/api/chat").status_code == 400


def test_get_rejects_a_malformed_last_event_id(app, client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    response = client.get(f"/api/chat?chatId={chat_id}", headers={"Last-Event-ID": "drop table"})
    assert response.status_code == 400 and "Last-Event-ID" in response.get_json()["error"]


def test_get_after_stream_expired_falls_back_to_the_stored_message(app_factory, redis_url):
    import redis as redis_lib

    app = app_factory()
    client = app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id))
    redis_lib.Redis.from_url(redis_url).flushdb()  # as if the retention TTL had passed
    fallback = read_events(client.get(f"/api/chat?chatId={chat_id}", buffered=False))
    assert [e.event for e in fallback.events] == ["delta", "finish"]
    assert fallback.text == transcript.text
    assert all(e.id for e in fallback.events)


def test_stop_ends_the_reply_cancelled_and_keeps_the_partial(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=400, DEMO_MODEL_DELAY_MS=10)
    client = app.test_client()
    chat_id = new_chat_id()
    response = post_chat(client, chat_id)
    read_events(response, stop_after=4)
    stopped = client.post("/api/chat/stop", json={"chatId": chat_id})
    assert stopped.status_code == 200 and stopped.get_json()["status"] == "cancelled"
    transcript = read_events(client.get(f"/api/chat?chatId={chat_id}", buffered=False))
    assert transcript.terminal.json()["finishReason"] == "cancelled"
    (_, _, _), (_, content, status) = stored_messages(app, chat_id)
    assert status == "cancelled" and content == transcript.text and 0 < len(content)
    assert client.post("/api/chat/stop", json={"chatId": chat_id}).status_code == 204


def test_healthz_ok(app, client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json()["status"] == "ok"


def test_healthz_503_when_redis_is_down(app_factory):
    from helpers.servers import free_port

    app = app_factory(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_SOCKET_TIMEOUT_MS=500)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["redis"].startswith("unreachable")


def test_post_answers_503_when_redis_is_down_and_stores_nothing(app_factory):
    from helpers.servers import free_port

    app = app_factory(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_SOCKET_TIMEOUT_MS=500)
    response = post_chat(app.test_client(), new_chat_id())
    assert response.status_code == 503 and "Redis" in response.get_json()["error"]
    assert count(app, Message) == 0


def test_flag_off_streams_directly_and_get_returns_the_stored_message(app_factory, redis_url):
    import redis as redis_lib

    app = app_factory(resumable=False)
    client = app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "no redis please"))
    assert [e.event for e in transcript.events][0] == "start" and transcript.terminal.event == "finish"
    assert transcript.text == demo_reply(AGENTS["helper"], "no redis please", 12)
    again = read_events(client.get(f"/api/chat?chatId={chat_id}", buffered=False))
    assert again.text == transcript.text and again.terminal.json()["finishReason"] == "stop"
    assert redis_lib.Redis.from_url(redis_url).dbsize() == 0, "the flag-off path writes nothing to Redis"
    wait_for(lambda: stored_messages(app, chat_id)[-1][2] == "complete")


@pytest.mark.slow
def test_flag_off_get_while_a_reply_is_pending_is_204_not_the_previous_reply(app_factory):
    app = app_factory(resumable=False, DEMO_MODEL_WORDS=200, DEMO_MODEL_DELAY_MS=10)
    client = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "first"))
    pending = post_chat(client, chat_id, "second")
    read_events(pending, stop_after=2)
    assert client.get(f"/api/chat?chatId={chat_id}").status_code == 204
    wait_for(lambda: stored_messages(app, chat_id)[-1][2] == "complete")
    final = read_events(client.get(f"/api/chat?chatId={chat_id}", buffered=False))
    assert final.text == stored_messages(app, chat_id)[-1][1]
