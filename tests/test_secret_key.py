"""One session key for every host that shares the database, with no manual step."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from chat.models import app_secret, create_app_secret
from chat.people.secret_key import CURRENT, load_secret_key
from helpers.chats import new_chat_id, post_chat
from helpers.sse import read_events


@pytest.fixture
def host(app_factory, tmp_path):
    """`host(name)`: an app as one host runs it — its own instance directory, no SECRET_KEY."""

    def build(name: str, **overrides):
        instance = tmp_path / name
        instance.mkdir(exist_ok=True)
        app = app_factory(SECRET_KEY=None, **overrides)
        app.instance_path = str(instance)
        return app

    return build


def test_two_hosts_without_secret_key_read_each_others_cookies(host):
    first, second = host("a"), host("b")
    chat_id = new_chat_id()
    client = first.test_client()
    assert read_events(post_chat(client, chat_id)).terminal.event == "finish"
    other = second.test_client()
    other.set_cookie("durable_chat", client.get_cookie("durable_chat").value)
    assert other.get(f"/agent/helper/{chat_id}").status_code == 200  # the same guest on host B
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert not any((Path(app.instance_path) / "secret_key").exists() for app in (first, second))


def test_hosts_starting_together_agree_on_one_key(host):
    """Each host proposes its own key at the same moment; the database keeps exactly one."""
    app = host("race")
    barrier = threading.Barrier(8)
    agreed: list[str] = []

    def propose(n: int) -> None:
        with app.app_context():
            barrier.wait()
            agreed.append(create_app_secret(CURRENT, f"key-of-host-{n}"))

    threads = [threading.Thread(target=propose, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(agreed) == 8 and len(set(agreed)) == 1
    with app.app_context():
        load_secret_key(app)
        assert app.config["SECRET_KEY"] == agreed[0]


def test_a_key_left_in_the_instance_directory_by_an_earlier_version_keeps_its_cookies(host, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "secret_key").write_text("the-key-this-host-used-before\n")
    app = host("old")
    with app.app_context():
        load_secret_key(app)
        assert app_secret(CURRENT) == "the-key-this-host-used-before"


def test_secret_key_in_the_environment_wins(host):
    app = host("env")
    app.config["SECRET_KEY"] = "from-the-environment"
    with app.app_context():
        load_secret_key(app)
        assert app.config["SECRET_KEY"] == "from-the-environment" and app_secret(CURRENT) is None


def test_after_a_rotation_old_cookies_stay_valid_and_new_ones_use_the_new_key(host):
    before = host("before")
    chat_id = new_chat_id()
    client = before.test_client()
    read_events(post_chat(client, chat_id))
    old_key = before.config["SECRET_KEY"]
    result = before.test_cli_runner().invoke(args=["secret-key", "rotate"])
    assert result.exit_code == 0 and "restart every host" in result.output
    after = host("after")  # a host (re)started after the rotation
    resumed = after.test_client()
    resumed.set_cookie("durable_chat", client.get_cookie("durable_chat").value)
    assert resumed.get(f"/agent/helper/{chat_id}").status_code == 200
    assert after.config["SECRET_KEY"] != old_key and after.config["SECRET_KEY_FALLBACKS"] == [old_key]
