"""The operator's console, first part: live replies (Stop, Reap), people (search, grant credits)
and the audit trail; nobody but an admin account sees that it exists."""

from __future__ import annotations

import re
import uuid

from chat.extensions import db
from chat.models import AdminAction, Identity
from chat.vocabulary import LedgerKind
from helpers.accounts import AccountActions, account, ledger_rows
from helpers.chats import latest_reply, new_chat_id, post_chat
from helpers.sse import parse_sse, read_events, response_lines

ROUTES = [
    ("GET", "/admin/"),
    ("POST", f"/admin/people/{uuid.uuid4()}/grant"),
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
