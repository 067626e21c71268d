"""The second security pass, one test per finding: each was tried as an attacker would and failed
on the code before the fix (commit 5307151). Against the real app, database and Redis."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import subprocess
import threading
import tomllib
import uuid

import pytest
import redis
import requests
from sqlalchemy import event, select

from chat import create_app
from chat.config import Config
from chat.embedded_redis import ensure_redis_url
from chat.extensions import db
from chat.models import Identity, ledger_sum
from chat.streams import StreamRef
from chat.web import markdown
from chat.web.security import RedactSecrets
from chat.web.structured_logs import JsonLines
from helpers.accounts import PASSWORD, AccountActions, account
from helpers.apps import ROOT
from helpers.chats import latest_reply, new_chat_id, post_chat, resume, wait_for
from helpers.sse import SseEvent, parse_sse, read_events, response_lines

POISON = "99999999999999999999-0"  # 20 digits, as the cursor pattern allowed; above 2^64 - 1


def page_stream(client, chat_id: str, cursor: str | None = None) -> list[SseEvent]:
    """The browser's stream of a chat, read until its `done`."""
    query = f"?lastEventId={cursor}" if cursor else ""
    response = client.get(f"/agent/helper/{chat_id}/stream{query}", buffered=False)
    assert response.status_code == 200
    events = []
    for sse_event in parse_sse(response_lines(response)):
        events.append(sse_event)
        if sse_event.event == "done":
            break
    response.close()
    return events


def stored_balance(app, identity_id) -> int:
    with app.app_context():
        identity = db.session.get_one(Identity, identity_id)
        assert identity.balance_micros == ledger_sum(identity_id), "balance == sum of the ledger"
        return identity.balance_micros


# -- high: an old guest cookie ----------------------------------------------------------------
def test_a_guest_cookie_copied_before_sign_up_reaches_nothing_of_the_account(app):
    victim = app.test_client()
    as_guest = new_chat_id()
    read_events(post_chat(victim, as_guest, "asked as a guest"))
    copied = victim.get_cookie("durable_chat").value  # a shared computer, a planted cookie
    AccountActions(victim).sign_up()
    as_account = new_chat_id()
    read_events(post_chat(victim, as_account, "asked as the account"))
    ada = account(app, "ada@example.com")
    balance = stored_balance(app, ada.id)

    attacker = app.test_client()
    attacker.set_cookie("durable_chat", copied)
    listing = attacker.get("/chats").get_data(as_text=True)
    assert "asked as a guest" not in listing and "asked as the account" not in listing
    for chat_id in (as_guest, as_account):
        assert attacker.get(f"/agent/helper/{chat_id}/export.md").status_code == 404
        assert attacker.get(f"/api/chat?chatId={chat_id}").status_code == 404
        assert post_chat(attacker, chat_id, "spend it").status_code == 404
    read_events(post_chat(attacker, new_chat_id(), "a chat of my own"))
    assert stored_balance(app, ada.id) == balance, "the account's credits are untouched"
    assert attacker.get_cookie("durable_chat").value != copied, "the merged guest was given a fresh start"
    assert "asked as the account" in victim.get("/chats").get_data(as_text=True), "the account keeps all"


