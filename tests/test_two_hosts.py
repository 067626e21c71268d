"""Two hosts, one database and one Redis, no SECRET_KEY: a guest is the same guest on both."""

from __future__ import annotations

import pytest
import requests

from helpers.apps import wipe
from helpers.chats import new_chat_id, reply_in_database
from helpers.gunicorn import Gunicorn
from helpers.sse import read_events

pytestmark = pytest.mark.slow


@pytest.fixture
def two_hosts(database, redis_url, tmp_path):
    """Hosts A and B: separate instance directories, the same database and Redis, no key set."""
    wipe(database)
    shared = {"DATABASE_URL": database, "REDIS_URL": redis_url, "SECRET_KEY": None, "SECRET_KEY_FALLBACKS": None}
    hosts = []
    try:
        for name in ("a", "b"):
            hosts.append(Gunicorn({**shared, "INSTANCE_PATH": str(tmp_path / name)}, workers=1))
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def test_a_guest_moves_between_hosts_mid_reply_and_keeps_its_chat(two_hosts, database, tmp_path):
    host_a, host_b = two_hosts
    guest = requests.Session()
    chat_id = new_chat_id()
    post = guest.post(
        f"{host_a.url}/api/chat",
        json={"chatId": chat_id, "agent": "helper", "message": "roam"},
        stream=True,
        timeout=30,
    )
    head = read_events(post, stop_after=5)
    assert head.terminal is None, "the reply is still being generated on A"

    # The next request lands on B, with A's cookie, resuming from the middle of the reply.
    resumed = guest.get(
        f"{host_b.url}/api/chat",
        params={"chatId": chat_id},
        headers={"Last-Event-ID": head.last_id},
        stream=True,
        timeout=60,
    )
    assert resumed.status_code == 200
    tail = read_events(resumed)
    assert tail.terminal.event == "finish"
    stored = reply_in_database(database, chat_id)
    assert stored.status == "complete" and head.text + tail.text == stored.content

    # Stop from B reaches the reply A is generating.
    again = guest.post(
        f"{host_a.url}/api/chat",
        json={"chatId": chat_id, "agent": "helper", "message": "more"},
        stream=True,
        timeout=30,
    )
    read_events(again, stop_after=3)
    stop = guest.post(f"{host_b.url}/api/chat/stop", json={"chatId": chat_id}, timeout=30)
    assert stop.status_code == 200 and stop.json()["status"] == "cancelled"
    assert reply_in_database(database, chat_id).status == "cancelled"

    # B's page lists the chat as this guest's.
    page = guest.get(f"{host_b.url}/agent/helper/{chat_id}", timeout=30)
    assert page.status_code == 200 and f'href="/agent/helper/{chat_id}"' in page.text
    assert not (tmp_path / "a" / "secret_key").exists() and not (tmp_path / "b" / "secret_key").exists()
