"""The stream log: a reply as a log of events any reader can continue from any entry id.

events.py (the entries), backend.py (what the engine asks of a log), redis_store.py (the Redis
protocol: keys, Lua, commands), cluster_store.py (the same on a Redis Cluster), local_store.py
(in memory, for RESUMABLE_STREAMS=0), sse.py (the entries on the wire) and client_socket.py (an
idle response's own socket, written to directly).
"""

from .backend import APPENDED, LOST, SEALED, Follower, StreamBackend
from .cluster_store import ClusterRedisStreams, published_event
from .events import (
    TOOL_EVENTS,
    Event,
    Hold,
    LogState,
    StreamRef,
    delta_event,
    entry_cursor,
    joined_text,
    producer_event,
)
from .redis_store import RedisStreams, chat_key, log_key

__all__ = [
    "APPENDED",
    "LOST",
    "SEALED",
    "ClusterRedisStreams",
    "Event",
    "Follower",
    "Hold",
    "LogState",
    "RedisStreams",
    "StreamBackend",
    "StreamRef",
    "chat_key",
    "delta_event",
    "producer_event",
    "TOOL_EVENTS",
    "entry_cursor",
    "joined_text",
    "log_key",
    "published_event",
]
