"""A small OpenAI-compatible server on loopback, speaking the chat-completions streaming wire
format, so the provider is tested over real HTTP with the real `openai` client.

Non-streamed requests (chat titles) get `title`. With `tool_calls` set, a streamed request whose
last message is not a tool result gets those calls (their arguments in chunks, parallel calls
interleaved by index, `finish_reason: tool_calls`) instead of words. `mode` picks what the next requests get: "ok", "break" (connection dropped mid-reply), "stall"
(no answer before the client's timeout), "auth" (401), "rate" (429), "context" (400 too long).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ["Real ", "models ", "stream ", "**tokens** ", "one ", "at ", "a ", "time."]


class FakeOpenAI:
    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 0.01
        self.requests: list[dict] = []
        self.words = list(WORDS)
        self.title = '"**Streaming tokens, explained.**"\n'  # what a model might wrap a title in
        self.usage = {"prompt_tokens": 42, "completion_tokens": len(WORDS), "total_tokens": 42 + len(WORDS)}
        self.tool_calls: list[dict] = []  # [{"id", "name", "arguments"}]: what a first step calls
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                errors = {
                    "auth": (401, "invalid_api_key", "Incorrect API key provided"),
                    "rate": (429, "rate_limit_exceeded", "Rate limit reached"),
                    "context": (400, "context_length_exceeded", "This model's maximum context length is 8 tokens"),
                }
                if fake.mode in errors:
                    status, code, message = errors[fake.mode]
                    payload = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}})
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload.encode())
                    return
                if fake.mode == "stall":
                    time.sleep(5)
                    return
                if not body.get("stream"):
                    self.complete(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if fake.tool_calls and body["messages"][-1]["role"] != "tool":
                    self.stream_tool_calls(body)
                    return
                for index, word in enumerate(fake.words):
                    if fake.mode == "break" and index == 3:
                        self.wfile.flush()
                        self.connection.shutdown(2)  # the provider vanishes mid-reply
                        return
                    self.chunk({"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}, body)
                    time.sleep(fake.delay)
                self.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, body)
                if body.get("stream_options", {}).get("include_usage"):
                    self.chunk({"choices": [], "usage": fake.usage}, body)
                self.write_chunk(b"data: [DONE]\n\n")
                self.write_chunk(b"")

            def stream_tool_calls(self, body: dict) -> None:
                """Each call's name first, then its arguments in three chunks, calls interleaved."""
                calls = fake.tool_calls
                for index, call in enumerate(calls):
                    head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["name"]}}
                    self.chunk(
                        {"choices": [{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}]}, body
                    )
                pieces = [
                    [
                        c["arguments"][i * len(c["arguments"]) // 3 : (i + 1) * len(c["arguments"]) // 3]
                        for i in range(3)
                    ]
                    for c in calls
                ]
                for part in range(3):
                    for index, call_pieces in enumerate(pieces):
                        delta = {"tool_calls": [{"index": index, "function": {"arguments": call_pieces[part]}}]}
                        self.chunk({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}, body)
                        time.sleep(fake.delay)
                self.chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, body)
                if body.get("stream_options", {}).get("include_usage"):
                    self.chunk(
                        {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}},
                        body,
                    )
                self.write_chunk(b"data: [DONE]\n\n")
                self.write_chunk(b"")

            def complete(self, request: dict) -> None:
                payload = json.dumps(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": 0,
                        "model": request["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": fake.title},
                            }
                        ],
                        "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def chunk(self, fields: dict, request: dict) -> None:
                event = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": request["model"],
                    **fields,
                }
                self.write_chunk(f"data: {json.dumps(event)}\n\n".encode())

            def write_chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def text(self) -> str:
        return "".join(self.words)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
