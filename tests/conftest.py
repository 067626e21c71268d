"""Fixtures: a real redis-server on a free port, a migrated database, apps and live servers.

SQLite by default; set TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test) to run
the same suite against PostgreSQL. Nothing here mocks Redis or the database.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from chat import create_app
from chat.config import database_url
from chat.embedded_redis import start_redis_server, stop_redis_server
from chat.extensions import db

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A private redis-server for the test session (never the machine's shared one)."""
    url, process = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield url
    stop_redis_server(process)


@pytest.fixture
def redis_url(redis_server) -> str:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    return redis_server


@pytest.fixture(scope="session")
def database(tmp_path_factory) -> str:
    """A database migrated from empty with the project's Alembic revisions."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        os.environ["DATABASE_URL"] = url
        url = database_url()
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "RESUMABLE_STREAMS": False, "REAPER_INTERVAL_SECONDS": 0})
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()
    return url


def wipe(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


def make_app(database: str, redis_url: str | None, **overrides):
    config = {
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "SQLALCHEMY_DATABASE_URI": database,
        "REDIS_URL": redis_url,
        "RESUMABLE_STREAMS": redis_url is not None,
        "DEMO_MODEL_WORDS": 12,
        "DEMO_MODEL_DELAY_MS": 5,
        "STREAM_FLUSH_MS": 10,
        "HEARTBEAT_INTERVAL_MS": 200,
        "PRODUCER_TIMEOUT_MS": 1000,
        "READER_BLOCK_MS": 200,
        "SSE_KEEPALIVE_SECONDS": 2,
        "REAPER_INTERVAL_SECONDS": 1,
        "OPENAI_API_KEY": None,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app_factory(database, redis_url):
    """Build apps with overrides; each gets a clean database and Redis, and is shut down after."""
    apps = []

    def build(resumable: bool = True, **overrides):
        app = make_app(database, redis_url if resumable else None, **overrides)
        apps.append(app)
        return app

    wipe(database)
    yield build
    for app in apps:
        app.extensions["replies"].shutdown()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def client(app):
    return app.test_client()


class LiveServer:
    def __init__(self, app) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()


# --- SSE helpers -------------------------------------------------------------------------------
@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str

    def json(self):
        return json.loads(self.data)


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Parse SSE text line by line (as an EventSource does)."""
    event_id, name, data = None, "message", []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(event_id, name, "\n".join(data))
            event_id, name, data = None, "message", []
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "id":
                event_id = value
            elif key == "event":
                name = value
            elif key == "data":
                data.append(value)


def response_lines(response) -> Iterator[str]:
    """Lines of a streaming test-client or requests response."""
    if isinstance(response, requests.Response):
        yield from response.iter_lines(decode_unicode=True)
        return
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            yield line


@dataclass
class Transcript:
    events: list[SseEvent] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e.json()["text"] for e in self.events if e.event == "delta")

    @property
    def terminal(self) -> SseEvent | None:
        return next((e for e in self.events if e.event in ("finish", "error")), None)

    @property
    def last_id(self) -> str | None:
        return self.events[-1].id if self.events else None


def read_events(response, stop_after: int | None = None) -> Transcript:
    """Read events until the terminal one (or `stop_after` events, then hang up)."""
    transcript = Transcript()
    for event in parse_sse(response_lines(response)):
        transcript.events.append(event)
        if event.event in ("finish", "error") or (stop_after is not None and len(transcript.events) >= stop_after):
            break
    response.close()
    return transcript


def new_chat_id() -> str:
    return str(uuid.uuid4())


def post_chat(client, chat_id: str, message: str = "hello", agent: str = "helper"):
    return client.post("/api/chat", json={"chatId": chat_id, "agent": agent, "message": message}, buffered=False)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# --- real Chromium --------------------------------------------------------------------------
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Records the streamed text of a reply just before its final render replaces it, so tests can
# check the text a person watched arrive, not only the re-rendered result; and every toast shown.
CAPTURE_STREAMED = """
window.__toasts = [];
document.addEventListener('DOMContentLoaded', function () {
  var box = document.getElementById('toasts');
  if (!box) return;
  new MutationObserver(function (records) {
    records.forEach(function (r) { r.addedNodes.forEach(function (n) { window.__toasts.push(n.textContent); }); });
  }).observe(box, {childList: true});
});
document.addEventListener('htmx:beforeRequest', function (e) {
  var el = e.detail.elt;
  if (el.matches && el.matches('.message.status-streaming')) {
    (window.__streamed = window.__streamed || []).push(el.querySelector('.streaming-text').textContent);
  }
});
"""


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def browser_context(browser):
    contexts = []

    def make(**options):
        context = browser.new_context(**options)
        context.add_init_script(CAPTURE_STREAMED)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(browser_context):
    return browser_context().new_page()


class FlakyProxy:
    """A loopback TCP proxy whose connections can be cut, like a network that drops.

    Chromium's offline emulation leaves an open EventSource alone, so a real drop needs this.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.down = threading.Event()
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(source, sink), daemon=True).start()

    def pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until `restore()`."""
        self.down.set()
        with self.lock:
            sockets, self.sockets = self.sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def hammer_resumes(server_url: str, chat_id: str, agent: str, readers: int) -> list[str]:
    """POST a message, read a few events, then resume with `readers` concurrent clients, each from
    a different cursor it was sent. Returns the full text each reader ended with."""
    session = requests.Session()
    post = session.post(
        f"{server_url}/api/chat", json={"chatId": chat_id, "agent": agent, "message": "race"}, stream=True
    )
    head = read_events(post, stop_after=3)
    cookies = session.cookies.get_dict()
    texts: list[str] = []
    errors: list[BaseException] = []

    def reader(n: int) -> None:
        seen = head.events[: n % len(head.events) + 1]
        try:
            response = requests.get(
                f"{server_url}/api/chat",
                params={"chatId": chat_id},
                cookies=cookies,
                headers={"Last-Event-ID": seen[-1].id},
                stream=True,
                timeout=30,
            )
            prefix = "".join(e.json()["text"] for e in seen if e.event == "delta")
            texts.append(prefix + read_events(response).text)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert len(texts) == readers
    return texts
