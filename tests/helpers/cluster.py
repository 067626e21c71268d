"""A real Redis Cluster for tests: three masters from Debian's redis-server, joined by redis-cli."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from chat.embedded_redis import free_port, start_redis_server, stop_redis_server

from .chats import wait_for


class RedisCluster:
    """`masters` cluster-enabled redis-servers on loopback, every slot assigned, no replicas."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []
        try:
            for n in range(masters):
                node_dir = directory / f"node-{n}"
                url, process = start_redis_server(
                    node_dir,
                    options=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--cluster-port",  # the bus; by default port + 10000, often out of range
                        str(free_port()),
                    ],
                )
                self.processes.append(process)
                self.urls.append(url)
            addresses = [url.removeprefix("redis://").removesuffix("/0") for url in self.urls]
            redis_cli = shutil.which("redis-cli") or "redis-cli"
            subprocess.run(
                [redis_cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            wait_for(self.ready, timeout=30, message="the cluster to assign every slot")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """REDIS_URL naming one node, as an operator would write it."""
        return self.urls[0]

    def nodes(self) -> list[redis.Redis]:
        return [redis.Redis.from_url(url, decode_responses=True) for url in self.urls]

    def ready(self) -> bool:
        for node in self.nodes():
            with node:
                info: dict = node.cluster("INFO")  # type: ignore[assignment]  # a dict: redis-py parses it
                if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.urls):
                    return False
        return True

    def flush(self) -> None:
        for node in self.nodes():
            with node:
                node.flushall()

    def stop(self) -> None:
        for process in self.processes:
            stop_redis_server(process)