# -- medium: a poisoned cursor ------------------------------------------------------------------
def test_a_cursor_past_what_redis_accepts_is_refused_at_the_edge(client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    refused = client.get(f"/api/chat?chatId={chat_id}", headers={"Last-Event-ID": POISON})
    assert refused.status_code == 400 and "not an event id" in refused.get_json()["error"]
    largest = f"{2**64 - 1}-{2**64 - 2}"
    assert client.get(f"/api/chat?chatId={chat_id}", headers={"Last-Event-ID": largest}).status_code == 200


def test_a_poisoned_page_stream_on_one_instance_does_not_stop_another_persons_stream(app_factory):
    """Two instances on one Redis: both replies are produced by A and followed through B's one
    shared XREAD; the attacker's page stream on B names a cursor Redis refuses."""
    slow = {"DEMO_MODEL_WORDS": 80, "DEMO_MODEL_DELAY_MS": 20}
    producer, follower = app_factory(**slow), app_factory(**slow)
    victim, attacker = producer.test_client(), producer.test_client()
    victim_chat, attacker_chat = new_chat_id(), new_chat_id()
    head = read_events(post_chat(victim, victim_chat), stop_after=3)
    read_events(post_chat(attacker, attacker_chat), stop_after=2)
    victim_on_b, attacker_on_b = follower.test_client(), follower.test_client()
    victim_on_b.set_cookie("durable_chat", victim.get_cookie("durable_chat").value)
    attacker_on_b.set_cookie("durable_chat", attacker.get_cookie("durable_chat").value)
    following = resume(victim_on_b, victim_chat, head.last_id)
    poisoned = threading.Thread(target=page_stream, args=(attacker_on_b, attacker_chat, POISON))
    poisoned.start()
    tail = read_events(following)
    poisoned.join(30)
    assert tail.terminal.event == "finish", tail.terminal
    assert head.text + tail.text == latest_reply(producer, victim_chat).content


def test_the_reader_ends_only_the_followers_of_a_log_whose_read_redis_refuses(store):
    """Defence in depth behind the edge check: one refused cursor in the shared XREAD ends its own
    followers with an error, and every other log's followers keep reading."""
    from chat.replies.reader import CURSOR_REFUSED, StreamHub

    streams = store()
    victim_ref, poisoned_ref = StreamRef("c1", "s1"), StreamRef("c2", "s2")
    streams.create(victim_ref, {})
    streams.create(poisoned_ref, {})
    hub = StreamHub(
        streams, block_ms=50, keepalive_seconds=1, liveness_seconds=60, outage_seconds=0.3, on_dead=lambda ref: None
    )
    victim = hub.subscribe(victim_ref, "0-0")
    poisoned = hub.subscribe(poisoned_ref, POISON)
    hub.start()
    try:
        streams.end_log(victim_ref, "finish", {"finishReason": "stop"})
        victim_events = [e for e in victim if e is not None]
        poisoned_events = [e for e in poisoned if e is not None]
    finally:
        hub.stop()
    assert [e.type for e in victim_events] == ["start", "finish"]
    assert [e.type for e in poisoned_events] == ["error"]
    assert json.loads(poisoned_events[0].data)["message"] == CURSOR_REFUSED


# -- medium: free credits by signing up ----------------------------------------------------------
def test_sign_ups_count_as_new_guests_and_grant_no_more_than_a_guest(app_factory):
    assert Config.SIGNUP_CREDIT_GRANT <= Config.GUEST_CREDIT_GRANT, "an account is as easy to make as a guest"
    app = app_factory(RATE_LIMIT_NEW_GUESTS="3/hour", RATE_LIMIT_SIGN_IN="100/minute")
    for n in range(3):
        assert AccountActions(app.test_client()).sign_up(f"farm{n}@example.com").status_code == 303
    refused = AccountActions(app.test_client()).sign_up("farm3@example.com")
    assert refused.status_code == 429 and "Too many new guests" in refused.get_data(as_text=True)
    assert account(app, "farm3@example.com") is None, "no fourth account, no credits"


# -- medium: Markdown that ties up a worker ------------------------------------------------------
def test_a_replys_markdown_is_rendered_once_for_every_tab_watching_it(app_factory, monkeypatch):
    app = app_factory(DEMO_MODEL_WORDS=60, DEMO_MODEL_DELAY_MS=15)
    owner = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(owner, chat_id), stop_after=1)
    parses = []
    parse = markdown.parser.parse
    monkeypatch.setattr(markdown.parser, "parse", lambda src, env=None: parses.append(src) or parse(src, env))
    tabs = [owner.get(f"/agent/helper/{chat_id}/stream", buffered=False) for _ in range(4)]
    seen = []
    for tab in tabs:
        events = [e for e in parse_sse(response_lines(tab)) if e.event in ("tail", "block", "done")]
        tab.close()
        seen.append([(e.id, e.event, e.data) for e in events])
    assert all(events == seen[0] for events in seen), "every tab saw the same HTML"
    assert len(seen[0]) > 5
    assert len(parses) <= len(seen[0]) + 4, f"{len(parses)} renders for {len(seen[0])} events in 4 tabs"


