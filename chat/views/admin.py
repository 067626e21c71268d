"""The operator's console (`/admin`): live replies (Stop, Reap), people (search, grant credits)
and the audit trail. Accounts with the admin flag only, by a browser session: anyone else —
guests, other accounts, API tokens — gets 404, as if there were no console."""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user

from ..models import accounts_matching, admin_actions
from ..people import operators
from ..people.credits import credits_to_micros

bp = Blueprint("admin", __name__, url_prefix="/admin")

MAX_GRANT = 1_000_000  # credits at once: a typo of a few zeros is refused, not granted


@bp.before_request
def operators_only() -> None:
    if "Authorization" in request.headers or not current_user.is_authenticated or not current_user.is_admin:
        abort(404)


@bp.get("/")
def console():
    query = request.args.get("q", "")[:200]
    return render_template(
        "pages/admin.html",
        live=operators.live_replies(),
        people=accounts_matching(query),
        query=query,
        actions=admin_actions(30),
        done=request.args.get("done", ""),
    )


@bp.post("/people/<uuid:account_id>/grant")
def grant(account_id: uuid.UUID):
    try:
        amount = float(request.form.get("amount", ""))
    except ValueError:
        amount = 0.0
    if not 0 < amount <= MAX_GRANT:
        abort(400, description=f"Grant a number of credits above 0 and at most {MAX_GRANT:,}.")
    note = (request.form.get("note") or "").strip()[:200] or "Granted by an operator"
    account = operators.grant_credits(current_user, account_id, credits_to_micros(amount), note)
    return redirect(url_for("admin.console", done=f"Granted {amount:g} credits to {account.email}."), code=303)


@bp.post("/replies/<uuid:chat_id>/stop")
def stop(chat_id: uuid.UUID):
    stopped = operators.stop_reply(current_user, chat_id)
    done = "The reply was stopped." if stopped else "That reply had already ended."
    return redirect(url_for("admin.console", done=done), code=303)


@bp.post("/replies/reap")
def reap():
    finished = operators.reap(current_user)
    return redirect(url_for("admin.console", done=f"{finished} replies interrupted."), code=303)
