"""Extensions, created once and bound to an app in create_app()."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import redis
from flask import Flask, current_app
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from redis.backoff import ExponentialWithJitterBackoff
from redis.driver_info import DriverInfo
from redis.retry import Retry
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine

from .config import is_cluster
from .embedded_redis import ensure_redis_url

# Named constraints so Alembic can alter them on SQLite and PostgreSQL alike.
db = SQLAlchemy(
    metadata=MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
)
migrate = Migrate()
_redis_lock = threading.Lock()

# What every Redis connection tells the server of itself (CLIENT SETINFO). redis-py's default
# reads the package's metadata from disk for each new connection (~0.6 ms of the worker's loop;
# a burst of messages grows the pool by dozens); the version is known here once.
DRIVER_INFO = DriverInfo(lib_version=redis.__version__)


def init_redis(app: Flask) -> None:
    """The app's Redis client is built on first use (`redis_client`), not here: the factory
    starts nothing and connects to nothing (`flask db upgrade` never needs Redis)."""
    app.extensions["redis"] = None


def redis_url(app: Flask) -> str:
    """REDIS_URL from the config or the environment (gunicorn's master publishes its embedded
    server's there); without one, an embedded redis-server is started now (`flask run`)."""
    url = app.config.get("REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        return url
    return ensure_redis_url(Path(app.instance_path) / "redis", app.config["REDIS_SERVER_BIN"])


def connect_redis(app: Flask) -> redis.Redis | redis.RedisCluster:
    """One connection pool per app and process (per master on a cluster). `rediss://` URLs get
    TLS from redis-py itself."""
    url = redis_url(app)
    timeout = app.config["REDIS_SOCKET_TIMEOUT_MS"] / 1000
    options = dict(
        max_connections=app.config["REDIS_MAX_CONNECTIONS"],
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 5),
        health_check_interval=30,
        decode_responses=True,
        # A few quick reconnects only (redis-py's default retries for seconds, stalling the
        # heartbeats): longer outages are handled by the pump and reader (chat/replies/runtime.py), and
        # requests answer 503 at once.
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 3),
        driver_info=DRIVER_INFO,
    )
    if on_cluster(app, url):
        return redis.RedisCluster.from_url(url, **options)
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, timeout=timeout, **options))


def on_cluster(app: Flask, url: str) -> bool:
    """REDIS_CLUSTER, or else what the node at `url` says of itself (INFO cluster), kept in the
    config once known; a node that does not answer is taken as standalone for now."""
    mode = app.config.get("REDIS_CLUSTER")
    if mode is None:
        try:
            mode = app.config["REDIS_CLUSTER"] = is_cluster(url)
        except redis.RedisError:
            return False
    return bool(mode)


def redis_client(app: Flask | None = None) -> redis.Redis | redis.RedisCluster:
    """The app's Redis client, connected on first use."""
    app = app or current_app
    client = app.extensions.get("redis")
    if client is None:
        if not app.config["RESUMABLE_STREAMS"]:
            raise RuntimeError("Redis is not used with RESUMABLE_STREAMS=0")
        with _redis_lock:
            client = app.extensions.get("redis") or connect_redis(app)
            app.extensions["redis"] = client
    return client


@event.listens_for(Engine, "connect")
def sqlite_pragmas(dbapi_connection, _record) -> None:
    """SQLite: enforce foreign keys (ON DELETE CASCADE) and let readers run beside a writer."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # WAL + NORMAL: no fsync per commit (each one would stall every stream of a gevent
        # worker); an app crash loses nothing, a power cut can lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
