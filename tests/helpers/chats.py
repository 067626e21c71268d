"""A client's steps: start a chat, send a message, resume; and what the database stored."""

from __future__ import annotations

import threading
import time
import uuid

import requests
from sqlalchemy import create_engine, select

from chat.extensions import db
from chat.models import LedgerEntry, Message
from chat.models import latest_reply as latest_reply_of
from chat.vocabulary import LedgerKind

from .sse import read_events


def new_chat_id() -> str:
    return str(uuid.uuid4())


def post_chat(client, chat_id: str, message: str = "hello", agent: str = "helper"):
    return client.post("/api/chat", json={"chatId": chat_id, "agent": agent, "message": message}, buffered=False)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def resume(client, chat_id, last_id=None, via_query=False):
    """GET /api/chat for `chat_id`, from `last_id` (a header, or the `lastEventId` query)."""
    if last_id and via_query:
        return client.get(f"/api/chat?chatId={chat_id}&lastEventId={last_id}", buffered=False)
    headers = {"Last-Event-ID": last_id} if last_id else {}
    return client.get(f"/api/chat?chatId={chat_id}", headers=headers, buffered=False)


def latest_reply(app, chat_id: str | uuid.UUID) -> Message | None:
    """The chat's newest assistant message as the database holds it now."""
    with app.app_context():
        return latest_reply_of(uuid.UUID(str(chat_id)))


def reply_in_database(database: str, chat_id: str):
    """The chat's newest assistant message (content, status), read over a connection of its own:
    for tests whose app runs in other processes (gunicorn, behind a proxy)."""
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            return connection.execute(
                select(Message.content, Message.status)
                .where(Message.chat_id == uuid.UUID(chat_id), Message.role == "assistant")
                .order_by(Message.position.desc())
                .limit(1)
            ).one()
    finally:
        engine.dispose()


def hammer_resumes(server_url: str, chat_id: str, agent: str, readers: int) -> list[str]:
    """POST a message, read a few events, then resume with `readers` concurrent clients, each from
    a different cursor it was sent. Returns the full text each reader ended with."""
    session = requests.Session()
    post = session.post(
        f"{server_url}/api/chat", json={"chatId": chat_id, "agent": agent, "message": "race"}, stream=True
    )
    head = read_events(post, stop_after=3)
    cookies = {name: value or "" for name, value in session.cookies.get_dict().items()}
    texts: list[str] = []
    errors: list[BaseException] = []

    def reader(n: int) -> None:
        seen = head.events[: n % len(head.events) + 1]
        try:
            response = requests.get(
                f"{server_url}/api/chat",
                params={"chatId": chat_id},
                cookies=cookies,
                headers={"Last-Event-ID": seen[-1].id or ""},
                stream=True,
                timeout=30,
            )
            prefix = "".join(e.json()["text"] for e in seen if e.event == "delta")
            texts.append(prefix + read_events(response).text)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert len(texts) == readers
    return texts


def charges(app, titles: bool = True) -> list[LedgerEntry]:
    """The ledger's charges (not its grants); `titles=False` keeps only the replies' charges (a
    first reply also buys a title)."""
    with app.app_context():
        rows = db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == LedgerKind.CHARGE))
        return [row for row in rows if titles or not row.stream_id.startswith("title-")]
