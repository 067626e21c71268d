"""Apps configured for tests: fast demo replies, short timeouts, a clean database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from chat import create_app
from chat.extensions import db

ROOT = Path(__file__).resolve().parent.parent.parent


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
