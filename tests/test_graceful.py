"""Deploys lose no reply: a worker told to stop (SIGTERM, the master's HUP reload) ends its
readers so clients resume elsewhere, lets its replies finish within GRACEFUL_REPLY_SECONDS, and
stores the rest `interrupted` with their text, billed once. Real gunicorn, real signals."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal

import pytest
import requests
from sqlalchemy import create_engine, func, select
from test_gunicorn import first_events, holds_socket, post_raw, raw_lines, resume_request

from chat.models import LedgerEntry
from chat.vocabulary import LedgerKind
from helpers.chats import new_chat_id, reply_in_database, wait_for
from helpers.gunicorn import Gunicorn, worker_pids
from helpers.sse import parse_sse, response_lines

pytestmark = pytest.mark.slow


def started_reply(server: Gunicorn, chat_id: str):
    """POST a reply and read its first events; returns them, the worker producing it and a resume()."""
    connection, post, local_port, cookie = post_raw(server.url, chat_id, "deploy me")
    events = first_events(post, 5)
    producer = next(pid for pid in worker_pids(server.process.pid) if holds_socket(pid, local_port))

    def resume(after: str) -> requests.Response:
        return resume_request(server.url, chat_id, cookie, after, timeout=60)

    return connection, post, events, producer, resume


def read_to_the_end(post, events, resume):
    """The rest of the POST's stream, then resumes from the last id seen until a terminal event;
    a resume cut short (it reached a worker as that one stopped) is resumed again, as a browser's
    EventSource does."""
    for event in parse_sse(raw_lines(post)):
        events.append(event)
    while events[-1].event not in ("finish", "error"):
        with contextlib.suppress(requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            for event in parse_sse(response_lines(resume(events[-1].id))):
                events.append(event)
    return "".join(e.json()["text"] for e in events if e.event == "delta"), events[-1]


def stored(database, chat_id: str):
    """The chat's reply as stored, and how many charges the ledger holds."""
    engine = create_engine(database)
    with engine.connect() as conn:
        charges = conn.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == LedgerKind.CHARGE)
        )
    engine.dispose()
    return reply_in_database(database, chat_id), charges


def use_up_requests(server: Gunicorn, worker: int, limit: int = 50) -> None:
    """Send requests to `worker` (over a keep-alive connection it accepted) until it stops
    taking them: gunicorn's max-requests recycling."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    while True:
        connection.connect()
        if holds_socket(worker, connection.sock.getsockname()[1]):
            break
        connection.close()
    try:
        for _ in range(limit):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            if response.getheader("Connection", "").lower() == "close":
                return
    except (ConnectionError, http.client.HTTPException):
        return
    finally:
        connection.close()
    raise AssertionError(f"worker {worker} took {limit} requests without being recycled")


def reply_across_a_stop(server: Gunicorn, whom: str, database: str):
    """Start a reply; send SIGTERM to its worker (`whom="worker"`), SIGHUP to the master
    ("master") or requests to its worker until max-requests recycles it ("requests"); follow
    the reply to its end through resumes; returns (text seen, terminal event, stored reply,
    charges, the producing worker)."""
    chat_id = new_chat_id()
    connection, post, events, producer, resume = started_reply(server, chat_id)
    if whom == "worker":
        os.kill(producer, signal.SIGTERM)
    elif whom == "requests":
        use_up_requests(server, producer)
    else:
        os.kill(server.process.pid, signal.SIGHUP)  # new workers start; the old ones are told to stop
    text, terminal = read_to_the_end(post, events, resume)
    connection.close()
    reply, charges = stored(database, chat_id)
    return text, terminal, reply, charges, producer


def test_a_stopped_worker_lets_its_reply_finish_while_the_client_resumes_elsewhere(gunicorn_server, database):
    server = gunicorn_server(GRACEFUL_REPLY_SECONDS="20", DEMO_MODEL_WORDS="150", DEMO_MODEL_DELAY_MS="20")
    text, terminal, reply, charges, producer = reply_across_a_stop(server, "worker", database)
    assert terminal.event == "finish" and terminal.json()["finishReason"] == "stop", "it finished, not interrupted"
    assert reply.status == "complete" and reply.content == text and charges == 1
    wait_for(lambda: producer not in worker_pids(server.process.pid), timeout=20, message="the old worker to exit")


def test_past_the_grace_period_the_reply_ends_interrupted_with_its_text_billed_once(gunicorn_server, database):
    server = gunicorn_server(GRACEFUL_REPLY_SECONDS="1", DEMO_MODEL_WORDS="400", DEMO_MODEL_DELAY_MS="20")
    text, terminal, reply, charges, producer = reply_across_a_stop(server, "worker", database)
    assert terminal.json()["finishReason"] == "interrupted"
    assert reply.status == "interrupted" and reply.content == text and len(text) > 0 and charges == 1
    server.stop()
    assert f"worker {producer} stopped; 1 replies interrupted" in server.log, "the stopping worker ended it itself"


def test_a_hup_reload_of_the_master_mid_reply_loses_nothing(gunicorn_server, database):
    server = gunicorn_server(GRACEFUL_REPLY_SECONDS="20", DEMO_MODEL_WORDS="150", DEMO_MODEL_DELAY_MS="20")
    old_workers = set(worker_pids(server.process.pid))
    text, terminal, reply, charges, _producer = reply_across_a_stop(server, "master", database)
    assert terminal.json()["finishReason"] == "stop"
    assert reply.status == "complete" and reply.content == text and charges == 1
    wait_for(
        lambda: not old_workers & set(worker_pids(server.process.pid)), timeout=30, message="the old workers to exit"
    )


def test_max_requests_recycling_mid_reply_loses_nothing(gunicorn_server, database):
    server = gunicorn_server(
        GRACEFUL_REPLY_SECONDS="8",
        DEMO_MODEL_WORDS="150",
        DEMO_MODEL_DELAY_MS="20",
        GUNICORN_CMD_ARGS="--max-requests 10",
    )
    text, terminal, reply, charges, producer = reply_across_a_stop(server, "requests", database)
    assert terminal.json()["finishReason"] == "stop", "it finished, not interrupted"
    assert reply.status == "complete" and reply.content == text and charges == 1
    wait_for(lambda: producer not in worker_pids(server.process.pid), timeout=20, message="the recycled worker to exit")
    server.stop()
    assert "Autorestarting worker after current request" in server.log
