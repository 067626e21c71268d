"""A person's account steps (as flaskr's AuthActions), and every route that touches one chat."""

from __future__ import annotations

import re

from sqlalchemy import select

from chat.extensions import db
from chat.models import Identity, LedgerEntry
from chat.vocabulary import LedgerKind

PASSWORD = "correct horse battery"


class AccountActions:
    """Sign up, in and out through the forms, with one test client (one browser's cookies)."""

    def __init__(self, client) -> None:
        self.client = client

    def sign_up(self, email: str = "ada@example.com", password: str = PASSWORD):
        return self.client.post("/signup", data={"email": email, "password": password})

    def sign_in(self, email: str = "ada@example.com", password: str = PASSWORD):
        return self.client.post("/signin", data={"email": email, "password": password})

    def sign_out(self):
        return self.client.post("/signout")

    def create_token(self, name: str = "script") -> str:
        page = self.client.post("/account/tokens", data={"name": name}, follow_redirects=True).get_data(as_text=True)
        match = re.search(r'<code id="new-token">([^<]+)</code>', page)
        assert match, "the account page shows the new token once"
        return match.group(1)


def account(app, email: str) -> Identity | None:
    with app.app_context():
        return db.session.scalar(select(Identity).where(Identity.email == email))


def ledger_rows(app, identity_id, kind: LedgerKind | None = None) -> list[LedgerEntry]:
    with app.app_context():
        query = select(LedgerEntry).where(LedgerEntry.identity_id == identity_id)
        if kind is not None:
            query = query.where(LedgerEntry.kind == kind)
        return list(db.session.scalars(query))


def chat_routes(chat_id: str, message_id: str) -> list[tuple[str, str, dict]]:
    """(method, path, request options) for every route that reads or changes one chat: pages,
    fragments, the browser stream and the API."""
    page = f"/agent/helper/{chat_id}"
    return [
        ("GET", page, {}),
        ("GET", f"{page}/stream", {}),
        ("GET", f"{page}/messages/{message_id}", {}),
        ("POST", f"{page}/messages", {"data": {"message": "hi"}}),
        ("POST", f"{page}/stop", {}),
        ("POST", f"{page}/title", {"data": {"title": "mine now"}}),
        ("POST", f"{page}/regenerate", {}),
        ("POST", f"{page}/edit", {"data": {"message": "mine now"}}),
        ("GET", f"{page}/delete", {}),
        ("POST", f"{page}/delete", {}),
        ("GET", f"{page}/export.md", {}),
        ("GET", f"/api/chat?chatId={chat_id}", {}),
        ("POST", "/api/chat", {"json": {"chatId": chat_id, "agent": "helper", "message": "hi"}}),
        ("POST", "/api/chat/stop", {"json": {"chatId": chat_id}}),
    ]
