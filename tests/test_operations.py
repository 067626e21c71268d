"""What an operator sees and does: readiness with the schema's migration state, live replies,
reaping orphans — against the real database and Redis."""

from __future__ import annotations

import redis

from chat import create_app
from chat.streams import chat_key
from helpers.chats import latest_reply, new_chat_id, post_chat, wait_for
from helpers.sse import read_events


def test_readyz_needs_the_database_redis_and_migrations_at_head(app, client, tmp_path, redis_url):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {
        "database": "ok",
        "redis": "ok",
        "migrations": "ok",
    }
    behind = create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'old.sqlite3'}", "REDIS_URL": redis_url, "SECRET_KEY": "x"}
    )
    from flask_migrate import upgrade

    with behind.app_context():
        upgrade(revision="8d06aff2cb9d")  # the schema before accounts
    response = behind.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["migrations"].startswith("at 8d06aff2cb9d, the code needs ")
    assert behind.test_client().get("/healthz").status_code == 200, "alive, just not ready"
    behind.extensions["redis"].close()
    with behind.app_context():
        from chat.extensions import db

        db.engine.dispose()


def test_replies_status_and_reap_finish_an_orphaned_reply(app_factory, redis_url):
    app = app_factory(DEMO_MODEL_WORDS=400, DEMO_MODEL_DELAY_MS=20, REAPER_INTERVAL_SECONDS=0)
    client = app.test_client()
    chat_id = new_chat_id()
    head = read_events(post_chat(client, chat_id), stop_after=4)
    runner = app.test_cli_runner()
    status = runner.invoke(args=["replies", "status"])
    assert f"chat {chat_id}" in status.output and "generating" in status.output and "1 replies" in status.output
    # Its producer's claim lapses, as when its process dies without a word.
    admin = redis.Redis.from_url(redis_url)
    admin.delete(chat_key(chat_id, "live"))
    admin.close()
    assert "producer gone" in runner.invoke(args=["replies", "status"]).output
    assert "1 replies interrupted." in runner.invoke(args=["replies", "reap"]).output
    stored = latest_reply(app, chat_id)
    assert stored.status == "interrupted" and stored.content.startswith(head.text)
    assert "0 replies generating." in runner.invoke(args=["replies", "status"]).output


def scrape(client) -> dict[str, float]:
    """The /metrics samples, by name with labels."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_move_with_replies_streams_and_requests(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=200, DEMO_MODEL_DELAY_MS=10)
    client = app.test_client()
    before = scrape(client)
    chat_id = new_chat_id()
    head = read_events(post_chat(client, chat_id), stop_after=3)
    during = scrape(client)
    assert during["durable_chat_live_replies"] >= 1 and during["durable_chat_open_streams"] >= 0
    read_events(client.get(f"/api/chat?chatId={chat_id}", headers={"Last-Event-ID": head.last_id}, buffered=False))
    after = scrape(client)

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert moved("durable_chat_replies_started_total") == 1
    assert moved('durable_chat_replies_finished_total{outcome="stop"}') == 1
    assert moved("durable_chat_deltas_written_total") >= 3
    assert moved("durable_chat_resumes_total") == 1
    assert moved("durable_chat_finish_seconds_count") == 1
    assert moved("durable_chat_reader_lag_seconds_count") >= 2, "each client's first batch at least"
    assert moved('durable_chat_http_requests_total{route="/api/chat",status="200"}') == 2
    wait_for(
        lambda: scrape(client)["durable_chat_live_replies"] <= before.get("durable_chat_live_replies", 0),
        message="the live-replies gauge to fall back once its producer ended",
    )


def test_json_logs_carry_a_line_per_request_and_per_reply_event(app_factory, caplog):
    import json
    import logging

    from chat.web.structured_logs import JsonLines

    app = app_factory(LOG_FORMAT="json", DEMO_MODEL_WORDS=200, DEMO_MODEL_DELAY_MS=10)
    client = app.test_client()
    chat_id = new_chat_id()
    with caplog.at_level(logging.INFO, logger="durable_chat.events"):
        head = read_events(post_chat(client, chat_id), stop_after=3)
        client.get(f"/api/chat?chatId={chat_id}", headers={"Last-Event-ID": head.last_id}, buffered=False).close()
        client.post("/api/chat/stop", json={"chatId": chat_id})
        wait_for(lambda: any("reply.finish" in r.getMessage() for r in caplog.records), message="the finish event")
    with app.test_request_context():
        lines = [json.loads(JsonLines().format(record)) for record in caplog.records]
    by_event = {line["event"]: line for line in lines if "event" in line}
    assert {"reply.start", "reply.resume", "reply.stop", "reply.finish", "request"} <= set(by_event)
    assert by_event["reply.start"]["chat"] == chat_id and by_event["reply.start"]["stream"]
    assert by_event["reply.finish"]["outcome"] == "cancelled" and by_event["reply.finish"]["seconds"] >= 0
    request = next(line for line in lines if line.get("event") == "request" and line["route"] == "/api/chat/stop")
    assert request["status"] == 200 and request["ms"] >= 0 and request["request_id"]
    assert all(line["pid"] and line["level"] == "info" for line in lines)
