"""Background threads: under gunicorn's gevent worker (monkey-patched) each is a greenlet, under
`flask run` and in tests a real thread. Generation, the pump, the reader and the reaper run here,
independent of any client connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def start_daemon(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def spawn_daemon(target: Callable[[], None], name: str) -> None:
    """start_daemon without waiting for the thread to start. Under gevent, Thread.start waits
    for the new greenlet's first run, a turn of the loop that every stream shares; a POST that
    starts its reply's producer does not need to wait for it (its pump registration is done)."""
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        import gevent

        gevent.spawn(target)
    else:
        start_daemon(target, name)


def off_loop(work: Callable[..., T], *args: object) -> T:
    """Run CPU-heavy work that releases the GIL (scrypt: tens of milliseconds) in a real thread
    under gevent, so the worker's streams keep flowing meanwhile; directly elsewhere."""
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        import gevent

        return gevent.get_hub().threadpool.apply(work, args)
    return work(*args)


def every(seconds: float, chore: Callable[[], object]) -> Callable[[], None]:
    """`chore`, run by a periodic caller (the reaper's sweeps) at most once per `seconds`; the
    first call runs it."""
    due = [0.0]

    def maybe() -> None:
        if time.monotonic() >= due[0]:
            due[0] = time.monotonic() + seconds
            chore()

    return maybe
