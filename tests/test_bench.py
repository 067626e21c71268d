"""`make bench` keeps working: bench/streams.py at a tiny scale, every scenario, Durable Chat and
the Flask floor (the peer needs Node; the numbers themselves are the benchmark's business, not a
test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_every_bench_scenario_runs_and_every_client_reads_the_exact_reply(tmp_path):
    results = tmp_path / "results.jsonl"
    command = [
        sys.executable,
        str(ROOT / "bench" / "streams.py"),
        *("--streams", "3", "--ramp-s", "0", "--words", "30", "--delay-ms", "20"),
        *("--resume-streams", "3", "--hammer", "3", "--replay-tokens", "50", "--crash-streams", "3"),
        *("--tool-streams", "3", "--tool-replies", "2"),
        *("--no-peer", "--no-floor", "--json", str(results)),
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout + run.stderr

    records = [json.loads(line) for line in results.read_text().splitlines()]
    for record in records:
        assert record["correct"] == record["completed"] > 0, record
    floors = [record for record in records if record["server"] == "Flask floor"]
    assert [record.get("scenario") for record in floors] == [None], "the floor streams, it does not resume"
    tools = [record for record in records if record.get("scenario") == "tools"]
    assert [record["server"] for record in tools] == ["alone", "with tools"]
    assert tools[1]["tool_replies_ok"] == 2, "both tool-calling replies ended ok, with text after the call"
    ours = [record for record in records if record["server"] == "Durable Chat"]
    by_scenario = {record.get("scenario", "streams"): record for record in ours}
    assert set(by_scenario) == {"streams", "resume", "hammer", "crash", "replay"}
    assert len(ours) + len(floors) + len(tools) == len(records)
    streamed = by_scenario["streams"]
    # The reply's header and 30 words, one delta each unless the pump coalesced some under load.
    assert 20 <= streamed["deltas_per_stream"] <= 31
    assert streamed["redis_kb_per_1k_tokens"] > 0  # the replies stay in Redis for resuming
    # SIGKILLed mid-reply: every reply still ends, as interrupted, and a new device reads it.
    crash = by_scenario["crash"]
    assert crash["ended"] == crash["kept"] == 3
    assert crash["endings"] == {"interrupted": 3}
    assert "crash: 3 replies under way" in run.stdout
