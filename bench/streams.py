"""Streaming benchmark: many concurrent replies through gunicorn + gevent + a private Redis.

    python bench/streams.py                       # 50 and 200 concurrent streams
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
- store lag: arrival minus the delta's SSE id (its XADD time): Redis -> reader -> socket only.
- deltas/s, worker RSS, Redis memory, CPU, and whether every client's text equals the reply.

Everything (client, gunicorn, Redis) shares this machine's cores: quote medians from one run.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.agents import load_agents  # noqa: E402
from chat.agents.demo import demo_words  # noqa: E402
from chat.config import Config  # noqa: E402
from chat.embedded_redis import free_port, start_redis_server, stop_redis_server  # noqa: E402


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(url: str) -> float:
    info = redis.Redis.from_url(url).info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


class Server:
    """gunicorn -k gevent serving the app against a private redis-server and a SQLite file."""

    def __init__(
        self, workers: int, words: int, delay_ms: int, flush_ms: int, database_url: str | None, app_root: Path = ROOT
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="durable-chat-bench-"))
        self.redis_url, self.redis = start_redis_server(self.tmp / "redis")
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
            "OPENAI_API_KEY": "",
        }
        self.env["PYTHONPATH"] = str(app_root)  # the app of --app-root, not the installed one
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
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200 and len(children(self.process.pid)) == workers:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def worker_rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in children(self.process.pid))

    def cpu(self) -> tuple[float, float, float]:
        """CPU seconds used so far by the workers, Redis, and this (client) process."""
        return (
            sum(cpu_seconds(pid) for pid in children(self.process.pid)),
            redis_cpu_seconds(self.redis_url),
            cpu_seconds(os.getpid()),
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        stop_redis_server(self.redis)


def one_stream(port: int, message: str, pieces: list[str], delay_ms: int, sink: dict) -> None:
    """POST a message and read its SSE reply, recording each token's lag and each delta's store lag."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    sent = time.time()
    conn.request(
        "POST",
        "/api/chat",
        body=json.dumps({"chatId": str(uuid.uuid4()), "agent": "helper", "message": message}),
        headers={"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    text, arrivals, event_id, event, started = [], [], None, None, None
    while line := response.readline():
        line = line.decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "start":
            started = time.time()
        elif line.startswith("data: ") and event == "delta":
            now = time.time()
            sink["store_lag_ms"].append(now * 1000 - int(event_id.split("-")[0]))
            text.append(json.loads(line[6:])["text"])
            arrivals.append((now, sum(map(len, text))))
        elif line.startswith("data: ") and event in ("finish", "error"):
            break
    conn.close()
    sink["texts"].append("".join(text))
    sink["start_ms"].append(((started or time.time()) - sent) * 1000)
    sink["deltas"] += len(text)
    sink["token_lag_ms"].extend(token_lags(pieces, arrivals, delay_ms))


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


def run(server: Server, streams: int, words: int, delay_ms: int, ramp_s: float) -> dict:
    sink: dict = {"token_lag_ms": [], "store_lag_ms": [], "texts": [], "start_ms": [], "deltas": 0}
    agent = load_agents(Config.AGENTS_FILE)["helper"]
    messages = [f"bench message {n % 7}" for n in range(streams)]
    pieces = {message: demo_words(agent, message, words) for message in set(messages)}
    peak_rss = [server.worker_rss_mb()]

    def sample_memory():
        while True:
            peak_rss.append(server.worker_rss_mb())
            gevent.sleep(0.5)

    sampler = gevent.spawn(sample_memory)
    cpu_before = server.cpu()
    started = time.time()
    # Arrivals spread evenly over the ramp window (0 = every POST in the same instant).
    jobs = [
        gevent.spawn_later(ramp_s * n / streams, one_stream, server.port, message, pieces[message], delay_ms, sink)
        for n, message in enumerate(messages)
    ]
    gevent.joinall(jobs, raise_error=True)
    elapsed = time.time() - started
    cpu = [(after - before) / elapsed * 100 for before, after in zip(cpu_before, server.cpu(), strict=True)]
    sampler.kill()
    expected = {message: "".join(parts) for message, parts in pieces.items()}
    redis_memory = redis.Redis.from_url(server.redis_url).info("memory")["used_memory"] / 2**20
    return {
        "streams": streams,
        "seconds": elapsed,
        "deltas_per_s": sink["deltas"] / elapsed,
        "deltas_per_stream": sink["deltas"] / max(1, len(sink["texts"])),
        "lag_p50": statistics.median(sink["token_lag_ms"]),
        "lag_p99": percentile(sink["token_lag_ms"], 99),
        "store_p99": percentile(sink["store_lag_ms"], 99),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="50,200", help="comma-separated concurrency levels")
    parser.add_argument("--words", type=int, default=150, help="words per reply")
    parser.add_argument("--delay-ms", type=int, default=20, help="time between words (20 ms = 50 words/s)")
    parser.add_argument("--flush-ms", type=int, default=20, help="STREAM_FLUSH_MS (delta coalescing window)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url", help="e.g. postgresql://postgres@127.0.0.1:5432/test (default: SQLite)")
    parser.add_argument("--ramp-s", default="0,2", help="comma-separated arrival windows in seconds (0 = burst)")
    parser.add_argument("--app-root", type=Path, default=ROOT, help="serve the app of this checkout")
    args = parser.parse_args()
    server = Server(args.workers, args.words, args.delay_ms, args.flush_ms, args.database_url, args.app_root)
    try:
        database = "PostgreSQL" if args.database_url else "SQLite"
        print(
            f"gunicorn -k gevent, {args.workers} worker(s), {database}; {args.words} words/reply, one every {args.delay_ms} ms; "
            f"flush {args.flush_ms} ms; {os.cpu_count()} cores shared by client, server and Redis"
        )
        print(
            f"{'streams':>7} {'ramp s':>6} {'run s':>6} {'deltas/stream':>13} {'lag p50':>8} {'lag p99':>8} {'store p99':>9} "
            f"{'start p50':>9} {'start p99':>9} {'RSS MB':>7} {'Redis MB':>8} {'CPU% app/redis/client':>22} {'exact':>9}"
        )
        levels = [int(n) for n in args.streams.split(",")]
        ramps = [float(n) for n in args.ramp_s.split(",")]
        for level, ramp in [(level, ramp) for level in levels for ramp in ramps]:
            r = run(server, level, args.words, args.delay_ms, ramp)
            print(
                f"{r['streams']:>7} {ramp:>6.1f} {r['seconds']:>6.1f} {r['deltas_per_stream']:>13.1f} {r['lag_p50']:>8.1f} {r['lag_p99']:>8.1f} "
                f"{r['store_p99']:>9.1f} {r['start_p50']:>9.1f} {r['start_p99']:>9.1f} {r['rss_mb']:>7.1f} "
                f"{r['redis_mb']:>8.1f} {r['cpu_workers']:>8.0f}/{r['cpu_redis']:.0f}/{r['cpu_client']:<6.0f} "
                f"{r['correct']:>4}/{r['completed']:<4}"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