def test_pathological_markdown_degrades_to_escaped_text_once_its_budget_is_spent(monkeypatch):
    from chat.web.markdown import SharedRenders, StreamingMarkdown

    parses = []
    parse = markdown.parser.parse
    monkeypatch.setattr(markdown.parser, "parse", lambda src, env=None: parses.append(1) or parse(src, env))
    rendered = StreamingMarkdown(stream="pathological", shared=SharedRenders(budget_seconds=0.01))
    deltas = ["[" * 5] * 800  # 4,000 brackets: each render of the open block is quadratic
    for n, delta in enumerate(deltas):
        rendered.feed(delta, f"1-{n}")
    assert len(parses) < 200, f"rendered {len(parses)} times for {len(deltas)} deltas"
    assert str(rendered.tail).startswith('<p class="plain">[[[[') and rendered.tail.count("[") == 4000


def test_a_long_chat_page_shows_its_newest_messages_and_pages_back(app_factory):
    app = app_factory(CHAT_PAGE_MESSAGES=4)
    client = app.test_client()
    chat_id = new_chat_id()
    for word in ("hello", "zebra", "walrus", "vulture"):  # four turns: user message and reply each
        read_events(post_chat(client, chat_id, word))
    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert "vulture" in page and "walrus" in page and "zebra" not in page
    earlier = page.split('<p class="earlier"><a href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    older = client.get(earlier).get_data(as_text=True)
    assert "zebra" in older and "walrus" not in older and "vulture" not in older
    assert client.get(f"/agent/helper/{chat_id}?before=99999999999999999999").status_code == 400


# -- medium/low: search -------------------------------------------------------------------------
def test_a_search_reads_only_the_callers_own_messages_and_is_rate_limited(app_factory):
    app = app_factory(RATE_LIMIT_SEARCHES="3/minute")
    client = app.test_client()
    read_events(post_chat(client, new_chat_id(), "needle in my haystack"))
    statements = []
    with app.app_context():
        engine = db.engine
    listen = event.listens_for(engine, "before_cursor_execute")

    @listen
    def capture(conn, cursor, statement, parameters, context, executemany):
        if "LIKE" in statement.upper():
            statements.append((statement, parameters))

    try:
        assert "needle" in client.get("/chats?q=needle").get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(search, parameters)] = statements
    with app.app_context():
        connection = db.session.connection()
        if engine.dialect.name == "sqlite":
            plan = " | ".join(row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + search, parameters))
            assert "SCAN messages" not in plan, plan
        else:
            plan = " | ".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + search, parameters))
            assert "identity_id" in plan, plan
    for _ in range(2):
        client.get("/chats?q=needle")
    limited = client.get("/chats?q=needle")
    assert limited.status_code == 429 and limited.headers["Retry-After"]
    assert client.get("/chats").status_code == 200, "the plain list is not a search"


# -- low: balances far below zero ---------------------------------------------------------------
def test_a_burst_of_messages_cannot_overdraw_the_balance(app_factory):
    # 2 credits: one reply's reservation (its prompt and 1,024 tokens, ~1.54 credits) at a time.
    app = app_factory(GUEST_CREDIT_GRANT=2, DEMO_MODEL_WORDS=200, DEMO_MODEL_DELAY_MS=2)
    first = app.test_client()
    read_events(post_chat(first, new_chat_id(), "hi"))
    cookie = first.get_cookie("durable_chat").value
    statuses: list[int] = []

    def send() -> None:
        client = app.test_client()
        client.set_cookie("durable_chat", cookie)
        response = post_chat(client, new_chat_id(), "tell me everything")
        statuses.append(response.status_code)
        if response.status_code == 200:
            read_events(response)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses.count(402) >= 8, statuses
    with app.app_context():
        guest = db.session.scalars(select(Identity).where(Identity.email.is_(None))).one()
        assert guest.reserved_micros == 0 and guest.live_replies == 0, "every reservation was given back"
    assert stored_balance(app, guest.id) >= 0


