"""Building the app configures and registers only: no process, no connection, no Redis needed."""

from __future__ import annotations

import os
from pathlib import Path

from chat import create_app


def child_processes() -> set[int]:
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return set(map(int, children.read_text().split())) if children.exists() else set()


def test_a_bare_factory_starts_no_redis_and_opens_no_connection(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    before = child_processes()
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "REDIS_URL": None,
            "SECRET_KEY": "factory-test",
            "RESUMABLE_STREAMS": True,
        }
    )
    assert app.extensions["redis"] is None  # connected (and an embedded server started) on first use only
    assert child_processes() == before
    assert "REDIS_URL" not in os.environ
