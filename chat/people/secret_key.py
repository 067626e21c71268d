"""The key that signs session cookies: the same on every host that shares the database.

`SECRET_KEY` in the environment wins (old keys stay accepted while they are listed in
`SECRET_KEY_FALLBACKS`). Without it, the key is generated once and kept in the database
(`app_secrets`), inserted atomically so that hosts starting together agree on one; a key an
earlier version left in `instance/secret_key` seeds it, so existing cookies stay valid. It is
loaded by the first request that opens a session, not by the factory, and kept per process.
"""

from __future__ import annotations

import logging
import secrets
import threading
from pathlib import Path

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.exc import SQLAlchemyError

from ..models import app_secret, create_app_secret, replace_app_secret

log = logging.getLogger(__name__)

CURRENT = "session-key"
PREVIOUS = "session-key-previous"
_lock = threading.Lock()


class SharedKeySessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the key loaded from the database on first use."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        try:
            load_secret_key(app)
        except SQLAlchemyError as exc:
            # No session this request (a page then fails; /healthz still answers 503).
            log.warning("the session key could not be loaded from the database: %s", type(exc).__name__)
            return None
        return super().get_signing_serializer(app)


def load_secret_key(app: Flask) -> None:
    if app.config.get("SECRET_KEY"):
        return
    with _lock:
        if app.config.get("SECRET_KEY"):
            return
        seed = legacy_instance_key(Path(app.instance_path))
        current = app_secret(CURRENT) or create_app_secret(CURRENT, seed or secrets.token_urlsafe(48))
        previous = app_secret(PREVIOUS)
        if previous:
            app.config["SECRET_KEY_FALLBACKS"] = [*app.config["SECRET_KEY_FALLBACKS"], previous]
        app.config["SECRET_KEY"] = current


def legacy_instance_key(instance: Path) -> str | None:
    """The key versions before 0.2 generated into instance/secret_key, if this host has one."""
    path = instance / "secret_key"
    return (path.read_text().strip() or None) if path.is_file() else None


def rotate_secret_key() -> None:
    """A new current key; the old one becomes the previous (still accepted), the one before goes.

    Every host picks the new key up when it restarts.
    """
    replace_app_secret(CURRENT, PREVIOUS, secrets.token_urlsafe(48))