def test_an_identity_has_at_most_its_cap_of_replies_being_written(app_factory):
    app = app_factory(LIVE_REPLIES_PER_IDENTITY=2, DEMO_MODEL_WORDS=300, DEMO_MODEL_DELAY_MS=20)
    client = app.test_client()
    live = [post_chat(client, new_chat_id()) for _ in range(2)]
    assert [response.status_code for response in live] == [200, 200]
    refused = post_chat(client, new_chat_id())
    assert refused.status_code == 429 and "too many replies" in refused.get_json()["error"]
    for response in live:
        response.close()


# -- low: an API token opening the account -------------------------------------------------------
def test_an_api_token_cannot_open_the_account_or_mint_tokens(app):
    person = AccountActions(app.test_client())
    person.sign_up()
    token = person.create_token()
    script = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert script.get("/account", headers=bearer).status_code == 403
    minted = script.post("/account/tokens", data={"name": "outlives me"}, headers=bearer)
    assert minted.status_code == 403 and "dct_" not in minted.get_data(as_text=True)
    assert script.post("/account/sign-out-everywhere", headers=bearer).status_code == 403
    assert person.client.get("/account").status_code == 200, "the browser session still works"
    chat = script.post(
        "/api/chat", json={"chatId": new_chat_id(), "agent": "helper", "message": "hi"}, headers=bearer, buffered=False
    )
    assert read_events(chat).terminal.event == "finish", "the token still works for the chat API"


# -- low: sign-in limits that lock the owner out ---------------------------------------------------
def test_a_guesser_elsewhere_cannot_lock_the_owner_out(app_factory):
    app = app_factory(RATE_LIMIT_SIGN_IN_PER_ACCOUNT="3/minute", RATE_LIMIT_SIGN_IN="100/minute")
    AccountActions(app.test_client()).sign_up()
    guesser = AccountActions(app.test_client())
    guesser.client.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    for _ in range(3):
        assert guesser.sign_in(password="a wrong guess").status_code == 401
    assert guesser.sign_in(password="another guess").status_code == 429, "the guesser's address is stopped"
    owner = AccountActions(app.test_client())
    owner.client.environ_base["REMOTE_ADDR"] = "127.0.0.3"
    assert owner.sign_in(password=PASSWORD).status_code == 303, "the owner signs in from elsewhere"


# -- low: JSON logs ------------------------------------------------------------------------------
def test_json_logs_redact_a_url_password_inside_an_exception():
    made_up = "made-up-password-" + uuid.uuid4().hex[:8]  # generated here: nothing real
    logger = logging.getLogger("test.json-redaction")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonLines())
    handler.addFilter(RedactSecrets())
    logger.addHandler(handler)
    try:
        raise ConnectionError(f"cannot reach redis://default:{made_up}@cache.internal:6379/0")
    except ConnectionError:
        logger.exception("the store failed")
    finally:
        logger.removeHandler(handler)
    [line] = lines
    assert made_up not in line and "default:***@cache.internal" in json.loads(line)["exception"]


