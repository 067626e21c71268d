"""Errors answer in the caller's language: JSON `{"error": …}` for the API, a page for people."""

from __future__ import annotations

from flask import Flask, Response, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from ..extensions import db
from ..identity import AuthenticationRequired
from ..refusals import Refused


def error_response(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def init_app(app: Flask) -> None:
    @app.errorhandler(Refused)
    def refused(error: Refused):
        if wants_json():
            return error_response(error.status, error.message)
        return render_template("pages/error.html", status=error.status, message=error.message), error.status

    @app.errorhandler(AuthenticationRequired)
    def authentication_required(error: AuthenticationRequired):
        if wants_json() or "Authorization" in request.headers:
            response = error_response(401, error.message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="Durable Chat"'
            return response
        if request.method == "GET":
            return redirect(url_for("account.sign_in", next=request.full_path.rstrip("?")), code=303)
        return render_template("pages/error.html", status=401, message=error.message), 401

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if wants_json():
            return error_response(error.code or 500, error.description or error.name)
        return render_template("pages/error.html", status=error.code, message=error.description), error.code

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        db.session.rollback()
        app.logger.exception("unhandled error")
        if wants_json():
            return error_response(500, "Something went wrong on the server.")
        return render_template("pages/error.html", status=500, message="Something went wrong on the server."), 500
