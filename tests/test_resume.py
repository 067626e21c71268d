"""Resuming: every disconnect point, second readers, hammering at finish, Redis failures."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from chat.extensions import db
from chat.models import Message
from helpers.chats import charges, hammer_resumes, latest_reply, new_chat_id, post_chat, resume, wait_for
from helpers.sse import read_events


def test_disconnect_after_every_event_then_resume_gives_exactly_the_stored_text(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=10, DEMO_MODEL_DELAY_MS=15, STREAM_FLUSH_MS=5)
    client = app.test_client()
    full = read_events(post_chat(client, new_chat_id(), "warm up"))
    total = len(full.events)
    assert total > 5
    for k in range(1, total + 1):
        chat_id = new_chat_id()
        first = read_events(post_chat(client, chat_id, "warm up"), stop_after=k)
        rest = read_events(resume(client, chat_id, first.last_id, via_query=k % 2 == 0))
        ids = [e.id for e in first.events + rest.events]
        assert len(ids) == len(set(ids)), f"duplicate event after disconnecting at {k}"
        text = first.text + rest.text
        wait_for(lambda chat_id=chat_id: latest_reply(app, chat_id).status == "complete")
        assert text == latest_reply(app, chat_id).content, f"gap or duplicate after disconnecting at {k}"
        assert text == full.text


def test_resume_without_cursor_replays_from_the_first_event(app_factory):
    app = app_factory(DEMO_MODEL_DELAY_MS=20)
    client = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id), stop_after=3)
    again = read_events(resume(client, chat_id))
    assert again.events[0].event == "start"
    wait_for(lambda: latest_reply(app, chat_id).status == "complete")
    assert again.text == latest_reply(app, chat_id).content


def test_second_tab_joining_mid_reply_ends_with_the_same_text(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=30, DEMO_MODEL_DELAY_MS=20)
    first_tab = app.test_client()
    chat_id = new_chat_id()
    response = post_chat(first_tab, chat_id, "share this")
    head = read_events(response, stop_after=5)
    # A second tab: another client carrying a copy of the same identity cookie.
    second_tab = app.test_client()
    cookie = first_tab.get_cookie(app.config["SESSION_COOKIE_NAME"])
    second_tab.set_cookie(cookie.key, cookie.value)
    joined = read_events(resume(second_tab, chat_id))
    rest = read_events(resume(first_tab, chat_id, head.last_id))
    stored = latest_reply(app, chat_id).content
    assert joined.text == stored and head.text + rest.text == stored
    assert joined.terminal.json()["finishReason"] == "stop"


def test_fifty_concurrent_resumes_while_the_reply_finishes_store_and_bill_once(app_factory, live_server):
    app = app_factory(DEMO_MODEL_WORDS=60, DEMO_MODEL_DELAY_MS=8)
    server = live_server(app)
    chat_id = new_chat_id()
    results = hammer_resumes(server.url, chat_id, "helper", readers=60)
    stored = latest_reply(app, chat_id)
    assert stored.status == "complete"
    assert set(results) == {stored.content}
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message).where(Message.role == "assistant")) == 1
    [charge] = charges(app)
    assert charge.cost_micros == stored.cost_micros


def test_many_finishers_at_once_record_exactly_one_outcome(app_factory):
    """Producer, stop and reaper racing to finish one reply: one stored outcome, one charge."""
    app = app_factory(DEMO_MODEL_WORDS=40, DEMO_MODEL_DELAY_MS=5)
    client = app.test_client()
    chat_id = new_chat_id()
    start = read_events(post_chat(client, chat_id), stop_after=2).events[0].json()
    runtime = app.extensions["replies"].runtime
    from chat.replies.finish import finish_reply
    from chat.streams import StreamRef
    from chat.vocabulary import FinishReason

    ref = StreamRef(chat_id, start["streamId"])

    def finish(reason):
        with app.app_context():
            finish_reply(runtime.backend, runtime.agents, ref, FinishReason(reason))

    threads = [threading.Thread(target=finish, args=(["interrupted", "cancelled"][n % 2],)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    transcript = read_events(resume(client, chat_id))
    stored = latest_reply(app, chat_id)
    assert stored.status in ("interrupted", "cancelled", "complete")
    assert transcript.terminal.json()["finishReason"] == stored.finish_reason
    assert transcript.text == stored.content
    assert len(charges(app)) == 1
    finishes = [e for e in transcript.events if e.event in ("finish", "error")]
    assert len(finishes) == 1


def test_a_producer_that_stops_heartbeating_is_marked_interrupted(app_factory):
    """Stand-in for a dead process inside one test process: its pump stops, its claim expires."""
    app = app_factory(DEMO_MODEL_WORDS=200, DEMO_MODEL_DELAY_MS=20, PRODUCER_TIMEOUT_MS=600)
    client = app.test_client()
    chat_id = new_chat_id()
    head = read_events(post_chat(client, chat_id), stop_after=4)
    app.extensions["replies"].runtime.pump.stop()  # no more writes, no more heartbeats
    transcript = read_events(resume(client, chat_id, head.last_id))
    assert transcript.terminal.json()["finishReason"] == "interrupted"
    stored = latest_reply(app, chat_id)
    assert stored.status == "interrupted"
    assert head.text + transcript.text == stored.content


@pytest.mark.slow
@pytest.mark.parametrize("data_kept", [True, False], ids=["redis-kept-its-data", "redis-lost-its-data"])
def test_redis_restarted_mid_reply_keeps_clients_and_database_in_agreement(app_factory, tmp_path, data_kept):
    """Redis dies under a live reply (even mid-write) and comes back with or without its data."""
    from chat.embedded_redis import start_redis_server, stop_redis_server
    from helpers.servers import free_port

    port = free_port()
    url, process = start_redis_server(tmp_path / "redis", port=port)
    app = app_factory(DEMO_MODEL_WORDS=300, DEMO_MODEL_DELAY_MS=10, REDIS_URL=url, REDIS_SOCKET_TIMEOUT_MS=1000)
    client = app.test_client()
    chat_id = new_chat_id()
    try:
        head = read_events(post_chat(client, chat_id), stop_after=3)
        following = resume(client, chat_id, head.last_id)
        stop_redis_server(process)  # saves its data to disk on the way down
        tail = read_events(following)
        assert tail.terminal is not None and tail.terminal.event == "error", "the client is told instead of hanging"
        assert "Redis" in tail.terminal.json()["message"]
        assert post_chat(client, new_chat_id()).status_code == 503
        # The producer keeps what it wrote, provisionally: the outcome waits for the log.
        wait_for(lambda: len(latest_reply(app, chat_id).content) >= len(head.text) > 0, message="the provisional text")
        assert latest_reply(app, chat_id).status == "streaming"
        if not data_kept:
            (tmp_path / "redis" / "dump.rdb").unlink()
        url, process = start_redis_server(tmp_path / "redis", port=port)
        final = read_events(resume(client, chat_id))
        stored = latest_reply(app, chat_id)
        # Finished from the log by whoever got there first once Redis was back: a reader or the
        # reaper ("interrupted"), or the producer's own retry ("error", naming Redis).
        assert stored.status in ("interrupted", "error")
        assert final.text == stored.content and final.text.startswith(head.text)
        if stored.status == "error":
            assert final.terminal.event == "error" and "Redis" in final.terminal.json()["message"]
        else:
            assert final.terminal.json()["finishReason"] == "interrupted"
        # The app recovers without a restart.
        assert read_events(post_chat(client, chat_id, "again")).terminal.event == "finish"
    finally:
        stop_redis_server(process)


@pytest.mark.slow
def test_a_short_redis_restart_mid_reply_is_ridden_out(app_factory, tmp_path):
    """Redis restarts (keeping its data) faster than the producer timeout: the reply just goes on."""
    import time

    from chat.embedded_redis import start_redis_server, stop_redis_server
    from helpers.servers import free_port

    port = free_port()
    url, process = start_redis_server(tmp_path / "redis", port=port)
    app = app_factory(
        DEMO_MODEL_WORDS=150,
        DEMO_MODEL_DELAY_MS=10,
        REDIS_URL=url,
        REDIS_SOCKET_TIMEOUT_MS=1000,
        PRODUCER_TIMEOUT_MS=4000,
    )
    client = app.test_client()
    chat_id = new_chat_id()
    try:
        head = read_events(post_chat(client, chat_id), stop_after=3)
        following = resume(client, chat_id, head.last_id)
        stop_redis_server(process)
        time.sleep(1.5)  # longer than redis-py's own reconnect attempts
        url, process = start_redis_server(tmp_path / "redis", port=port)
        tail = read_events(following)
        assert tail.terminal.event == "finish" and tail.terminal.json()["finishReason"] == "stop"
        stored = latest_reply(app, chat_id)
        assert stored.status == "complete"
        assert head.text + tail.text == stored.content, "no delta lost or doubled by the retry"
        assert read_events(resume(client, chat_id)).text == stored.content
    finally:
        stop_redis_server(process)


@pytest.mark.slow
def test_redis_keeps_nothing_of_finished_chats_after_the_retention_time(app_factory, redis_url):
    import time

    import redis as redis_lib

    app = app_factory(STREAM_TTL_SECONDS=1, CHAT_STREAMS_TTL_SECONDS=2)
    client = app.test_client()
    for n in range(20):
        read_events(post_chat(client, new_chat_id(), f"chat {n}"))
    admin = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    assert admin.dbsize() > 20
    time.sleep(2.5)
    # The reader's wake-up stream lives with the process; rate-limit counts live for their window.
    counts = [key for key in admin.scan_iter() if key.startswith("LIMITS:")]
    assert counts and all(0 < admin.ttl(key) <= 60 for key in counts), "rate-limit counts expire too"
    leftover = [key for key in admin.scan_iter() if not key.startswith(("reader:", "LIMITS:"))]
    assert leftover == [], f"keys outliving their retention: {leftover[:5]}"
    # Still answerable from the database.
    assert client.get("/").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/api/chat?chatId={chat_id}", "/agent/helper/{chat_id}/stream"])
def test_a_reader_that_hangs_up_is_forgotten_by_its_worker(app_factory, path):
    app = app_factory(DEMO_MODEL_WORDS=300, DEMO_MODEL_DELAY_MS=10)
    client = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id), stop_after=2)
    hub = app.extensions["replies"].runtime.hub
    response = client.get(path.format(chat_id=chat_id), buffered=False)
    next(iter(response.response))  # connected and streaming
    assert any(ref.chat_id == chat_id for ref in hub.followers)
    response.close()
    wait_for(
        lambda: not any(ref.chat_id == chat_id for ref in hub.followers),
        timeout=5,
        message="the reader to be unsubscribed",
    )
