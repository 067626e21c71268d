"""Accounts: sign up and in (guest chats and balance come along, once), every device, sign out
everywhere, API tokens, bad input, the operator commands — against the real database and Redis."""

from __future__ import annotations

import threading

import pytest

from chat.models import ledger_sum
from chat.vocabulary import MICROS_PER_CREDIT, LedgerKind
from helpers.accounts import PASSWORD, AccountActions, account, chat_routes, ledger_rows
from helpers.chats import charges, latest_reply, new_chat_id, post_chat, resume
from helpers.sse import read_events


@pytest.fixture
def actions(client) -> AccountActions:
    return AccountActions(client)


def identity(app, identity_id):
    from chat.extensions import db
    from chat.models import Identity

    with app.app_context():
        return db.session.get(Identity, identity_id)


def balance_is_its_ledger(app, identity_id) -> int:
    """The identity's balance, after checking it equals what its ledger adds up to."""
    from chat.extensions import db
    from chat.models import Identity

    with app.app_context():
        identity = db.session.get_one(Identity, identity_id)
        assert identity.balance_micros == ledger_sum(identity_id), "balance == sum of the ledger"
        return identity.balance_micros


def test_signing_up_keeps_the_guests_chats_and_balance_and_adds_the_grant(app, client, actions):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "before signing up"))
    [charge] = charges(app, titles=False)
    response = actions.sign_up()
    assert response.status_code == 303 and response.headers["Location"] == "/"
    home = client.get("/").get_data(as_text=True)
    assert "ada@example.com" in home and "before signing up" in home, "the guest's chat is the account's"
    assert client.get(f"/agent/helper/{chat_id}").status_code == 200
    ada = account(app, "ada@example.com")
    expected = (app.config["GUEST_CREDIT_GRANT"] + app.config["SIGNUP_CREDIT_GRANT"]) * MICROS_PER_CREDIT
    assert balance_is_its_ledger(app, ada.id) == expected - sum(c.cost_micros for c in charges(app))
    guest = identity(app, charge.identity_id)
    assert guest.merged_into == ada.id and guest.id != ada.id, "the guest's charge stays its own; the guest is merged"


