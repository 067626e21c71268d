"""The app as it runs in production: gunicorn with gevent workers, killed for real."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select

from chat.models import Message
from helpers.chats import new_chat_id
from helpers.gunicorn import worker_pids
from helpers.sse import SseEvent, parse_sse, read_events

pytestmark = pytest.mark.slow


@pytest.fixture
def gunicorn(gunicorn_server):
    """Two gevent workers on the test database and Redis; yields (url, master process)."""
    server = gunicorn_server()
    return server.url, server.process


def post_raw(
    url: str, chat_id: str, message: str
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, int, str]:
    """POST over a connection we own, to learn its local port (and so which worker serves it)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(
        "POST",
        "/api/chat",
        body=json.dumps({"chatId": chat_id, "agent": "helper", "message": message}),
        headers={"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    cookie = (response.getheader("Set-Cookie") or "").split(";")[0]
    return conn, response, conn.sock.getsockname()[1], cookie


def raw_lines(response: http.client.HTTPResponse):
    while line := response.readline():
        yield line.decode().rstrip("\n")


def first_events(post: http.client.HTTPResponse, count: int) -> list[SseEvent]:
    """The first `count` events of a stream (the rest is left unread)."""
    events = []
    for event in parse_sse(raw_lines(post)):
        events.append(event)
        if len(events) == count:
            break
    return events


def resume_request(url: str, chat_id: str, cookie: str, after: str, timeout: float = 30) -> requests.Response:
    """GET /api/chat as the POST's client (with its cookie), from the event after `after`, streamed."""
    name, value = cookie.split("=", 1)
    return requests.get(
        f"{url}/api/chat",
        params={"chatId": chat_id},
        cookies={name: value},
        headers={"Last-Event-ID": after},
        stream=True,
        timeout=timeout,
    )


def test_sigkilled_producer_ends_interrupted_within_the_bound_and_readers_finish(gunicorn, database):
    url, master = gunicorn
    chat_id = new_chat_id()
    connection, post, local_port, cookie = post_raw(url, chat_id, "die")
    events = first_events(post, 6)
    victim = next(pid for pid in worker_pids(master.pid) if holds_socket(pid, local_port))

    def resume() -> requests.Response:
        return resume_request(url, chat_id, cookie, events[-1].id)

    # Readers on connections of their own; some land on the worker that will survive.
    followers = [resume() for _ in range(4)]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    tails = []
    for follower in followers:
        try:
            tail = read_events(follower)
        except requests.RequestException:  # it was served by the killed worker
            follower.close()
            tail = None
        if tail is None or tail.terminal is None:
            tail = read_events(resume())
        tails.append(tail)
    elapsed = time.monotonic() - killed_at
    connection.close()
    assert elapsed < 10, f"interrupted noticed after {elapsed:.1f}s"
    assert {tail.terminal.json()["finishReason"] for tail in tails} == {"interrupted"}

    engine = create_engine(database)
    with engine.connect() as conn:
        stored = conn.execute(
            select(Message.content, Message.status).where(
                Message.chat_id == uuid.UUID(chat_id), Message.role == "assistant"
            )
        ).one()
    engine.dispose()
    head = "".join(e.json()["text"] for e in events if e.event == "delta")
    assert stored.status == "interrupted" and len(stored.content) >= len(head) > 0
    assert {head + tail.text for tail in tails} == {stored.content}
    # The chat is usable again right away.
    again = requests.post(
        f"{url}/api/chat",
        json={"chatId": chat_id, "agent": "helper", "message": "again"},
        cookies=dict([cookie.split("=", 1)]),
        stream=True,
        timeout=30,
    )
    again.close()
    assert again.status_code == 200


def holds_socket(pid: int, port: int) -> bool:
    """Whether process `pid` has the server side of the connection from local `port` open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[9] in inodes:
            return True
    return False


def test_replies_survive_across_workers_and_the_embedded_redis_is_shared(gunicorn):
    url, master = gunicorn
    session = requests.Session()
    chat_id = new_chat_id()
    post = session.post(
        f"{url}/api/chat", json={"chatId": chat_id, "agent": "helper", "message": "spread"}, stream=True, timeout=30
    )
    first = read_events(post, stop_after=3)
    # Many resumes: with two workers some land on the worker that is not producing.
    texts = set()
    for _ in range(6):
        response = session.get(
            f"{url}/api/chat",
            params={"chatId": chat_id},
            headers={"Last-Event-ID": first.last_id},
            stream=True,
            timeout=60,
        )
        texts.add(first.text + read_events(response).text)
    assert len(texts) == 1


def test_a_burst_of_new_guests_on_one_worker_all_get_their_replies(gunicorn_server):
    """Forty first messages at once (each a new guest) on one gevent worker: every one streams
    to its end. A request holding SQLite's write lock across a Redis round trip stalls every
    other greenlet in SQLite's busy wait, then the worker is killed by its timeout."""
    from concurrent.futures import ThreadPoolExecutor

    server = gunicorn_server(workers=1, DEMO_MODEL_WORDS="20", DEMO_MODEL_DELAY_MS="5")

    def first_message(_: int) -> str | None:
        body = {"chatId": new_chat_id(), "agent": "helper", "message": "hello"}
        with requests.post(f"{server.url}/api/chat", json=body, stream=True, timeout=20) as response:
            transcript = read_events(response)
        return transcript.terminal.event if transcript.terminal else None

    with ThreadPoolExecutor(40) as pool:
        outcomes = list(pool.map(first_message, range(40)))
    assert outcomes == ["finish"] * 40


def test_a_client_that_hangs_up_mid_reply_frees_its_stream_place_at_once(gunicorn_server):
    """Entries reach an idle response's socket without waking the response (chat/streams/client_socket.py);
    a client that hangs up is still noticed within a few tokens, and its open-stream place frees:
    with one place per identity, the same guest can follow the reply again right away."""
    server = gunicorn_server(workers=1, STREAMS_PER_IDENTITY="1", DEMO_MODEL_WORDS="400", DEMO_MODEL_DELAY_MS="20")
    chat_id = new_chat_id()
    connection, post, _port, cookie = post_raw(server.url, chat_id, "hang up")
    seen = first_events(post, 10)

    def follow() -> requests.Response:
        return resume_request(server.url, chat_id, cookie, seen[-1].id)

    held = follow()
    assert held.status_code == 429, "the POST's stream holds the one place"
    held.close()
    post.close()
    connection.close()  # the tab is closed mid-reply
    deadline = time.monotonic() + 3
    while (again := follow()).status_code == 429 and time.monotonic() < deadline:
        again.close()
        time.sleep(0.05)
    assert again.status_code == 200, "the place freed within a few tokens of the hang-up"
    rest = read_events(again)
    assert rest.terminal is not None and rest.terminal.event == "finish"
    ms, seq = seen[-1].id.split("-")
    assert rest.events[0].id == f"{ms}-{int(seq) + 1}", "it went on right after the last event seen"


def test_metrics_add_up_over_every_worker_whichever_answers_the_scrape(gunicorn_server):
    url = gunicorn_server(DEMO_MODEL_WORDS="10", DEMO_MODEL_DELAY_MS="5").url
    for n in range(4):
        body = {"chatId": new_chat_id(), "agent": "helper", "message": f"count me {n}"}
        with requests.post(f"{url}/api/chat", json=body, stream=True, timeout=30) as response:
            assert read_events(response).terminal.event == "finish"
    for _ in range(4):  # fresh connections: the scrapes land on either worker
        text = requests.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text
        assert 'durable_chat_replies_finished_total{outcome="stop"} 4.0' in text
        assert "durable_chat_replies_started_total 4.0" in text
