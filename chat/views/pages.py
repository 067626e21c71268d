"""Server-rendered pages and the htmx fragments they swap. Without JavaScript the forms still
post (and redirect); with htmx the same URLs answer with partials."""
from __future__ import annotations

import html
import json
import uuid
from collections.abc import Iterable, Iterator

from flask import Blueprint, Flask, Response, abort, current_app, redirect, render_template, request, url_for
from sqlalchemy import select

from .. import sse
from ..agents import Agent
from ..extensions import db
from ..identity import current_identity_id, find_identity, owned_chat
from ..models import Chat, Message, MessageStatus
from ..render import render_markdown
from ..replies import ReplyError, replies
from ..streams import Event, StreamRef
from .api import parse_message, sse_response

bp = Blueprint("pages", __name__)

RESUME_RETRY_MS = 1000
FAILED_STATUSES = {"interrupted", "cancelled", "error"}


def init_app(app: Flask) -> None:
    app.jinja_env.filters["markdown"] = render_markdown
    app.context_processor(lambda: {"resumable": app.config["RESUMABLE_STREAMS"]})

    @app.after_request
    def vary_on_htmx(response: Response) -> Response:
        # The same URL answers with a page or a fragment: caches must keep them apart.
        response.vary.add("HX-Request")
        return response


def is_fragment_request() -> bool:
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"


def agent_or_404(slug: str) -> Agent:
    agent = current_app.extensions["agents"].get(slug)
    if agent is None:
        abort(404, description=f"There is no agent called '{slug}'.")
    return agent


def chat_or_404(agent: Agent, chat_id: uuid.UUID) -> Chat:
    chat = owned_chat(chat_id, current_identity_id())
    if chat is None or chat.agent_slug != agent.slug:
        abort(404, description="This chat does not exist, or it is not yours.")
    return chat


def recent_chats(limit: int = 30) -> list[Chat]:
    return list(db.session.scalars(
        select(Chat).where(Chat.identity_id == current_identity_id()).order_by(Chat.updated_at.desc()).limit(limit)))


def message_view(message: Message) -> dict:
    """What the message partial needs; for a pending reply, its text so far and its cursor."""
    view = {"message": message, "text": message.content, "cursor": None, "retry_text": None}
    if message.is_pending and replies().resumable:
        view["text"], view["cursor"] = replies().pending_text(message)
    elif message.status in FAILED_STATUSES:
        view["retry_text"] = db.session.scalar(select(Message.content).where(
            Message.chat_id == message.chat_id, Message.position == message.position - 1))
    return view


def chat_page(agent: Agent, chat: Chat | None, chat_id: uuid.UUID, error: str | None = None, status: int = 200,
              draft: str = ""):
    messages = list(chat.messages) if chat else []
    identity = find_identity(current_identity_id())
    pending = bool(messages) and messages[-1].is_pending
    return render_template(
        "pages/chat.html", agent=agent, chat=chat, chat_id=chat_id, views=[message_view(m) for m in messages],
        chats=recent_chats(), identity=identity, pending=pending, error=error, draft=draft,
        grant=current_app.config["GUEST_CREDIT_GRANT"],
    ), status


@bp.get("/")
def index():
    identity = find_identity(current_identity_id())
    return render_template("pages/index.html", agents=current_app.extensions["agents"].values(),
                           chats=recent_chats(), identity=identity, grant=current_app.config["GUEST_CREDIT_GRANT"])


@bp.get("/agent/<slug>")
def new_chat(slug: str):
    agent = agent_or_404(slug)
    return chat_page(agent, None, uuid.uuid4())


@bp.get("/agent/<slug>/<uuid:chat_id>")
def show_chat(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    return chat_page(agent, chat_or_404(agent, chat_id), chat_id)


@bp.post("/agent/<slug>/<uuid:chat_id>/messages")
def send_message(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    raw = request.form.get("message", "")
    try:
        text = parse_message(raw)
        replies().start(current_identity_id(), chat_id, agent, text)
    except ReplyError as error:
        if is_fragment_request():
            response = Response(render_template("_partials/toast.html", message=error.message, kind="error"),
                                status=error.status)
            response.headers["HX-Retarget"] = "#toasts"
            response.headers["HX-Reswap"] = "beforeend"
            return response
        chat = owned_chat(chat_id, current_identity_id())
        return chat_page(agent, chat, chat_id, error=error.message, status=error.status, draft=raw)
    chat_url = url_for("pages.show_chat", slug=slug, chat_id=chat_id)
    if not is_fragment_request():
        return redirect(chat_url, code=303)
    messages = db.session.scalars(select(Message).where(Message.chat_id == chat_id).order_by(
        Message.position.desc()).limit(2)).all()[::-1]
    response = Response(render_template("_partials/turn.html", agent=agent, chat_id=chat_id,
                                        views=[message_view(m) for m in messages], fresh=True,
                                        chats=recent_chats(), chat=db.session.get(Chat, chat_id)))
    response.headers["HX-Push-Url"] = chat_url
    return response


@bp.get("/agent/<slug>/<uuid:chat_id>/messages/<uuid:message_id>")
def show_message(slug: str, chat_id: uuid.UUID, message_id: uuid.UUID):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    message = db.session.get(Message, message_id)
    if message is None or message.chat_id != chat.id:
        abort(404, description="No such message in this chat.")
    html = render_template("_partials/message.html", agent=agent, chat_id=chat_id, **message_view(message))
    if not message.is_pending:  # the reply was just charged: refresh the balance out of band
        html += render_template("_partials/balance.html", identity=find_identity(chat.identity_id), oob=True)
    return html


@bp.post("/agent/<slug>/<uuid:chat_id>/stop")
def stop(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    replies().stop(chat)
    if is_fragment_request():
        return Response(status=204)
    return redirect(url_for("pages.show_chat", slug=slug, chat_id=chat_id), code=303)


def browser_events(source: Iterable[Event | None] | None) -> Iterator[Event | None]:
    """The reply log as fragments: `delta` carries escaped text, `done` ends the stream.

    Always ends with `done` (even when there is nothing to follow), because an EventSource that
    gets anything but a 200 stream reconnects forever.
    """
    last_id = "0-0"
    events = iter(source or ())
    try:
        for event in events:
            if event is None:
                yield None
            elif event.type == "delta":
                last_id = event.id
                yield Event(event.id, "delta", html.escape(json.loads(event.data)["text"], quote=False))
            elif event.terminal:
                yield Event(event.id, "done", event.type)
                return
        yield Event(last_id, "done", "gone")
    finally:
        close = getattr(events, "close", None)
        if close:  # the browser left: end the subscription now, not at garbage collection
            close()


@bp.get("/agent/<slug>/<uuid:chat_id>/stream")
def stream(slug: str, chat_id: uuid.UUID):
    """The browser's stream of the chat's pending reply, from the page's own cursor."""
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    raw = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    try:
        cursor = sse.parse_event_id(raw)
    except ValueError:
        cursor = None
    pending = db.session.scalar(select(Message).where(Message.chat_id == chat.id,
                                                      Message.status == MessageStatus.STREAMING.value))
    source = None
    if pending is not None:
        ref = StreamRef(str(chat.id), pending.stream_id)
        if replies().log_exists(ref):
            source = replies().follow(ref, sse.format_event_id(cursor) if cursor else None)
    return sse_response(browser_events(source), retry_ms=RESUME_RETRY_MS)
