"""The reference MCP server (`@modelcontextprotocol/server-everything`, installed from npm into
tests/mcp/ by `make test`) and agents files that use it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from .servers import free_port

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = (
    ROOT / "tests" / "mcp" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)

ACTOR = """
[[agents]]
slug = "actor"
name = "Actor"
description = "Calls tools."
model = "fake-model"
system_prompt = "Use tools."
temperature = 0.0
max_tokens = 256
price_prompt_per_1k = 1.0
price_completion_per_1k = 2.0
tools = {tools}
max_steps = 4
"""


def stdio_command(traffic: Path | None = None, pid_file: Path | None = None) -> list[str]:
    """The server over stdio; `traffic`: a file that gets every message the server is sent (so a
    test sees what reached it); `pid_file`: where the server's pid is written (to kill it)."""
    if traffic is None and pid_file is None:
        return ["node", str(EVERYTHING), "stdio"]
    script = ""
    if pid_file is not None:
        script += f"echo $$ > '{pid_file}'; "
    if traffic is not None:
        script += f"tee -a '{traffic}' | node '{EVERYTHING}' stdio"
    else:
        script += f"exec node '{EVERYTHING}' stdio"
    return ["sh", "-c", script]


def agents_file(directory: Path, server: str, tools: list[str] | None = None) -> Path:
    """An agents file with the MCP server `server` (TOML of one [[mcp_servers]] table) and the
    agent `actor`, which may call the calculator and every tool of the server `everything`."""
    tools = tools if tools is not None else ["calculator", "everything/*"]
    tools_toml = "[" + ", ".join(f'"{tool}"' for tool in tools) + "]"
    path = directory / "agents.toml"
    path.write_text(server + ACTOR.format(tools=tools_toml))
    return path


def stdio_server(command: list[str], timeout_seconds: int = 30) -> str:
    quoted = ", ".join(f'"{part}"' for part in command)
    return f'[[mcp_servers]]\nname = "everything"\ncommand = [{quoted}]\ntimeout_seconds = {timeout_seconds}\n'


class HttpServer:
    """The server over streamable HTTP on a free port (`url`), stopped by `stop()`."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.process = subprocess.Popen(
            ["node", str(EVERYTHING), "streamableHttp"],
            env={**os.environ, "PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("the streamable HTTP MCP server did not start listening")

    def server_toml(self) -> str:
        return f'[[mcp_servers]]\nname = "everything"\nurl = "{self.url}"\n'

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
