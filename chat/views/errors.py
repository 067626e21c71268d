"""Errors answer in the caller's language: JSON `{"error": …}` for the API, a toast for htmx, a
page for people. A 500 names its request id (also in the log line with the traceback); no
response ever carries a traceback, a key or a password."""

from __future__ import annotations

from flask import Flask, Response, g, jsonify, redirect, render_template, request, url_for
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..extensions import db
from ..files.intake import megabytes
from ..people import rate_limits
from ..people.identity import AuthenticationRequired
from ..refusals import Refused

CSRF_REFUSED = "This form did not come from this site's page, or the page is too old: reload it and try again."


def error_response(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def wants_json() -> bool:
    return (
        request.path.startswith("/api/")
        or request.path in ("/healthz", "/readyz")
        or "Authorization" in request.headers
    )


def is_fragment_request() -> bool:
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


def answer(status: int, message: str, retry_after: int | None = None) -> Response:
    """The error as JSON, as a toast swapped into an htmx page, or as a page."""
    if wants_json():
        response = error_response(status, message)
    elif is_fragment_request():
        response = Response(render_template("_partials/toast.html", message=message, kind="error"), status=status)
        response.headers["HX-Retarget"] = "#toasts"
        response.headers["HX-Reswap"] = "beforeend"
    else:
        response = Response(render_template("pages/error.html", status=status, message=message), status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(Refused)
    def refused(error: Refused):
        return answer(error.status, error.message, error.retry_after)

    @app.errorhandler(CSRFError)
    def cross_site_form(error: CSRFError):
        app.logger.info("refused a form post without a valid CSRF token: %s", error.description)
        return answer(403, CSRF_REFUSED)

    @app.errorhandler(AuthenticationRequired)
    def authentication_required(error: AuthenticationRequired):
        if wants_json():
            response = error_response(401, error.message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="Durable Chat"'
            return response
        if request.method == "GET" and not is_fragment_request():
            return redirect(url_for("account.sign_in", next=request.full_path.rstrip("?")), code=303)
        return answer(401, error.message)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error: RateLimitExceeded):
        return answer(429, error.description or error.name, rate_limits.retry_after())

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        limit, files = app.config["MAX_UPLOAD_BYTES"], app.config["MAX_FILES_PER_MESSAGE"]
        return answer(
            413,
            f"That is too much to send at once: files may be {megabytes(limit)} each, {files} to a message, "
            "and a message's text takes much less.",
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return answer(error.code or 500, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        db.session.rollback()
        request_id = g.get("request_id", "-")
        app.logger.exception("unhandled error (request %s %s %s)", request_id, request.method, request.path)
        return answer(500, f"Something went wrong on the server. If it keeps happening, quote request {request_id}.")
