"""The embedded redis-server that `make run` relies on when REDIS_URL is unset."""

from __future__ import annotations

import pytest
import redis

from chat.embedded_redis import RedisServerNotFound, ensure_redis_url, start_redis_server, stop_redis_server


def test_starts_a_private_server_on_loopback_and_stops_it(tmp_path):
    url, process = start_redis_server(tmp_path / "redis")
    assert url.startswith("redis://127.0.0.1:")
    assert redis.Redis.from_url(url).ping()
    stop_redis_server(process)
    assert process.poll() is not None


def test_a_missing_binary_gives_an_error_that_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(RedisServerNotFound) as error:
        ensure_redis_url(tmp_path / "redis", binary=str(tmp_path / "no-such-redis-server"))
    message = str(error.value)
    assert "apt-get install redis-server" in message and "REDIS_URL" in message and "REDIS_SERVER_BIN" in message


def test_an_existing_redis_url_is_used_as_is(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "rediss://example.invalid:6380/0")
    assert ensure_redis_url(tmp_path / "redis") == "rediss://example.invalid:6380/0"


def test_the_server_dies_with_the_process_that_started_it(tmp_path):
    import subprocess
    import sys
    import time

    script = (
        "import sys, time; from pathlib import Path; from chat.embedded_redis import start_redis_server; "
        "url, p = start_redis_server(Path(sys.argv[1])); print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "redis")], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no atexit, no cleanup of its own
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(child):
        time.sleep(0.05)
    assert not alive(child), "the embedded redis-server outlived its parent"


def alive(pid: int) -> bool:
    from pathlib import Path

    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_a_server_started_from_a_short_lived_thread_outlives_it(tmp_path):
    """`flask run` serves each request in a thread of its own; the first use of Redis starts the
    server from one, and the server must not die when that request ends."""
    import threading
    import time

    from chat.embedded_redis import answers_ping

    started = []
    request_thread = threading.Thread(target=lambda: started.append(start_redis_server(tmp_path / "redis")))
    request_thread.start()
    request_thread.join()
    url, process = started[0]
    try:
        time.sleep(0.3)
        assert process.poll() is None, "the embedded redis-server died with the thread that started it"
        assert answers_ping(int(url.rsplit(":", 1)[1].split("/")[0]))
    finally:
        stop_redis_server(process)
