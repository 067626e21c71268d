"""The stream log on a Redis Cluster: the same protocol as RedisStreams, each command sent to the
master that owns its chat's slot, and shard channels that tell readers of new entries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import hiredis
import redis

if TYPE_CHECKING:
    pass
from .events import Event, Hold, LogState, StreamRef
from .redis_store import APPEND_PUBLISH, RedisStreams, exchange, log_key


class ClusterRedisStreams(RedisStreams):
    """Reply logs on a Redis Cluster (REDIS_CLUSTER). The keys and scripts are the same; what
    changes is who is asked: every command goes to the master of its key's slot, and since one
    blocking XREAD cannot span slots, each stored entry is also published on its log's shard
    channel (`...:events`, SPUBLISH) for the readers (chat/replies/cluster_reader.py)."""

    publishes = "1"

    def __init__(self, client: redis.RedisCluster, **options) -> None:
        super().__init__(client, **options)  # type: ignore[arg-type]
        self.cluster = client
        self._append_publish = client.register_script(APPEND_PUBLISH)  # type: ignore[misc]
        self._scripts.append(self._append_publish)

    @staticmethod
    def _raw_reader(client: redis.Redis) -> redis.Redis:
        return client  # its nodes parse entries into dicts, which to_event reads too

    def _delta_command(self, ref: StreamRef, event: Event) -> tuple:
        keys = (log_key(ref), self._state_key(ref, "events"))
        return ("EVALSHA", self._append_publish.sha, 2, *keys, self.maxlen, event.id, event.data, event.type)

    def hold_and_find_newest(self, hold: Hold, chat_id: str, after: str) -> tuple[bool, LogState | None]:
        """One after the other: the identity's places and the chat's keys live on different slots."""
        held = self.hold_stream(hold)
        return held, self.newest_log(chat_id, after) if held else None

    def hold_and_claim(self, hold: Hold, ref: StreamRef, start_data: dict, timeout_ms: int) -> tuple[bool, str | None]:
        """One after the other, for the same reason."""
        held = self.hold_stream(hold)
        return held, self.claim_and_create(ref, start_data, timeout_ms) if held else None

    def _send(self, commands: list[tuple]) -> list:
        """One write per master, all sent before any reply is read; replies in command order.
        A MOVED reply (slots resharded) refreshes the slot map and fails the write: the pump
        sends it again, to the new owner."""
        by_node: dict[str, list[int]] = {}
        for i, command in enumerate(commands):
            key = command[3] if command[0] == "EVALSHA" else command[1]
            by_node.setdefault(self.node_of(key), []).append(i)
        for name, positions in by_node.items():
            connection = self._writer_for(name)
            try:
                connection.send_packed_command(
                    [b"".join(hiredis.pack_command(commands[i]) for i in positions)], check_health=False
                )
            except BaseException:
                connection.disconnect()
                raise
        replies: list = [None] * len(commands)
        for name, positions in by_node.items():
            for i, reply in zip(positions, exchange(self._writers[name], [], len(positions)), strict=True):
                replies[i] = reply
        if any(isinstance(reply, redis.exceptions.MovedError | redis.exceptions.AskError) for reply in replies):
            self.cluster.nodes_manager.initialize()
            raise redis.exceptions.TryAgainError("the cluster's slots moved; sending again")
        return replies

    def _writer_for(self, node_name: str) -> redis.connection.ConnectionInterface:
        if node_name not in self._writers:
            node = self.cluster.get_node(node_name=node_name)
            assert node is not None, f"{node_name} is a master of the cluster"
            self._writers[node_name] = node.redis_connection.connection_pool.make_connection()
        return self._writers[node_name]

    def node_of(self, key: str) -> str:
        return self.cluster.nodes_manager.get_node_from_slot(self.cluster.keyslot(key)).name

    def channel(self, ref: StreamRef) -> str:
        """Where `ref`'s stored entries are published, as `<id> <type> <data>`."""
        return self._state_key(ref, "events")

    def subscriber(self, node_name: str) -> ShardSubscriber:
        node = self.cluster.get_node(node_name=node_name)
        return ShardSubscriber(node.redis_connection.connection_pool)


class ShardSubscriber:
    """One sharded pub/sub connection to one cluster master: SSUBSCRIBE and SUNSUBSCRIBE sent
    from one thread, messages read by another (a subscribed connection answers nothing else)."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        # RESP2, whatever the pool speaks: pushes then come as plain arrays.
        options = {**pool.connection_kwargs, "protocol": 2, "socket_timeout": None, "health_check_interval": 0}
        self.connection = pool.connection_class(**options)
        self.lock = threading.Lock()

    def send(self, command: str, channels: Iterable[str]) -> None:
        """One SSUBSCRIBE/SUNSUBSCRIBE per channel (one command may not span slots), one write."""
        packed = b"".join(hiredis.pack_command(cast(tuple, (command, channel))) for channel in channels)
        if packed:
            with self.lock:
                self.connection.connect()
                self.connection.send_packed_command([packed], check_health=False)

    def receive(self, timeout: float) -> list[list[str]]:
        """Messages that arrived within `timeout`: [kind, channel, payload-or-count] each."""
        with self.lock:  # both sides connect under the lock: never two sockets, one unread
            self.connection.connect()
        messages = []
        wait = timeout
        while self.connection.can_read(timeout=wait):
            messages.append(self.connection.read_response())
            wait = 0
        return messages

    def close(self) -> None:
        self.connection.disconnect()


def published_event(payload: str) -> Event:
    entry_id, kind, data = payload.split(" ", 2)
    return Event(entry_id, kind, data)
