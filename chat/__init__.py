"""Durable Chat: chat with AI agents whose replies survive refreshes, drops and dead workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import INSTANCE_DIR, Config, shipped


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. `config` overrides the environment (tests pass theirs here).

    It configures and registers only: processes (the embedded redis-server, gunicorn's workers)
    and logging set-up belong to the entry points (app.py, gunicorn.conf.py).
    """
    # Imported here, not at the top (as flaskr does): gunicorn's master imports chat.config and
    # chat.embedded_redis before forking, and must not import redis-py, which takes `ssl` before
    # the gevent worker can patch it.
    from . import cli
    from .agents import load_agents_file
    from .extensions import db, init_redis, migrate
    from .files import store as file_store
    from .people import identity, rate_limits
    from .people.secret_key import SharedKeySessionInterface
    from .web import metrics, security, structured_logs

    app = Flask(
        __name__,
        instance_path=str(INSTANCE_DIR),
        template_folder=str(shipped("templates")),
        static_folder=str(shipped("static")),
    )
    app.config.from_object(Config)
    if config:
        app.config.update(config)
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # A server's connections can drop under the pool (restarts, idle timeouts): test each as
        # it is taken. A SQLite file's cannot, and the test would cost a query per request.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True, **app.config["SQLALCHEMY_ENGINE_OPTIONS"]}
    if app.config["PROXY_HOPS"]:
        # X-Forwarded-For/-Proto/-Host from that many proxies in front, and from nobody else.
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    keep_private(Path(app.instance_path), app.config["SQLALCHEMY_DATABASE_URI"])
    app.session_interface = SharedKeySessionInterface()

    db.init_app(app)
    identity.init_app(app)
    security.init_app(app)
    rate_limits.init_app(app)
    metrics.init_app(app)
    structured_logs.init_app(app)
    migrate.init_app(app, db, directory=str(shipped("migrations")))
    init_redis(app)
    app.extensions["agents"], app.extensions["mcp_servers"] = load_agents_file(app.config["AGENTS_FILE"])
    file_store.init_app(app)

    from .replies import Replies

    app.extensions["replies"] = Replies(app)

    from .views import account, admin, api, chats, errors, files, health, pages, shares

    app.register_blueprint(pages.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(chats.bp)
    app.register_blueprint(shares.bp)
    app.register_blueprint(admin.bp)
    security.csrf.exempt(shares.fork)  # a viewer's page has no CSRF token: shares.fork checks the origin
    app.register_blueprint(api.bp)
    security.csrf.exempt(api.bp)  # the JSON API's own protection: security.json_api_request
    app.register_blueprint(files.bp)
    security.csrf.exempt(files.upload)  # like the JSON API: same-site or a bearer token
    app.register_blueprint(health.bp)
    errors.init_app(app)
    pages.init_app(app)
    cli.init_app(app)
    return app


def keep_private(instance: Path, database_url: str) -> None:
    """The instance directory (0700) and a SQLite database file (0600) are the owner's alone: they
    hold every chat, the session key and the embedded Redis' password."""
    instance.mkdir(parents=True, exist_ok=True)
    instance.chmod(0o700)
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        database = Path(database_url.removeprefix("sqlite:///").split("?", 1)[0])
        database.parent.mkdir(parents=True, exist_ok=True)
        database.touch(mode=0o600, exist_ok=True)
        database.chmod(0o600)
