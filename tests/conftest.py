"""Fixtures: a real redis-server on a free port, a migrated database, apps and live servers.

SQLite by default; set TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test) to run
the same suite against PostgreSQL. Nothing here mocks Redis or the database.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from sqlalchemy.exc import IllegalStateChangeError
from sqlalchemy.orm import close_all_sessions

from chat import create_app
from chat.config import is_cluster
from chat.embedded_redis import start_redis_server, stop_redis_server
from chat.extensions import db
from chat.streams import ClusterRedisStreams, RedisStreams
from helpers.apps import make_app, wipe
from helpers.browser import CAPTURE_STREAMED, CHROMIUM, CHROMIUM_ARGS
from helpers.databases import create_private_database, drop_private_database, server_url
from helpers.fake_openai import FakeOpenAI
from helpers.gunicorn import Gunicorn
from helpers.servers import LiveServer


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


@pytest.fixture
def store(redis_url) -> Iterator[Callable[..., RedisStreams]]:
    """`store(**overrides)`: the Redis stream protocol on the test Redis, or on the test cluster
    when `redis_url` names one (tests/test_redis_cluster.py); clients closed after."""
    clients: list[redis.Redis | redis.RedisCluster] = []
    on_cluster = is_cluster(redis_url)

    def build(**overrides) -> RedisStreams:
        options = {"maxlen": 1000, "ttl_seconds": 60, "max_reply_seconds": 600, "chat_streams_ttl_seconds": 3600}
        if on_cluster:
            cluster = redis.RedisCluster.from_url(redis_url, decode_responses=True)
            clients.append(cluster)
            return ClusterRedisStreams(cluster, **{**options, **overrides})
        single = redis.Redis.from_url(redis_url, decode_responses=True)
        clients.append(single)
        return RedisStreams(single, **{**options, **overrides})

    yield build
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def database(tmp_path_factory) -> Iterator[str]:
    """A database of this session's own, migrated from empty with the project's Alembic
    revisions: a SQLite file, or a new database on TEST_DATABASE_URL's server (dropped after)."""
    server = server_url()
    if server:
        url = create_private_database(server, "test")
        os.environ["DATABASE_URL"] = url  # what processes the tests start connect to
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "RESUMABLE_STREAMS": False, "REAPER_INTERVAL_SECONDS": 0})
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()
        db.engine.dispose()
    yield url
    if server:
        drop_private_database(server, url)


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
        # Responses a test left unclosed still hold their request's session: close them all, so
        # no connection outlives the engine (PostgreSQL warns about each one at garbage collection).
        close_sessions_when_idle()
        with app.app_context():
            db.engine.dispose()


def close_sessions_when_idle(attempts: int = 50) -> None:
    """close_all_sessions(), waiting for a background thread that is mid-query (a reply being
    finished as the app shuts down): SQLAlchemy refuses to close a session under its feet."""
    for _ in range(attempts - 1):
        try:
            close_all_sessions()
            return
        except IllegalStateChangeError:
            time.sleep(0.1)
    close_all_sessions()


@pytest.fixture
def provider():
    """An OpenAI-compatible server on loopback (tests/helpers/fake_openai.py)."""
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture
def model_app(app_factory, provider):
    """An app whose agents talk to `provider` instead of the demo model."""
    return app_factory(
        OPENAI_API_KEY="sk-test-not-a-real-key", OPENAI_BASE_URL=provider.base_url, OPENAI_TIMEOUT_SECONDS=2
    )


@pytest.fixture
def app(app_factory):
    return app_factory()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def live_server(app_factory) -> Iterator[Callable[..., LiveServer]]:
    """Start the app on a free port: `live_server(app)` or `live_server(**overrides)`; stopped after."""
    servers: list[LiveServer] = []

    def start(app=None, **overrides) -> LiveServer:
        server = LiveServer(app if app is not None else app_factory(**overrides))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gunicorn_server(database, redis_url, tmp_path) -> Iterator[Callable[..., Gunicorn]]:
    """`gunicorn_server(workers=2, **env)`: the app under real gunicorn on the test database (made
    empty first) and Redis, each server with an instance directory of its own; stopped after."""
    servers: list[Gunicorn] = []

    def start(workers: int = 2, **env: str) -> Gunicorn:
        base = {
            "DATABASE_URL": database,
            "REDIS_URL": redis_url,
            "INSTANCE_PATH": str(tmp_path / f"instance-{len(servers)}"),
            "SECRET_KEY": "gunicorn-test",
        }
        servers.append(Gunicorn(base | env, workers=workers))
        return servers[-1]

    wipe(database)
    yield start
    for server in servers:
        server.stop()


# --- real Chromium --------------------------------------------------------------------------
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
