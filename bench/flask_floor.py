"""The decided stack by itself: Flask under one gunicorn gevent worker, streaming the demo reply
over SSE in our contract's shape, with no Redis, no database, no accounts and no durability.

    gunicorn -k gevent -w 1 --worker-connections 4000 -b 127.0.0.1:PORT bench.flask_floor:app

What it takes to answer a burst of POSTs and write tokens on this stack is a floor for Durable
Chat, which does all of that and more: where this floor is already behind the peer on a figure,
no change inside the app can bring that figure level with the peer (bench/streams.py runs it in
the same run as "Flask floor").
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import gevent
from flask import Flask, Response, request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.agents import load_agents  # noqa: E402
from chat.agents.demo import demo_words  # noqa: E402
from chat.config import Config  # noqa: E402

WORDS = int(os.environ.get("DEMO_MODEL_WORDS", "200"))
DELAY_S = int(os.environ.get("DEMO_MODEL_DELAY_MS", "20")) / 1000
AGENTS = load_agents(Config.AGENTS_FILE)

app = Flask(__name__)


def event(name: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n".encode()


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@app.post("/api/chat")
def post_chat() -> Response:
    body = request.get_json()
    pieces = demo_words(AGENTS[body["agent"]], body["message"], WORDS)

    def reply() -> Iterator[bytes]:
        started = time.monotonic()
        yield event("start", {"chatId": body["chatId"], "messageId": str(uuid.uuid4())}, 0)
        for index, piece in enumerate(pieces):
            # Piece i at start + (i + 1) x delay, as the demo model paces (deadlines, not pauses).
            gevent.sleep(max(0.0, started + (index + 1) * DELAY_S - time.monotonic()))
            yield event("delta", {"text": piece}, index + 1)
        yield event("finish", {"finishReason": "stop"}, len(pieces) + 1)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(reply(), mimetype="text/event-stream", headers=headers)
