"""The HTTP API of docs/api.md: POST/GET /api/chat, POST /api/chat/stop."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

from flask import Blueprint, Response, current_app, request

from .. import files
from ..models import owned_chat
from ..people import rate_limits
from ..people.identity import current_identity_id
from ..replies import ReplyError, replies
from ..streams import sse
from ..streams.events import Event
from ..web import metrics, structured_logs
from ..web.security import json_api_request
from .errors import error_response

bp = Blueprint("api", __name__, url_prefix="/api")


def event_stream(source: Iterable[Event | None], retry_ms: int | None = None) -> Iterator[bytes]:
    """SSE bytes for a log; comments keep idle connections open and reveal departed clients.

    Closing this (the client left) closes `source`, which ends its subscription at once.
    """
    events = iter(source)
    try:
        if retry_ms is not None:
            yield sse.retry(retry_ms).encode()
        for event in events:
            yield (sse.comment() if event is None else sse.encode(event.type, event.data, event.id)).encode()
    finally:
        close = getattr(events, "close", None)
        if close:
            close()


def sse_response(source: Iterable[Event | None], retry_ms: int | None = None) -> Response:
    response = Response(
        event_stream(source, retry_ms),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    # The server iterates event_stream's bytes itself (and closes it): no layers of werkzeug's
    # encoding and closing iterators around every event of every stream.
    response.direct_passthrough = True
    return response


def parse_chat_id(raw: object) -> uuid.UUID:
    if not isinstance(raw, str) or not raw:
        raise ReplyError(400, "chatId is required (a UUID).")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ReplyError(400, f"chatId {raw[:60]!r} is not a UUID.") from None


def parse_cursor() -> str | None:
    """The request's cursor: `Last-Event-ID`, else `?lastEventId=` (an EventSource that was
    re-created sends only the query); None without one. The one parser of both streams.

    :raise ReplyError: 400 for an id this server never sent (or one Redis would refuse).
    """
    raw = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    try:
        cursor = sse.parse_event_id(raw)
    except ValueError as exc:
        raise ReplyError(400, str(exc)) from None
    return sse.format_event_id(cursor) if cursor else None


def json_body() -> dict:
    json_api_request()
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes: not a body this API takes
        body = None
    if not isinstance(body, dict):
        raise ReplyError(
            400, 'The body must be a JSON object, e.g. {"chatId": "<uuid>", "agent": "<slug>", "message": "<text>"}.'
        )
    return body


def parse_message(raw: object) -> str:
    limit = current_app.config["MAX_MESSAGE_CHARS"]
    if not isinstance(raw, str) or not raw.strip():
        raise ReplyError(400, "message must be non-empty text.")
    if len(raw) > limit:
        raise ReplyError(400, f"Your message is too long: {len(raw):,} characters, and the limit is {limit:,}.")
    return raw


@bp.post("/chat")
@rate_limits.messages_per_address
@rate_limits.messages_per_identity
def post_chat():
    body = json_body()
    chat_id = parse_chat_id(body.get("chatId"))
    agent = current_app.extensions["agents"].get(body.get("agent")) if isinstance(body.get("agent"), str) else None
    if agent is None:
        raise ReplyError(404, f"Unknown agent {body.get('agent')!r}.")
    text = parse_message(body.get("message"))
    identity_id = current_identity_id()
    attached = files.for_message(identity_id, body.get("files"), agent)
    return sse_response(replies().start_and_follow(identity_id, chat_id, agent, text, request.environ, attached))


@bp.post("/chat/continue")
@rate_limits.messages_per_address
@rate_limits.messages_per_identity
def continue_chat():
    """Carry on the chat's interrupted last reply: answered like POST /api/chat, a new stream
    that tells the interrupted reply first (its tool calls are not made again), then goes on."""
    body = json_body()
    chat = owned_chat(parse_chat_id(body.get("chatId")), current_identity_id())
    if chat is None:
        raise ReplyError(404, "No chat with that id.")
    agent = current_app.extensions["agents"].get(chat.agent_slug)
    if agent is None:
        raise ReplyError(404, f"The agent {chat.agent_slug!r} of this chat is gone.")
    return sse_response(replies().continue_and_follow(current_identity_id(), chat, agent, request.environ))


@bp.get("/chat")
@rate_limits.stream_opens
def get_chat():
    chat_id = parse_chat_id(request.args.get("chatId"))
    cursor = parse_cursor()
    identity_id = current_identity_id()
    chat = owned_chat(chat_id, identity_id)
    if chat is None:
        raise ReplyError(404, "No chat with that id.")
    if cursor:
        metrics.RESUMES.inc()
        structured_logs.event("reply.resume", chat=str(chat_id), cursor=cursor)
    source = replies().resume(identity_id, chat, cursor, request.environ)
    if source is None:
        return Response(status=204)
    return sse_response(source)


@bp.post("/chat/stop")
def stop_chat():
    chat_id = parse_chat_id(json_body().get("chatId"))
    chat = owned_chat(chat_id, current_identity_id())
    if chat is None:
        return error_response(404, "No chat with that id.")
    stored = replies().stop(chat)
    if stored is None:
        return Response(status=204)
    return {
        "chatId": str(chat_id),
        "messageId": str(stored.message_id),
        "status": stored.status,
        "finishReason": stored.finish_reason,
    }


@bp.post("/chat/approve")
def approve_call():
    """A person's yes or no to a tool call that waits for one (api.md, "Tool calls"), from any
    tab or instance: the reply goes on here. 404 for a call the caller's chat does not have, 409
    when it is not waiting any more."""
    body = json_body()
    chat = owned_chat(parse_chat_id(body.get("chatId")), current_identity_id())
    call_id, approved = body.get("toolCallId"), body.get("approved")
    if chat is None:
        return error_response(404, "No chat with that id.")
    if not isinstance(call_id, str) or not call_id or len(call_id) > 128:
        raise ReplyError(400, "toolCallId is required (the id of the call, as the stream told it).")
    if not isinstance(approved, bool):
        raise ReplyError(400, "approved must be true or false.")
    status = replies().answer(chat, call_id, approved)
    return {"chatId": str(chat.id), "toolCallId": call_id, "status": status.value}
