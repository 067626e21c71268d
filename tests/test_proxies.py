"""The shipped proxy configs (docs/deploy/nginx.conf, docs/deploy/Caddyfile), run by Debian's
nginx and Caddy in front of two gunicorn instances on one database and one Redis: events pass
unbuffered, a resume lands on the other instance and continues exactly, stop works through it;
through nginx's HTTPS and HTTP/2, eight Chromium tabs of one chat share one connection and all
stream the reply (HTTP/1.1 would give them six connections)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import requests

from helpers.apps import ROOT
from helpers.browser import CAPTURE_STREAMED, send, shown_reply, streamed, wait_finished, wait_for_text
from helpers.chats import new_chat_id, reply_in_database, wait_for
from helpers.servers import free_port
from helpers.sse import read_events

pytestmark = pytest.mark.slow
DEPLOY = ROOT / "docs" / "deploy"


def certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made now: nothing secret is committed)."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def nginx(upstreams: list[str], port: int, tmp: Path) -> list[str]:
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace(
        "server 127.0.0.1:5000;\n    server 127.0.0.1:5001;", "\n".join(f"server {u};" for u in upstreams)
    )
    cert, key = certificate(tmp)
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;")
    site = site.replace("/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/chat.example.com/privkey.pem", str(key))
    site = site.replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
    # Test-only: which instance answered, and in which protocol (the shipped config does not say).
    site = site.replace(
        "proxy_pass http://durable_chat;",
        "proxy_pass http://durable_chat;\n add_header X-Upstream $upstream_addr always;"
        "\n add_header X-Protocol $server_protocol always;\n add_header X-Connection $connection always;",
    )
    (tmp / "site.conf").write_text(site)
    (tmp / "nginx.conf").write_text(
        f"""daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log; user root root;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  include {tmp}/site.conf;
}}
"""
    )
    return ["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)]


def caddy(upstreams: list[str], port: int, tmp: Path) -> list[str]:
    site = (DEPLOY / "Caddyfile").read_text()
    site = site.replace("chat.example.com {", "{\n\tadmin off\n\tauto_https off\n}\n\n" + f"http://127.0.0.1:{port} {{")
    site = site.replace("127.0.0.1:5000 127.0.0.1:5001", " ".join(upstreams))
    site = site.replace(
        "lb_policy round_robin",
        "lb_policy round_robin\n\t\theader_down X-Upstream {http.reverse_proxy.upstream.hostport}",
    )
    (tmp / "Caddyfile").write_text(site)
    return ["caddy", "run", "--config", str(tmp / "Caddyfile"), "--adapter", "caddyfile"]


class Proxied(NamedTuple):
    url: str
    upstreams: list[str]
    verify: str | bool  # the test certificate, for HTTPS


def start_proxy(binary: str, gunicorn_server, tmp: Path, **env: str) -> Iterator[Proxied]:
    """The proxy in front of two gunicorn instances (one worker each, trusting one proxy hop)."""
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: `make test` installs it (scripts/ensure-system-packages test)")
    instances = [gunicorn_server(workers=1, PROXY_HOPS="1", **env) for _ in range(2)]
    upstreams = [instance.url.removeprefix("http://") for instance in instances]
    port = free_port()
    command = (nginx if binary == "nginx" else caddy)(upstreams, port, tmp)
    proxy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proxied = (
        Proxied(f"https://127.0.0.1:{port}", upstreams, str(tmp / "cert.pem"))
        if binary == "nginx"
        else Proxied(f"http://127.0.0.1:{port}", upstreams, True)
    )
    try:
        wait_for(lambda: answers(proxied), timeout=15, message=f"{binary} to serve")
        yield proxied
    finally:
        proxy.terminate()
        proxy.wait(10)
        if proxy.stderr:
            proxy.stderr.close()


@pytest.fixture(params=["nginx", "caddy"])
def proxied(request, gunicorn_server, tmp_path):
    yield from start_proxy(request.param, gunicorn_server, tmp_path)


def answers(proxied: Proxied) -> bool:
    try:
        return requests.get(f"{proxied.url}/healthz", timeout=1, verify=proxied.verify).status_code == 200
    except requests.RequestException:
        return False


def test_post_resume_on_the_other_instance_and_stop_through_the_proxy(proxied, database):
    url, upstreams, verify = proxied
    session = requests.Session()
    session.verify = verify
    session.trust_env = False  # else a CA bundle named in the environment replaces `verify`
    chat_id = new_chat_id()
    sent = time.monotonic()
    post = session.post(
        f"{url}/api/chat", json={"chatId": chat_id, "agent": "helper", "message": "via the proxy"}, stream=True
    )
    head = read_events(post, stop_after=4)
    assert time.monotonic() - sent < 3, "events pass at once (the reply takes 8 s): the proxy does not buffer"
    first = post.headers["X-Upstream"]
    resumed = None
    for _ in range(4):  # round robin: the next request goes to the other instance
        response = session.get(
            f"{url}/api/chat", params={"chatId": chat_id}, headers={"Last-Event-ID": head.last_id}, stream=True
        )
        if response.headers["X-Upstream"] != first:
            resumed = response
            break
        response.close()
    assert resumed is not None, f"no resume reached the instance other than {first} of {upstreams}"
    tail = read_events(resumed)
    assert tail.terminal.json()["finishReason"] == "stop"
    assert head.text + tail.text == reply_in_database(database, chat_id).content

    other_chat = new_chat_id()
    live = session.post(
        f"{url}/api/chat", json={"chatId": other_chat, "agent": "helper", "message": "stop me"}, stream=True
    )
    read_events(live, stop_after=3)
    stopped = session.post(f"{url}/api/chat/stop", json={"chatId": other_chat})
    assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled"
    assert reply_in_database(database, other_chat).status == "cancelled"


@pytest.fixture
def nginx_h2(gunicorn_server, tmp_path):
    """nginx over HTTPS and HTTP/2, in front of instances whose replies take ~18 s: eight tabs
    opened one after the other on a loaded CI machine must all join before the reply ends (at
    ~9 s the last tabs sometimes found it finished, twice in one day's CI runs)."""
    yield from start_proxy("nginx", gunicorn_server, tmp_path, DEMO_MODEL_WORDS="600", DEMO_MODEL_DELAY_MS="30")


@pytest.mark.browser
def test_eight_tabs_of_one_chat_share_one_http2_connection_and_all_stream(nginx_h2, browser, database):
    proxied = nginx_h2
    context = browser.new_context(ignore_https_errors=True)  # the test's self-signed certificate
    context.add_init_script(CAPTURE_STREAMED)
    context.set_default_timeout(15_000)
    try:
        first = context.new_page()
        opened = first.goto(f"{proxied.url}/agent/helper")
        assert opened is not None and opened.headers["x-protocol"] == "HTTP/2.0"
        send(first, "Eight tabs")
        wait_for_text(first, 20)
        chat_url = first.url
        tabs = [first] + [context.new_page() for _ in range(7)]
        connections = {opened.headers["x-connection"]}
        for tab in tabs[1:]:
            response = tab.goto(chat_url)
            assert response is not None and response.headers["x-protocol"] == "HTTP/2.0"
            connections.add(response.headers["x-connection"])
        assert len(connections) == 1, "every tab's page came over the same connection"
        for n, tab in enumerate(tabs):  # every tab streams at once, before the reply has ended
            tab.wait_for_selector(".message.assistant.status-streaming")
            wait_for_text(tab, 40, timeout=10)
            assert tab.locator(".message.assistant.status-streaming").count() == 1, f"tab {n + 1} is live"
        for tab in tabs:
            wait_finished(tab, timeout=30_000)
        stored = reply_in_database(database, chat_url.rstrip("/").split("/")[-1])
        assert stored.status == "complete"
        for n, tab in enumerate(tabs):
            assert streamed(tab) == [shown_reply(tab)], f"tab {n + 1} streamed exactly the stored reply"
    finally:
        context.close()
