"""Background threads: under gunicorn's gevent worker (monkey-patched) each is a greenlet, under
`flask run` and in tests a real thread. Generation, the pump, the reader and the reaper run here,
independent of any client connection."""

from __future__ import annotations

import threading
from collections.abc import Callable


def start_daemon(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
