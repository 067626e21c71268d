"""The MCP gateway: a helper process, one per app worker, that holds the worker's MCP sessions.

Why a process: the `mcp` SDK is asyncio and the app runs under gevent, whose monkey-patching
breaks an asyncio loop even in a native thread (its patched selectors and child watchers belong
to gevent's hub). Here asyncio runs unpatched; the worker (chat/tools/mcp_client.py) speaks to it
over the helper's stdin/stdout, one JSON object per line, which gevent reads cooperatively.

Requests:  {"op": "list", "id": n, "server": s}
           {"op": "call", "id": n, "server": s, "tool": t, "arguments": {…}, "timeout": seconds}
           {"op": "cancel", "id": n}
Answers:   {"id": n, "tools": [{"name", "description", "inputSchema"}…]}
           {"id": n, "progress": p}                       (a heartbeat of a running call)
           {"id": n, "status": "ok|error|cancelled", "result": "<text>"}

One session per server, connected on first use and connected again after it died (the calls in
flight then end `error`). `timeout` counts from the call's start or its latest progress, so a
long tool that reports progress is not cut, and a silent, hung one is.

Run as `python -m chat.tools.mcp_gateway`; the first line on stdin is the servers' settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from .results import result_text

SESSION_GONE = "The tool server {name!r} stopped during the call."


class ServerSession:
    """One MCP server's session; connected lazily, again after it died."""

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.settings = settings
        self.client: Client | None = None
        self.stack: contextlib.AsyncExitStack | None = None
        self.lock = asyncio.Lock()
        self.tools: list[dict[str, Any]] | None = None

    def transport(self) -> Any:
        if self.settings.get("url"):
            http = httpx2.AsyncClient(headers=self.settings.get("headers") or {}, timeout=30)
            return streamable_http_client(self.settings["url"], http_client=http)
        command = self.settings["command"]
        env = {**os.environ, **(self.settings.get("env") or {})}
        return StdioServerParameters(command=command[0], args=command[1:], env=env)

    async def connected(self) -> Client:
        async with self.lock:
            if self.client is None:
                stack = contextlib.AsyncExitStack()
                try:
                    client = await stack.enter_async_context(Client(self.transport()))
                except BaseException:
                    await stack.aclose()
                    raise
                self.client, self.stack, self.tools = client, stack, None
            return self.client

    async def drop(self, client: Client) -> None:
        """Forget a session that failed, so the next use connects again."""
        async with self.lock:
            if self.client is not client:
                return
            stack, self.client, self.stack, self.tools = self.stack, None, None, None
        if stack is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(stack.aclose(), 5)

    async def list_tools(self) -> list[dict[str, Any]]:
        client = await self.connected()
        if self.tools is None:
            try:
                listed = await asyncio.wait_for(client.list_tools(), 30)
            except BaseException:
                await self.drop(client)
                raise
            self.tools = [
                {"name": tool.name, "description": tool.description or "", "inputSchema": tool.input_schema}
                for tool in listed.tools
            ]
        return self.tools


class Gateway:
    def __init__(self, servers: dict[str, dict[str, Any]], max_result_chars: int) -> None:
        self.sessions = {name: ServerSession(name, settings) for name, settings in servers.items()}
        self.max_result_chars = max_result_chars
        self.calls: dict[int, asyncio.Task] = {}
        self.out = sys.stdout

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    async def serve(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            request = json.loads(line)
            if request["op"] == "cancel":
                task = self.calls.get(request["id"])
                if task is not None:
                    task.cancel()
            else:
                self.calls[request["id"]] = asyncio.create_task(self.answer(request))

    async def answer(self, request: dict[str, Any]) -> None:
        request_id = request["id"]
        try:
            if request["op"] == "list":
                self.send({"id": request_id, "tools": await self.sessions[request["server"]].list_tools()})
            else:
                self.send({"id": request_id, **await self.call(request)})
        except asyncio.CancelledError:
            self.send({"id": request_id, "status": "cancelled", "result": "Stopped before it finished."})
        except Exception as exc:
            self.send({"id": request_id, "status": "error", "error": True, "result": describe(exc)})
        finally:
            self.calls.pop(request_id, None)

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions[request["server"]]
        client = await session.connected()
        last_heard = time.monotonic()

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            nonlocal last_heard
            last_heard = time.monotonic()
            self.send({"id": request["id"], "progress": progress})

        call = asyncio.create_task(client.call_tool(request["tool"], request["arguments"], progress_callback=progress))
        timeout = float(request["timeout"])
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=max(0.05, last_heard + timeout - time.monotonic()))
                if done:
                    break
                if time.monotonic() - last_heard >= timeout:
                    call.cancel()  # the SDK tells the server: notifications/cancelled
                    with contextlib.suppress(BaseException):
                        await call
                    return {"status": "error", "result": f"The tool did not answer within {timeout:g} seconds."}
        except asyncio.CancelledError:
            call.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(call, 5)
            raise
        try:
            result = call.result()
        except Exception as exc:
            await session.drop(client)
            return {"status": "error", "result": f"{SESSION_GONE.format(name=session.name)} ({describe(exc)})"}
        text = result_text(result.content, result.structured_content, self.max_result_chars)
        return {"status": "error" if result.is_error else "ok", "result": text}


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    settings = json.loads(await reader.readline())
    gateway = Gateway(settings["servers"], settings["max_result_chars"])
    await gateway.serve(reader)  # until the worker closes our stdin (it exited or restarts us)
    for session in gateway.sessions.values():
        if session.client is not None:
            await session.drop(session.client)  # a stdio server is stopped with its session


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
