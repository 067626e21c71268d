"""The shipped proxy configs (docs/deploy/nginx.conf, docs/deploy/Caddyfile), run by Debian's
nginx and Caddy in front of two gunicorn instances on one database and one Redis: events pass
unbuffered, a resume lands on the other instance and continues exactly, stop works through it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from helpers.apps import ROOT
from helpers.chats import new_chat_id, reply_in_database, wait_for
from helpers.servers import free_port
from helpers.sse import read_events

pytestmark = pytest.mark.slow
DEPLOY = ROOT / "docs" / "deploy"


def nginx(upstreams: list[str], port: int, tmp: Path) -> list[str]:
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace(
        "server 127.0.0.1:5000;\n    server 127.0.0.1:5001;", "\n".join(f"server {u};" for u in upstreams)
    )
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    # Test-only: which instance answered (the shipped config does not say).
    site = site.replace(
        "proxy_pass http://durable_chat;",
        "proxy_pass http://durable_chat;\n add_header X-Upstream $upstream_addr always;",
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


@pytest.fixture(params=["nginx", "caddy"])
def proxied(request, gunicorn_server, tmp_path):
    """Two gunicorn instances behind the proxy; yields (proxy URL, instance addresses)."""
    binary = request.param
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: `make test` installs it (scripts/ensure-system-packages test)")
    instances = [gunicorn_server(workers=1, PROXY_HOPS="1") for _ in range(2)]
    upstreams = [instance.url.removeprefix("http://") for instance in instances]
    port = free_port()
    command = (nginx if binary == "nginx" else caddy)(upstreams, port, tmp_path)
    proxy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url), timeout=15, message=f"{binary} to serve")
        yield url, upstreams
    finally:
        proxy.terminate()
        proxy.wait(10)
        if proxy.stderr:
            proxy.stderr.close()


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_post_resume_on_the_other_instance_and_stop_through_the_proxy(proxied, database):
    url, upstreams = proxied
    session = requests.Session()
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
