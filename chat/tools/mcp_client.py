"""The worker's side of the MCP gateway (chat/tools/mcp_gateway.py, where the SDK runs).

One gateway process per worker, started on first use and again after it died. A request is one
JSON line to its stdin; one reader (a greenlet under gevent, a thread elsewhere) hands each answer
line to the queue of the request it answers, so a caller blocks only itself. A gateway that dies
ends every request in flight with an error at once: nothing hangs.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any

from ..background import start_daemon
from ..vocabulary import ToolStatus
from . import McpServer, ToolOutcome

log = logging.getLogger(__name__)

GATEWAY_GONE = "The connection to the tool servers was lost during the call."
POLL_SECONDS = 0.1  # how soon a stop reaches a running call


class McpUnavailable(Exception):
    """An MCP server could not be reached; `str()` says so for a person."""


class McpClient:
    def __init__(self, servers: Mapping[str, McpServer], max_result_chars: int) -> None:
        self.servers = dict(servers)
        self.max_result_chars = max_result_chars
        self.process: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.waiting: dict[int, queue.Queue[dict[str, Any]]] = {}

    def gateway(self) -> subprocess.Popen[str]:
        """The gateway process, started if there is none (or it died)."""
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                process = subprocess.Popen(
                    [sys.executable, "-m", "chat.tools.mcp_gateway"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                )
                assert process.stdin is not None and process.stdout is not None
                settings = {
                    "servers": {name: server.settings() for name, server in self.servers.items()},
                    "max_result_chars": self.max_result_chars,
                }
                process.stdin.write(json.dumps(settings) + "\n")
                process.stdin.flush()
                stdout = process.stdout
                start_daemon(lambda: self.read(process, stdout), "durable-chat-mcp-reader")
                self.process = process
            return self.process

    def read(self, process: subprocess.Popen[str], stdout: IO[str]) -> None:
        with stdout:
            for line in stdout:
                answer = json.loads(line)
                waiting = self.waiting.get(answer["id"])
                if waiting is not None:
                    waiting.put(answer)
        log.warning("the MCP gateway (pid %s) stopped", process.pid)
        with self.lock:
            if self.process is process:
                self.process = None
            pending = list(self.waiting.values())
        for waiting in pending:  # every request in flight ends now, as an error
            waiting.put({"status": ToolStatus.ERROR, "result": GATEWAY_GONE, "gone": True})

    def send(self, message: dict[str, Any]) -> None:
        process = self.gateway()
        assert process.stdin is not None
        with self.lock:
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()

    def request(
        self,
        message: dict[str, Any],
        should_stop: Callable[[], bool] = lambda: False,
        on_progress: Callable[[], None] = lambda: None,
        silence_seconds: float = 60.0,
    ) -> dict[str, Any]:
        """Send a request and wait for its answer; a stop asked meanwhile cancels it (the gateway
        then answers `cancelled`). No word from the gateway for `silence_seconds`: an error."""
        request_id = next(self.ids)
        answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self.waiting[request_id] = answers
        try:
            try:
                self.send({**message, "id": request_id})
            except OSError:
                return {"status": ToolStatus.ERROR, "result": GATEWAY_GONE, "gone": True}
            cancel_sent, waited = False, 0.0
            while True:
                try:
                    answer = answers.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    waited += POLL_SECONDS
                    if should_stop() and not cancel_sent:
                        cancel_sent = True
                        self.send({"op": "cancel", "id": request_id})
                    if waited > silence_seconds:
                        return {"status": ToolStatus.ERROR, "result": "The tool server stopped answering."}
                    continue
                waited = 0.0
                if "progress" in answer:
                    on_progress()
                    continue
                return answer
        finally:
            self.waiting.pop(request_id, None)

    def list_tools(self, server: str) -> list[dict[str, Any]]:
        answer = self.request({"op": "list", "server": server}, silence_seconds=60)
        if "tools" not in answer:
            raise McpUnavailable(f"The MCP server {server!r} could not list its tools: {answer.get('result')}")
        return answer["tools"]

    def call(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any],
        should_stop: Callable[[], bool],
        on_progress: Callable[[], None] = lambda: None,
    ) -> ToolOutcome:
        timeout = self.servers[server].timeout_seconds
        message = {"op": "call", "server": server, "tool": tool, "arguments": arguments, "timeout": timeout}
        # The gateway enforces the timeout (since the last progress); this bound only catches a
        # gateway that went silent.
        answer = self.request(message, should_stop, on_progress, silence_seconds=timeout + 30)
        return ToolOutcome(ToolStatus(answer["status"]), answer["result"])

    def close(self) -> None:
        with self.lock:
            process, self.process = self.process, None
        if process is not None and process.stdin is not None:
            process.stdin.close()  # the gateway ends its sessions and exits
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
