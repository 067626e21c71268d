"""Hosted Redis speaks TLS (`rediss://`): the whole reply path against a real TLS redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

from helpers.chats import new_chat_id, post_chat, wait_for
from helpers.servers import free_port
from helpers.sse import read_events


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_redis(tmp_path):
    """redis-server with only a TLS port, its certificate signed by a CA made for this test."""
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Durable Chat test CA",
        cwd=tmp_path,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=tmp_path,
    )
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=tmp_path,
    )
    port = free_port()
    process = subprocess.Popen(
        [
            shutil.which("redis-server"),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    wait_for(lambda: _answers(url), timeout=10, message="the TLS redis-server")
    yield url, port
    process.terminate()
    process.wait(5)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        time.sleep(0.05)
        return False


@pytest.mark.slow
def test_replies_stream_and_resume_over_rediss(app_factory, tls_redis):
    url, port = tls_redis
    with pytest.raises(redis.ConnectionError):  # the server speaks TLS only
        redis.Redis(port=port, socket_timeout=1).ping()
    app = app_factory(REDIS_URL=url, DEMO_MODEL_WORDS=20, DEMO_MODEL_DELAY_MS=10)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    chat_id = new_chat_id()
    head = read_events(post_chat(client, chat_id, "over TLS"), stop_after=4)
    tail = read_events(
        client.get(f"/api/chat?chatId={chat_id}", headers={"Last-Event-ID": head.last_id}, buffered=False)
    )
    assert tail.terminal.json()["finishReason"] == "stop"
    whole = read_events(client.get(f"/api/chat?chatId={chat_id}", buffered=False))
    assert head.text + tail.text == whole.text and len(whole.text) > 0
