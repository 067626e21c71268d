"""GET /healthz: 200 when the database and (in resumable mode) Redis answer, else 503.
GET /readyz: the same, and the database's schema is at the code's migration head (a load balancer
sends traffic only to a host whose database is migrated)."""

from __future__ import annotations

import functools

import redis
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db, redis_client

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    checks = dependency_checks()
    return answer(checks)


@bp.get("/readyz")
def readyz():
    checks = dependency_checks()
    if checks["database"] == "ok":
        current, head = schema_revisions()
        checks["migrations"] = "ok" if current == head else f"at {current or 'nothing'}, the code needs {head}"
    return answer(checks)


def answer(checks: dict[str, str]):
    healthy = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if healthy else "unavailable", checks=checks), 200 if healthy else 503


def schema_revisions() -> tuple[str | None, str]:
    """The database's Alembic revision and the head the code ships."""
    with db.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, migration_head(current_app.extensions["migrate"].directory)


@functools.cache
def migration_head(directory: str) -> str:
    config = AlembicConfig()
    config.set_main_option("script_location", directory)
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None, "the project ships migrations"
    return head


def dependency_checks() -> dict[str, str]:
    checks = {"database": "ok"}
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if current_app.config["RESUMABLE_STREAMS"]:
        try:
            redis_client().ping()
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    return checks
