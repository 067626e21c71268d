"""The floor: what Python + redis-py + Redis Streams can do with no HTTP, no database, no app.

    python bench/floor.py REDIS_URL STREAMS WORDS DELAY_MS    # prints one JSON object

N streams each make token i at t0 + i x delay (as the demo model does); one writer sends every
waiting token as one pipelined XADD per stream per round, a round starting as soon as the last
returned; one reader follows every stream with a single XREAD BLOCK and notes each token's
arrival. Lag is measured as bench/streams.py measures it (arrival minus i x delay, against the
stream's best token), so the three columns of `make bench` compare like with like.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import deque  # noqa: E402
from typing import cast  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import redis  # noqa: E402


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    url, streams, words, delay_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    client = redis.Redis.from_url(url, decode_responses=True)
    reader_client = redis.Redis.from_url(url, decode_responses=True)
    run = uuid.uuid4().hex[:8]
    keys = [f"floor:{run}:{n}" for n in range(streams)]
    waiting: deque[tuple[str, int]] = deque()
    wake = gevent.event.Event()
    arrivals: dict[str, list[tuple[float, int]]] = {key: [] for key in keys}
    done = gevent.event.Event()
    finished: set[str] = set()

    def produce(key: str) -> None:
        start = time.monotonic()
        for index in range(words):
            pause = start + (index + 1) * delay_ms / 1000 - time.monotonic()
            if pause > 0:
                gevent.sleep(pause)
            waiting.append((key, index))
            wake.set()

    def write() -> None:
        while not done.is_set():
            wake.wait(1)
            wake.clear()
            batch: dict[str, list[int]] = {}
            while waiting:
                key, index = waiting.popleft()
                batch.setdefault(key, []).append(index)
            if batch:
                with client.pipeline(transaction=False) as pipe:
                    for key, indexes in batch.items():
                        pipe.xadd(key, {"t": ",".join(map(str, indexes))})
                    pipe.execute()

    def read() -> None:
        cursors = {key: "0-0" for key in keys}
        while len(finished) < streams:
            reply = reader_client.xread({k: v for k, v in cursors.items() if k not in finished}, count=500, block=1000)
            now = time.time()
            # RESP2 answers a list of [key, entries], RESP3 a dict.
            by_key = cast(dict[str, list], reply).items() if isinstance(reply, dict) else cast(list, reply or [])
            for key, entries in by_key:
                for entry_id, fields in entries:
                    cursors[key] = entry_id
                    indexes = [int(i) for i in fields["t"].split(",")]
                    arrivals[key].extend((now, index) for index in indexes)
                    if indexes[-1] == words - 1:
                        finished.add(key)
        done.set()

    before, commands_before = cpu_seconds(), commands(client)
    started = time.time()
    workers = [gevent.spawn(write), gevent.spawn(read)] + [gevent.spawn(produce, key) for key in keys]
    done.wait(words * delay_ms / 1000 + 120)
    gevent.killall(workers)
    elapsed = time.time() - started
    tokens = streams * words
    lags: list[float] = []
    for key in keys:
        offsets = [at * 1000 - index * delay_ms for at, index in arrivals[key]]
        best = min(offsets, default=0.0)
        lags.extend(offset - best for offset in offsets)
    used = cpu_seconds() - before
    issued = commands(client) - commands_before
    memory_left = sum(cast(int | None, client.memory_usage(key, samples=0)) or 0 for key in keys)
    client.delete(*keys)
    ordered = sorted(lags)
    print(
        json.dumps(
            {
                "streams": streams,
                "seconds": elapsed,
                "lag_p50": statistics.median(ordered) if ordered else float("nan"),
                "lag_p99": ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))] if ordered else 0,
                "cpu_us_per_token": used / tokens * 1e6,
                "redis_cmds_per_1k_tokens": issued / tokens * 1000,
                "redis_kb_per_1k_tokens": memory_left / 1024 / tokens * 1000,
                "correct": sum(len(arrivals[key]) == words for key in keys),
                "completed": streams,
            }
        )
    )


def commands(client: redis.Redis) -> int:
    stats = cast(dict, client.info("commandstats"))
    return sum(value["calls"] for key, value in stats.items() if key != "cmdstat_info")


if __name__ == "__main__":
    main()
