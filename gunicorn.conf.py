"""gunicorn settings: `gunicorn -c gunicorn.conf.py app:app` (what `make run` does)."""

import os

from chat.config import INSTANCE_DIR, Config, env_int
from chat.embedded_redis import ensure_redis_url

bind = os.environ.get("BIND", "127.0.0.1:5000")
worker_class = "gevent"
workers = env_int("WEB_CONCURRENCY", 2)
# Each SSE client holds one connection; streams share a single Redis reader per worker, so this
# can be far larger than REDIS_MAX_CONNECTIONS.
worker_connections = env_int("WORKER_CONNECTIONS", 1000)
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"


def on_starting(server):
    """Start the embedded Redis in the master, before forking, so every worker shares it."""
    if Config.RESUMABLE_STREAMS and not os.environ.get("REDIS_URL"):
        url = ensure_redis_url(INSTANCE_DIR / "redis", Config.REDIS_SERVER_BIN)
        server.log.info("Started embedded redis-server at %s (set REDIS_URL to use your own)", url)
