"""Rate limits (Flask-Limiter), counted in the app's Redis so every worker and host shares them.

Each limit is a setting (`RATE_LIMIT_*`, in the limits library's notation: "20/minute",
"5 per 10 seconds"), read per request. A breach answers 429 with `Retry-After` and a sentence a
person can act on. If Redis fails, the counts go on in each process's memory (Flask-Limiter's
in-memory fallback) rather than letting everything through; a message cannot be sent while Redis
is down anyway, so nothing that costs money is ever unlimited.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import redis
from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse

from ..extensions import DRIVER_INFO, on_cluster
from ..refusals import Refused
from .identity import current_identity_id

# No X-RateLimit-* headers on every response: reading a moving window back costs one more Redis
# script (a binary search, ~10 commands) per limited request. A breach gets `Retry-After` from
# `retry_after()`, read only then.
limiter = Limiter(
    key_func=get_remote_address,
    headers_enabled=False,
    in_memory_fallback_enabled=True,
    key_prefix="limits",
)


def init_app(app: Flask) -> None:
    """Count in the app's Redis when its URL is known now (gunicorn's master publishes the
    embedded server's); in memory otherwise: `flask run` is one process, and without
    RESUMABLE_STREAMS there is no Redis to share."""
    url = app.config.get("REDIS_URL") or os.environ.get("REDIS_URL")
    if url and app.config["RESUMABLE_STREAMS"]:
        options: dict = {"driver_info": DRIVER_INFO}
        if on_cluster(app, url):  # limits' cluster storage: its scheme, the node's address
            scheme, rest = url.split("://", 1)
            url = "redis+cluster://" + rest.split("/", 1)[0]
            if scheme == "rediss":
                options["ssl"] = True
        app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", options)
        app.config.setdefault("RATELIMIT_STORAGE_URI", url)
    app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    app.config.setdefault("RATELIMIT_ENABLED", app.config["RATE_LIMITS_ENABLED"])
    limiter.init_app(app)
    # The limiter is one object for every app of the process (its decorators are module-level):
    # init_app gives it this app's storage, so a previous storage's outage says nothing of it.
    limiter._storage_dead = False


def setting(name: str) -> Callable[[], str]:
    return lambda: current_app.config[name]


def caller() -> str:
    return str(current_identity_id())


def email_and_address() -> str:
    """Sign-in failures count per account *and* address: a guesser elsewhere cannot lock the
    owner out, and each address gets only a few guesses at one account."""
    return f"{request.form.get('email', '').strip().lower()}|{get_remote_address()}"


# Decorators for the views. Both message routes (API and page form) share one count.
messages_per_identity = limiter.shared_limit(
    setting("RATE_LIMIT_MESSAGES"),
    scope="messages",
    key_func=caller,
    error_message="You are sending messages too fast; wait a moment and send again.",
)
messages_per_address = limiter.shared_limit(
    setting("RATE_LIMIT_MESSAGES_PER_IP"),
    scope="messages-ip",
    error_message="Too many messages from your network; wait a moment and send again.",
)
sign_ins_per_address = limiter.shared_limit(
    setting("RATE_LIMIT_SIGN_IN"),
    scope="sign-in-ip",
    methods=["POST"],
    error_message="Too many sign-in attempts from your network; wait a minute and try again.",
)
sign_ins_per_account = limiter.shared_limit(
    setting("RATE_LIMIT_SIGN_IN_PER_ACCOUNT"),
    scope="sign-in-account",
    key_func=email_and_address,
    methods=["POST"],
    deduct_when=lambda response: response.status_code == 401,  # wrong passwords only
    error_message="Too many sign-in attempts for this account; wait a minute and try again.",
)
searches = limiter.limit(
    setting("RATE_LIMIT_SEARCHES"),
    key_func=caller,
    exempt_when=lambda: not request.args.get("q", "").strip(),
    error_message="You are searching too fast; wait a moment and search again.",
)
uploads = limiter.limit(
    setting("RATE_LIMIT_UPLOADS"),
    key_func=caller,
    error_message="You are uploading files too fast; wait a moment and try again.",
)
stream_opens = limiter.limit(
    setting("RATE_LIMIT_STREAM_OPENS"),
    key_func=caller,
    error_message="Too many streams opened; wait a moment before resuming again.",
)


def retry_after() -> int | None:
    """Whole seconds until the limit this request breached lets a request through again."""
    breached = limiter.current_limit
    if breached is None:
        return None
    try:
        return max(1, int(breached.reset_at - time.time()))  # as Flask-Limiter rounds it
    except redis.RedisError:  # the limits storage failed just now: any short wait will do
        return 1


def seconds_until_allowed(setting_name: str, scope: str, key: str) -> int | None:
    """Count one hit of the limit `setting_name` for `key`; None when it is within the limit,
    else the whole seconds until it lets one through again. For limits a view checks in the
    middle of its work (the decorators check before it)."""
    if not current_app.config["RATELIMIT_ENABLED"]:
        return None
    item = parse(current_app.config[setting_name])
    if limiter.limiter.hit(item, scope, key):
        return None
    reset_at, _ = limiter.limiter.get_window_stats(item, scope, key)
    return max(1, math.ceil(reset_at - time.time()))


def admit_new_guest() -> None:
    """Count a guest getting its first credits (or a new account) against its address: guests
    are free to make, and without this, dropping the cookie would mint credits.

    :raise Refused: 429 (with `retry_after`) when the address has made too many guests lately.
    """
    wait = seconds_until_allowed("RATE_LIMIT_NEW_GUESTS", "new-guests", get_remote_address())
    if wait is not None:
        raise Refused(429, "Too many new guests from your network; sign up, or try again later.", retry_after=wait)


def page_stream_allowed(viewer: bool = False) -> bool:
    """Count a page's stream against the caller's stream opens — a share link's viewer's against
    their address (they are nobody: no identity). A browser stream is never answered 429
    (EventSource would give up, see docs/api.md): over the limit, the page shows the reply when it
    ends instead of following it."""
    key = f"viewer:{get_remote_address()}" if viewer else caller()
    return seconds_until_allowed("RATE_LIMIT_STREAM_OPENS", "page-stream-opens", key) is None
