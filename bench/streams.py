"""Streaming benchmark: many concurrent replies through gunicorn + gevent + a private Redis.

    python bench/streams.py                       # 50, 200 and 500 streams, burst then over 4 s
    python bench/streams.py --streams 500 --workers 2
    python bench/streams.py --app-root /tmp/old   # serve another checkout, for a same-run comparison

Each stream is a POST /api/chat whose demo reply produces token i at t0 + i x --delay-ms (the demo
model paces against deadlines, as a real model's tokens arrive when they arrive). Figures:

- per-token lag, as a user feels it: for token i of a stream, its arrival time minus i x delay,
  less the smallest such value of that stream (the stream's best token). A delta carrying several
  coalesced tokens counts each of them, so the producer's coalescing wait is included; nothing in
  the app is instrumented and no clocks need to agree.
- POST time to `start`: from sending the POST to reading its `start` event (admission, database
  writes, the first XADD and the reader) — a burst of POSTs queues here.
- deltas/s, worker RSS, Redis memory, CPU, and whether every client's text equals the reply.

Then three resume scenarios: every client hangs up at a random token and resumes (--resume-streams);
a hammer, --hammer clients resuming one chat together ten tokens before its end; and a replay, a
finished --replay-tokens reply read whole 30 times (a server of its own, whose model writes it at
once). The peer keeps no finished reply: its replay reads nothing. And a crash: --crash-streams
replies under way when the server is SIGKILLed, every client resuming until its reply ends.

And tools (--tool-streams, --tool-replies): the same streams again, once alone and once with
replies beside them that call tools between text steps — half a two-second MCP call
(`trigger-long-running-operation` of the reference server, over stdio through the worker's MCP
gateway), half the built-in calculator. Durable Chat only (the peer has no tools): the question
is whether the text streams keep their lag while tools run, and what a call costs on top of the
tool's own time.

Beside Durable Chat and the peer, the burst and ramp scenarios serve a "Flask floor"
(bench/flask_floor.py): the demo reply from a bare Flask view under the same gunicorn gevent worker,
with no Redis and no database — what the decided stack costs by itself — and, in bursts, the raw
redis-py floor (bench/floor.py).

Everything (client, gunicorn, Redis) shares this machine's cores: quote medians from one run.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import cast  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.agents import load_agents  # noqa: E402
from chat.agents.demo import demo_words  # noqa: E402
from chat.config import Config  # noqa: E402
from chat.embedded_redis import free_port, start_redis_server, stop_redis_server  # noqa: E402

NAN = float("nan")


def percentile(values: list[float], pct: float) -> float:
    """Of the values that are numbers (a client that got no event counts as not exact, not as a
    time)."""
    ordered = sorted(value for value in values if not math.isnan(value))
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_info(url: str, section: str) -> list[dict]:
    """INFO `section` of the Redis at `url`, or of every master when it is a cluster's node."""
    with redis_client(url) as client:
        if isinstance(client, redis.RedisCluster):
            return [cast(dict, client.get_redis_connection(master).info(section)) for master in client.get_primaries()]
        return [cast(dict, client.info(section))]


def redis_commands(url: str) -> int:
    """Commands Redis has run, including those inside Lua scripts (INFO commandstats counts them)."""
    return sum(
        value["calls"]
        for stats in redis_info(url, "commandstats")
        for key, value in stats.items()
        if key not in ("cmdstat_info", "cmdstat_cluster")
    )


def redis_cpu_seconds(url: str) -> float:
    return sum(info["used_cpu_sys"] + info["used_cpu_user"] for info in redis_info(url, "cpu"))


def redis_client(url: str) -> redis.Redis | redis.RedisCluster:
    """A client for the Redis at `url`: a cluster's when that node is one."""
    with redis.Redis.from_url(url) as node:
        clustered = node.info("cluster").get("cluster_enabled")
    return redis.RedisCluster.from_url(url) if clustered else redis.Redis.from_url(url)


def redis_keys(url: str) -> set[bytes]:
    with redis_client(url) as client:
        return set(client.scan_iter(count=1000))


def redis_bytes_of_new_keys(url: str, before: set[bytes]) -> int:
    """Bytes held by the keys that were not there `before` (MEMORY USAGE): what a run left in
    Redis, whatever another server's keys did meanwhile (expired, say)."""
    with redis_client(url) as client:
        new_keys = set(client.scan_iter(count=1000)) - before
        return sum(client.memory_usage(key, samples=0) or 0 for key in new_keys)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


PEER_DIR = ROOT / "bench" / "peer"


