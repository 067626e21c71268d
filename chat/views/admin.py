"""The operator's console (`/admin`): live replies (Stop, Reap), people (search; credits given
or taken; disable, enable; admin or not; spend cap and agents), usage (charts and CSV) and the
audit trail. Accounts with the admin flag only, by a browser session: anyone else — guests,
other accounts, API tokens — gets 404, as if there were no console."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, time, timedelta

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from ..models import UsageGrouping, accounts_matching, admin_actions, standings, usage, utcnow
from ..people import operators
from ..people.credits import credits_to_micros

bp = Blueprint("admin", __name__, url_prefix="/admin")

MAX_GRANT = 1_000_000  # credits at once: a typo of a few zeros is refused, not granted
LONGEST_RANGE = timedelta(days=366)


@bp.before_request
def operators_only() -> None:
    if "Authorization" in request.headers or not current_user.is_authenticated or not current_user.is_admin:
        abort(404)


def done(message: str) -> WerkzeugResponse:
    return redirect(url_for("admin.console", done=message, q=request.args.get("q", "")), code=303)


@bp.get("/")
def console():
    query = request.args.get("q", "")[:200]
    people = accounts_matching(query)
    now = utcnow()
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return render_template(
        "pages/admin.html",
        live=operators.live_replies(),
        people=people,
        standing=standings([person.id for person in people], month),
        agents=current_app.extensions["agents"].values(),
        query=query,
        actions=admin_actions(30),
        done=request.args.get("done", ""),
    )


@bp.post("/people/<uuid:account_id>/grant")
def grant(account_id: uuid.UUID):
    """Give credits, or take them with a negative amount; a ledger row with the note."""
    try:
        amount = float(request.form.get("amount", ""))
    except ValueError:
        amount = 0.0
    if not 0 < abs(amount) <= MAX_GRANT:
        abort(400, description=f"Give (or, below zero, take) a number of credits other than 0, at most {MAX_GRANT:,}.")
    note = (request.form.get("note") or "").strip()[:200] or "By an operator"
    account = operators.adjust_credits(current_user, account_id, credits_to_micros(amount), note)
    verb = "Granted" if amount > 0 else "Took"
    return done(f"{verb} {abs(amount):g} credits {'to' if amount > 0 else 'from'} {account.email}.")


@bp.post("/people/<uuid:account_id>/disable")
def disable(account_id: uuid.UUID):
    account = operators.set_disabled(current_user, account_id, True)
    return done(f"{account.email} is disabled: signed out everywhere, tokens refused, live replies stopped.")


@bp.post("/people/<uuid:account_id>/enable")
def enable(account_id: uuid.UUID):
    account = operators.set_disabled(current_user, account_id, False)
    return done(f"{account.email} may sign in again.")


@bp.post("/people/<uuid:account_id>/admin")
def admin_flag(account_id: uuid.UUID):
    make = request.form.get("admin") == "1"
    account = operators.set_admin(current_user, account_id, make)
    return done(f"{account.email} is {'now' if make else 'no longer'} an admin.")


@bp.post("/people/<uuid:account_id>/limits")
def limits(account_id: uuid.UUID):
    """The account's own monthly cap (empty: the default) and the agents it may use."""
    raw_cap = request.form.get("cap", "").strip()
    try:
        cap = None if raw_cap == "" else float(raw_cap)
    except ValueError:
        cap = -1.0
    if cap is not None and not 0 <= cap <= MAX_GRANT:
        abort(
            400, description=f"A monthly cap is a number of credits from 0 to {MAX_GRANT:,}, or empty for the default."
        )
    known = current_app.extensions["agents"]
    chosen = [slug for slug in request.form.getlist("agents") if slug in known]
    agents = None if request.form.get("all_agents") == "1" else chosen
    account = operators.set_limits(current_user, account_id, None if cap is None else credits_to_micros(cap), agents)
    return done(f"Limits of {account.email} saved.")


@bp.post("/replies/<uuid:chat_id>/stop")
def stop(chat_id: uuid.UUID):
    stopped = operators.stop_reply(current_user, chat_id)
    return done("The reply was stopped." if stopped else "That reply had already ended.")


@bp.post("/replies/reap")
def reap():
    finished = operators.reap(current_user)
    return done(f"{finished} replies interrupted.")


def usage_range() -> tuple[date, date]:
    """The days asked for (`from`, `to`, inclusive; the last 30 days by default).

    :raise HTTPException: 400 for a date that is not YYYY-MM-DD, or a range backwards or over a year.
    """
    today = utcnow().date()
    try:
        first = date.fromisoformat(request.args.get("from") or (today - timedelta(days=29)).isoformat())
        last = date.fromisoformat(request.args.get("to") or today.isoformat())
    except ValueError:
        abort(400, description="Dates are written YYYY-MM-DD.")
    if last < first or last - first > LONGEST_RANGE:
        abort(400, description="Choose a range that ends after it starts, at most a year long.")
    return first, last


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@bp.get("/usage")
def usage_page():
    first, last = usage_range()
    since, until = day_start(first), day_start(last + timedelta(days=1))
    days = {row.key: row for row in usage(UsageGrouping.DAY, since, until)}
    every_day = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    return render_template(
        "pages/admin_usage.html",
        first=first,
        last=last,
        days=[(day, days.get(day)) for day in every_day],
        most=max((row.cost_micros for row in days.values()), default=0),
        by_agent=usage(UsageGrouping.AGENT, since, until),
        by_account=usage(UsageGrouping.ACCOUNT, since, until),
    )


@bp.get("/usage.csv")
def usage_csv():
    """The same sums as the page, one grouping per file (`by`: day, agent, account)."""
    first, last = usage_range()
    try:
        grouping = UsageGrouping(request.args.get("by", "day"))
    except ValueError:
        abort(400, description="`by` is day, agent or account.")
    rows = usage(grouping, day_start(first), day_start(last + timedelta(days=1)))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([grouping.value, "cost_micro_credits", "prompt_tokens", "completion_tokens", "charges"])
    for row in rows:
        writer.writerow([row.key, row.cost_micros, row.prompt_tokens, row.completion_tokens, row.charges])
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="usage-by-{grouping.value}-{first}-{last}.csv"'
    return response
