"""Managing one's chats: export (Markdown, JSON) for now. Every route answers 404 for a chat
that is not the caller's, as for one that does not exist."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response

from ..export import as_json, as_markdown, file_name
from .pages import agent_or_404, chat_or_404

bp = Blueprint("chats", __name__)


@bp.get("/agent/<slug>/<uuid:chat_id>/export.<any(md, json):kind>")
def export(slug: str, chat_id: uuid.UUID, kind: str):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    if kind == "md":
        body, mimetype = as_markdown(chat, agent.name), "text/markdown"
    else:
        body, mimetype = as_json(chat), "application/json"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{file_name(chat, kind)}"'
    return response
