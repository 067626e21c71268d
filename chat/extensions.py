"""Extensions, created once and bound to an app in create_app()."""
from __future__ import annotations

import sqlite3

import redis
from flask import Flask, current_app
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine

# Named constraints so Alembic can alter them on SQLite and PostgreSQL alike.
db = SQLAlchemy(metadata=MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}))
migrate = Migrate()


def init_redis(app: Flask) -> None:
    """One connection pool per app and process. `rediss://` URLs get TLS from redis-py itself."""
    url = app.config.get("REDIS_URL")
    if not url:
        app.extensions["redis"] = None
        return
    timeout = app.config["REDIS_SOCKET_TIMEOUT_MS"] / 1000
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=app.config["REDIS_MAX_CONNECTIONS"],
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 5),
        health_check_interval=30,
        decode_responses=True,
        # A few quick reconnects only (redis-py's default retries for seconds, stalling the
        # heartbeats): longer outages are handled by the pump and reader (chat/runtime.py), and
        # requests answer 503 at once.
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 3),
    )
    app.extensions["redis"] = redis.Redis(connection_pool=pool)


def redis_client(app: Flask | None = None) -> redis.Redis:
    client = (app or current_app).extensions.get("redis")
    if client is None:
        raise RuntimeError("Redis is not configured for this app")
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