class Server:
    """Durable Chat: gunicorn -k gevent serving the app against the run's redis-server and a SQLite file."""

    name = "Durable Chat"

    def __init__(
        self,
        redis_url: str,
        workers: int,
        words: int,
        delay_ms: int,
        flush_ms: int,
        database_url: str | None,
        app_root: Path = ROOT,
        agents_file: Path | None = None,
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="durable-chat-bench-"))
        self.redis_url = redis_url
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url or f"sqlite:///{self.tmp / 'bench.sqlite3'}",
            "REDIS_URL": self.redis_url,
            "INSTANCE_PATH": str(self.tmp),
            "SECRET_KEY": "bench",
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "DEMO_MODEL_WORDS": str(words),
            "DEMO_MODEL_DELAY_MS": str(delay_ms),
            "STREAM_FLUSH_MS": str(flush_ms),
            "GUEST_CREDIT_GRANT": "1000000",
            # Hundreds of guests from one address in a second: what the limits exist to stop.
            "RATE_LIMITS_ENABLED": "0",
            "STREAMS_PER_IDENTITY": "1000",  # the hammer: a hundred streams of one chat, one identity
            "WORKER_CONNECTIONS": "4000",  # 1,000 streams and their resumes on one worker
            "OPENAI_API_KEY": "",
        }
        self.env["PYTHONPATH"] = str(app_root)  # the app of --app-root, not the installed one
        if agents_file is not None:
            self.env["AGENTS_FILE"] = str(agents_file)
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
            cwd=app_root,
            env={**self.env, "RESUMABLE_STREAMS": "0"},
            check=True,
            capture_output=True,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app", "--access-logfile", "/dev/null"],
            cwd=app_root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_healthy(self.port, lambda: len(children(self.process.pid)) == workers, "gunicorn")

    def serving_pids(self) -> list[int]:
        return children(self.process.pid)  # the workers (the master only forks and watches)

    def crash(self) -> None:
        """SIGKILL the workers mid-reply; gunicorn's master, which holds the listening socket, forks new ones."""
        for pid in self.serving_pids():
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


