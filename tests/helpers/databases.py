"""PostgreSQL databases of the test session's own, on the server TEST_DATABASE_URL names.

The suite never writes to the named database itself: two runs on one server (two checkouts, two
CI jobs) would otherwise wipe each other's tables, and one run's gunicorn reaper, which cannot
see the other run's Redis, would end the other's live replies as `interrupted`."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, make_url, text

from chat.config import sqlalchemy_url


def server_url() -> str | None:
    """TEST_DATABASE_URL in SQLAlchemy's spelling, or None for SQLite."""
    url = os.environ.get("TEST_DATABASE_URL")
    return sqlalchemy_url(url) if url else None


def create_private_database(server: str, purpose: str) -> str:
    """A new, empty database named for `purpose` and this process; its URL."""
    name = f"durable_chat_{purpose}_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_private_database(server: str, url: str) -> None:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()
