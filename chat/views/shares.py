"""Share links: the owner makes a read-only link to a chat (`/s/<token>`) and revokes it; anyone
with it sees the conversation, and a reply being written streams to them live from wherever they
joined — the chat page's own stream, read-only. A viewer is nobody: no identity, no cookie (so no
CSRF token: the one form, Fork, is checked by its origin), and their streams count against their
address. Revoking ends the link at once, live viewers' streams included."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, redirect, render_template, session, url_for
from flask_limiter.util import get_remote_address

from ..extensions import db
from ..models import (
    Chat,
    Message,
    ShareLink,
    create_share_link,
    messages_page,
    revoke_share_link,
    share_link_live,
    share_links,
)
from ..models import shared_chat as find_shared_chat
from ..people.identity import current_identity_id
from ..replies import ReplyError, replies
from ..web.security import same_site_request
from .api import parse_cursor
from .pages import agent_or_404, chat_or_404, message_views, page_stream

bp = Blueprint("shares", __name__)

NEW_LINK_KEY = "new_share_link"  # the link just made, shown once (post/redirect/get)


@bp.post("/agent/<slug>/<uuid:chat_id>/shares")
def create(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    session[NEW_LINK_KEY] = url_for("shares.show", token=create_share_link(chat.id), _external=True)
    return redirect(url_for("shares.manage", slug=slug, chat_id=chat_id), code=303)


@bp.get("/agent/<slug>/<uuid:chat_id>/shares")
def manage(slug: str, chat_id: uuid.UUID):
    """The chat's links: made when, revoked or not; a new one's address, once."""
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    new_link = session.pop(NEW_LINK_KEY, None)
    return render_template("pages/shares.html", agent=agent, chat=chat, links=share_links(chat.id), new_link=new_link)


@bp.post("/agent/<slug>/<uuid:chat_id>/shares/<uuid:link_id>/revoke")
def revoke(slug: str, chat_id: uuid.UUID, link_id: uuid.UUID):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    if not revoke_share_link(chat.id, link_id):
        abort(404, description="This chat has no such live link.")
    return redirect(url_for("shares.manage", slug=slug, chat_id=chat_id), code=303)


def shared(token: str) -> tuple[ShareLink, Chat]:
    """The link and chat a viewer's token opens (404 for an unknown or revoked one); the request
    is marked as a viewer's: nothing makes an identity for it."""
    g.viewer = True
    found = find_shared_chat(token) if len(token) <= 64 else None
    if found is None:
        abort(404, description="This link does not exist, or its owner has revoked it.")
    return found


@bp.get("/s/<token>")
def show(token: str):
    link, chat = shared(token)
    agent = agent_or_404(chat.agent_slug)
    messages, _ = messages_page(chat.id, current_app.config["CHAT_PAGE_MESSAGES"])
    views = message_views(messages)
    pending = bool(messages) and messages[-1].is_pending
    body = render_template(
        "pages/shared.html", agent=agent, chat=chat, chat_id=chat.id, views=views, viewer=token, pending=pending
    )
    return viewer_response(body)


@bp.get("/s/<token>/messages/<uuid:message_id>")
def show_message(token: str, message_id: uuid.UUID):
    """One message, as the shared page shows it (what its stream's `done` swaps in)."""
    _, chat = shared(token)
    message = db.session.get(Message, message_id)
    if message is None or message.chat_id != chat.id:
        abort(404, description="No such message in this chat.")
    (view,) = message_views([message])
    agent = agent_or_404(chat.agent_slug)
    return viewer_response(
        render_template("_partials/message.html", agent=agent, chat_id=chat.id, viewer=token, **view)
    )


@bp.get("/s/<token>/stream")
def stream(token: str):
    """The shared chat's pending reply, from the viewer's cursor: the chat page's stream,
    read-only, ending as soon as the link is revoked."""
    link, chat = shared(token)
    try:
        cursor = parse_cursor()
    except ReplyError:
        cursor = None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    link_id = link.id

    def still_shared() -> bool:
        with app.app_context():
            return share_link_live(link_id)

    holder = uuid.uuid5(uuid.NAMESPACE_URL, f"viewer:{get_remote_address()}")
    response = page_stream(chat, holder, cursor, {"answer_url": None, "csrf": None}, viewer=True, until=still_shared)
    return viewer_response(response)


@bp.post("/s/<token>/fork/<uuid:message_id>")
def fork(token: str, message_id: uuid.UUID):
    """Fork from here, on a shared chat: a chat of the viewer's own (a guest is made for them
    now, if need be) with the conversation up to this message."""
    same_site_request()
    _, chat = shared(token)
    g.viewer = False  # the fork belongs to somebody: the caller becomes an identity now
    fork_id = replies().fork(current_identity_id(), chat, message_id)
    return redirect(url_for("pages.show_chat", slug=chat.agent_slug, chat_id=fork_id), code=303)


def viewer_response(body: Any) -> Response:
    """A viewer's answer: never indexed, never cached, and no cookie of any kind."""
    response = body if isinstance(body, Response) else Response(body)
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the address
    return response
