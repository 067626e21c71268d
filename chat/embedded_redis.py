"""A private redis-server for a machine that has none configured (REDIS_URL unset).

One server process per app server: gunicorn's master starts it before forking (gunicorn.conf.py)
and publishes its URL in the environment, so every worker shares it; `flask run` starts it on
first use. It listens on a free loopback port, keeps its data under instance/redis/, and is
stopped when the process that started it exits.

This module does not import redis-py: gunicorn's master imports it (gunicorn.conf.py) before
forking, and redis-py imports `ssl`, which the gevent worker must patch before anyone imports it.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path


class RedisServerNotFound(RuntimeError):
    pass


def find_redis_server(explicit: str | None = None) -> str:
    """Locate the redis-server binary, or explain how to get one."""
    candidate = explicit or os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise RedisServerNotFound(
        "No redis-server binary was found. Install it (Debian/Ubuntu: `sudo apt-get install "
        "redis-server`, macOS: `brew install redis`), point REDIS_SERVER_BIN at one, or set "
        "REDIS_URL to a Redis you already run (redis://… or rediss://…)."
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(*parts: str) -> bytes:
    """One RESP command (see the module docstring for why not redis-py)."""
    encoded = [part.encode() for part in parts]
    return f"*{len(encoded)}\r\n".encode() + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded)


def answers_ping(port: int, password: str | None = None) -> bool:
    """`PING` over a plain socket (after `AUTH` when the server has a password)."""
    request = (command("AUTH", password) if password else b"") + command("PING")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(request)
            reply = b""
            while b"+PONG" not in reply and not reply.startswith(b"-") and len(reply) < 256:
                received = sock.recv(64)
                if not received:
                    break
                reply += received
            return b"+PONG" in reply
    except OSError:
        return False


def wait_until_ready(
    url: str, port: int, process: subprocess.Popen, timeout: float = 10.0, password: str | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {process.returncode} while starting")
        if answers_ping(port, password):
            return
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not answer on {url} within {timeout:.0f}s")


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends it SIGTERM when its parent dies, even by
    SIGKILL or an unhandled SIGTERM, which skip atexit."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_kept(command: list[str]) -> subprocess.Popen:
    """Start `command` from a thread that lives as long as the child does.

    The kernel's parent-death signal fires when the *thread* that forked the child ends, not the
    process: a server started from a request thread (`flask run` serves each request in its own)
    would die with that request. A keeper thread waits on the child instead, and ends only when
    the child or this whole process does.
    """
    started: list[subprocess.Popen | BaseException] = []
    ready = threading.Event()

    def keep() -> None:
        try:
            child = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        except BaseException as exc:  # reported to the caller below
            started.append(exc)
            ready.set()
            return
        started.append(child)
        ready.set()
        child.wait()

    threading.Thread(target=keep, name="embedded-redis-keeper", daemon=True).start()
    ready.wait()
    if isinstance(started[0], BaseException):
        raise started[0]
    return started[0]


def start_redis_server(
    data_dir: Path,
    binary: str | None = None,
    port: int | None = None,
    options: Sequence[str] = (),
    password: str | None = None,
) -> tuple[str, subprocess.Popen]:
    """Start redis-server on loopback (with extra `options`, e.g. a cluster node's); returns its
    URL and process (stopped at exit). Its directory is the owner's alone (0700); a `password`
    goes in a config file there (0600), never on the command line other users can read."""
    binary = find_redis_server(binary)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    port = port or free_port()
    config: list[str] = []
    if password:
        config_file = data_dir / "redis.conf"
        config_file.touch(mode=0o600)
        config_file.chmod(0o600)
        config_file.write_text(f"requirepass {password}\n")
        config = [str(config_file)]
    argv = [
        binary,
        *config,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "60 1",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
        "--logfile",
        str(data_dir / "redis.log"),
        *options,
    ]
    process = spawn_kept(argv)
    url = f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    wait_until_ready(f"redis://127.0.0.1:{port}/0", port, process, password=password)
    atexit.register(stop_redis_server, process, os.getpid())
    return url, process


def stop_redis_server(process: subprocess.Popen, owner_pid: int | None = None) -> None:
    """Stop the server; forked children (gunicorn workers) inherit the atexit hook but not the server."""
    if owner_pid is not None and owner_pid != os.getpid():
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def ensure_redis_url(data_dir: Path, binary: str | None = None) -> str:
    """Return REDIS_URL, starting the embedded server (once per process tree) when it is unset."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    # A password of its own: any local user can reach a loopback port.
    url, _process = start_redis_server(data_dir, binary, password=secrets.token_urlsafe(24))
    # Children (gunicorn workers, the reloader's child) inherit the URL and reuse this server.
    os.environ["REDIS_URL"] = url
    return url