def test_a_double_submitted_sign_up_makes_one_account_with_one_grant(app, client, actions):
    read_events(post_chat(client, new_chat_id()))
    results = []
    threads = [threading.Thread(target=lambda: results.append(actions.sign_up().status_code)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [303, 303], "the second submit signs in to the account the first one made"
    ada = account(app, "ada@example.com")
    grants = [row.note for row in ledger_rows(app, ada.id, LedgerKind.GRANT)]
    assert grants == ["Sign-up credits"]
    assert len(ledger_rows(app, ada.id, LedgerKind.TRANSFER)) == 1, "the guest's credits moved in once"
    balance_is_its_ledger(app, ada.id)


def test_signing_in_from_a_guest_session_merges_its_chats_and_balance_once(app):
    AccountActions(app.test_client()).sign_up()
    ada = account(app, "ada@example.com")
    before = balance_is_its_ledger(app, ada.id)
    guest = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(guest, chat_id, "a guest's question"))
    guest_id = next(c.identity_id for c in charges(app) if c.identity_id != ada.id)
    guest_balance = balance_is_its_ledger(app, guest_id)
    results = []
    signing_in = [
        threading.Thread(target=lambda: results.append(AccountActions(guest).sign_in().status_code)) for _ in range(2)
    ]
    for thread in signing_in:
        thread.start()
    for thread in signing_in:
        thread.join()
    assert results == [303, 303]
    assert "a guest&#39;s question" in guest.get("/").get_data(as_text=True), "the chat list is the account's"
    assert guest.get(f"/agent/helper/{chat_id}").status_code == 200
    assert balance_is_its_ledger(app, ada.id) == before + guest_balance, "the guest's credits, moved once"
    assert balance_is_its_ledger(app, guest_id) == 0
    assert len(ledger_rows(app, ada.id, LedgerKind.TRANSFER)) == 1


@pytest.mark.parametrize(
    "form, email, password, status, message",
    [
        ("signup", "not-an-email", PASSWORD, 400, "not an email address"),
        ("signup", "bob@example.com", "short", 400, "at least 8 characters"),
        ("signup", "ada@example.com", PASSWORD, 409, "already exists"),
        ("signin", "ada@example.com", "wrong password", 401, "Wrong email or password."),
        ("signin", "nobody@example.com", PASSWORD, 401, "Wrong email or password."),
    ],
)
def test_bad_account_input_gets_a_clear_message_and_stores_nothing(app, form, email, password, status, message):
    AccountActions(app.test_client()).sign_up("ada@example.com")
    client = app.test_client()
    response = client.post(f"/{form}", data={"email": email, "password": password})
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert account(app, "bob@example.com") is None and account(app, "not-an-email") is None
    assert "Sign out" not in client.get("/").get_data(as_text=True), "not signed in"


def test_a_second_device_continues_the_live_reply_from_where_it_is(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=200, DEMO_MODEL_DELAY_MS=10)
    first, second = app.test_client(), app.test_client()
    AccountActions(first).sign_up()
    chat_id = new_chat_id()
    response = post_chat(first, chat_id)
    head = read_events(response, stop_after=5)
    AccountActions(second).sign_in()  # no cookie shared with the first device
    assert "hello" in second.get("/").get_data(as_text=True), "the chat list follows the account"
    tail = read_events(resume(second, chat_id, head.last_id))
    rest_on_first = read_events(resume(first, chat_id, head.last_id))
    stored = latest_reply(app, chat_id)
    assert head.text + tail.text == stored.content == head.text + rest_on_first.text
    assert len(charges(app, titles=False)) == 1


def test_sign_out_everywhere_ends_every_old_session_on_every_route(app, actions):
    actions.sign_up()
    chat_id = new_chat_id()
    started = read_events(post_chat(actions.client, chat_id))
    message_id = started.events[0].json()["messageId"]
    stolen = app.test_client()  # the same cookie, in another browser
    stolen.set_cookie("durable_chat", actions.client.get_cookie("durable_chat").value)
    assert stolen.get(f"/agent/helper/{chat_id}").status_code == 200
    assert actions.client.post("/account/sign-out-everywhere").status_code == 303
    for method, path, options in chat_routes(chat_id, message_id):
        response = stolen.open(path, method=method, **options)
        assert response.status_code == 404, f"{method} {path} answered {response.status_code}"
        response.close()
    assert stolen.get("/account").status_code == 302, "the account page asks to sign in again"
    assert actions.sign_in().status_code == 303
    assert actions.client.get(f"/agent/helper/{chat_id}").status_code == 200


def test_another_accounts_chat_is_404_on_every_route(app):
    owner, other = AccountActions(app.test_client()), AccountActions(app.test_client())
    owner.sign_up("owner@example.com")
    other.sign_up("other@example.com")
    chat_id = new_chat_id()
    message_id = read_events(post_chat(owner.client, chat_id)).events[0].json()["messageId"]
    for method, path, options in chat_routes(chat_id, message_id):
        response = other.client.open(path, method=method, **options)
        assert response.status_code == 404, f"{method} {path} answered {response.status_code}"
        response.close()
    assert latest_reply(app, chat_id).status == "complete", "nothing the other account did touched it"


def test_an_api_token_works_for_post_get_and_stop_and_a_revoked_one_gets_401(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=300, DEMO_MODEL_DELAY_MS=10)
    owner = AccountActions(app.test_client())
    owner.sign_up()
    token = owner.create_token()
    script = app.test_client(use_cookies=False)
    auth = {"Authorization": f"Bearer {token}"}
    chat_id = new_chat_id()
    post = script.post(
        "/api/chat",
        json={"chatId": chat_id, "agent": "helper", "message": "from a script"},
        headers=auth,
        buffered=False,
    )
    assert post.status_code == 200 and "Set-Cookie" not in post.headers
    head = read_events(post, stop_after=3)
    follow = script.get(f"/api/chat?chatId={chat_id}", headers={**auth, "Last-Event-ID": head.last_id}, buffered=False)
    assert follow.status_code == 200
    assert script.post("/api/chat/stop", json={"chatId": chat_id}, headers=auth).get_json()["status"] == "cancelled"
    assert head.text + read_events(follow).text == latest_reply(app, chat_id).content
    assert "from a script" in owner.client.get("/").get_data(as_text=True), "the token's chats are the account's"
    page = owner.client.get("/account").get_data(as_text=True)
    token_id = page.split("/account/tokens/")[1].split("/revoke")[0]
    owner.client.post(f"/account/tokens/{token_id}/revoke")
    for response in (
        script.post("/api/chat", json={"chatId": new_chat_id(), "agent": "helper", "message": "x"}, headers=auth),
        script.get(f"/api/chat?chatId={chat_id}", headers=auth),
        script.post("/api/chat/stop", json={"chatId": chat_id}, headers=auth),
    ):
        assert response.status_code == 401 and "revoked" in response.get_json()["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_without_guests_pages_ask_to_sign_in_and_the_api_answers_401(app_factory):
    app = app_factory(ALLOW_GUESTS=False)
    client = app.test_client()
    home = client.get("/")
    assert home.status_code == 303 and home.headers["Location"].startswith("/signin")
    refused = post_chat(client, new_chat_id())
    assert refused.status_code == 401 and "Sign in" in refused.get_json()["error"]
    assert client.get("/signin").status_code == 200
    assert AccountActions(client).sign_up().status_code == 303
    assert read_events(post_chat(client, new_chat_id())).terminal.event == "finish"


def test_operator_commands_against_the_database(app):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["users", "create", "Op@Example.com", "--admin"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert created.exit_code == 0, created.output
    op = account(app, "op@example.com")
    assert op.is_admin
    granted = runner.invoke(args=["credits", "grant", "op@example.com", "25.5", "--note", "thanks for testing"])
    assert granted.exit_code == 0, granted.output
    expected = (app.config["SIGNUP_CREDIT_GRANT"] + 25.5) * MICROS_PER_CREDIT
    assert balance_is_its_ledger(app, op.id) == expected
    shown = runner.invoke(args=["credits", "show", "op@example.com"])
    assert "thanks for testing" in shown.output and f"{expected / MICROS_PER_CREDIT:.4f}" in shown.output
    client = AccountActions(app.test_client())
    assert client.sign_in("op@example.com").status_code == 303
    changed = runner.invoke(args=["users", "set-password", "op@example.com"], input="a new password\na new password\n")
    assert changed.exit_code == 0, changed.output
    assert client.client.get("/account").status_code == 302, "a new password ends the old sessions"
    assert client.sign_in("op@example.com", "a new password").status_code == 303
    missing = runner.invoke(args=["credits", "grant", "nobody@example.com", "5"])
    assert missing.exit_code != 0 and "No account" in missing.output
