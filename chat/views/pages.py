"""Server-rendered pages and the htmx fragments they swap. Without JavaScript the forms still
post (and redirect); with htmx the same URLs answer with partials. Longer than the other views
because the chat page's browser stream (Markdown rendered block by block) is shaped here."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, g, redirect, render_template, request, url_for
from flask_wtf.csrf import generate_csrf
from markupsafe import escape

from .. import files
from ..agents import Agent
from ..extensions import db
from ..files.intake import megabytes
from ..models import (
    Chat,
    Message,
    StoredFile,
    ToolCall,
    calls_of_replies,
    files_of_messages,
    messages_page,
    newest_messages,
    owned_chat,
    prompt_before,
    recent_chats,
    turn_versions,
)
from ..people import rate_limits
from ..people.identity import AuthenticationRequired, current_identity, current_identity_id
from ..refusals import Refused
from ..replies import ReplyError, replies
from ..streams.events import Event
from ..vocabulary import FAILED_STATUSES, MessageRole, MessageStatus, credits_text
from ..web import markdown, metrics, structured_logs
from ..web.markdown import StreamingMarkdown, closed_markdown, render_markdown
from ..web.reply_parts import ReplyParts, ToolCallView, tool_element_id
from .api import parse_cursor, parse_message, sse_response
from .errors import answer, is_fragment_request

bp = Blueprint("pages", __name__)

RESUME_RETRY_MS = 1000
FAILURE_NOTES = {
    MessageStatus.INTERRUPTED: "The reply was interrupted.",
    MessageStatus.CANCELLED: "You stopped this reply.",
    MessageStatus.ERROR: "The reply failed.",
}


def init_app(app: Flask) -> None:
    markdown.SHARED.budget_seconds = app.config["MARKDOWN_CPU_BUDGET_MS"] / 1000
    app.jinja_env.filters["markdown"] = render_markdown
    app.jinja_env.filters["credits"] = credits_text
    app.jinja_env.filters["filesize"] = megabytes
    app.jinja_env.globals["streaming_markdown"] = StreamingMarkdown
    app.jinja_env.globals["tail_element_id"] = tail_element_id
    app.jinja_env.globals["tool_element_id"] = tool_element_id
    app.jinja_env.globals["closed_markdown"] = closed_markdown

    @app.context_processor
    def page_globals() -> dict[str, Any]:
        """What every page's layout shows: the caller's balance (or the grant a new guest gets).
        A share link's viewer is nobody: no identity is looked up, so none is made for them."""
        try:
            identity = None if g.get("viewer") else current_identity()
        except AuthenticationRequired:  # the sign-in page itself, where guests are not allowed
            identity = None
        return {
            "resumable": app.config["RESUMABLE_STREAMS"],
            "identity": identity,
            "grant": app.config["GUEST_CREDIT_GRANT"],
            # The person's choice from the theme toggle; none: the system's preference.
            "theme": request.cookies.get("theme") if request.cookies.get("theme") in ("light", "dark") else None,
        }

    @app.after_request
    def vary_on_htmx(response: Response) -> Response:
        # The same URL answers with a page or a fragment: caches must keep them apart.
        response.vary.add("HX-Request")
        return response


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


def message_view(
    message: Message, calls: Sequence[ToolCall] | None = None, attached: Sequence[StoredFile] | None = None
) -> dict:
    """What the message partial needs; for a pending reply, its log so far (the text still being
    written apart) and its cursor. `calls`: the reply's tool calls, `attached`: a message's
    files, when the caller has them."""
    if attached is None and message.role == MessageRole.USER:
        attached = files_of_messages([message.id]).get(message.id, [])
    view: dict[str, Any] = {
        "message": message,
        "files": attached or [],
        "text": message.content,
        "parts": [message.content],
        "scope": message.stream_id or str(message.id),
        "cursor": None,
        "retry_text": None,
        "failure_note": None,
    }
    if message.is_pending:
        events, view["cursor"] = replies().pending_events(message)
        logged = ReplyParts.from_log(events)
        view["text"], view["parts"] = logged.trailing_text, logged.before_trailing_text
        return view
    if message.role == MessageRole.ASSISTANT:
        if calls is None:
            calls = calls_of_replies([message.id])[message.id]
        if calls:
            view["parts"] = ReplyParts.stored(message.content, calls).parts
    if message.status in FAILED_STATUSES:
        prompt = prompt_before(message)
        view["retry_text"] = prompt.content if prompt else None
        view["failure_note"] = FAILURE_NOTES[MessageStatus(message.status)]
    return view


