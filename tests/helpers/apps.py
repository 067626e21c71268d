"""Apps configured for tests: fast demo replies, short timeouts, a clean database."""

from __future__ import annotations

import re
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import create_engine

from chat import create_app
from chat.extensions import db

ROOT = Path(__file__).resolve().parent.parent.parent


# Generous limits for tests that are not about them (tests/test_security.py sets its own): a
# hammer test holds 60 streams of one identity, a burst test makes 40 guests from one address.
GENEROUS_LIMITS = {
    "RATE_LIMIT_MESSAGES": "1000/minute",
    "RATE_LIMIT_MESSAGES_PER_IP": "5000/minute",
    "RATE_LIMIT_NEW_GUESTS": "5000/minute",
    "RATE_LIMIT_SIGN_IN": "1000/minute",
    "RATE_LIMIT_SIGN_IN_PER_ACCOUNT": "1000/minute",
    "RATE_LIMIT_STREAM_OPENS": "5000/minute",
    "STREAMS_PER_IDENTITY": 500,
    "LIVE_REPLIES_PER_IDENTITY": 500,
}


def wipe(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


class PageClient(FlaskClient):
    """A test client that fills in the form's CSRF token as a person's browser would, by reading
    it from a page of the site (`csrf_token=False`: a forged request, without one)."""

    def __init__(self, *args, csrf_token: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.csrf_token = csrf_token

    def open(self, *args, **kwargs):
        data = kwargs.get("data")
        method = kwargs.get("method", "GET")
        if self.csrf_token and method == "POST" and "json" not in kwargs and (data is None or isinstance(data, dict)):
            kwargs["data"] = {**(data or {}), "csrf_token": self.page_token()}
        return super().open(*args, **kwargs)

    def page_token(self) -> str:
        page = super().open("/signin", method="GET").get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, "the sign-in page carries a CSRF token"
        return match.group(1)


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
        **GENEROUS_LIMITS,
    }
    config.update(overrides)
    app = create_app(config)
    app.test_client_class = PageClient
    return app
