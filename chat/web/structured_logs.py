"""Structured logs: one JSON object per line, for every request and every reply lifecycle event.

`LOG_FORMAT=json` (the entry point, app.py, reads it) turns every log line into JSON with the
time, level, logger, message, worker pid and the request id of the request being served; the
events below add their fields (chat, stream, outcome, duration). Nothing here logs a body, a
query string, a cookie or a key, and the entry point's redaction filter still applies.
"""

from __future__ import annotations

import json
import logging
import os
import time

from flask import Flask, Response, g, has_request_context, request

from .security import redact

events = logging.getLogger("durable_chat.events")


class JsonLines(logging.Formatter):
    """A log record as one line of JSON; `extra={"fields": {...}}` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        if has_request_context() and "request_id" in g:
            line["request_id"] = g.request_id
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            # Redacted here too: the filter's redacted text (exc_text) is not what this formats.
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


JsonLines.converter = time.gmtime


def event(name: str, **fields: object) -> None:
    """One lifecycle event (`reply.start`, `reply.resume`, `reply.stop`, `reply.finish`, `request`):
    readable as text, and its fields as JSON keys under LOG_FORMAT=json."""
    described = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    if has_request_context() and "request_id" in g:
        fields["request_id"] = g.request_id
    events.info(f"{name} {described}", extra={"fields": {"event": name, **fields}})


def init_app(app: Flask) -> None:
    """Under LOG_FORMAT=json, one line per request (gunicorn's access log says it in text)."""
    if app.config["LOG_FORMAT"] != "json":
        return

    @app.before_request
    def start_clock() -> None:
        g.request_started = time.monotonic()

    @app.after_request
    def log_request(response: Response) -> Response:
        started = g.get("request_started")
        event(
            "request",
            method=request.method,
            route=request.url_rule.rule if request.url_rule is not None else None,
            path=request.path,
            status=response.status_code,
            ms=round((time.monotonic() - started) * 1000, 1) if started is not None else None,
        )
        return response


def use_json_lines() -> None:
    """Make every handler of the root logger write JSON lines (call after configuring logging)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonLines())
