"""Migrations build the schema from empty, match the models, and run down and up again."""

from __future__ import annotations

import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import close_all_sessions

from chat import create_app
from chat.config import database_url
from chat.extensions import db

TABLES = {"identities", "chats", "messages", "chat_streams", "ledger_entries", "alembic_version"}


def fresh_database(tmp_path) -> str:
    """An empty database: a new SQLite file, or a new schema-less PostgreSQL database."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    os.environ["DATABASE_URL"] = url
    base = database_url()
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS durable_chat_migrations"))
        conn.execute(text("CREATE DATABASE durable_chat_migrations"))
    admin.dispose()
    return base.rsplit("/", 1)[0] + "/durable_chat_migrations"


@pytest.fixture
def empty_app(tmp_path):
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": fresh_database(tmp_path),
            "RESUMABLE_STREAMS": False,
            "REAPER_INTERVAL_SECONDS": 0,
            "SECRET_KEY": "x",
        }
    )
    yield app
    close_all_sessions()
    with app.app_context():
        db.engine.dispose()


def test_upgrade_from_empty_creates_every_table_and_matches_the_models(empty_app):
    with empty_app.app_context():
        upgrade()
        assert TABLES <= set(inspect(db.engine).get_table_names())
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"


def test_downgrade_to_base_and_upgrade_again(empty_app):
    with empty_app.app_context():
        upgrade()
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert TABLES <= set(inspect(db.engine).get_table_names())


def test_one_streaming_reply_per_chat_is_enforced_by_the_database(empty_app):
    import uuid

    from sqlalchemy.exc import IntegrityError

    from chat.models import Chat, Identity, Message

    with empty_app.app_context():
        upgrade()
        identity = Identity(balance_micros=0)
        chat = Chat(owner=identity, agent_slug="helper")
        db.session.add_all([identity, chat])
        db.session.flush()
        db.session.add(Message(chat_id=chat.id, position=1, role="assistant", status="streaming", stream_id="a"))
        db.session.commit()
        db.session.add(Message(chat_id=chat.id, position=2, role="assistant", status="streaming", stream_id="b"))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        db.session.add(
            Message(chat_id=chat.id, position=2, role="assistant", status="complete", stream_id=uuid.uuid4().hex)
        )
        db.session.commit()
