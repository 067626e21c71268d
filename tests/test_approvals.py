"""Approvals (api.md, "Tool calls": `approval`, `POST /api/chat/approve`): a call an agent must
have approved waits for a person's answer without holding a worker, from any tab or instance;
one answer wins — over a second answer, the timeout or a stop."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests
from test_tools import Following, calls_of, parts_of, stored_parts, told

from helpers.chats import latest_reply, new_chat_id, post_chat, resume, wait_for
from helpers.sse import Transcript, read_events

AGENT = """
[[agents]]
slug = "careful"
name = "Careful"
description = "Asks before it calculates."
model = "demo"
system_prompt = "Ask first."
temperature = 0.0
max_tokens = 256
price_prompt_per_1k = 1.0
price_completion_per_1k = 2.0
tools = ["calculator"]
confirm = ["calculator"]
approval_timeout_seconds = {timeout}
"""


def careful_app(app_factory, tmp_path: Path, timeout: int = 60, **settings):
    path = tmp_path / "agents.toml"
    path.write_text(AGENT.format(timeout=timeout))
    return app_factory(AGENTS_FILE=str(path), DEMO_MODEL_WORDS=3, **settings)


def approve(client, chat_id: str, call_id: str, approved: bool = True):
    return client.post("/api/chat/approve", json={"chatId": chat_id, "toolCallId": call_id, "approved": approved})


def test_a_call_waits_for_approval_then_runs_and_the_same_stream_goes_on(app_factory, tmp_path):
    app = careful_app(app_factory, tmp_path)
    client = app.test_client()
    chat_id = new_chat_id()
    post = Following(post_chat(client, chat_id, "What is 20 + 22?", agent="careful"))
    asked = post.until("approval")[-1].json()
    assert asked["name"] == "calculator" and asked["arguments"] == {"expression": "20 + 22"}
    assert not [e for e in post.seen if e.event == "tool-call"], "nothing runs before the answer"
    (row,) = calls_of(app, chat_id)
    assert row.status == "waiting" and row.decide_by is not None
    # The run holds no producer while it waits, yet the chat stays busy and nobody interrupts it.
    runtime = app.extensions["replies"].runtime
    wait_for(lambda: not runtime.pump.producers, message="the run to let go of its producer")
    assert client.post("/api/chat", json={"chatId": chat_id, "agent": "careful", "message": "again"}).status_code == 409
    page = client.get(f"/agent/careful/{chat_id}").get_data(as_text=True)
    assert page.count('value="approve"') == 1 and "needs your answer" in page

    answered = approve(client, chat_id, asked["toolCallId"])
    assert answered.status_code == 200 and answered.get_json()["status"] == "running"
    rest = post.rest()
    kinds = [e.event for e in rest.events]
    assert kinds[:2] == ["tool-call", "tool-result"] and kinds[-1] == "finish"
    assert rest.events[1].json()["result"] == "42" and "42" in rest.text
    whole = Transcript(post.seen)
    assert parts_of(whole) == stored_parts(app, chat_id)
    ids = [e.id for e in post.seen]
    assert len(set(ids)) == len(ids), "every event once, after the parked run's last"
    (row,) = calls_of(app, chat_id)
    assert (row.status, row.executed) == ("ok", True)
    assert approve(client, chat_id, asked["toolCallId"]).status_code == 409, "answered once"
    # After the log expires the stored reply tells the approval too.
    redis = runtime.backend.client
    for key in redis.scan_iter(f"chat:{{{chat_id}}}:*"):
        redis.delete(key)
    replayed = read_events(resume(client, chat_id))
    assert [k for k, _ in told(replayed)][:4] == ["tool-input", "approval", "tool-call", "tool-result"]
    assert parts_of(replayed) == parts_of(whole)


def test_a_denied_call_never_runs_and_the_model_is_told(app_factory, tmp_path):
    app = careful_app(app_factory, tmp_path)
    client = app.test_client()
    chat_id = new_chat_id()
    post = Following(post_chat(client, chat_id, "What is 6 * 7?", agent="careful"))
    call_id = post.until("approval")[-1].json()["toolCallId"]
    assert approve(client, chat_id, call_id, approved=False).get_json()["status"] == "denied"
    rest = post.rest()
    assert "tool-call" not in [e.event for e in rest.events]
    result = next(e.json() for e in rest.events if e.event == "tool-result")
    assert result["status"] == "denied" and "denied" in rest.text
    (row,) = calls_of(app, chat_id)
    assert (row.status, row.executed) == ("denied", False)
    assert latest_reply(app, chat_id).status == "complete"


def test_no_answer_within_the_timeout_counts_as_denied(app_factory, tmp_path):
    app = careful_app(app_factory, tmp_path, timeout=1)
    client = app.test_client()
    chat_id = new_chat_id()
    post = Following(post_chat(client, chat_id, "What is 1 + 1?", agent="careful"))
    post.until("approval")
    rest = post.rest()
    result = next(e.json() for e in rest.events if e.event == "tool-result")
    assert result["status"] == "denied" and "No answer within 1 seconds" in result["result"]
    assert rest.terminal.json()["finishReason"] == "stop"


def test_answers_are_checked(app_factory, tmp_path):
    app = careful_app(app_factory, tmp_path)
    client = app.test_client()
    chat_id = new_chat_id()
    post = Following(post_chat(client, chat_id, "What is 5 - 3?", agent="careful"))
    call_id = post.until("approval")[-1].json()["toolCallId"]
    assert approve(client, chat_id, "call_nobody_made").status_code == 404
    stranger = app.test_client()
    assert approve(stranger, chat_id, call_id).status_code == 404, "another person's chat does not exist"
    bad = client.post("/api/chat/approve", json={"chatId": chat_id, "toolCallId": call_id, "approved": "yes"})
    assert bad.status_code == 400 and "true or false" in bad.get_json()["error"]
    form = client.post("/api/chat/approve", data={"chatId": chat_id})
    assert form.status_code in (400, 415)
    assert approve(client, chat_id, call_id).status_code == 200
    post.rest()


def test_an_answer_racing_a_stop_settles_the_call_once(app_factory, tmp_path):
    for attempt in range(3):
        app = careful_app(app_factory, tmp_path)
        client = app.test_client()
        chat_id = new_chat_id()
        post = Following(post_chat(client, chat_id, "What is 9 + 9?", agent="careful"))
        call_id = post.until("approval")[-1].json()["toolCallId"]
        start = threading.Barrier(2)
        codes: dict[str, int] = {}

        def stop(client=client, chat_id=chat_id, start=start, codes=codes) -> None:
            start.wait()
            codes["stop"] = client.post("/api/chat/stop", json={"chatId": chat_id}).status_code

        racer = threading.Thread(target=stop)
        racer.start()
        start.wait()
        codes["approve"] = approve(client, chat_id, call_id).status_code
        racer.join()
        rest = post.rest()
        results = [e.json() for e in rest.events if e.event == "tool-result"]
        assert len(results) == 1, f"one outcome for the call (attempt {attempt}: {codes})"
        assert codes["approve"] in (200, 409) and codes["stop"] == 200
        assert rest.terminal.json()["finishReason"] == "cancelled"
        (row,) = calls_of(app, chat_id)
        assert row.status == results[0]["status"] and row.status in ("cancelled", "ok")
        assert latest_reply(app, chat_id).status == "cancelled"


def test_an_answer_on_another_instance_continues_the_run_there(app_factory, live_server, tmp_path):
    """Instance A produced the reply up to the approval; the person answers on instance B (same
    database and Redis); B runs the call and the rest, and A's reader — the POST's stream — just
    keeps reading the same log."""
    first = live_server(careful_app(app_factory, tmp_path))
    second_app = careful_app(app_factory, tmp_path)
    second = live_server(second_app)
    session = requests.Session()  # a cookie is per host, not per port: both instances get it
    chat_id = new_chat_id()
    post = Following(
        session.post(
            f"{first.url}/api/chat",
            json={"chatId": chat_id, "agent": "careful", "message": "What is 3 * 14?"},
            stream=True,
        )
    )
    call_id = post.until("approval")[-1].json()["toolCallId"]
    answered = session.post(
        f"{second.url}/api/chat/approve", json={"chatId": chat_id, "toolCallId": call_id, "approved": True}
    )
    assert answered.status_code == 200
    rest = post.rest()
    assert next(e.json() for e in rest.events if e.event == "tool-result")["result"] == "42"
    assert rest.terminal.json()["finishReason"] == "stop"
    runtime = second_app.extensions["replies"].runtime
    assert runtime.pump  # B's pump wrote the rest (A's producer parked and let go)
    assert stored_parts(second_app, chat_id) == parts_of(Transcript(post.seen))


@pytest.mark.browser
def test_approve_from_a_second_device_after_reloading_the_first(app_factory, live_server, browser, tmp_path):
    """A person starts a reply on a laptop, reloads it while the call waits, approves on a phone
    (the same account's cookie); both pages show the answer's outcome, once."""
    from helpers.browser import send, wait_finished

    server = live_server(careful_app(app_factory, tmp_path, DEMO_MODEL_DELAY_MS=20))
    laptop = browser.new_context().new_page()
    laptop.goto(f"{server.url}/agent/careful")
    send(laptop, "What is 40 + 2?")
    laptop.wait_for_selector(".tool-call.tool-waiting")
    laptop.reload()
    laptop.wait_for_selector(".tool-call.tool-waiting button[value=approve]")
    phone_context = browser.new_context(viewport={"width": 390, "height": 844})
    phone_context.add_cookies(laptop.context.cookies())
    phone = phone_context.new_page()
    phone.goto(laptop.url)
    phone.wait_for_selector(".tool-call.tool-waiting")
    phone.click("button[value=approve]")
    for page in (phone, laptop):
        page.wait_for_selector(".tool-call.tool-ok", timeout=15_000)
        wait_finished(page)
        assert page.locator(".tool-call").count() == 1 and page.locator(".tool-result").count() == 1
        assert page.locator("button[value=approve]").count() == 0
        assert "42" in page.inner_text(".tool-result pre")
    phone_context.close()
    laptop.context.close()


def test_the_agents_file_checks_confirm(tmp_path):
    from chat.agents import AgentConfigError, load_agents_file

    path = tmp_path / "agents.toml"
    path.write_text(AGENT.format(timeout=60).replace('confirm = ["calculator"]', 'confirm = ["abacus"]'))
    with pytest.raises(AgentConfigError, match="`confirm`: unknown tool 'abacus'"):
        load_agents_file(path)
    path.write_text(AGENT.format(timeout=0))
    with pytest.raises(AgentConfigError, match="approval_timeout_seconds"):
        load_agents_file(path)


@pytest.mark.slow
def test_a_worker_stopped_while_a_run_waits_for_approval_loses_nothing(gunicorn_server, tmp_path):
    """SIGTERM of every worker while a reply waits for its approval (a deploy): the parked run is
    nobody's, the answer lands on a new worker and the reply finishes there; a reader resuming
    from its last id sees each event once."""
    import os
    import signal

    from helpers.gunicorn import worker_pids

    path = tmp_path / "agents.toml"
    path.write_text(AGENT.format(timeout=60))
    server = gunicorn_server(workers=2, AGENTS_FILE=str(path), DEMO_MODEL_WORDS="3", GRACEFUL_REPLY_SECONDS="2")
    session = requests.Session()
    chat_id = new_chat_id()
    post = session.post(
        f"{server.url}/api/chat",
        json={"chatId": chat_id, "agent": "careful", "message": "What is 30 + 12?"},
        stream=True,
    )
    seen = Following(post).until("approval")
    call_id = seen[-1].json()["toolCallId"]
    # A deploy: every worker that existed stops gracefully (gunicorn forks new ones).
    old = worker_pids(server.process.pid)
    for pid in old:
        os.kill(pid, signal.SIGTERM)
    wait_for(
        lambda: not set(old) & set(worker_pids(server.process.pid)) and len(worker_pids(server.process.pid)) == 2,
        timeout=30,
        message="new workers in place of the stopped ones",
    )
    wait_for(server.serves, timeout=10, message="the new workers to serve")
    answered = session.post(
        f"{server.url}/api/chat/approve", json={"chatId": chat_id, "toolCallId": call_id, "approved": True}
    )
    assert answered.status_code == 200, answered.text
    rest = read_events(
        session.get(
            f"{server.url}/api/chat", params={"chatId": chat_id}, headers={"Last-Event-ID": seen[-1].id}, timeout=30
        )
    )
    kinds = [e.event for e in rest.events]
    assert kinds[:2] == ["tool-call", "tool-result"] and kinds[-1] == "finish", kinds
    assert rest.events[1].json()["result"] == "42"
    assert rest.terminal.json()["finishReason"] == "stop"
    ids = [e.id for e in seen + rest.events]
    assert len(set(ids)) == len(ids)


def checkpoints(database: str) -> int:
    from sqlalchemy import create_engine, func, select

    from chat.models import RunCheckpoint

    engine = create_engine(database)
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(RunCheckpoint)).scalar_one()
    engine.dispose()
    return count


@pytest.mark.slow
@pytest.mark.parametrize("killed_after, outcome", [("tool-result", "stop"), ("delta", "interrupted")])
def test_a_worker_killed_between_two_steps_leaves_its_run_to_another_that_finishes_it(
    gunicorn_server, database, killed_after, outcome
):
    """SIGKILL of the worker right after a tool's result, while the next model step has written
    nothing yet: another worker goes on from the run's checkpoint — the reply ends `stop`, not
    `interrupted`, with its text whole, its call made once, each event told once. Killed once
    that step has written text, the reply ends `interrupted` (that text is not reproducible)."""
    import os
    import signal

    from sqlalchemy import create_engine, select
    from test_tools import resume_until_the_end

    from chat.models import Message, ToolCall
    from helpers.gunicorn import worker_pids

    # Each demo piece comes 1.5 s after the last: the second step's first one leaves time to kill.
    server = gunicorn_server(workers=1, DEMO_MODEL_WORDS="3", DEMO_MODEL_DELAY_MS="1500")
    chat_id = new_chat_id()
    with requests.Session() as session:  # closed, with the killed worker's response, at the end
        body = {"chatId": chat_id, "agent": "analyst", "message": "What is 6 * 7?"}
        with session.post(f"{server.url}/api/chat", json=body, stream=True) as response:
            post = Following(response)
            seen = post.until("tool-result")
            # The result reaches readers while its producer saves the checkpoint (a commit, a
            # round trip on PostgreSQL): a worker dying in between ends the reply `interrupted`.
            wait_for(lambda: checkpoints(database), message="the run's checkpoint")
            if killed_after == "delta":
                seen = post.until("delta")  # (the same list, read on)
            (worker,) = worker_pids(server.process.pid)
            os.kill(worker, signal.SIGKILL)
        ending = Transcript(resume_until_the_end(server.url, chat_id, session.cookies, seen))
    assert ending.terminal is not None and ending.terminal.json()["finishReason"] == outcome
    ids = [event.id for event in ending.events]
    assert len(set(ids)) == len(ids), "each event told once"
    assert [e.event for e in ending.events].count("tool-result") == 1
    assert "used its tools" in ending.text and ("42" in ending.text or outcome == "interrupted")
    assert checkpoints(database) == 0, "a finished run keeps no checkpoint"
    engine = create_engine(database)
    with engine.connect() as connection:
        stored = connection.execute(select(Message.status, Message.content).where(Message.role == "assistant")).one()
        calls = connection.execute(select(ToolCall.status)).scalars().all()
    engine.dispose()
    assert stored.status == ("complete" if outcome == "stop" else outcome) and stored.content == ending.text
    assert calls == ["ok"], "the call was made once"


@pytest.mark.browser
def test_a_screen_reader_hears_an_approval_request_and_the_call_once_each(app_factory, live_server, page, tmp_path):
    from helpers.browser import send, wait_finished

    server = live_server(careful_app(app_factory, tmp_path, DEMO_MODEL_DELAY_MS=20))
    page.goto(f"{server.url}/agent/careful")
    page.evaluate(
        "window.__said = []; new MutationObserver(() => { const t = document.getElementById('announcer').textContent;"
        " if (t) window.__said.push(t); }).observe(document.getElementById('announcer'),"
        " {childList: true, characterData: true, subtree: true})"
    )
    send(page, "What is 40 + 2?")
    page.wait_for_selector(".tool-call.tool-waiting button[value=approve]")
    page.click("button[value=approve]")
    wait_finished(page)
    wait_for(lambda: len(page.evaluate("window.__said")) >= 4, message="four announcements")
    assert page.evaluate("window.__said") == [
        "Careful is replying.",
        "The agent asks to run calculator: approve or deny.",
        "The agent is calling calculator.",
        "The reply is finished.",
    ]


def test_continue_carries_on_an_interrupted_reply_without_making_its_calls_again(app_factory):
    """A reply interrupted after its tool call (its server shut down mid-text): Continue tells
    the interrupted text and the settled call first, never runs the call again, and bills only
    the new step."""
    from chat.agents import estimate_tokens
    from chat.agents.demo import demo_words

    app = app_factory(DEMO_MODEL_WORDS=60, DEMO_MODEL_DELAY_MS=20)
    client = app.test_client()
    chat_id = new_chat_id()
    post = Following(post_chat(client, chat_id, "What is 6 * 7?", agent="analyst"))
    post.until("tool-result")
    post.until("delta")
    app.extensions["replies"].runtime.pump.interrupt_all()  # the shutdown's grace is over
    first = post.rest()
    assert first.terminal.json()["finishReason"] == "interrupted"
    interrupted = latest_reply(app, chat_id)
    assert interrupted.status == "interrupted" and "42" in interrupted.content

    carried = read_events(client.post("/api/chat/continue", json={"chatId": chat_id}, buffered=False))
    kinds = [e.event for e in carried.events]
    assert kinds[:4] == ["start", "tool-input", "tool-call", "tool-result"] and kinds[-1] == "finish"
    assert carried.events[3].json()["result"] == "42", "the settled call is told, not made again"
    assert carried.text.startswith(interrupted.content) and len(carried.text) > len(interrupted.content)
    assert carried.terminal.json()["finishReason"] == "stop"
    calls = calls_of(app, chat_id)
    assert [(c.call_id, c.status) for c in calls] == [("call_demo_1", "ok")], "no new call"
    continued = latest_reply(app, chat_id)
    assert continued.status == "complete" and continued.content == carried.text
    # Billed: the new step's own usage as the model reported it, not the carried text again.
    agent = app.extensions["agents"]["analyst"]
    new_step = sum(estimate_tokens(piece) for piece in demo_words(agent, "What is 6 * 7?", 60))
    assert continued.completion_tokens == new_step
    page = client.get(f"/agent/analyst/{chat_id}").get_data(as_text=True)
    assert "2 / 2" in page, "the interrupted version stays readable"
    again = client.post("/api/chat/continue", json={"chatId": chat_id})
    assert again.status_code == 400 and "interrupted" in again.get_json()["error"]