class Peer:
    """The same contract on one Node process running Vercel's resumable-stream (bench/peer/)."""

    name = "resumable-stream"

    def __init__(self, redis_url: str, words: int, delay_ms: int) -> None:
        if not (PEER_DIR / "node_modules").is_dir():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=PEER_DIR, check=True)
        self.redis_url = redis_url
        self.port = free_port()
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "PORT": str(self.port),
            "DEMO_MODEL_WORDS": str(words),
            "DEMO_MODEL_DELAY_MS": str(delay_ms),
        }
        self.process = self.start()
        wait_healthy(self.port, lambda: True, "the peer")

    def start(self) -> subprocess.Popen:
        # stderr too: after the crash, every resume logs resumable-stream's "Timeout waiting for ack".
        return subprocess.Popen(
            ["node", "server.mjs"], cwd=PEER_DIR, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def serving_pids(self) -> list[int]:
        return [self.process.pid]

    def crash(self) -> None:
        """SIGKILL the process mid-reply and start another on the same port (what a supervisor does)."""
        self.process.kill()
        self.process.wait()
        self.process = self.start()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


class FlaskFloor:
    """The decided stack by itself (bench/flask_floor.py): Flask under one gunicorn gevent
    worker streaming the demo reply, without Redis, a database or anything durable."""

    name = "Flask floor"

    def __init__(self, redis_url: str, words: int, delay_ms: int) -> None:
        self.redis_url = redis_url  # not used by it: run() reads Redis's counters around every column
        self.port = free_port()
        env = {**os.environ, "DEMO_MODEL_WORDS": str(words), "DEMO_MODEL_DELAY_MS": str(delay_ms)}
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections", "4000"),
                *("-b", f"127.0.0.1:{self.port}", "--access-logfile", "/dev/null", "bench.flask_floor:app"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_healthy(self.port, lambda: len(children(self.process.pid)) == 1, "the Flask floor")

    def serving_pids(self) -> list[int]:
        return children(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


def wait_healthy(port: int, ready, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200 and ready():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start")


def usage(server, redis_url: str) -> tuple[float, float, float]:
    """CPU seconds used so far by the server's processes, Redis, and this (client) process."""
    return (
        sum(cpu_seconds(pid) for pid in server.serving_pids()),
        redis_cpu_seconds(redis_url),
        cpu_seconds(os.getpid()),
    )


@contextlib.contextmanager
def client_gc_off() -> Iterator[None]:
    """This client's cyclic GC must not run while a run is measured: one collection of its many
    small objects stalls the reading of every stream at once, and so lands as lag on whichever
    server is being measured then (it was most of Durable Chat's lag p99 at 50 streams)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def new_reading() -> dict:
    """What a client read of one reply: its deltas' text, their arrivals, the last event id."""
    return {"text": [], "arrivals": [], "id": None, "started": None}


def new_chat(
    port: int, message: str, stop_after: int | None = None, chat_id: str | None = None, reading: dict | None = None
) -> tuple[str, str, dict, bool]:
    """POST `message` to a new chat and read its reply into `reading` (hanging up after
    `stop_after` deltas): the chat's id, the caller's cookie, what was read (`sent`: when the POST
    went) and whether the reply ended."""
    chat_id = chat_id or str(uuid.uuid4())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    if reading is None:
        reading = new_reading()
    reading["sent"] = time.time()
    body = json.dumps({"chatId": chat_id, "agent": "helper", "message": message})
    conn.request("POST", "/api/chat", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    cookie = reading["cookie"] = (response.getheader("Set-Cookie") or "").split(";")[0]
    finished = read_sse(response, reading, stop_after=stop_after)
    conn.close()
    return chat_id, cookie, reading, finished


def demo_reply(message: str, words: int) -> str:
    return "".join(demo_words(load_agents(Config.AGENTS_FILE)["helper"], message, words))


def one_stream(
    port: int,
    message: str,
    pieces: list[str],
    delay_ms: int,
    sink: dict,
    resume_after: int | None = None,
) -> None:
    """POST a message and read its SSE reply, recording each token's lag.

    With `resume_after`, hang up after that many deltas and GET the chat again from the last id
    seen (with the POST's cookie), recording the time to the resumed stream's first event; the
    text must still come out exact. Token lag is then not recorded (the resume gap is not lag).
    """
    chat_id, cookie, reading, finished = new_chat(port, message, stop_after=resume_after)
    if not finished:
        sink["resume_ms"].append(resume(port, chat_id, reading["id"], cookie, reading))
    sink["texts"].append("".join(reading["text"]))
    sink["start_ms"].append(((reading["started"] or time.time()) - reading["sent"]) * 1000)
    sink["deltas"] += len(reading["text"])
    if resume_after is None:
        sink["token_lag_ms"].extend(token_lags(pieces, reading["arrivals"], delay_ms))


def resume(port: int, chat_id: str, cursor: str | None, cookie: str, reading: dict, timeout: float = 120) -> float:
    """GET the chat from `cursor` (the whole reply without one), reading on into `reading`: the
    time to its first event in ms, NaN when there was none (a 204 or an error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Cookie": cookie, **({"Last-Event-ID": cursor} if cursor else {})}
    asked = time.time()
    conn.request("GET", f"/api/chat?chatId={chat_id}", headers=headers)
    response = conn.getresponse()
    reading["status"] = response.status
    first_event: list[float] = []
    if response.status == 200:
        read_sse(response, reading, on_event=lambda: first_event.append(time.time()))
    conn.close()
    return (first_event[0] - asked) * 1000 if first_event else NAN


def resume_at_once(port: int, chat_id: str, cursor: str | None, cookie: str, clients: int) -> list[tuple[float, str]]:
    """`clients` GETs of one chat from `cursor`, all at once: each one's time to its first event
    (ms, NaN for none) and the text it read."""

    def one() -> tuple[float, str]:
        reading = new_reading()
        return resume(port, chat_id, cursor, cookie, reading), "".join(reading["text"])

    jobs = [gevent.spawn(one) for _ in range(clients)]
    gevent.joinall(jobs, raise_error=True)
    return [job.value for job in jobs]


def hammer(server, words: int, clients: int) -> dict:
    """One chat whose client hangs up ten tokens before the end; `clients` resume it from there
    together (a crowd of tabs and devices coming back at once): time to first event, exact texts."""
    message = "bench hammer"
    chat_id, cookie, reading, _ = new_chat(server.port, message, stop_after=max(1, words + 1 - 10))
    with client_gc_off():
        resumed = resume_at_once(server.port, chat_id, reading["id"], cookie, clients)
    expected = demo_reply(message, words)
    before = "".join(reading["text"])
    times = [ms for ms, _ in resumed]
    return {
        "scenario": "hammer",
        "clients": clients,
        "resume_p50": percentile(times, 50),
        "resume_p99": percentile(times, 99),
        "correct": sum(before + text == expected for _, text in resumed),
        "completed": clients,
    }


def replay(server, words: int, times: int) -> dict:
    """A finished reply of `words` tokens read whole, `times` times one after another: time to its
    terminal event. A server that keeps no finished reply answers with nothing (not exact)."""
    message = "bench replay"
    expected = demo_reply(message, words)
    chat_id, cookie, _, _ = new_chat(server.port, message)
    took, exact = [], 0
    with client_gc_off():
        for _ in range(times):
            asked = time.time()
            [(_first, text)] = resume_at_once(server.port, chat_id, None, cookie, 1)
            took.append((time.time() - asked) * 1000)
            exact += text == expected
    return {
        "scenario": "replay",
        "tokens": words + 1,
        "replay_p50": percentile(took, 50) if exact else NAN,
        "replay_p99": percentile(took, 99) if exact else NAN,
        "correct": exact,
        "completed": times,
    }


def crash(server, streams: int, words: int, delay_ms: int) -> dict:
    """`streams` replies under way when the server is SIGKILLed a third of the way through them.
    Every client comes back with its Last-Event-ID until its reply ends (a terminal event, or an
    HTTP error that says there is nothing to resume), as a browser's EventSource would: the time
    from the kill to that end, how each reply ended, and whether it was kept: a new device reading
    the chat afterwards gets the same text the client ended with, and not nothing."""
    chats: dict[str, tuple[str, dict]] = {
        f"bench crash {n}": (str(uuid.uuid4()), new_reading()) for n in range(streams)
    }
    killed: list[float] = []
    deadline = time.time() + words * delay_ms / 1000 + 60

    def one(message: str) -> float:
        chat_id, reading = chats[message]
        with contextlib.suppress(http.client.HTTPException, OSError):  # the kill cuts the reply short
            new_chat(server.port, message, chat_id=chat_id, reading=reading)
        while "end" not in reading and time.time() < deadline:
            try:  # no read outlasts the scenario's deadline (a server may hold a resume open)
                left = max(1.0, deadline - time.time())
                resume(server.port, chat_id, reading["id"], reading.get("cookie", ""), reading, timeout=left)
            except (http.client.HTTPException, OSError):
                gevent.sleep(0.1)  # not listening yet (the peer restarting), or cut off again
                continue
            if reading["status"] != 200:
                reading["end"] = f"HTTP {reading['status']}"
        return (time.time() - killed[0]) * 1000 if killed and "end" in reading else NAN

    with client_gc_off():
        jobs = [gevent.spawn(one, message) for message in chats]
        while not all(reading["text"] for _, reading in chats.values()) and time.time() < deadline:
            gevent.sleep(0.05)
        gevent.sleep(words * delay_ms / 1000 / 3)
        killed.append(time.time())
        server.crash()
        gevent.joinall(jobs, raise_error=True)
    ended = [job.value for job in jobs]
    kept = 0
    for chat_id, reading in chats.values():
        again = new_reading()
        with contextlib.suppress(http.client.HTTPException, OSError):
            resume(server.port, chat_id, None, reading.get("cookie", ""), again, timeout=10)
        kept += bool(again["text"]) and "".join(again["text"]) == "".join(reading["text"])
    endings = collections.Counter(str(reading.get("end", "none in time")) for _, reading in chats.values())
    return {
        "scenario": "crash",
        "streams": streams,
        "end_p50": percentile(ended, 50),
        "end_p99": percentile(ended, 99),
        "ended": sum(not math.isnan(ms) for ms in ended),
        "kept": kept,
        "endings": dict(endings),
        # No client read a token twice, or one that is not the reply's.
        "correct": sum(demo_reply(m, words).startswith("".join(r["text"])) for m, (_, r) in chats.items()),
        "completed": streams,
    }


def read_sse(response, reading: dict, stop_after: int | None = None, on_event=None) -> bool:
    """Read events into `reading` until the terminal one (True) or `stop_after` deltas (False)."""
    event, deltas = None, 0
    while line := response.readline():
        line = line.decode().rstrip("\n")
        if line.startswith("id: "):
            reading["id"] = line[4:]
        elif line.startswith("event: "):
            event = line[7:]
            if on_event:
                on_event()
        elif line.startswith("data: ") and event == "start":
            reading["started"] = time.time()
        elif line.startswith("data: ") and event == "delta":
            now = time.time()
            reading["text"].append(json.loads(line[6:])["text"])
            reading["arrivals"].append((now, sum(map(len, reading["text"]))))
            deltas += 1
            if stop_after is not None and deltas >= stop_after:
                return False
        elif line.startswith("data: ") and event in ("finish", "error"):
            reading["end"] = json.loads(line[6:]).get("finishReason", event)
            return True
    return True


def token_lags(pieces: list[str], arrivals: list[tuple[float, int]], delay_ms: int) -> list[float]:
    """Per token: when it arrived (with the delta that completed it) minus when the model made it,
    relative to the stream's best token (see the module docstring)."""
    offsets, end, delta = [], 0, 0
    for index, piece in enumerate(pieces):
        end += len(piece)
        while delta < len(arrivals) and arrivals[delta][1] < end:
            delta += 1
        if delta == len(arrivals):
            break  # the reply was cut short (an error): the rest never arrived
        offsets.append(arrivals[delta][0] * 1000 - index * delay_ms)
    best = min(offsets, default=0.0)
    return [offset - best for offset in offsets]


def profiled(server, profile_dir: Path | None, label: str) -> subprocess.Popen | None:
    """py-spy recording the server's worker during one run (Durable Chat only): collapsed stacks
    per run (text; flamegraph.pl or inferno draw them), to see what the worker's loop spends on."""
    if profile_dir is None or not isinstance(server, Server):
        return None
    profile_dir.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    worker = server.serving_pids()[0]  # with several workers, the first one
    output = profile_dir / f"{label}.txt"
    return subprocess.Popen(
        [str(spy), "record", "--nonblocking", "-r", "200", "--format", "raw", "-o", str(output), "--pid", str(worker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run(
    server,
    streams: int,
    words: int,
    delay_ms: int,
    ramp_s: float,
    resume: bool = False,
    profile_dir: Path | None = None,
) -> dict:
    sink: dict = {"token_lag_ms": [], "texts": [], "start_ms": [], "resume_ms": [], "deltas": 0}
    picker = random.Random(streams)  # the same resume points for both servers
    agent = load_agents(Config.AGENTS_FILE)["helper"]
    messages = [f"bench message {n % 7}" for n in range(streams)]
    pieces = {message: demo_words(agent, message, words) for message in set(messages)}

    def rss() -> float:
        return sum(rss_mb(pid) for pid in server.serving_pids())

    idle_rss = rss()
    peak_rss = [idle_rss]

    def sample_memory():
        while True:
            peak_rss.append(rss())
            gevent.sleep(0.5)

    sampler = gevent.spawn(sample_memory)
    spy = profiled(server, profile_dir, f"{streams}-{'resume' if resume else f'ramp{ramp_s:g}'}")
    if spy is not None:
        time.sleep(1)  # py-spy attaching
    with client_gc_off():
        cpu_before = usage(server, server.redis_url)
        commands_before = redis_commands(server.redis_url)
        keys_before = redis_keys(server.redis_url)
        started = time.time()
        # Arrivals spread evenly over the ramp window (0 = every POST in the same instant).
        jobs = [
            gevent.spawn_later(
                ramp_s * n / streams,
                one_stream,
                server.port,
                message,
                pieces[message],
                delay_ms,
                sink,
                picker.randint(1, words // 2) if resume else None,
            )
            for n, message in enumerate(messages)
        ]
        gevent.joinall(jobs, raise_error=True)
        elapsed = time.time() - started
    cpu_used = [after - before for before, after in zip(cpu_before, usage(server, server.redis_url), strict=True)]
    cpu = [used / elapsed * 100 for used in cpu_used]
    commands = redis_commands(server.redis_url) - commands_before
    memory_left = redis_bytes_of_new_keys(server.redis_url, keys_before)
    tokens = streams * (words + 1)
    sampler.kill()
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its flame graph on SIGINT
        spy.wait(30)
    expected = {message: "".join(parts) for message, parts in pieces.items()}
    redis_memory = sum(info["used_memory"] for info in redis_info(server.redis_url, "memory")) / 2**20
    return {
        "streams": streams,
        "seconds": elapsed,
        "deltas_per_s": sink["deltas"] / elapsed,
        "deltas_per_stream": sink["deltas"] / max(1, len(sink["texts"])),
        "lag_p50": statistics.median(sink["token_lag_ms"]) if sink["token_lag_ms"] else float("nan"),
        "resume_p50": percentile(sink["resume_ms"], 50),
        "resume_p99": percentile(sink["resume_ms"], 99),
        "lag_p99": percentile(sink["token_lag_ms"], 99),
        "cpu_us_per_token": cpu_used[0] / tokens * 1e6,
        "redis_cmds_per_1k_tokens": commands / tokens * 1000,
        # What the run left in Redis (replies kept for resuming, until STREAM_TTL_SECONDS).
        "redis_kb_per_1k_tokens": memory_left / 1024 / tokens * 1000,
        "rss_kb_per_stream": (max(peak_rss) - idle_rss) * 1024 / streams,
        "start_p50": statistics.median(sink["start_ms"]),
        "start_p99": percentile(sink["start_ms"], 99),
        "rss_mb": max(peak_rss),
        "redis_mb": redis_memory,
        "cpu_workers": cpu[0],
        "cpu_redis": cpu[1],
        "cpu_client": cpu[2],
        "correct": sum(text in expected.values() for text in sink["texts"]),
        "completed": len(sink["texts"]),
    }


MCP_SERVER = ROOT / "tests" / "mcp"
TOOL_WAIT_SECONDS = 2
TOOL_AGENT = """
[[mcp_servers]]
name = "everything"
command = ["node", "{server}", "stdio"]

[[agents]]
slug = "actor"
name = "Actor"
description = "Calls tools."
model = "bench"
system_prompt = "Use tools."
temperature = 0.0
max_tokens = 256
price_prompt_per_1k = 0.0
price_completion_per_1k = 0.0
tools = ["calculator", "everything/trigger-long-running-operation"]
"""


def tools_agents_file(directory: Path) -> Path:
    """The app's agents and `actor`, whose tools are the calculator and the reference MCP
    server's long-running operation (installed from npm into tests/mcp/ if missing)."""
    server = MCP_SERVER / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    if not server.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=MCP_SERVER, check=True)
    path = directory / "agents-with-tools.toml"
    path.write_text(Path(Config.AGENTS_FILE).read_text() + TOOL_AGENT.format(server=server))
    return path


def one_tool_reply(port: int, message: str, sink: dict) -> None:
    """POST a reply that calls a tool; record the call's time from `tool-call` to `tool-result`
    beyond the tool's own duration (MCP calls apart), and whether it ended `ok` with text after it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps({"chatId": str(uuid.uuid4()), "agent": "actor", "message": message})
    conn.request("POST", "/api/chat", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    mcp = message.startswith("wait")
    event, called, status, text_after = None, None, None, False
    while raw := response.readline():
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "tool-call":
            called = time.monotonic()
        elif line.startswith("data: ") and event == "tool-result" and called is not None:
            beyond = (time.monotonic() - called) * 1000 - (TOOL_WAIT_SECONDS * 1000 if mcp else 0)
            sink["overhead_ms"].append(beyond)
            if mcp:
                sink["mcp_ms"].append(beyond)
            status = json.loads(line[6:])["status"]
        elif line.startswith("data: ") and event == "delta" and status is not None:
            text_after = True
        elif line.startswith("data: ") and event in ("finish", "error"):
            break
    conn.close()
    sink["ok"] += status == "ok" and text_after


def tools_beside(server, streams: int, tool_replies: int, words: int, delay_ms: int) -> list[dict]:
    """`streams` text replies alone, then again with `tool_replies` tool-calling replies started
    just before them (half MCP, half calculator): both runs' figures, the second with the calls'."""
    alone = run(server, streams, words, delay_ms, 0)
    sink: dict = {"overhead_ms": [], "mcp_ms": [], "ok": 0}
    messages = [f"wait: {TOOL_WAIT_SECONDS}" if n % 2 == 0 else f"What is {n} * 12 + 7?" for n in range(tool_replies)]
    callers = [gevent.spawn(one_tool_reply, server.port, message, sink) for message in messages]
    gevent.sleep(0.5)  # the calls are under way
    beside = run(server, streams, words, delay_ms, 0)
    gevent.joinall(callers, raise_error=True)
    beside.update(
        tool_overhead_p50=statistics.median(sink["overhead_ms"]) if sink["overhead_ms"] else NAN,
        tool_overhead_p99=percentile(sink["overhead_ms"], 99),
        mcp_overhead_p50=statistics.median(sink["mcp_ms"]) if sink["mcp_ms"] else NAN,
        tool_replies_ok=sink["ok"],
    )
    alone.update(tool_overhead_p50=NAN, tool_overhead_p99=NAN, mcp_overhead_p50=NAN, tool_replies_ok=NAN)
    return [alone, beside]


def node_version() -> str:
    """Node's version, "none" where it is not installed (a run with --no-peer needs none)."""
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        return "none"


def software_versions(redis_url: str) -> dict[str, str]:
    """What was measured, for the JSON lines: Python, gunicorn, gevent, redis-py, Redis, Node, the peer's library."""
    import gevent as gevent_module
    import gunicorn

    peer_lock = json.loads((PEER_DIR / "package-lock.json").read_text())["packages"]
    return {
        "python": sys.version.split()[0],
        "gunicorn": gunicorn.__version__,
        "gevent": gevent_module.__version__,
        "redis-py": redis.__version__,
        "redis-server": cast(dict, redis.Redis.from_url(redis_url).info("server"))["redis_version"],
        "node": node_version(),
        "resumable-stream": peer_lock["node_modules/resumable-stream"]["version"],
    }


class Floor:
    """The raw redis-py floor (bench/floor.py): the same token pace, no HTTP, no database."""

    name = "redis-py floor"

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def measure(self, streams: int, words: int, delay_ms: int) -> dict:
        floor = [
            sys.executable,
            str(ROOT / "bench" / "floor.py"),
            self.redis_url,
            str(streams),
            str(words),
            str(delay_ms),
        ]
        measured = json.loads(subprocess.run(floor, capture_output=True, text=True, check=True).stdout)
        return {"start_p50": NAN, "start_p99": NAN, "rss_kb_per_stream": NAN, "deltas_per_stream": NAN} | measured


REPLAYS = 30  # reads of the finished reply in the replay scenario
RESUME_FIGURES = [
    ("resume time to first event p50 (ms)", "resume_p50"),
    ("resume time to first event p99 (ms)", "resume_p99"),
]
FIGURES = [
    ("per-token lag p50 (ms)", "lag_p50"),
    ("per-token lag p99 (ms)", "lag_p99"),
    ("POST time to start p50 (ms)", "start_p50"),
    ("POST time to start p99 (ms)", "start_p99"),
    ("server CPU per token (us)", "cpu_us_per_token"),
    ("Redis commands per 1,000 tokens", "redis_cmds_per_1k_tokens"),
    ("Redis memory per 1,000 tokens (KB)", "redis_kb_per_1k_tokens"),
    ("RSS per open stream (KB)", "rss_kb_per_stream"),
    ("deltas per stream", "deltas_per_stream"),
]
TOOL_FIGURES = [
    ("per-token lag p50 (ms)", "lag_p50"),
    ("per-token lag p99 (ms)", "lag_p99"),
    ("POST time to start p50 (ms)", "start_p50"),
    ("POST time to start p99 (ms)", "start_p99"),
    ("server CPU per token (us)", "cpu_us_per_token"),
    ("a call's cost beyond the tool p50 (ms)", "tool_overhead_p50"),
    ("a call's cost beyond the tool p99 (ms)", "tool_overhead_p99"),
    ("an MCP call's cost beyond it p50 (ms)", "mcp_overhead_p50"),
    ("tool replies ok, with text after", "tool_replies_ok"),
]


class Labelled:
    """A column of a table whose runs are the same server under two conditions."""

    def __init__(self, name: str) -> None:
        self.name = name


def print_rows(rows: list[tuple[str, str]], results: list[dict]) -> None:
    """One line per figure: each server's value, and the first's ratio to the second's."""
    for label, key in rows:
        values = [r[key] for r in results]
        finite = len(values) > 1 and math.isfinite(values[0]) and math.isfinite(values[1]) and values[1]
        ratio = f"   {values[0] / values[1]:.2f}x" if finite else ""
        print(f"  {label:<34}" + "".join(f"{v:>18.1f}" for v in values) + ratio)


def report(
    title: str,
    columns: list,
    results: list[dict],
    rows: list[tuple[str, str]],
    args: argparse.Namespace,
    versions: dict,
    **extra,
) -> None:
    """Print one scenario's table (whose texts came out exact, then a line per figure) and append
    its results to the JSON lines."""
    exact = ", ".join(f"{s.name} {r['correct']}/{r['completed']}" for s, r in zip(columns, results, strict=True))
    print(f"\n{title}; exact texts: {exact}")
    against_peer = len(columns) > 1 and isinstance(columns[1], Peer)
    print(
        f"  {'figure':<34}"
        + "".join(f"{s.name:>18}" for s in columns)
        + ("   ratio to the peer" if against_peer else "")
    )
    print_rows(rows, results)
    for server, result in zip(columns, results, strict=True):
        write_json(args.json, args, versions, server, result, **extra)


def write_json(path: Path | None, args: argparse.Namespace, versions: dict, server, result: dict, **extra) -> None:
    if path is None:
        return
    with path.open("a") as out:
        record = {
            "date": time.strftime("%Y-%m-%d"),
            "versions": versions,
            "server": server.name,
            **extra,
            "words": args.words,
            "delay_ms": args.delay_ms,
            "flush_ms": args.flush_ms,
            "workers": args.workers,
            "cores": os.cpu_count(),
            **result,
        }
        out.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="50,200,500", help="comma-separated concurrency levels")
    parser.add_argument("--words", type=int, default=200, help="words per reply")
    parser.add_argument("--delay-ms", type=int, default=20, help="time between words (20 ms = 50 words/s)")
    parser.add_argument(
        "--flush-ms", type=int, default=Config.STREAM_FLUSH_MS, help="STREAM_FLUSH_MS (default: the app's)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url", help="e.g. postgresql://postgres@127.0.0.1:5432/test (default: SQLite)")
    parser.add_argument(
        "--ramp-s",
        default="0,4",
        help="comma-separated arrival windows in seconds (0 = burst; 4 = the chats arrive evenly over 4 s)",
    )
    parser.add_argument("--app-root", type=Path, default=ROOT, help="serve the app of this checkout")
    parser.add_argument("--no-peer", action="store_true", help="Durable Chat only")
    parser.add_argument("--no-floor", action="store_true", help="without the raw redis-py floor (bench/floor.py)")
    parser.add_argument(
        "--no-flask-floor", action="store_true", help="without the bare Flask + gunicorn floor (bench/flask_floor.py)"
    )
    parser.add_argument(
        "--resume-streams",
        default="200,500",
        help="levels of the resume scenario: each client hangs up at a random token and resumes",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="Durable Chat on a 3-master Redis Cluster (the peer and the floor need one Redis: left out)",
    )
    parser.add_argument(
        "--hammer", type=int, default=100, help="clients resuming one chat together near its end (0: skip)"
    )
    parser.add_argument(
        "--replay-tokens", type=int, default=2000, help="length of the finished reply read whole (0: skip)"
    )
    parser.add_argument(
        "--crash-streams", type=int, default=50, help="replies under way when the server is SIGKILLed (0: skip)"
    )
    parser.add_argument(
        "--tool-streams", type=int, default=200, help="text streams measured alone and beside tool calls (0: skip)"
    )
    parser.add_argument("--tool-replies", type=int, default=50, help="replies calling tools beside them")
    parser.add_argument("--json", type=Path, help="append one JSON line per measurement to this file")
    parser.add_argument(
        "--profile", type=Path, help="write a py-spy flame graph of the worker per run into this folder"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="durable-chat-bench-redis-"))
    if args.redis_cluster:
        sys.path.insert(0, str(ROOT / "tests"))
        from helpers.cluster import RedisCluster

        cluster = RedisCluster(tmp)
        redis_url, stop_redis = cluster.url, cluster.stop
        args.no_peer = args.no_floor = args.no_flask_floor = True
    else:
        redis_url, redis_process = start_redis_server(tmp)
        stop_redis = functools.partial(stop_redis_server, redis_process)
    servers: list[Server | Peer] = [
        Server(redis_url, args.workers, args.words, args.delay_ms, args.flush_ms, args.database_url, args.app_root)
    ]
    stack_floor: FlaskFloor | None = None
    try:
        if not args.no_peer:
            servers.append(Peer(redis_url, args.words, args.delay_ms))
        if not args.no_flask_floor:
            stack_floor = FlaskFloor(redis_url, args.words, args.delay_ms)
        database = "PostgreSQL" if args.database_url else "SQLite"
        peer = "none" if args.no_peer else f"one Node {node_version()} process"
        print(
            f"{time.strftime('%Y-%m-%d')}: {args.words} words/reply, one every {args.delay_ms} ms; Durable Chat: "
            f"gunicorn -k gevent, {args.workers} worker(s), {database}, STREAM_FLUSH_MS={args.flush_ms}; peer: "
            f"{peer}; one redis-server; {os.cpu_count()} cores shared by client, servers and Redis"
        )
        versions = software_versions(redis_url)
        levels = [int(n) for n in args.streams.split(",")]
        ramps = [float(n) for n in args.ramp_s.split(",")]
        for level, ramp in [(level, ramp) for level in levels for ramp in ramps]:
            results = [
                run(server, level, args.words, args.delay_ms, ramp, profile_dir=args.profile) for server in servers
            ]
            columns: list = list(servers)
            if stack_floor is not None:
                columns.append(stack_floor)
                results.append(run(stack_floor, level, args.words, args.delay_ms, ramp))
            if not args.no_floor and ramp == 0:
                columns.append(Floor(redis_url))
                results.append(columns[-1].measure(level, args.words, args.delay_ms))
            arrivals = "burst" if ramp == 0 else f"over {ramp:g} s"
            report(f"{level} streams, {arrivals}", columns, results, FIGURES, args, versions, ramp_s=ramp)
        for level in [int(n) for n in args.resume_streams.split(",") if n]:
            results = [run(server, level, args.words, args.delay_ms, 0, resume=True) for server in servers]
            title = f"{level} streams, burst, each client hangs up at a random token and resumes"
            report(title, servers, results, RESUME_FIGURES, args, versions, scenario="resume")
        if args.hammer:
            results = [hammer(server, args.words, args.hammer) for server in servers]
            title = f"hammer: one chat, {args.hammer} clients resume it together ten tokens before its end"
            report(title, servers, results, RESUME_FIGURES, args, versions)
        if args.crash_streams:
            results = [crash(server, args.crash_streams, args.words, args.delay_ms) for server in servers]
            title = f"crash: {args.crash_streams} replies under way, the server SIGKILLed a third of the way in"
            rows = [
                ("time from the kill to the end p50 (ms)", "end_p50"),
                ("time from the kill to the end p99 (ms)", "end_p99"),
                ("replies that ended", "ended"),
                ("replies kept for a new device", "kept"),
            ]
            report(title, servers, results, rows, args, versions)
            for server, result in zip(servers, results, strict=True):
                print(f"  {server.name} replies ended: {result['endings']}")
        if args.replay_tokens:
            # Servers of their own: a reply of this length, made as fast as the model can.
            replayers: list = [
                Server(redis_url, 1, args.replay_tokens - 1, 0, args.flush_ms, args.database_url, args.app_root)
            ]
            try:
                if not args.no_peer:
                    replayers.append(Peer(redis_url, args.replay_tokens - 1, 0))
                results = [replay(server, args.replay_tokens - 1, REPLAYS) for server in replayers]
            finally:
                for server in replayers:
                    server.stop()
            title = f"replay: a finished {args.replay_tokens:,}-token reply read whole, {REPLAYS} times"
            rows = [
                ("time to the whole reply p50 (ms)", "replay_p50"),
                ("time to the whole reply p99 (ms)", "replay_p99"),
            ]
            report(title, replayers, results, rows, args, versions)
        if args.tool_streams:
            actor = Server(
                redis_url,
                args.workers,
                args.words,
                args.delay_ms,
                args.flush_ms,
                args.database_url,
                args.app_root,
                agents_file=tools_agents_file(tmp),
            )
            try:
                one_tool_reply(actor.port, "wait: 1", {"overhead_ms": [], "mcp_ms": [], "ok": 0})  # the gateway started
                results = tools_beside(actor, args.tool_streams, args.tool_replies, args.words, args.delay_ms)
            finally:
                actor.stop()
            title = (
                f"tools: {args.tool_streams} text streams alone, then beside {args.tool_replies} replies calling "
                f"tools (half a {TOOL_WAIT_SECONDS} s MCP call over stdio, half the calculator)"
            )
            columns = [Labelled("alone"), Labelled("with tools")]
            report(title, columns, results, TOOL_FIGURES, args, versions, scenario="tools")
    finally:
        running: list[Server | Peer | FlaskFloor] = [*servers, *([stack_floor] if stack_floor else [])]
        for process in running:
            process.stop()
        stop_redis()


if __name__ == "__main__":
    main()