# -- low: caches ---------------------------------------------------------------------------------
def test_identity_bearing_answers_tell_caches_not_to_store_them(client):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "private words"))
    for path in ("/", "/chats?q=private", f"/agent/helper/{chat_id}", f"/agent/helper/{chat_id}/export.json"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path
    static = client.get("/static/css/app.css")
    static.close()
    assert "no-store" not in static.headers.get("Cache-Control", "")


# -- low: unhandled 500s ---------------------------------------------------------------------------
def test_absurd_page_numbers_and_deeply_nested_json_get_400_not_500(client):
    huge_page = client.get("/chats?page=99999999999999999999")
    assert huge_page.status_code == 400 and "no page" in huge_page.get_data(as_text=True)
    nested = client.post("/api/chat", data="[" * 200_000, headers={"Content-Type": "application/json"})
    assert nested.status_code == 400 and "JSON object" in nested.get_json()["error"]


# -- low: the page stream's open rate ----------------------------------------------------------------
def test_the_page_stream_counts_against_the_stream_open_limit(app_factory):
    app = app_factory(RATE_LIMIT_STREAM_OPENS="2/minute", DEMO_MODEL_WORDS=200, DEMO_MODEL_DELAY_MS=20)
    client = app.test_client()
    chat_id = new_chat_id()
    post = post_chat(client, chat_id)
    read_events(post, stop_after=2)
    for _ in range(2):
        response = client.get(f"/agent/helper/{chat_id}/stream", buffered=False)
        assert next(e for e in parse_sse(response_lines(response)) if e.event != "done").event in ("tail", "block")
        response.close()
    limited = page_stream(client, chat_id)
    assert [e.event for e in limited] == ["done"], "over the limit: answered 200, nothing followed"


# -- info: files, the embedded Redis, /metrics, the access log ------------------------------------------
def test_instance_files_are_the_owners_alone(tmp_path):
    sqlite_file = tmp_path / "data" / "chat.sqlite3"
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{sqlite_file}", "RESUMABLE_STREAMS": False})
    assert stat.S_IMODE(os.stat(app.instance_path).st_mode) == 0o700
    assert stat.S_IMODE(sqlite_file.stat().st_mode) == 0o600


def test_the_embedded_redis_has_a_password_not_on_its_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "")  # unset for ensure_redis_url; restored after the test
    url = ensure_redis_url(tmp_path / "redis")
    server = redis.Redis.from_url(url)
    password = server.connection_pool.connection_kwargs["password"]
    try:
        assert password and len(password) >= 24
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url.replace(f":{password}@", "@")).ping()
        assert server.ping()
        assert stat.S_IMODE((tmp_path / "redis").stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "redis" / "redis.conf").stat().st_mode) == 0o600
        assert password not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    finally:
        server.shutdown(nosave=True)


def test_metrics_answer_only_a_scraper_with_the_token_or_this_machine(app_factory):
    with_token = app_factory(METRICS_TOKEN="scrape-" + uuid.uuid4().hex).test_client()
    token = with_token.application.config["METRICS_TOKEN"]
    assert with_token.get("/metrics").status_code == 404
    assert with_token.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
    assert with_token.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    local = app_factory().test_client()
    assert local.get("/metrics").status_code == 200
    assert local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 404, "through a proxy"
    remote = app_factory().test_client()
    remote.environ_base["REMOTE_ADDR"] = "192.0.2.7"  # a documentation address; no traffic is sent
    assert remote.get("/metrics").status_code == 404


@pytest.mark.slow
def test_the_access_log_leaves_out_what_people_search_for(gunicorn_server, tmp_path):
    access_log = tmp_path / "access.log"
    server = gunicorn_server(workers=1, GUNICORN_CMD_ARGS=f"--access-logfile {access_log}")
    session = requests.Session()
    assert session.get(f"{server.url}/chats", params={"q": "my-private-words"}, timeout=10).status_code == 200
    wait_for(lambda: "/chats" in access_log.read_text(), message="the access log line")
    line = next(line for line in access_log.read_text().splitlines() if "/chats" in line)
    assert "my-private-words" not in line and "GET /chats HTTP/1.1" in line


def test_every_dependency_is_installed_from_a_pinned_lock_file():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for lock, wanted in (("run", project["dependencies"]), ("test", project["optional-dependencies"]["test"])):
        pinned = dict(re.findall(r"^([a-z0-9._-]+)==(\S+)", (ROOT / f"requirements/{lock}.lock").read_text(), re.M))
        names = [re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower() for requirement in wanted]
        assert not [name for name in names if name not in pinned], f"unpinned in requirements/{lock}.lock"
    makefile = (ROOT / "Makefile").read_text()
    assert "install -r requirements/run.lock" in makefile and "install -r requirements/test.lock" in makefile
