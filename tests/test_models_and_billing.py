"""OpenAI-compatible providers over real HTTP, agent config validation, credits and the ledger."""

from __future__ import annotations

import html
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from chat.agents import AgentConfigError, load_agents
from chat.config import Config
from chat.extensions import db
from chat.models import Identity, Message, ledger_sum
from chat.vocabulary import MICROS_PER_CREDIT, credits_text
from helpers.chats import charges, hammer_resumes, latest_reply, new_chat_id, post_chat
from helpers.sse import read_events

AGENTS = load_agents(Config.AGENTS_FILE)


def reply_requests(provider) -> list[dict]:
    return [request for request in provider.requests if request["body"].get("stream")]


def test_deltas_stream_from_the_provider_and_usage_comes_from_its_final_chunk(model_app, provider):
    client = model_app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "Hi model"))
    assert transcript.text == provider.text
    assert transcript.terminal.json() == {"finishReason": "stop", "usage": {"promptTokens": 42, "completionTokens": 8}}
    request = reply_requests(provider)[0]
    assert request["auth"] == "Bearer sk-test-not-a-real-key"
    assert request["body"]["stream"] is True and request["body"]["stream_options"] == {"include_usage": True}
    assert request["body"]["model"] == AGENTS["helper"].model
    assert request["body"]["messages"][0] == {"role": "system", "content": AGENTS["helper"].system_prompt}
    row = latest_reply(model_app, chat_id)
    assert (row.content, row.status, row.prompt_tokens, row.completion_tokens) == (provider.text, "complete", 42, 8)
    [charge] = charges(model_app, titles=False)
    assert not charge.usage_estimated
    assert charge.cost_micros == AGENTS["helper"].cost_micros(42, 8) == row.cost_micros


def test_the_model_sees_the_stored_conversation(model_app, provider):
    client = model_app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "first question"))
    read_events(post_chat(client, chat_id, "second question"))
    sent = reply_requests(provider)[1]["body"]["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "first question"),
        ("assistant", provider.text),
        ("user", "second question"),
    ]


def test_connection_lost_mid_reply_gives_an_error_event_and_bills_only_what_was_delivered(model_app, provider):
    provider.mode = "break"
    client = model_app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "break please"))
    assert transcript.terminal.event == "error"
    assert "lost" in transcript.terminal.json()["message"]
    row = latest_reply(model_app, chat_id)
    assert row.status == "error" and row.content == transcript.text == "".join(provider.words[:3])
    [charge] = charges(model_app)
    assert charge.usage_estimated, "the provider reported no usage, so the ledger says it estimated"
    assert charge.completion_tokens <= 8 and charge.cost_micros == row.cost_micros


@pytest.mark.parametrize(
    "mode, phrase",
    [
        ("stall", "took too long"),
        ("auth", "API key"),
        ("rate", "rate-limiting"),
        ("context", "too long for this model"),
    ],
)
def test_provider_failures_reach_the_client_as_a_readable_error(model_app, provider, mode, phrase):
    provider.mode = mode
    client = model_app.test_client()
    chat_id = new_chat_id()
    transcript = read_events(post_chat(client, chat_id, "fail"))
    assert transcript.terminal.event == "error"
    assert phrase in transcript.terminal.json()["message"]
    assert latest_reply(model_app, chat_id).status == "error"
    # The chat is free again for the next message.
    provider.mode = "ok"
    assert read_events(post_chat(client, chat_id, "again")).terminal.event == "finish"


def test_exactly_one_ledger_row_under_fifty_concurrent_resumers_at_finish(app_factory, provider, live_server):
    provider.words = [f"w{n} " for n in range(80)]
    provider.delay = 0.01
    app = app_factory(OPENAI_API_KEY="sk-test-not-a-real-key", OPENAI_BASE_URL=provider.base_url)
    server = live_server(app)
    texts = hammer_resumes(server.url, new_chat_id(), "coder", readers=50)
    assert set(texts) == {provider.text}
    [charge] = charges(app, titles=False)
    assert charge.cost_micros == AGENTS["coder"].cost_micros(42, 8)


def test_too_little_credit_is_402_and_stores_nothing(app_factory):
    app = app_factory(GUEST_CREDIT_GRANT=0)
    client = app.test_client()
    response = post_chat(client, new_chat_id())
    assert response.status_code == 402 and "Not enough credit" in response.get_json()["error"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == 0


def test_each_reply_is_debited_from_the_balance_in_the_same_transaction(app):
    client = app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id))
    read_events(post_chat(client, chat_id, "more"))
    with app.app_context():
        identity = db.session.scalar(select(Identity))
        made = charges(app)
        assert len(made) == 2
        assert identity.balance_micros == app.config["GUEST_CREDIT_GRANT"] * MICROS_PER_CREDIT - sum(
            c.cost_micros for c in made
        )
        assert identity.balance_micros == ledger_sum(identity.id), "the grant is a ledger row too"
    page = client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert f"{credits_text(identity.balance_micros / MICROS_PER_CREDIT)} credits" in page
    assert f"{html.escape(credits_text(made[0].cost_micros / MICROS_PER_CREDIT))} credits" in page


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "at least one [[agents]]"),
        ("[[agents]]\nslug = 'x'", "missing `name`"),
        ("not toml ===", "not valid TOML"),
    ],
)
def test_a_bad_agents_file_stops_start_up_with_a_clear_error(tmp_path, content, problem):
    path = tmp_path / "agents.toml"
    path.write_text(content)
    with pytest.raises(AgentConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_agents(path)


def test_agents_file_rejects_wrong_types_and_duplicate_slugs(tmp_path):
    good = Path(Config.AGENTS_FILE).read_text()
    path = tmp_path / "agents.toml"
    path.write_text(good + good)
    with pytest.raises(AgentConfigError, match="used twice"):
        load_agents(path)
    path.write_text(good.replace("max_tokens = 1024", 'max_tokens = "lots"'))
    with pytest.raises(AgentConfigError, match="`max_tokens` has the wrong type"):
        load_agents(path)


def test_a_chat_gets_a_model_made_title_after_its_first_reply_billed_once(model_app, provider):
    from chat.models import Chat
    from helpers.chats import wait_for

    client = model_app.test_client()
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "what are streams?"))

    def title():
        with model_app.app_context():
            return db.session.get(Chat, uuid.UUID(chat_id)).title

    wait_for(lambda: title() == "Streaming tokens, explained", message="the model's title")
    read_events(post_chat(client, chat_id, "and again"))
    titles = [r for r in provider.requests if not r["body"].get("stream")]
    assert len(titles) == 1, "only the first reply asks for a title"
    assert "what are streams?" in titles[0]["body"]["messages"][1]["content"]
    made = charges(model_app)
    assert sorted(c.stream_id.startswith("title-") for c in made) == [False, False, True]
    title_charge = next(c for c in made if c.stream_id.startswith("title-"))
    assert title_charge.cost_micros == AGENTS["helper"].cost_micros(30, 6)
    assert "Streaming tokens, explained" in client.get("/").get_data(as_text=True)


def test_the_demo_model_titles_a_chat_with_its_first_words(client, app):
    chat_id = new_chat_id()
    read_events(post_chat(client, chat_id, "one two three four five six seven eight"))
    assert "one two three four five six…" in client.get(f"/agent/helper/{chat_id}").get_data(as_text=True)
    assert len(charges(app)) == 1