def message_views(messages: Sequence[Message]) -> list[dict]:
    """message_view of each, their tool calls read in one query and their files in another."""
    calls = calls_of_replies([m.id for m in messages if m.role == MessageRole.ASSISTANT and not m.is_pending])
    attached = files_of_messages([m.id for m in messages if m.role == MessageRole.USER])
    return [message_view(m, calls.get(m.id, []), attached.get(m.id, [])) for m in messages]


def chat_page(
    agent: Agent,
    chat: Chat | None,
    chat_id: uuid.UUID,
    error: str | None = None,
    status: int = 200,
    draft: str = "",
    shown_version: tuple[uuid.UUID, int] | None = None,
    before: int | None = None,
    draft_files: Sequence[StoredFile] = (),
) -> tuple[str, int]:
    """The chat page: its newest messages, or with `before` (a position) the ones before it.
    `draft` and `draft_files`: what a refused send had in its form (nothing of it is lost)."""
    limit = current_app.config["CHAT_PAGE_MESSAGES"]
    messages, earlier = messages_page(chat.id, limit, before) if chat else ([], None)
    newest = before is None
    pending = newest and bool(messages) and messages[-1].is_pending
    views = message_views(messages)
    if newest:
        with_turn_controls(views, shown_version)
    return render_template(
        "pages/chat.html",
        agent=agent,
        chat=chat,
        chat_id=chat_id,
        views=views,
        chats=recent_chats(current_identity_id()),
        pending=pending,
        error=error,
        draft=draft,
        draft_files=draft_files,
        earlier=earlier,
        newest=newest,
    ), status


def with_turn_controls(views: list[dict], shown_version: tuple[uuid.UUID, int] | None) -> None:
    """Edit on the last message, Regenerate on the last reply (both once it has ended), and on a
    reply with several versions a switcher; `shown_version` (turn, n) shows its n-th version."""
    if views and not views[-1]["message"].is_pending:
        last_user = next((view for view in reversed(views) if view["message"].role == MessageRole.USER), None)
        if last_user is not None:
            last_user["can_edit"] = True
        if views[-1]["message"].role == MessageRole.ASSISTANT:
            views[-1]["can_regenerate"] = True
    for at, view in enumerate(views):
        turn_id = view["message"].turn_id
        if view["message"].role != MessageRole.ASSISTANT or turn_id is None:
            continue
        versions = turn_versions(turn_id)
        if len(versions) < 2:
            continue
        index = versions.index(view["message"]) + 1
        wanted = shown_version[1] if shown_version and shown_version[0] == turn_id else index
        if wanted != index and 1 <= wanted <= len(versions):
            # An earlier version, to read: without Edit or Regenerate, which act on the latest.
            index, shown = wanted, versions[wanted - 1]
            prompt = prompt_before(shown)
            views[at] = message_view(shown)
            if prompt is not None and at > 0 and views[at - 1]["message"].role == MessageRole.USER:
                views[at - 1] = message_view(prompt)
        views[at]["versions"] = {"turn": turn_id, "index": index, "count": len(versions)}


@bp.get("/")
def index():
    return render_template(
        "pages/index.html", agents=current_app.extensions["agents"].values(), chats=recent_chats(current_identity_id())
    )


@bp.get("/agent/<slug>")
def new_chat(slug: str):
    agent = agent_or_404(slug)
    return chat_page(agent, None, uuid.uuid4())


