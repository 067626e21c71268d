"""The app as production runs it: `gunicorn -c gunicorn.conf.py app:app` on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from .apps import GENEROUS_LIMITS, ROOT
from .chats import wait_for
from .servers import free_port

# Long, paced demo replies and short liveness timeouts, so a test can act mid-reply.
MID_REPLY_SETTINGS = {
    "DEMO_MODEL_WORDS": "400",
    "DEMO_MODEL_DELAY_MS": "20",
    "HEARTBEAT_INTERVAL_MS": "300",
    "PRODUCER_TIMEOUT_MS": "2000",
    "READER_BLOCK_MS": "500",
    "REAPER_INTERVAL_SECONDS": "1",
}


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


class Gunicorn:
    """One gunicorn master with `workers` gevent workers; `env` is added to this environment
    (a value of None removes the variable)."""

    def __init__(self, env: dict[str, str | None], workers: int = 2) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        merged = {
            **os.environ,
            **MID_REPLY_SETTINGS,
            **{name: str(value) for name, value in GENEROUS_LIMITS.items()},
            "BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            **env,
        }
        merged.pop("OPENAI_API_KEY", None)
        self.log = ""  # gunicorn's error log, once stopped
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
            cwd=ROOT,
            env={key: value for key, value in merged.items() if value is not None},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(self.serves, timeout=30, message="gunicorn to serve /healthz")
            wait_for(lambda: len(worker_pids(self.process.pid)) == workers, timeout=10, message="its workers")
        except BaseException:
            self.stop()
            raise

    def serves(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            return False

    def stop(self) -> None:
        """Stop at once (SIGQUIT): the test is over, and a graceful stop would wait out the open
        connections of its clients (tests of graceful stops send their own signals first)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(45)
        if self.process.stderr and not self.process.stderr.closed:
            self.log = self.process.stderr.read().decode(errors="replace")
            self.process.stderr.close()
