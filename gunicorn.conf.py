"""gunicorn settings: `gunicorn -c gunicorn.conf.py app:app` (what `make run` does)."""

import gc
import glob
import os
import shutil
import tempfile

from chat.config import INSTANCE_DIR, Config, env_int, is_cluster
from chat.embedded_redis import ensure_redis_url

bind = os.environ.get("BIND", "127.0.0.1:5000")
worker_class = "gevent"
workers = env_int("WEB_CONCURRENCY", 2)
# Each SSE client holds one connection; streams share a single Redis reader per worker, so this
# can be far larger than REDIS_MAX_CONNECTIONS.
worker_connections = env_int("WORKER_CONNECTIONS", 1000)
# A stopping worker first lets its replies finish (GRACEFUL_REPLY_SECONDS), then stores the rest
# as interrupted: the master must wait that long and a little more before killing it, and the
# worker's own timeout must not fire meanwhile.
graceful_timeout = Config.GRACEFUL_REPLY_SECONDS + 10
timeout = max(30, graceful_timeout + 5)
keepalive = 5
accesslog = None if Config.LOG_FORMAT == "json" else "-"  # JSON: the app logs each request itself
# The path without its query string, and no referrer: a search's words (`/chats?q=…`) are the
# person's own, not the operator's log's.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'
GC_GEN0_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)


def on_starting(server):
    """Before forking: a fresh directory where every worker keeps its metrics (a scrape of any
    worker adds them all up), and the embedded Redis, started once so every worker shares it."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="durable-chat-metrics-")
        server.metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if Config.RESUMABLE_STREAMS and not os.environ.get("REDIS_URL"):
        url = ensure_redis_url(INSTANCE_DIR / "redis", Config.REDIS_SERVER_BIN)
        where = url.rsplit("@", 1)[-1]  # not its password
        server.log.info("Started embedded redis-server at redis://%s (set REDIS_URL to use your own)", where)
    elif Config.RESUMABLE_STREAMS and Config.REDIS_CLUSTER is None:
        # Asked once here rather than by every worker: is REDIS_URL a node of a cluster?
        Config.REDIS_CLUSTER = is_cluster(os.environ["REDIS_URL"])
        os.environ["REDIS_CLUSTER"] = str(int(Config.REDIS_CLUSTER))
        server.log.info("Redis at REDIS_URL is %s", "a cluster" if Config.REDIS_CLUSTER else "standalone")


def post_fork(server, worker):
    """Cyclic GC tuned for a streaming worker: what was built before the fork (the app, its
    imports) is frozen out of every collection, and collections come 70x less often. Under a
    500-stream burst the default thresholds spent ~10% of the worker in GC (0.51 s against
    0.03 s tuned), and every pause delayed every stream's next token (bench: lag p50 51 -> 7 ms)."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def post_worker_init(worker):
    """Drain the worker as soon as it is told to stop (SIGTERM, the master's HUP reload,
    max-requests): its readers end at once (clients resume on other workers) and its replies get
    GRACEFUL_REPLY_SECONDS from that moment, while gunicorn waits for its connections."""
    import gevent

    def drain_when_told() -> int:
        while worker.alive:
            gevent.sleep(0.2)
        return worker.wsgi.extensions["replies"].drain()

    worker.drainer = gevent.spawn(drain_when_told)


def worker_exit(server, worker):
    """The worker's requests are done: wait for its drain (started when it was told to stop), so
    the process ends only once every reply it generated is finished or stored interrupted."""
    drainer = getattr(worker, "drainer", None)
    if drainer is None or (worker.alive and not drainer.dead):  # ending without being told to stop
        if drainer is not None:
            drainer.kill()
        interrupted = worker.wsgi.extensions["replies"].drain()
    else:
        interrupted = drainer.get(timeout=graceful_timeout)
    server.log.info("worker %s stopped; %d replies interrupted after the grace period", worker.pid, interrupted)


def child_exit(server, worker):
    """A worker is gone: its live gauges stop counting (prometheus-client's mark_process_dead,
    done here by hand because the master must not import prometheus-client: it imports ssl)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for path in glob.glob(os.path.join(directory, f"gauge_live*_{worker.pid}.db")):
            os.remove(path)


def on_exit(server):
    if getattr(server, "metrics_dir", None):
        shutil.rmtree(server.metrics_dir, ignore_errors=True)