@bp.get("/agent/<slug>/<uuid:chat_id>")
def show_chat(slug: str, chat_id: uuid.UUID):
    """The chat; `?turn=<id>&version=<n>` shows the n-th version of a turn instead of its latest,
    `?before=<position>` the messages before that one (a long chat is shown a page at a time)."""
    agent = agent_or_404(slug)
    turn, version = request.args.get("turn"), request.args.get("version", type=int)
    try:
        shown = (uuid.UUID(turn), version) if turn and version else None
    except ValueError:
        shown = None
    before = request.args.get("before", type=int)
    if before is not None and not 1 <= before <= 2**31:
        abort(400, description="`before` must be a message position (a whole number from 1).")
    return chat_page(agent, chat_or_404(agent, chat_id), chat_id, shown_version=shown, before=before)


@bp.post("/agent/<slug>/<uuid:chat_id>/regenerate")
@rate_limits.messages_per_address
@rate_limits.messages_per_identity
def regenerate(slug: str, chat_id: uuid.UUID):
    """A new version of the last reply (the earlier stays readable); 409 while one is written."""
    agent = agent_or_404(slug)
    replies().regenerate(current_identity_id(), chat_or_404(agent, chat_id), agent)
    return redirect(url_for("pages.show_chat", slug=slug, chat_id=chat_id), code=303)


@bp.post("/agent/<slug>/<uuid:chat_id>/continue")
@rate_limits.messages_per_address
@rate_limits.messages_per_identity
def continue_reply(slug: str, chat_id: uuid.UUID):
    """Carry on an interrupted last reply (a new version of its turn that starts from it)."""
    agent = agent_or_404(slug)
    replies().continue_reply(current_identity_id(), chat_or_404(agent, chat_id), agent)
    return redirect(url_for("pages.show_chat", slug=slug, chat_id=chat_id), code=303)


@bp.post("/agent/<slug>/<uuid:chat_id>/edit")
@rate_limits.messages_per_address
@rate_limits.messages_per_identity
def edit_message(slug: str, chat_id: uuid.UUID):
    """Send an edited last message in place of it: a new version of the last turn."""
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    replies().edit_last_message(current_identity_id(), chat, agent, parse_message(request.form.get("message", "")))
    return redirect(url_for("pages.show_chat", slug=slug, chat_id=chat_id), code=303)


