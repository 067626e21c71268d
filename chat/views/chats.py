"""Managing one's chats: the list (search, pages), rename, delete, export. Every route answers
404 for a chat that is not the caller's, as for one that does not exist."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, redirect, render_template, request, url_for
from markupsafe import escape

from ..extensions import db
from ..models import calls_of_replies, chats_page, files_of_messages, recent_chats
from ..people import rate_limits
from ..people.identity import current_identity_id
from ..refusals import Refused
from ..replies import replies
from ..vocabulary import CHAT_TITLE_MAX
from ..web.export import as_json, as_markdown, file_name
from .errors import is_fragment_request
from .pages import agent_or_404, chat_or_404

bp = Blueprint("chats", __name__)
LIST_IDS = ("chat-list", "chat-list-drawer")  # the sidebar's list, and the phone menu's
MAX_PAGE = 100_000  # a page number past this is not a page anyone reached by clicking "Older"


@bp.get("/chats")
@rate_limits.searches
def chat_list():
    """Every chat of the caller, newest activity first, a page at a time; `q` searches titles and
    messages. An htmx request (the sidebar's search box) gets the list alone."""
    query = request.args.get("q", "").strip()[:200]
    page = max(1, request.args.get("page", 1, type=int) or 1)
    if page > MAX_PAGE:
        raise Refused(400, f"There is no page {request.args.get('page', '')[:30]} of your chats.")
    chats, more = chats_page(current_identity_id(), page, query)
    if is_fragment_request() and request.headers.get("HX-Boosted") != "true":  # not a boosted page visit
        list_id = request.args.get("list") if request.args.get("list") in LIST_IDS else "chat-list"
        current_id = request.args.get("current", "")[:36]  # the chat the page shows keeps its highlight
        return render_template(
            "_partials/chat_list.html", chats=chats, list_id=list_id, chat=None, query=query, current_id=current_id
        )
    return render_template("pages/chats.html", chats=chats, query=query, page=page, more=more)


@bp.post("/agent/<slug>/<uuid:chat_id>/title")
def rename(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    title = " ".join(request.form.get("title", "").split())
    if not 1 <= len(title) <= CHAT_TITLE_MAX:
        raise Refused(400, f"A chat's title needs 1 to {CHAT_TITLE_MAX} characters.")
    chat.title = title
    db.session.commit()
    if not is_fragment_request():
        return redirect(url_for("pages.show_chat", slug=slug, chat_id=chat_id), code=303)
    chats = recent_chats(current_identity_id())
    title = f"<title>{escape(chat.title)} · {escape(agent.name)} · Durable Chat</title>"  # the tab's, too
    return (
        title
        + render_template("_partials/chat_title.html", agent=agent, chat=chat)
        + "".join(
            render_template("_partials/chat_list.html", chats=chats, chat=chat, list_id=list_id, oob=True)
            for list_id in LIST_IDS
        )
    )


@bp.post("/agent/<slug>/<uuid:chat_id>/messages/<uuid:message_id>/fork")
def fork(slug: str, chat_id: uuid.UUID, message_id: uuid.UUID):
    """Fork from here: the chat up to this message, as a new chat of the caller's."""
    agent = agent_or_404(slug)
    fork_id = replies().fork(current_identity_id(), chat_or_404(agent, chat_id), message_id)
    return redirect(url_for("pages.show_chat", slug=slug, chat_id=fork_id), code=303)


@bp.get("/agent/<slug>/<uuid:chat_id>/delete")
def confirm_delete(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    return render_template("pages/delete.html", agent=agent, chat=chat_or_404(agent, chat_id))


@bp.post("/agent/<slug>/<uuid:chat_id>/delete")
def delete(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    replies().delete(chat_or_404(agent, chat_id))
    return redirect(url_for("chats.chat_list"), code=303)


@bp.get("/agent/<slug>/<uuid:chat_id>/export.<any(md, json):kind>")
def export(slug: str, chat_id: uuid.UUID, kind: str):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    calls = calls_of_replies([message.id for message in chat.messages])
    attached = {
        message_id: [(stored, url_for("files.download", file_id=stored.id, _external=True)) for stored in held]
        for message_id, held in files_of_messages([message.id for message in chat.messages]).items()
    }
    if kind == "md":
        body, mimetype = as_markdown(chat, agent.name, calls, attached), "text/markdown"
    else:
        body, mimetype = as_json(chat, calls, attached), "application/json"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{file_name(chat, kind)}"'
    return response
