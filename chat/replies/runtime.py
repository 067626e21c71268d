"""This process's reply machinery: the stream backend, the pump, the follower and the reaper.

Built lazily, once per process (`Replies.runtime`), because gunicorn forks its workers after the
app is imported and threads and connections do not survive a fork. Nothing starts until `start()`,
so tests can build one and drive its parts step by step.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis
from flask import Flask

from ..agents import Agent
from ..background import start_daemon
from ..extensions import redis_client
from ..streams import ClusterRedisStreams, Follower, RedisStreams, StreamBackend, StreamRef
from ..streams.local_store import LocalStreams
from ..tools.toolbox import Toolbox
from .cluster_reader import ClusterStreamHub
from .finish import interrupt, reap_orphans
from .pump import Pump
from .reader import StreamHub

log = logging.getLogger(__name__)

# Replies being admitted (checked, claimed and stored) at once in a process. Each start holds the
# worker's loop for a few milliseconds of database work; more at once only interleaves them.
STARTS_AT_ONCE = 4


class Runtime:
    def __init__(self, app: Flask) -> None:
        config = app.config
        self.app = app
        self.agents: dict[str, Agent] = app.extensions["agents"]
        self.pid = os.getpid()
        self.starting = threading.BoundedSemaphore(STARTS_AT_ONCE)  # see Replies.start
        self.reaper_interval: float = config["REAPER_INTERVAL_SECONDS"]
        self.max_reply_seconds: int = config["MAX_REPLY_SECONDS"]
        self.hub: StreamHub | None = None
        self.backend: StreamBackend
        self.follower: Follower
        if config["RESUMABLE_STREAMS"]:
            client = redis_client(app)
            on_cluster = isinstance(client, redis.RedisCluster)
            store = (ClusterRedisStreams if on_cluster else RedisStreams)(
                client,  # type: ignore[arg-type]
                maxlen=config["STREAM_MAXLEN"],
                ttl_seconds=config["STREAM_TTL_SECONDS"],
                max_reply_seconds=config["MAX_REPLY_SECONDS"],
                chat_streams_ttl_seconds=config["CHAT_STREAMS_TTL_SECONDS"],
            )
            self.hub = (ClusterStreamHub if on_cluster else StreamHub)(
                store,  # type: ignore[arg-type]
                block_ms=config["READER_BLOCK_MS"],
                keepalive_seconds=config["SSE_KEEPALIVE_SECONDS"],
                liveness_seconds=config["HEARTBEAT_INTERVAL_MS"] / 1000,
                outage_seconds=config["PRODUCER_TIMEOUT_MS"] / 1000,
                on_dead=self.interrupt_dead,
            )
            self.backend, self.follower = store, self.hub
        else:
            local = LocalStreams(keepalive_seconds=config["SSE_KEEPALIVE_SECONDS"])
            self.backend, self.follower = local, local
        self.pump = Pump(
            self.backend,
            flush_ms=config["STREAM_FLUSH_MS"],
            flush_chars=config["STREAM_FLUSH_CHARS"],
            heartbeat_ms=config["HEARTBEAT_INTERVAL_MS"],
            timeout_ms=config["PRODUCER_TIMEOUT_MS"],
            fanout=self.hub,
        )
        self.toolbox = Toolbox(app.extensions["mcp_servers"], config["TOOL_RESULT_MAX_CHARS"])
        self.stopping = threading.Event()
        self.reaper: threading.Thread | None = None
        self.chores: list[Callable[[], object]] = []  # run by the reaper after each sweep
        self.recover: Callable[[StreamRef], None] | None = None  # a dead producer's reply (see reap)
        self.handing_off = False  # stopping: runs at a step boundary are parked for other workers

    def start(self) -> None:
        self.pump.start()
        if self.hub is not None:
            self.hub.start()
        if self.reaper_interval > 0:
            self.reaper = start_daemon(self.reap_forever, "durable-chat-reaper")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this process's machinery: its live replies end `cancelled` (their producers finish
        them while the pump still runs, waited for up to `timeout`), then the loops stop.

        Nothing of this process touches the database afterwards, so its engine can be disposed.
        """
        self.stopping.set()
        self.pump.cancel_all()
        deadline = time.monotonic() + timeout
        while self.pump.producers and time.monotonic() < deadline:
            time.sleep(0.02)
        self.pump.stop()
        if self.hub is not None:
            self.hub.stop()
            self.hub.store.close()
        if self.reaper is not None:
            self.reaper.join(timeout)
        self.toolbox.close()

    def drain(self, grace_seconds: float, finish_timeout: float = 10.0) -> int:
        """Stop this process without losing a reply (a deploy, a reload, max-requests recycling).

        Its readers end at once, so their clients resume from their cursors on other workers; its
        replies go on generating for up to `grace_seconds`; those still going then end
        `interrupted`, with their text stored and billed, before the machinery stops. Returns
        how many replies had to be interrupted.
        """
        if self.hub is not None:
            self.hub.release_everyone()
        self.handing_off = True  # a run between model steps is handed to another worker
        deadline = time.monotonic() + grace_seconds
        while self.pump.producers and time.monotonic() < deadline:
            time.sleep(0.1)
        interrupted = len(self.pump.producers)
        if interrupted:
            log.warning(
                "shutdown: %d replies still generating after %.0fs; interrupting them", interrupted, grace_seconds
            )
            self.pump.interrupt_all()
            deadline = time.monotonic() + finish_timeout
            while self.pump.producers and time.monotonic() < deadline:
                time.sleep(0.05)
        self.stop(timeout=finish_timeout)
        return interrupted

    def interrupt_dead(self, ref: StreamRef) -> None:
        """The reader saw `ref`'s producer stop heart-beating: `recover` it (Replies sets that to
        go on with a run at a step boundary, replies/runs.py), else interrupt it."""
        with self.app.app_context():
            if self.recover is None:
                interrupt(self.backend, self.agents, ref)
            else:
                self.recover(ref)

    def reap(self) -> int:
        """Interrupt replies whose producer is gone (or recover them); then the periodic work
        others add (the runs whose answer is overdue, replies/runs.py)."""
        finished = reap_orphans(self.backend, self.agents, self.max_reply_seconds, self.recover)
        for chore in self.chores:
            chore()
        return finished

    def reap_forever(self) -> None:
        while not self.stopping.wait(self.reaper_interval):
            try:
                with self.app.app_context():
                    self.reap()
            except redis.RedisError as exc:  # replies wait for Redis; they are finished once it is back
                log.warning("reaper: Redis unavailable: %s", exc)
            except Exception:
                log.exception("reaper failed")