@bp.post("/agent/<slug>/<uuid:chat_id>/messages")
@rate_limits.messages_per_address
@rate_limits.messages_per_identity
def send_message(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    raw = request.form.get("message", "")
    sent = [(part.filename, part.stream) for part in request.files.getlist("files") if part.filename]
    kept = request.form.getlist("kept_files")  # files a refused send of this form stored already
    attached: list[StoredFile] = []
    try:
        text = parse_message(raw)
        attached = files.for_form(current_identity_id(), kept, sent, agent)
        replies().start(current_identity_id(), chat_id, agent, text, files=attached)
    except Refused as error:
        if is_fragment_request():  # (the page's composer still holds its files)
            return answer(error.status, error.message, error.retry_after)
        chat = owned_chat(chat_id, current_identity_id())
        held = attached or files.still_unsent(current_identity_id(), kept)
        return chat_page(agent, chat, chat_id, error=error.message, status=error.status, draft=raw, draft_files=held)
    chat_url = url_for("pages.show_chat", slug=slug, chat_id=chat_id)
    if not is_fragment_request():
        return redirect(chat_url, code=303)
    response = Response(
        render_template(
            "_partials/turn.html",
            agent=agent,
            chat_id=chat_id,
            views=message_views(newest_messages(chat_id, 2)),
            fresh=True,
            chats=recent_chats(current_identity_id()),
            chat=db.session.get(Chat, chat_id),
        )
    )
    response.headers["HX-Push-Url"] = chat_url
    return response


@bp.get("/agent/<slug>/<uuid:chat_id>/messages/<uuid:message_id>")
def show_message(slug: str, chat_id: uuid.UUID, message_id: uuid.UUID):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    message = db.session.get(Message, message_id)
    if message is None or message.chat_id != chat.id:
        abort(404, description="No such message in this chat.")
    views = [message_view(message)]
    newest = newest_messages(chat.id, 2)
    if newest and newest[-1].id == message.id and not message.is_pending:
        # The reply that just ended is the chat's last: it gets Regenerate, its prompt gets Edit.
        views = message_views(newest)
        with_turn_controls(views, None)
    fragment = render_template("_partials/message.html", agent=agent, chat_id=chat_id, **views[-1])
    if len(views) == 2:
        fragment += render_template("_partials/message.html", agent=agent, chat_id=chat_id, oob=True, **views[0])
    if not message.is_pending:  # the reply was just charged: refresh the balance out of band
        fragment += render_template("_partials/balance.html", oob=True)
    return fragment


@bp.post("/agent/<slug>/<uuid:chat_id>/answer")
def answer_call(slug: str, chat_id: uuid.UUID):
    """Approve or Deny a tool call that waits (a plain form; htmx posts it without a reload: the
    stream shows what follows on every tab)."""
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    decision = request.form.get("decision")
    if decision not in ("approve", "deny"):
        abort(400, description="Answer with approve or deny.")
    try:
        replies().answer(chat, request.form.get("call_id", ""), decision == "approve")
    except ReplyError as error:
        if is_fragment_request():
            return answer(error.status, error.message, error.retry_after)
        if error.status != 409:  # answered already (elsewhere): the page shows how
            raise
    if is_fragment_request():
        return Response(status=204)
    return redirect(url_for("pages.show_chat", slug=slug, chat_id=chat_id), code=303)


@bp.post("/agent/<slug>/<uuid:chat_id>/stop")
def stop(slug: str, chat_id: uuid.UUID):
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    replies().stop(chat)
    if is_fragment_request():
        return Response(status=204)
    return redirect(url_for("pages.show_chat", slug=slug, chat_id=chat_id), code=303)


def tail_element_id(stream_id: str) -> str:
    """The id of a streaming message's open-block element (the template's and the stream's)."""
    return f"tail-{stream_id}"


def browser_events(
    source: Iterable[Event | None] | None,
    events_before: Sequence[Event] = (),
    stream_id: str = "",
    render_call: Callable[[ToolCallView, bool], str] | None = None,
) -> Iterator[Event | None]:
    """The reply log as rendered HTML, one event per entry: `tail` carries the open last
    block (the page replaces it); `block` the blocks the delta finished (the page appends them)
    together with the new tail as an out-of-band swap; `done` ends.

    Block and tail travel in one event because the finished block was shown in the tail until
    now: as two events, the page showed it twice between them (and kept both if the connection
    dropped there).

    A tool call's first entry closes the text before it (its open block is appended as
    finished) and appends the call's block (`render_call`, the page's partial); its later
    entries update that block out of band: the arguments as they are written, then the whole
    block when it starts and when it settles. Text after it is a new piece of Markdown.

    `events_before` is the log up to the cursor the stream starts from: the page shows it
    rendered already, and continuing from it renders exactly what a watcher saw.
    Always ends with `done` (even when there is nothing to follow), because an EventSource that
    gets anything but a 200 stream reconnects forever.
    """
    tail_id = tail_element_id(stream_id)  # a uuid's hex: nothing to escape
    last_id = "0-0"
    parts = ReplyParts.from_log(events_before)
    rendered = StreamingMarkdown(parts.trailing_text, stream=stream_id or None)
    events = iter(source or ())
    try:
        for event in events:
            if event is None:
                yield None
            elif event.type == "delta":
                last_id = event.id
                parts.apply(event)
                finished, tail = rendered.feed(json.loads(event.data)["text"], event.id)
                if finished:  # a delta that finishes a block always renders the new tail
                    yield Event(event.id, "block", f'{finished}<div hx-swap-oob="innerHTML:#{tail_id}">{tail}</div>')
                elif tail is not None:
                    yield Event(event.id, "tail", tail)
            elif event.terminal:
                if (tail := rendered.flush()) is not None:
                    yield Event(last_id, "tail", tail)
                yield Event(event.id, "done", event.type)
                return
            elif render_call is not None:
                call, new = parts.apply(event)
                if call is None:
                    continue
                last_id = event.id
                if new:
                    closed = rendered.flush() or str(rendered.tail)
                    rendered = StreamingMarkdown("", stream=stream_id or None)
                    html = f'{closed}{render_call(call, False)}<div hx-swap-oob="innerHTML:#{tail_id}"></div>'
                elif event.type == "tool-input":
                    html = (
                        f'<div hx-swap-oob="beforeend:#{tool_element_id(stream_id, call.call_id)}-args">'
                        f"{escape(event.payload()['text'])}</div>"
                    )
                else:
                    html = render_call(call, True)
                yield Event(event.id, "block", html)
        yield Event(last_id, "done", "gone")
    finally:
        close = getattr(events, "close", None)
        if close:  # the browser left: end the subscription now, not at garbage collection
            close()


@bp.get("/agent/<slug>/<uuid:chat_id>/stream")
def stream(slug: str, chat_id: uuid.UUID):
    """The browser's stream of the chat's pending reply, from the page's own cursor. It always
    answers 200 and ends with `done` (docs/api.md, Browser streams): a cursor it cannot use is
    ignored, and a stream it cannot open ends at once (the page then shows the stored reply)."""
    agent = agent_or_404(slug)
    chat = chat_or_404(agent, chat_id)
    try:
        cursor = parse_cursor()
    except ReplyError:
        cursor = None
    answering = {"answer_url": url_for("pages.answer_call", slug=slug, chat_id=chat_id), "csrf": generate_csrf()}
    return page_stream(chat, current_identity_id(), cursor, answering)


def page_stream(
    chat: Chat,
    holder: uuid.UUID,
    cursor: str | None,
    answering: dict[str, str | None],
    viewer: bool = False,
    until: Callable[[], bool] | None = None,
) -> Response:
    """A chat page's stream of `chat`'s pending reply (the owner's, or a share link's viewer's):
    its open-stream place held by `holder`; `answering`: what a waiting tool call's form needs
    (taken now: the stream renders it outside a request); `until`: checked every few seconds,
    False ends the stream (a revoked share link)."""
    opened = None
    if rate_limits.page_stream_allowed(viewer):
        try:
            opened = replies().open_page_stream(holder, chat, cursor)
        except ReplyError:  # too many open (or no Redis): the page shows the reply when it ends
            opened = None
    if opened is None:
        return sse_response(browser_events(None), retry_ms=RESUME_RETRY_MS)
    if cursor:
        metrics.RESUMES.inc()
        structured_logs.event("reply.resume", chat=str(chat.id), cursor=cursor)
    template = current_app.jinja_env.get_template("_partials/tool_call.html")

    def render_call(call: ToolCallView, oob: bool) -> str:
        return template.render(call=call, scope=opened.stream_id, oob=oob, **answering)

    events = opened.events if until is None else while_true(opened.events, until)
    source = browser_events(events, opened.events_before, opened.stream_id, render_call)
    return sse_response(source, retry_ms=RESUME_RETRY_MS)


def while_true(events: Iterable[Event | None], until: Callable[[], bool], every: float = 1.0) -> Iterator[Event | None]:
    """`events` for as long as `until()` says so, asked at most every `every` seconds (the
    reader's keepalives come at least that often while nothing else does)."""
    next_check = time.monotonic() + every
    for event in events:
        if time.monotonic() >= next_check:
            if not until():
                close = getattr(events, "close", None)
                if close:
                    close()
                return
            next_check = time.monotonic() + every
        yield event
