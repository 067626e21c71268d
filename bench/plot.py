"""Per-token lag against the number of streams, from `make bench` results, as a PNG.

    python bench/plot.py OUT.png RESULTS.jsonl [MORE.jsonl …]

The newest burst measurement of each (server, streams) pair is drawn: p50 and p99 per server,
Durable Chat against resumable-stream, the Flask floor and the raw redis-py floor. matplotlib is
installed into the running environment on first use (it is needed here only, not by the app or
the tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def newest(paths: list[Path]) -> dict[tuple[str, int], dict]:
    kept: dict[tuple[str, int], dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "scenario" not in record and record.get("ramp_s", 0) == 0 and "lag_p99" in record:
                kept[(record["server"], record["streams"])] = record  # later lines win
    return kept


def main() -> None:
    out, sources = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = newest(sources)
    servers = sorted({server for server, _ in records}, key=lambda name: (name != "Durable Chat", name))
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, (key, title) in zip(axes, [("lag_p50", "median"), ("lag_p99", "p99")], strict=True):
        for server in servers:
            levels = sorted(n for name, n in records if name == server)
            axis.plot(levels, [records[(server, n)][key] for n in levels], marker="o", label=server)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("concurrent streams (all POSTed at once)")
        axis.set_title(f"per-token lag, {title} (ms)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    dates = sorted({record["date"] for record in records.values()})
    figure.suptitle(f"Per-token lag as a user feels it — {', '.join(dates)}, one worker vs one Node process, 2 cores")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
