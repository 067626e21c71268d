"""The operator's console: live replies (Stop, Reap), people (search; credits given or taken;
disable and enable; admin or not; spend caps and agents), usage (the ledger's sums, as charts
and CSV) and the audit trail; nobody but an admin account sees that it exists."""

from __future__ import annotations

import csv
import io
import re
import uuid

import pytest

from chat.extensions import db
from chat.models import AdminAction, Identity, LedgerEntry
from chat.vocabulary import LedgerKind
from helpers.accounts import PASSWORD, AccountActions, account, ledger_rows
from helpers.axe import violations
from helpers.chats import latest_reply, new_chat_id, post_chat
from helpers.sse import parse_sse, read_events, response_lines

ROUTES = [
    ("GET", "/admin/"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/usage.csv"),
    ("POST", f"/admin/people/{uuid.uuid4()}/grant"),
    ("POST", f"/admin/people/{uuid.uuid4()}/disable"),
    ("POST", f"/admin/people/{uuid.uuid4()}/enable"),
    ("POST", f"/admin/people/{uuid.uuid4()}/admin"),
    ("POST", f"/admin/people/{uuid.uuid4()}/limits"),
    ("POST", f"/admin/replies/{uuid.uuid4()}/stop"),
    ("POST", "/admin/replies/reap"),
]


def admin_client(app, email: str = "root@example.com"):
    client = app.test_client()
    AccountActions(client).sign_up(email)
    with app.app_context():
        identity = db.session.query(Identity).filter_by(email=email).one()
        identity.is_admin = True
        db.session.commit()
    return client


def audit_rows(app) -> list[AdminAction]:
    with app.app_context():
        rows = db.session.query(AdminAction).order_by(AdminAction.created_at).all()
        db.session.expunge_all()
        return rows


def csrf(client) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/").get_data(as_text=True))
    assert match
    return match.group(1)


def test_nobody_but_an_admin_sees_the_console(app):
    guest = app.test_client()
    person = app.test_client()
    AccountActions(person).sign_up("someone@example.com")
    admin = admin_client(app)
    token = AccountActions(admin).create_token()
    for method, path in ROUTES:
        for client in (guest, person):
            assert client.open(path, method=method).status_code == 404, (method, path)
        answer = app.test_client().open(path, method=method, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 404, "an API token never opens the console"
    assert admin.get("/admin/").status_code == 200
    assert audit_rows(app) == []


def test_a_grant_writes_one_ledger_row_with_the_note_and_one_audit_row(app):
    admin = admin_client(app)
    AccountActions(app.test_client()).sign_up("ada@example.com")
    ada = account(app, "ada@example.com")
    page = admin.get("/admin/?q=ada").get_data(as_text=True)
    people = page[page.index('id="people-title"') : page.index('id="audit-title"')]
    assert "ada@example.com" in people and "root@example.com" not in people, "the search found Ada only"
    before = ada.balance_micros
    answer = admin.post(
        f"/admin/people/{ada.id}/grant", data={"amount": "12.5", "note": "for the demo", "csrf_token": csrf(admin)}
    )
    assert answer.status_code == 303
    assert account(app, "ada@example.com").balance_micros == before + 12_500_000
    grants = [row for row in ledger_rows(app, ada.id, LedgerKind.GRANT) if row.note == "for the demo"]
    assert len(grants) == 1 and grants[0].cost_micros == -12_500_000
    (row,) = audit_rows(app)
    assert (row.action, row.target, row.admin_email) == ("grant", "ada@example.com", "root@example.com")
    assert str(before) in row.before and str(before + 12_500_000) in row.after
    too_much = admin.post(f"/admin/people/{ada.id}/grant", data={"amount": "1e9", "csrf_token": csrf(admin)})
    assert too_much.status_code == 400 and len(audit_rows(app)) == 1, "refused, nothing written"


def test_the_console_lists_a_live_reply_and_stops_it(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=300, DEMO_MODEL_DELAY_MS=20)
    owner = app.test_client()
    chat_id = new_chat_id()
    post = post_chat(owner, chat_id, "a long one")
    events = parse_sse(response_lines(post))
    next(e for e in events if e.event == "delta")
    admin = admin_client(app)
    page = admin.get("/admin/").get_data(as_text=True)
    assert chat_id in page and "generating" in page
    assert admin.post(f"/admin/replies/{chat_id}/stop", data={"csrf_token": csrf(admin)}).status_code == 303
    rest = read_events(post)
    assert rest.terminal is not None and rest.terminal.json()["finishReason"] == "cancelled"
    assert latest_reply(app, chat_id).status == "cancelled"
    (row,) = audit_rows(app)
    assert row.action == "stop-reply" and chat_id in row.target and "cancelled" in row.after
    assert admin.post("/admin/replies/reap", data={"csrf_token": csrf(admin)}).status_code == 303
    assert [r.action for r in audit_rows(app)] == ["stop-reply", "reap"]


def test_taking_credits_writes_one_ledger_row_and_never_more_than_is_free(app):
    admin = admin_client(app)
    AccountActions(app.test_client()).sign_up("ada@example.com")
    ada = account(app, "ada@example.com")
    token = csrf(admin)
    answer = admin.post(f"/admin/people/{ada.id}/grant", data={"amount": "-30", "note": "refund", "csrf_token": token})
    assert answer.status_code == 303
    assert account(app, "ada@example.com").balance_micros == ada.balance_micros - 30_000_000
    (taken,) = [row for row in ledger_rows(app, ada.id, LedgerKind.GRANT) if row.note == "refund"]
    assert taken.cost_micros == 30_000_000
    too_much = admin.post(f"/admin/people/{ada.id}/grant", data={"amount": "-100000", "csrf_token": token})
    assert too_much.status_code == 400 and "to take" in too_much.get_data(as_text=True)
    assert [row.action for row in audit_rows(app)] == ["take"]


def test_a_disabled_account_is_signed_out_its_token_refused_and_its_live_reply_cancelled(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=300, DEMO_MODEL_DELAY_MS=20)
    admin = admin_client(app)
    ada = AccountActions(app.test_client())
    ada.sign_up("ada@example.com")
    token = ada.create_token()
    auth = {"Authorization": f"Bearer {token}"}
    chat_id = new_chat_id()
    body = {"chatId": chat_id, "agent": "helper", "message": "a long one"}
    post = app.test_client().post("/api/chat", json=body, headers=auth, buffered=False)
    events = parse_sse(response_lines(post))
    next(e for e in events if e.event == "delta")
    ada_id = account(app, "ada@example.com").id
    assert admin.post(f"/admin/people/{ada_id}/disable", data={"csrf_token": csrf(admin)}).status_code == 303
    rest = read_events(post)
    assert rest.terminal is not None and rest.terminal.json()["finishReason"] == "cancelled"
    assert latest_reply(app, chat_id).status == "cancelled"
    assert app.test_client().get(f"/api/chat?chatId={chat_id}", headers=auth).status_code == 401
    assert ada.client.get("/account").status_code in (302, 303), "the browser session is signed out"
    assert ada.sign_in("ada@example.com").status_code == 403
    assert [row.action for row in audit_rows(app)] == ["disable"]
    assert admin.post(f"/admin/people/{ada_id}/enable", data={"csrf_token": csrf(admin)}).status_code == 303
    assert app.test_client().get(f"/api/chat?chatId={chat_id}", headers=auth).status_code == 200
    assert [row.action for row in audit_rows(app)] == ["disable", "enable"]


def test_admins_are_made_and_unmade_but_never_the_last_one(app):
    admin = admin_client(app)
    AccountActions(app.test_client()).sign_up("bea@example.com")
    root, bea = account(app, "root@example.com"), account(app, "bea@example.com")
    token = csrf(admin)
    last = admin.post(f"/admin/people/{root.id}/admin", data={"admin": "0", "csrf_token": token})
    assert last.status_code == 409 and "last admin" in last.get_data(as_text=True)
    assert admin.post(f"/admin/people/{root.id}/disable", data={"csrf_token": token}).status_code == 409
    assert admin.post(f"/admin/people/{bea.id}/admin", data={"admin": "1", "csrf_token": token}).status_code == 303
    assert account(app, "bea@example.com").is_admin
    assert admin.post(f"/admin/people/{root.id}/admin", data={"admin": "0", "csrf_token": token}).status_code == 303
    assert not account(app, "root@example.com").is_admin
    assert admin.get("/admin/").status_code == 404, "no longer an admin: no console"
    assert [row.action for row in audit_rows(app)] == ["make-admin", "unmake-admin"]


def test_a_spend_cap_refuses_the_next_message_on_another_instance_and_agents_can_be_limited(app_factory):
    first, second = app_factory(), app_factory()
    admin = admin_client(first)
    ada = AccountActions(first.test_client())
    ada.sign_up("ada@example.com")
    auth = {"Authorization": f"Bearer {ada.create_token()}"}
    ada_id = account(first, "ada@example.com").id
    limits = {"cap": "0.01", "all_agents": "1", "csrf_token": csrf(admin)}  # less than one reply costs
    assert admin.post(f"/admin/people/{ada_id}/limits", data=limits).status_code == 303
    body = {"chatId": new_chat_id(), "agent": "helper", "message": "hello"}
    assert read_events(first.test_client().post("/api/chat", json=body, headers=auth, buffered=False)).terminal
    refused = second.test_client().post("/api/chat", json={**body, "chatId": new_chat_id()}, headers=auth)
    assert refused.status_code == 402
    assert (
        "reached your monthly spending cap of 0.01 credits" in refused.get_json()["error"]
        and "resets on" in refused.get_json()["error"]
    )
    limits = {"cap": "", "agents": ["coder"], "csrf_token": csrf(admin)}
    assert admin.post(f"/admin/people/{ada_id}/limits", data=limits).status_code == 303
    helper = second.test_client().post("/api/chat", json={**body, "chatId": new_chat_id()}, headers=auth)
    assert helper.status_code == 403 and "may not use Helper" in helper.get_json()["error"]
    coder = {"chatId": new_chat_id(), "agent": "coder", "message": "hi"}
    assert read_events(second.test_client().post("/api/chat", json=coder, headers=auth, buffered=False)).terminal
    assert [row.action for row in audit_rows(first)] == ["limits", "limits"]


def test_usage_equals_the_ledger_to_the_micro_credit(app):
    admin = admin_client(app)
    for who in ("ada@example.com", "bea@example.com"):
        person = AccountActions(app.test_client())
        person.sign_up(who)
        for agent in ("helper", "coder"):
            body = {"chatId": new_chat_id(), "agent": agent, "message": f"hello from {who}"}
            assert read_events(person.client.post("/api/chat", json=body, buffered=False)).terminal
    with app.app_context():
        charges = db.session.query(LedgerEntry).filter_by(kind=LedgerKind.CHARGE).all()
        total = sum(row.cost_micros for row in charges)
    assert total > 0
    for by in ("day", "agent", "account"):
        rows = list(csv.DictReader(io.StringIO(admin.get(f"/admin/usage.csv?by={by}").get_data(as_text=True))))
        assert sum(int(row["cost_micro_credits"]) for row in rows) == total, by
        assert sum(int(row["charges"]) for row in rows) == len(charges), by
    by_account = {
        row["account"]: int(row["cost_micro_credits"])
        for row in csv.DictReader(io.StringIO(admin.get("/admin/usage.csv?by=account").get_data(as_text=True)))
    }
    with app.app_context():
        ada = db.session.query(Identity).filter_by(email="ada@example.com").one()
        assert by_account["ada@example.com"] == sum(r.cost_micros for r in charges if r.identity_id == ada.id)
    page = admin.get("/admin/usage").get_data(as_text=True)
    assert "<svg" in page and "helper" in page and "bea@example.com" in page
    assert admin.get("/admin/usage?from=2026-13-01").status_code == 400
    assert admin.get("/admin/usage?from=2026-12-06&to=2026-12-01").status_code == 400


@pytest.mark.browser
@pytest.mark.parametrize(
    "viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}], ids=["desktop", "phone"]
)
def test_in_the_browser_the_console_works_and_is_clean_under_axe_core(live_server, browser_context, viewport):
    server = live_server()
    AccountActions(server.app.test_client()).sign_up("ada@example.com")
    page = browser_context(viewport=viewport).new_page()
    page.goto(f"{server.url}/signup")
    page.fill("#email", "root@example.com")
    page.fill("#password", PASSWORD)
    page.click("form.auth-form button[type=submit]")
    page.wait_for_selector("#account-link")
    with server.app.app_context():
        db.session.query(Identity).filter_by(email="root@example.com").update({"is_admin": True})
        db.session.commit()
    page.goto(f"{server.url}/admin/?q=ada")
    assert violations(page) == [], "the console"
    page.click("details.manage summary")
    page.fill("details.manage input[name=amount]", "5")
    page.fill("details.manage input[name=note]", "welcome")
    page.click("details.manage .grant-form button")
    page.wait_for_selector("text=Granted 5 credits to ada@example.com.")
    assert violations(page) == [], "the console after an action"
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1, "nothing runs off the page"
    page.goto(f"{server.url}/admin/usage")
    page.wait_for_selector("svg.usage-chart")
    assert violations(page) == [], "the usage page"
