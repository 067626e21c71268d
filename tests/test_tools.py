"""Agents that act: tool calls in the reply's log, resumed exactly, run at most once, stopped,
stored and exported with the text (api.md, "Tool calls"). MCP tools come from the reference
server `@modelcontextprotocol/server-everything` (npm, tests/mcp/), over stdio and HTTP."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from chat.agents import AgentConfigError, load_agents_file
from chat.extensions import db
from chat.models import ToolCall
from chat.streams import Event
from chat.web.reply_parts import ReplyParts
from helpers.chats import latest_reply, new_chat_id, post_chat, resume, wait_for
from helpers.gunicorn import worker_pids
from helpers.mcp import HttpServer, agents_file, stdio_command, stdio_server
from helpers.sse import Transcript, parse_sse, read_events, response_lines

TOOL_EVENTS = ("tool-input", "tool-call", "tool-result")


class Following:
    """A streamed response read in steps: up to an event of some type, later on to the end."""

    def __init__(self, response) -> None:
        self.events = parse_sse(response_lines(response))
        self.seen: list = []

    def until(self, kind: str) -> list:
        for event in self.events:
            self.seen.append(event)
            if event.event == kind:
                return self.seen
        raise AssertionError(f"the stream ended without {kind!r}")

    def rest(self) -> Transcript:
        start = len(self.seen)
        for event in self.events:
            self.seen.append(event)
            if event.event in ("finish", "error"):
                break
        return Transcript(self.seen[start:])


def resume_until_the_end(url: str, chat_id: str, cookies, seen: list) -> list:
    """As a browser does: resume from the last id seen until the reply ends (a worker that dies
    or stops cuts its streams; the next request lands on another)."""
    import requests

    deadline = time.monotonic() + 40
    while seen[-1].event not in ("finish", "error") and time.monotonic() < deadline:
        try:
            with requests.get(
                f"{url}/api/chat",
                params={"chatId": chat_id},
                headers={"Last-Event-ID": seen[-1].id},
                cookies=cookies,
                stream=True,
                timeout=30,
            ) as response:
                seen = seen + Following(response).rest().events
        except requests.RequestException:
            time.sleep(0.2)
    return seen


def gateway_worker(server) -> int:
    """The worker of `server` whose MCP gateway process runs (the one that ran the tool)."""
    workers = worker_pids(server.process.pid)
    for process in Path("/proc").glob("[0-9]*"):
        try:
            if b"chat.tools.mcp_gateway" in (process / "cmdline").read_bytes():
                parent = int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent in workers:
                    return parent
        except OSError:
            continue
    raise AssertionError("no worker of this server runs an MCP gateway")


def calls_of(app, chat_id: str) -> list[ToolCall]:
    with app.app_context():
        reply = latest_reply(app, chat_id)
        assert reply is not None
        calls = db.session.query(ToolCall).filter_by(message_id=reply.id).order_by(ToolCall.position).all()
        db.session.expunge_all()
        return calls


def told(transcript: Transcript) -> list[tuple[str, dict]]:
    """The events a client ended with, as (type, data), without the start."""
    return [(e.event, e.json()) for e in transcript.events if e.event != "start"]


def parts_of(transcript: Transcript) -> list:
    """What the page would show from these events: text pieces and calls, in order."""
    folded = ReplyParts.from_log(Event(e.id or "0-0", e.event, e.data) for e in transcript.events)
    return [p if isinstance(p, str) else (p.call_id, p.name, p.arguments, p.status, p.result) for p in folded.parts]


def stored_parts(app, chat_id: str) -> list:
    reply = latest_reply(app, chat_id)
    assert reply is not None
    calls = calls_of(app, chat_id)
    folded = ReplyParts.stored(reply.content, calls)
    return [p if isinstance(p, str) else (p.call_id, p.name, p.arguments, p.status, p.result) for p in folded.parts]


# --- built-in tools with the demo model --------------------------------------------------------
def test_the_demo_analyst_calls_the_calculator_and_answers_with_the_result(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=4)
    client = app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "What is (12 + 30) * 7?", agent="analyst"))
    kinds = [e.event for e in transcript.events]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    inputs = [e.json() for e in transcript.events if e.event == "tool-input"]
    assert len(inputs) >= 2, "the arguments stream in pieces"
    assert json.loads("".join(i["text"] for i in inputs)) == {"expression": "(12 + 30) * 7"}
    call = next(e.json() for e in transcript.events if e.event == "tool-call")
    assert call["name"] == "calculator" and call["arguments"] == {"expression": "(12 + 30) * 7"}
    result = next(e.json() for e in transcript.events if e.event == "tool-result")
    assert result == {"toolCallId": call["toolCallId"], "status": "ok", "result": "294"}
    assert kinds.index("tool-call") < kinds.index("tool-result") < kinds.index("delta")
    assert "294" in transcript.text, "the second step answers with the result"

    (row,) = calls_of(app, chat_id)
    assert (row.status, row.result, row.executed, row.text_offset) == ("ok", "294", True, 0)
    reply = latest_reply(app, chat_id)
    assert reply.content == transcript.text and reply.status == "complete"
    usage = transcript.terminal.json()["usage"]
    assert usage["completionTokens"] > 0 and reply.completion_tokens == usage["completionTokens"]
    assert stored_parts(app, chat_id) == parts_of(transcript)


def test_a_message_without_arithmetic_gets_text_only_and_a_tool_error_reaches_the_model(app_factory):
    client = app_factory(DEMO_MODEL_WORDS=3).test_client()
    plain = read_events(post_chat(client, new_chat_id(), "Hello there", agent="analyst"))
    assert not [e for e in plain.events if e.event in TOOL_EVENTS]
    broken = read_events(post_chat(client, new_chat_id(), "What is 1 / 0?", agent="analyst"))
    result = next(e.json() for e in broken.events if e.event == "tool-result")
    assert result["status"] == "error" and "divides by zero" in result["result"]
    assert "divides by zero" in broken.text, "the model saw the error as the tool's result"
    assert broken.terminal.json()["finishReason"] == "stop"


def test_resume_at_every_event_of_a_tool_reply_gives_the_rest_exactly_once(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=6)
    client = app.test_client()
    chat_id = new_chat_id()
    full = read_events(post_chat(client, chat_id, "What is 6 * 7?", agent="analyst"))
    assert any(e.event == "tool-result" for e in full.events)
    for index, event in enumerate(full.events[:-1]):
        rest = read_events(resume(client, chat_id, event.id))
        assert told(rest) == told(Transcript(full.events[index + 1 :])), f"resumed after event {index}"
    assert stored_parts(app, chat_id) == parts_of(full)


def test_after_the_log_expires_the_stored_reply_is_told_with_its_tool_calls_in_order(app_factory):
    app = app_factory(DEMO_MODEL_WORDS=4)
    client = app.test_client()
    chat_id = new_chat_id()
    live = read_events(post_chat(client, chat_id, "What is 2 + 2?", agent="analyst"))
    redis = app.extensions["replies"].runtime.backend.client
    for key in redis.scan_iter(f"chat:{{{chat_id}}}:*"):
        redis.delete(key)
    replayed = read_events(resume(client, chat_id))
    assert [kind for kind, _ in told(replayed)] == ["tool-input", "tool-call", "tool-result", "delta", "finish"]
    assert parts_of(replayed) == parts_of(live) == stored_parts(app, chat_id)
    after_call = replayed.events[1].id
    assert [e.event for e in read_events(resume(client, chat_id, after_call)).events] == [
        "tool-result",
        "delta",
        "finish",
    ]


def test_the_export_carries_the_tool_calls_in_their_place(app_factory):
    client = app_factory(DEMO_MODEL_WORDS=3).test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "What is 9 * 9?", agent="analyst"))
    markdown = client.get(f"/agent/analyst/{chat_id}/export.md").get_data(as_text=True)
    assert "> **Tool call** `calculator` (ok)" in markdown and "> 81" in markdown
    assert markdown.index("Tool call") < markdown.index("used its tools")
    exported = client.get(f"/agent/analyst/{chat_id}/export.json").get_json()
    (call,) = exported["messages"][1]["toolCalls"]
    assert (call["name"], call["status"], call["result"], call["textOffset"]) == ("calculator", "ok", "81", 0)


def test_the_chat_page_shows_a_tool_call_as_its_own_block_with_escaped_result(app_factory):
    client = app_factory(DEMO_MODEL_WORDS=3).test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "What is 3 * 3?", agent="analyst"))
    page = client.get(f"/agent/analyst/{chat_id}").get_data(as_text=True)
    assert page.count('class="tool-call tool-ok"') == 1
    block = page[page.index('class="tool-call') : page.index("</section>", page.index('class="tool-call'))]
    assert "calculator" in block and "&#34;expression&#34;" in block and "<pre>9</pre>" in block
    assert page.index("tool-call tool-ok") < page.index("used its tools")


def test_a_fork_keeps_the_tool_calls_of_the_replies_it_copies(app_factory):
    import re

    app = app_factory(DEMO_MODEL_WORDS=3)
    client = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "What is 8 * 8?", agent="analyst"))
    reply = latest_reply(app, chat_id)
    page = client.get(f"/agent/analyst/{chat_id}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    forked = client.post(f"/agent/analyst/{chat_id}/messages/{reply.id}/fork", data={"csrf_token": token.group(1)})
    assert forked.status_code == 303
    copy = client.get(forked.headers["Location"]).get_data(as_text=True)
    assert copy.count('class="tool-call tool-ok"') == 1 and "<pre>64</pre>" in copy


# --- models that call tools (the loopback OpenAI-compatible fake) ------------------------------
def test_invalid_arguments_are_refused_before_any_run_and_the_model_is_told(app_factory, provider, tmp_path):
    provider.tool_calls = [
        {"id": "call_bad", "name": "calculator", "arguments": '{"expr": 12}'},
        {"id": "call_good", "name": "calculator", "arguments": '{"expression": "2 * 21"}'},
    ]
    app = app_factory(
        AGENTS_FILE=str(agents_file(tmp_path, "", ["calculator"])),
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=provider.base_url,
        OPENAI_TIMEOUT_SECONDS=5,
    )
    client = app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "compute", agent="actor"))
    calls = [e.json() for e in transcript.events if e.event == "tool-call"]
    assert [c["toolCallId"] for c in calls] == ["call_good"], "the invalid call never started"
    results = {e.json()["toolCallId"]: e.json() for e in transcript.events if e.event == "tool-result"}
    assert results["call_bad"]["status"] == "error" and "expression" in results["call_bad"]["result"]
    assert results["call_good"] == {"toolCallId": "call_good", "status": "ok", "result": "42"}
    inputs = [e.json()["toolCallId"] for e in transcript.events if e.event == "tool-input"]
    assert inputs[:2] == ["call_bad", "call_good"], "parallel calls stream interleaved"
    second = provider.requests[-1]["body"]["messages"]
    told_model = {m["tool_call_id"]: m["content"] for m in second if m["role"] == "tool"}
    assert "expression" in told_model["call_bad"] and told_model["call_good"] == "42"
    assert second[-3]["tool_calls"][0]["function"]["name"] == "calculator"
    rows = {c.call_id: c for c in calls_of(app, chat_id)}
    assert (rows["call_bad"].status, rows["call_bad"].executed) == ("error", False)
    assert transcript.text == provider.text
    # Usage is the sum of both steps, billed once.
    usage = transcript.terminal.json()["usage"]
    assert usage == {"promptTokens": 30 + 42, "completionTokens": 9 + len(provider.words)}


def test_the_agents_file_refuses_tools_it_cannot_run_naming_file_agent_and_field(tmp_path, monkeypatch):
    headers = 'headers = { A = "${NOT_SET_ANYWHERE}" }\n'
    cases = [
        ("", ["abacus"], "unknown tool 'abacus'"),
        ("", ["everything/echo"], "no [[mcp_servers]] declares"),
        ('[[mcp_servers]]\nname = "everything"\ncommand = ["x"]\nurl = "http://a/mcp"\n', [], "either `command`"),
        ('[[mcp_servers]]\nname = "everything"\nurl = "http://a/mcp"\n' + headers, [], "NOT_SET_ANYWHERE is not set"),
        ('[[mcp_servers]]\nname = "bad name"\ncommand = ["x"]\n', [], "`name` must be"),
    ]
    for server, tools, problem in cases:
        path = agents_file(tmp_path, server, tools)
        with pytest.raises(AgentConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")) as raised:
            load_agents_file(path)
        assert str(path) in str(raised.value)
    monkeypatch.setenv("EVERYTHING_TOKEN", "s3cret")
    server = '[[mcp_servers]]\nname = "everything"\nurl = "http://a/mcp"\nheaders = { Authorization = "Bearer ${EVERYTHING_TOKEN}" }\n'
    agents, servers = load_agents_file(agents_file(tmp_path, server))
    assert servers["everything"].headers == {"Authorization": "Bearer s3cret"}
    assert agents["actor"].tools == ("calculator", "everything/*")


# --- MCP: the reference server ----------------------------------------------------------------
@pytest.fixture
def mcp_app(app_factory, tmp_path):
    """`mcp_app(**settings)`: an app whose agent `actor` has the reference server over stdio (its
    traffic logged to `tmp_path/traffic.jsonl`, its pid in `tmp_path/server.pid`)."""

    def build(**overrides):
        command = stdio_command(tmp_path / "traffic.jsonl", tmp_path / "server.pid")
        path = agents_file(tmp_path, stdio_server(command, timeout_seconds=overrides.pop("timeout", 30)))
        return app_factory(AGENTS_FILE=str(path), DEMO_MODEL_WORDS=3, **overrides)

    return build


def traffic(tmp_path: Path) -> list[dict]:
    path = tmp_path / "traffic.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_an_mcp_tool_over_stdio_is_listed_validated_and_called(mcp_app, tmp_path):
    app = mcp_app()
    client = app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "echo: hello <b>there</b>", agent="actor"))
    call = next(e.json() for e in transcript.events if e.event == "tool-call")
    assert call["name"] == "everything/echo" and call["arguments"] == {"message": "hello <b>there</b>"}
    result = next(e.json() for e in transcript.events if e.event == "tool-result")
    assert result["status"] == "ok" and result["result"] == "Echo: hello <b>there</b>"
    assert transcript.terminal.json()["finishReason"] == "stop"
    page = client.get(f"/agent/actor/{chat_id}").get_data(as_text=True)
    assert "<b>there</b>" not in page and "&lt;b&gt;there&lt;/b&gt;" in page, "a result is text, never HTML"
    calls = [m for m in traffic(tmp_path) if m.get("method") == "tools/call"]
    assert [m["params"]["name"] for m in calls] == ["echo"]


def test_stop_during_a_long_mcp_call_cancels_it_on_the_server(mcp_app, tmp_path):
    app = mcp_app()
    client = app.test_client()
    chat_id = new_chat_id()
    post = Following(post_chat(client, chat_id, "wait: 20", agent="actor"))
    post.until("tool-call")
    wait_for(
        lambda: any(m.get("method") == "tools/call" for m in traffic(tmp_path)), message="the call to reach the server"
    )
    assert client.post("/api/chat/stop", json={"chatId": chat_id}).status_code == 200
    rest = post.rest()
    assert rest.terminal.json()["finishReason"] == "cancelled"
    result = next(e.json() for e in rest.events if e.event == "tool-result")
    assert result["status"] == "cancelled"
    request_id = next(m["id"] for m in traffic(tmp_path) if m.get("method") == "tools/call")
    wait_for(
        lambda: any(
            m.get("method") == "notifications/cancelled" and m["params"]["requestId"] == request_id
            for m in traffic(tmp_path)
        ),
        message="the server to be sent notifications/cancelled for the call",
    )
    (row,) = calls_of(app, chat_id)
    assert row.status == "cancelled" and latest_reply(app, chat_id).status == "cancelled"


def test_fifty_resumers_while_a_tool_runs_all_end_with_the_stored_reply(mcp_app, live_server, tmp_path):
    import requests

    app = mcp_app()
    server = live_server(app)
    session = requests.Session()
    chat_id = new_chat_id()
    post = Following(
        session.post(
            f"{server.url}/api/chat", json={"chatId": chat_id, "agent": "actor", "message": "wait: 2"}, stream=True
        )
    )
    seen = list(post.until("tool-call"))
    cursor = seen[-1].id
    endings: list[Transcript] = []

    def follow() -> None:
        response = session.get(
            f"{server.url}/api/chat",
            params={"chatId": chat_id},
            headers={"Last-Event-ID": cursor},
            stream=True,
            timeout=30,
        )
        endings.append(read_events(response))

    readers = [threading.Thread(target=follow) for _ in range(50)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(30)
    rest = post.rest()
    assert len(endings) == 50
    whole = Transcript(seen + rest.events)
    assert {json.dumps(told(Transcript(seen + e.events))) for e in endings} == {json.dumps(told(whole))}
    assert parts_of(whole) == stored_parts(app, chat_id)
    assert [m["params"]["name"] for m in traffic(tmp_path) if m.get("method") == "tools/call"] == [
        "trigger-long-running-operation"
    ], "run once, however many followed"


def test_an_mcp_server_that_dies_mid_call_ends_the_call_as_an_error_and_the_next_call_works(mcp_app, tmp_path):
    app = mcp_app()
    client = app.test_client()
    chat_id = new_chat_id()
    post = post_chat(client, chat_id, "wait: 20", agent="actor")
    wait_for(lambda: any(m.get("method") == "tools/call" for m in traffic(tmp_path)), message="the call to start")
    shell = int((tmp_path / "server.pid").read_text())  # `tee | node`, run by a shell
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if int((child / "stat").read_text().rsplit(")", 1)[1].split()[1]) == shell:
                os.kill(int(child.name), signal.SIGKILL)  # the server dies mid-call
        except (OSError, ValueError):
            continue
    transcript = read_events(post)
    result = next(e.json() for e in transcript.events if e.event == "tool-result")
    assert result["status"] == "error" and "stopped" in result["result"]
    assert transcript.terminal.json()["finishReason"] == "stop", "the model was told and answered"
    again = read_events(post_chat(client, new_chat_id(), "echo: back", agent="actor"))
    assert next(e.json() for e in again.events if e.event == "tool-result")["result"] == "Echo: back"


def test_an_mcp_tool_over_streamable_http(app_factory, tmp_path):
    server = HttpServer()
    try:
        app = app_factory(AGENTS_FILE=str(agents_file(tmp_path, server.server_toml())), DEMO_MODEL_WORDS=3)
        client = app.test_client()
        transcript = read_events(post_chat(client, new_chat_id(), "echo: over http", agent="actor"))
        result = next(e.json() for e in transcript.events if e.event == "tool-result")
        assert result == {"toolCallId": result["toolCallId"], "status": "ok", "result": "Echo: over http"}
    finally:
        server.stop()


def test_a_call_is_claimed_once_whoever_asks_again(app_factory):
    """The at-most-once guard itself: the row is written before the call starts, and a second
    claim of the same stream and toolCallId (a retry, another worker) is refused."""
    from chat.models import claim_call

    app = app_factory(DEMO_MODEL_WORDS=3)
    chat_id = new_chat_id()
    read_events(post_chat(app.test_client(), chat_id, "hello", agent="analyst"))
    reply = latest_reply(app, chat_id)
    with app.app_context():
        assert claim_call(reply.id, "a-stream", "call_x", 0, 0, "calculator", "{}", executed=True)
        assert not claim_call(reply.id, "a-stream", "call_x", 0, 0, "calculator", "{}", executed=True)


@pytest.mark.slow
def test_a_worker_killed_during_an_mcp_call_leaves_it_interrupted_never_run_again_and_continue_goes_on(
    gunicorn_server, database, tmp_path
):
    """SIGKILL of the worker whose reply is inside a long MCP call (under gunicorn's gevent
    workers, the gateway process beside it): the call ends `interrupted`, the reply too, within
    the usual bound, and no worker calls the tool again."""
    import requests
    from sqlalchemy import create_engine, select

    path = agents_file(tmp_path, stdio_server(stdio_command(tmp_path / "traffic.jsonl")))
    server = gunicorn_server(workers=2, AGENTS_FILE=str(path), DEMO_MODEL_WORDS="3")
    session = requests.Session()
    chat_id = new_chat_id()
    post = Following(
        session.post(
            f"{server.url}/api/chat", json={"chatId": chat_id, "agent": "actor", "message": "wait: 30"}, stream=True
        )
    )
    seen = post.until("tool-call")
    wait_for(lambda: any(m.get("method") == "tools/call" for m in traffic(tmp_path)), message="the call to start")
    worker = gateway_worker(server)
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        seen = seen + post.rest().events
    except requests.RequestException:
        pass  # it was served by the killed worker
    ending = Transcript(resume_until_the_end(server.url, chat_id, session.cookies, seen))
    elapsed = time.monotonic() - killed_at
    assert ending.terminal.json()["finishReason"] == "interrupted" and elapsed < 10
    result = next(e.json() for e in ending.events if e.event == "tool-result")
    assert result["status"] == "interrupted"
    engine = create_engine(database)
    with engine.connect() as connection:
        status = connection.execute(
            select(ToolCall.status).where(ToolCall.call_id == result["toolCallId"])
        ).scalar_one()
    engine.dispose()
    assert status == "interrupted"
    time.sleep(3)  # long enough for any worker that would run it again to have started
    calls = [m for m in traffic(tmp_path) if m.get("method") == "tools/call"]
    assert len(calls) == 1, "the interrupted call was not run again"
    # Continue carries the reply on (on a live worker): the interrupted call is told, not made again.
    carried = read_events(
        session.post(f"{server.url}/api/chat/continue", json={"chatId": chat_id}, stream=True, timeout=30)
    )
    assert carried.terminal.json()["finishReason"] == "stop"
    told_result = next(e.json() for e in carried.events if e.event == "tool-result")
    assert told_result["status"] == "interrupted" and "may or may not" in told_result["result"]
    assert "used its tools" in carried.text
    assert len([m for m in traffic(tmp_path) if m.get("method") == "tools/call"]) == 1, "still made once"


@pytest.mark.browser
def test_a_reload_mid_tool_shows_the_call_once_and_then_its_result_once(mcp_app, live_server, page):
    """A person watches a reply call a slow MCP tool, reloads while it runs: the page shows the
    call once (its arguments, "running…"), then its result once, then the answer; as stored."""
    from helpers.axe import violations
    from helpers.browser import send, wait_finished

    server = live_server(mcp_app(DEMO_MODEL_DELAY_MS=30))
    page.goto(f"{server.url}/agent/actor")
    send(page, "wait: 3")
    page.wait_for_selector(".tool-call.tool-running")
    assert "running" in page.inner_text(".tool-call .tool-state")
    page.reload()
    page.wait_for_selector(".tool-call.tool-running")
    assert page.locator(".tool-call").count() == 1
    assert json.loads(page.inner_text(".tool-call .tool-arguments")) == {"duration": 3, "steps": 3}
    assert violations(page) == []
    page.wait_for_selector(".tool-call.tool-ok", timeout=15_000)
    assert page.locator(".tool-call").count() == 1 and page.locator(".tool-call .tool-result").count() == 1
    assert "Long running operation completed" in page.inner_text(".tool-call .tool-result pre")
    wait_finished(page)
    assert page.locator(".tool-call").count() == 1 and page.locator(".tool-call .tool-result").count() == 1
    answer = page.inner_text(".message.assistant .content")
    assert answer.index("trigger-long-running-operation") < answer.index("used its tools")


@pytest.mark.slow
def test_a_worker_that_stops_hands_a_run_between_steps_to_another(gunicorn_server, tmp_path):
    """SIGTERM (a deploy) of the worker whose reply is inside a 3-second MCP call: the call
    finishes within the grace period, and at the step boundary that follows the run is handed to
    the other worker, which writes the next step into the same log — not interrupted."""
    import requests

    path = agents_file(tmp_path, stdio_server(stdio_command(tmp_path / "traffic.jsonl")))
    # The next step (400 words, 20 ms apart: 8 s) outlasts the stopping worker's grace (5 s): only
    # a hand-over lets it end `stop` — the stopping worker itself would have to interrupt it.
    server = gunicorn_server(workers=2, AGENTS_FILE=str(path), DEMO_MODEL_WORDS="400", GRACEFUL_REPLY_SECONDS="5")
    session = requests.Session()
    chat_id = new_chat_id()
    post = Following(
        session.post(
            f"{server.url}/api/chat", json={"chatId": chat_id, "agent": "actor", "message": "wait: 3"}, stream=True
        )
    )
    seen = post.until("tool-call")
    producer = gateway_worker(server)
    os.kill(producer, signal.SIGTERM)
    try:
        seen = seen + post.rest().events  # the stopping worker lets its readers go: they resume
    except requests.RequestException:
        pass
    whole = Transcript(resume_until_the_end(server.url, chat_id, session.cookies, seen))
    assert whole.terminal.json()["finishReason"] == "stop", "handed over, not interrupted"
    result = next(e.json() for e in whole.events if e.event == "tool-result")
    assert result["status"] == "ok" and "completed" in result["result"]
    assert "used its tools" in whole.text, "the next step ran on the other worker"
    ids = [e.id for e in whole.events]
    assert len(set(ids)) == len(ids)
    assert len([m for m in traffic(tmp_path) if m.get("method") == "tools/call"]) == 1
