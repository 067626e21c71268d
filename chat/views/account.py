"""Sign up, sign in, sign out (here or everywhere), and the account page with its API tokens.
Plain forms that work without JavaScript; with htmx they are boosted like every other link."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import Blueprint, flash, get_flashed_messages, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response as WerkzeugResponse

from ..models import Identity, api_tokens, ledger
from ..people import accounts, rate_limits
from ..people.identity import guest_from_session
from ..refusals import Refused

bp = Blueprint("account", __name__)
NEW_TOKEN = "new_token"  # the session key carrying a new token from its POST to the page


def session_required(view: Callable) -> Callable:
    """`login_required`, by a browser session only: an API token is for the chat API, never for
    managing the account (minting tokens that outlive it, signing everyone out)."""

    @functools.wraps(view)
    def with_session(*args, **kwargs):
        if "Authorization" in request.headers:
            raise Refused(403, "Account pages need a signed-in browser session; an API token cannot open them.")
        return login_required(view)(*args, **kwargs)

    return with_session


def safe_next(default: str = "/") -> str:
    """Where to go after signing in: a path on this site only (never another site's URL)."""
    target = request.values.get("next") or ""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.scheme and not parts.netloc:
        return target
    return default


def start_session(account: Identity) -> WerkzeugResponse:
    """A fresh session for the account: nothing of the guest session before it is kept."""
    session.clear()
    login_user(account)
    session.permanent = True
    return redirect(safe_next(), code=303)


def auth_page(mode: str, error: str | None = None, status: int = 200, email: str = "") -> tuple[str, int]:
    notice = next(iter(get_flashed_messages()), None)
    return render_template(
        "pages/auth.html", mode=mode, error=error, notice=notice, email=email, next=safe_next("")
    ), status


def account_form(mode: str, act: Callable[[str, str, uuid.UUID | None], Identity]):
    """GET shows the form; POST acts on it and starts the account's session, or shows the form
    again with what was wrong (and the status that says it)."""
    if request.method == "GET":
        return auth_page(mode)
    email = request.form.get("email", "")
    try:
        account = act(email, request.form.get("password", ""), guest_from_session())
    except accounts.AccountError as error:
        return auth_page(mode, error.message, error.status, email)
    return start_session(account)


@bp.route("/signup", methods=["GET", "POST"])
@rate_limits.sign_ins_per_address
def sign_up():
    if request.method == "POST":
        rate_limits.admit_new_guest()  # an account brings credits, as a new guest does: one count
    return account_form("signup", accounts.sign_up)


@bp.route("/signin", methods=["GET", "POST"])
@rate_limits.sign_ins_per_address
@rate_limits.sign_ins_per_account
def sign_in():
    return account_form("signin", accounts.sign_in)


@bp.post("/signout")
def sign_out():
    logout_user()
    session.clear()
    return redirect(url_for("pages.index"), code=303)


@bp.post("/account/sign-out-everywhere")
@session_required
def sign_out_everywhere():
    """Post/redirect/get: the sign-in page says so once, and a reload shows the page again."""
    accounts.sign_out_everywhere(current_user)
    logout_user()
    session.clear()
    flash("You are signed out on every device.")
    return redirect(url_for("account.sign_in"), code=303)


@bp.get("/account")
@session_required
def show():
    """The account, its ledger and tokens; a token just created is shown this once (it rode
    from the POST in the signed session, and is gone from it now)."""
    return render_template(
        "pages/account.html",
        account=current_user,
        entries=ledger(current_user.id),
        tokens=api_tokens(current_user.id),
        new_token=session.pop(NEW_TOKEN, None),
    )


@bp.post("/account/tokens")
@session_required
def create_token():
    """Post/redirect/get: a reload of the page that shows the new token shows the account."""
    session[NEW_TOKEN] = accounts.create_token(current_user, request.form.get("name", ""))
    return redirect(url_for("account.show"), code=303)


@bp.post("/account/tokens/<uuid:token_id>/revoke")
@session_required
def revoke_token(token_id: uuid.UUID):
    accounts.revoke_token(current_user, token_id)
    return redirect(url_for("account.show"), code=303)
