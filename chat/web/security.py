"""Protections around every request: cross-site request checks, a request id, strict headers.

- Pages: every form and htmx post carries a CSRF token (Flask-WTF's CSRFProtect; htmx sends it
  as `X-CSRFToken` from `hx-headers` on <body>, forms as a hidden field, so it works without
  JavaScript). A missing or wrong token answers 403.
- The JSON API (docs/api.md) takes no token: it accepts only `application/json` bodies (a
  cross-site form cannot send one without a CORS preflight this app never grants; anything else
  is 415) and refuses a browser request whose `Origin` or `Sec-Fetch-Site` says another site (403).
  Bearer-token requests carry no cookie, so they are not subject to either check.
- Headers: a Content-Security-Policy without inline scripts or eval (htmx is configured for it in
  base.html), no framing, no sniffing, a strict referrer, HSTS behind HTTPS, and `no-store` on
  everything but static files (pages, fragments and exports carry a person's chats).
"""

from __future__ import annotations

import logging
import re
import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, g, request
from flask_wtf.csrf import CSRFProtect

from ..refusals import Refused

csrf = CSRFProtect()

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",  # blob: the composer's previews of files about to be sent
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# scheme://user:password@host — the password part of any URL (Redis, PostgreSQL, a model server).
URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@/\s]+)@", re.I)


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


class RedactSecrets(logging.Filter):
    """Installed on the log handlers by the entry points: no log line carries a URL's password,
    whoever logs it (an exception message from a driver included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def redact_logs() -> None:
    """Apply RedactSecrets to every handler of the root logger (call after configuring logging)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())


# Endpoints whose bodies carry files: their own body limit (a file, or a message's files).
UPLOADING_ENDPOINTS = {"files.upload": 1, "pages.send_message": None}


def init_app(app: Flask) -> None:
    @app.before_request
    def body_limit() -> None:
        """Registered before the CSRF check, which reads the form (and so the body) first."""
        if request.endpoint in UPLOADING_ENDPOINTS:
            files = UPLOADING_ENDPOINTS[request.endpoint] or app.config["MAX_FILES_PER_MESSAGE"]
            request.max_content_length = files * app.config["MAX_UPLOAD_BYTES"] + app.config["MAX_CONTENT_LENGTH"]

    csrf.init_app(app)

    @app.before_request
    def assign_request_id() -> None:
        """Ours, or a proxy's X-Request-ID when it looks like one (never trusted as text)."""
        offered = request.headers.get("X-Request-ID", "")
        g.request_id = offered if REQUEST_ID.match(offered) else secrets.token_hex(8)

    @app.after_request
    def strict_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if app.config["SESSION_COOKIE_SECURE"]:
            headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        if "request_id" in g:
            headers["X-Request-ID"] = g.request_id
        if request.endpoint != "static":
            # Every other answer is someone's: their chats, searches, exports, a new token.
            headers.setdefault("Cache-Control", "no-store")
        return response


def json_api_request() -> None:
    """What a state-changing API request must be: JSON, and not sent by another site's page.

    :raise Refused: 415 for another content type, 403 for a cross-site browser request.
    """
    if request.mimetype != "application/json":
        raise Refused(415, "Send the body as JSON, with the header Content-Type: application/json.")
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return  # no cookie rides along with a token: nothing to forge
    same_site_request()


def same_site_request() -> None:
    """Refuse a browser request another site's page sent (its Origin, or Sec-Fetch-Site): the
    protection of a form that cannot carry a CSRF token (a share link's page sets no cookie).

    :raise Refused: 403.
    """
    origin = request.headers.get("Origin")
    cross_site = request.headers.get("Sec-Fetch-Site") == "cross-site" or (
        origin is not None and urlsplit(origin).netloc != request.host
    )
    if cross_site:
        raise Refused(403, "Requests from other websites are refused.")
