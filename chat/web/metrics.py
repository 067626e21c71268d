"""Prometheus metrics (prometheus-client), served at GET /metrics.

Under gunicorn every worker counts in its own files under PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py before any worker starts) and a scrape adds them up, whichever worker answers;
gauges of live things sum over the live workers only. Elsewhere (flask run, tests) one process
counts in memory. Labels never carry ids: routes are URL rules, outcomes a few fixed words.
"""

from __future__ import annotations

import hmac
import os

from flask import Flask, Response, abort, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REPLIES_STARTED = Counter("durable_chat_replies_started_total", "Replies started.")
REPLIES_FINISHED = Counter(
    "durable_chat_replies_finished_total", "Replies stored with their outcome, once each.", ["outcome"]
)
FINISH_SECONDS = Histogram(
    "durable_chat_finish_seconds", "Time to store and bill a reply's outcome (the finishing transaction)."
)
LIVE_REPLIES = Gauge("durable_chat_live_replies", "Replies generating in this process.", multiprocess_mode="livesum")
OPEN_STREAMS = Gauge("durable_chat_open_streams", "Client streams (SSE responses) open.", multiprocess_mode="livesum")
DELTAS_WRITTEN = Counter("durable_chat_deltas_written_total", "Deltas Redis accepted into reply logs.")
READER_LAG = Histogram(
    "durable_chat_reader_lag_seconds",
    "Time entries waited between reaching this process (read, or written here) and their client's "
    "response taking them: grows when a worker is saturated. Sampled: a client's first batch, then "
    "one in 32.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESUMES = Counter("durable_chat_resumes_total", "Streams resumed from a cursor (Last-Event-ID or lastEventId).")
REDIS_ERRORS = Counter("durable_chat_redis_errors_total", "Redis failures seen, by the part that saw it.", ["part"])
HTTP_REQUESTS = Counter("durable_chat_http_requests_total", "HTTP requests by route and status.", ["route", "status"])


def init_app(app: Flask) -> None:
    @app.after_request
    def count_request(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        HTTP_REQUESTS.labels(route, str(response.status_code)).inc()
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        if not scraper_allowed(app.config["METRICS_TOKEN"]):
            abort(404)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body = generate_latest(registry)
        else:
            body = generate_latest()
        return Response(body, mimetype=CONTENT_TYPE_LATEST)


def scraper_allowed(token: str | None) -> bool:
    """Who may read /metrics: with METRICS_TOKEN set, a request bearing it; without, a client on
    this machine that came through no proxy (a proxy on loopback would otherwise open it to all)."""
    if token:
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(offered.encode(), token.encode())
    direct = "X-Forwarded-For" not in request.headers and "Forwarded" not in request.headers
    return direct and request.remote_addr in LOOPBACK


LOOPBACK = frozenset({"127.0.0.1", "::1"})
