"""Migrations build the schema from empty, match the models, and run down and up again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect
from sqlalchemy.orm import close_all_sessions

from chat import create_app
from chat.extensions import db
from helpers.databases import create_private_database, drop_private_database, server_url

TABLES = {"identities", "chats", "messages", "chat_streams", "ledger_entries", "alembic_version"}


@pytest.fixture
def empty_app(tmp_path):
    """An app on an empty database: a new SQLite file, or a new PostgreSQL database."""
    server = server_url()
    url = create_private_database(server, "migrations") if server else f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "RESUMABLE_STREAMS": False, "REAPER_INTERVAL_SECONDS": 0, "SECRET_KEY": "x"}
    )
    yield app
    close_all_sessions()
    with app.app_context():
        db.engine.dispose()
    if server:
        drop_private_database(server, url)


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
        db.session.add(identity)
        db.session.flush()
        chat = Chat(identity_id=identity.id, agent_slug="helper")
        db.session.add(chat)
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
