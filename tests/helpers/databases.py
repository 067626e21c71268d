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
    administer(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_private_database(server: str, url: str) -> None:
    administer(server, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def administer(server: str, *statements: str) -> None:
    """Run statements that cannot run in a transaction (CREATE/DROP DATABASE) on `server`."""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    admin.dispose()
