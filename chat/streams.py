"""The Redis side of resumable streams: the only module that knows keys and commands.

A reply is a Redis Stream of events (`start`, `delta`…, then one terminal `finish` or `error`),
so any reader on any worker or host can continue from any entry id. Every key of one chat
carries `{chat_id}` as a hash tag, so a chat's keys share one Redis Cluster slot and the Lua
scripts below touch a single slot.

Keys of chat C and stream S:
  chat:{C}:streams         list of the chat's newest stream ids (newest first, capped at 5)
  chat:{C}:live            S while its producer is alive; refreshed by the heartbeat (PX)
  chat:{C}:stream:S        the event log
  chat:{C}:stream:S:state  absent while open, "sealed" once no more deltas may be added,
                           "done" once the terminal event is written
  chat:{C}:stream:S:cancel set by a stop request, seen by the producer's heartbeat
  holds:{I}                the open streams of identity I (a sorted set: member per stream, by lapse time)

Entry ids: the `start` entry is `T-0` (the first entry of a new stream); the producer writes its
n-th delta with the explicit id `T-n`, one plain XADD each. Explicit ids make a retried write
idempotent (Redis refuses an id that is not above the top one) and let sealing be atomic without
a script per delta: `seal` raises the stream's top id to `T-2^63-1`, so every later delta id is
refused, while the terminal event (`*`, a later millisecond) still goes in.

Longer than most modules on purpose: it is the one place that owns the Redis stream protocol
(keys, scripts, commands, TTLs), so a change to the protocol is read and reviewed in one file.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as encode_json_string
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast

import hiredis
import redis
from redis.commands.core import Script

if TYPE_CHECKING:
    from .client_socket import ClientSocket

RECENT_STREAMS_KEPT = 5
TERMINAL_EVENTS = frozenset({"finish", "error"})


class StreamRef(NamedTuple):
    """A reply's log: its chat and its stream. A tuple, so hashing it (it keys every per-reply
    map the pump and the readers keep, several times per token) runs in C."""

    chat_id: str
    stream_id: str


@dataclass(frozen=True)
class LogState:
    """A reply's log as a reader finds it: whether it still exists, and whether it has ended
    (None: not asked)."""

    ref: StreamRef
    exists: bool
    ended: bool | None
    events: list[Event] | None = None  # its entries after the cursor asked for (None: not read)


@dataclass(frozen=True)
class Hold:
    """One of an identity's `cap` open-stream places, asked for: it lapses after `ttl_ms`
    unless refreshed, so a dead process's places free themselves."""

    owner: str
    hold_id: str
    cap: int
    ttl_ms: int


@dataclass(frozen=True)
class Event:
    """One entry of a reply's log; `data` is the JSON text sent as the SSE `data:`."""

    id: str
    type: str
    data: str

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    @property
    def cursor(self) -> tuple[int, int]:
        return entry_cursor(self.id)

    def payload(self) -> dict:
        return json.loads(self.data)


def entry_cursor(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# Refuse further deltas: mark the log sealed and raise its top id above every id its producer can
# still write (`T-n`, T being the millisecond of the log's first entries). A log whose top entry
# is already the terminal event is raised the same way, harmlessly. A log that is gone (lost, or
# its chat deleted) takes no delta anyway (NOMKSTREAM): nothing is left behind for it.
SEAL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return end
redis.call('SET', KEYS[2], 'sealed', 'NX', 'EX', ARGV[1])
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if top then redis.call('XSETID', KEYS[1], string.match(top[1], '^%d+') .. '-' .. ARGV[2]) end
"""
SEALED_SEQ = "9223372036854775807"  # 2^63 - 1: above any delta number, below the id space's end
APPENDED, SEALED, LOST = "ok", "sealed", "lost"
REFUSED_ID = "equal or smaller than the target stream top item"

# Write the terminal event exactly once, start the retention clock and free the chat. On a
# cluster the event is also published to the log's shard channel (KEYS[5]) for its readers.
END_LOG = """
if redis.call('GET', KEYS[2]) == 'done' then return false end
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[2], 'done', 'EX', ttl)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2], 'd', ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('DEL', KEYS[4])
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
if ARGV[6] == '1' then redis.call('SPUBLISH', KEYS[5], id .. ' ' .. ARGV[2] .. ' ' .. ARGV[3]) end
return id
"""

# A cluster's delta write: the XADD a standalone Redis gets, then the stored entry published to
# the log's shard channel (only if stored: a refused id raises, a lost log returns nil).
APPEND_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[1], ARGV[2], 'e', 'delta', 'd', ARGV[3])
if id then redis.call('SPUBLISH', KEYS[2], id .. ' delta ' .. ARGV[3]) end
return id
"""

# Refresh the producer's liveness if it still holds the chat; report whether stop was asked.
HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('EXISTS', KEYS[2])
"""

# Hold one of an identity's open-stream places (a sorted set: member per open stream, scored by
# when it lapses), unless it holds `cap` already; holds a dead process left lapse by themselves.
HOLD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# Claim the chat for a new reply and start its log, in one round trip (a POST's critical path):
# nothing is written when another reply holds the chat. Returns the `start` entry's id. With no
# claim timeout (ARGV[2] empty) it only starts the log (`create`).
CLAIM_AND_CREATE = """
if ARGV[2] ~= '' and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local id = redis.call('XADD', KEYS[2], '*', 'e', 'start', 'd', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
redis.call('EXPIRE', KEYS[3], ARGV[6])
return id
"""

# The chat's newest log and its state, in one round trip (a resume's path): its stream id, whether
# the log still exists, whether it has ended and, when ARGV[2] is a cursor, the log's entries after
# it (what the resuming client reads first). ARGV[1] is the chat's key prefix (chat_key).
NEWEST_LOG = """
local id = redis.call('LINDEX', KEYS[1], 0)
if not id then return false end
local log = ARGV[1] .. 'stream:' .. id
local exists = redis.call('EXISTS', log)
local ended = redis.call('GET', log .. ':state') == 'done' and 1 or 0
if exists == 0 or ARGV[2] == '' then return {id, exists, ended} end
return {id, exists, ended, redis.call('XRANGE', log, '(' .. ARGV[2], '+')}
"""

# Undo CLAIM_AND_CREATE of a reply that was never stored (its database write failed).
ABANDON = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2])
redis.call('LREM', KEYS[3], 0, ARGV[1])
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class StreamBackend(Protocol):
    """A store of reply logs: RedisStreams below, or LocalStreams (memory) when
    RESUMABLE_STREAMS=0. Generation, readers and finishing are written against this.

    `shared` says whether every process (and host) sees the same logs and live claims; a store
    that is not shared cannot see another process's producer or let a later request resume.
    """

    shared: bool

    def append_stream_id(self, chat_id: str, stream_id: str) -> None: ...
    def load_streams(self, chat_id: str) -> list[str]: ...
    def newest_log(self, chat_id: str, after: str | None = None) -> LogState | None:
        """The log of the chat's newest stream (None when the chat lists none), with its entries
        after `after` when that is given and the log exists."""
        ...

    def hold_and_find_newest(self, hold: Hold, chat_id: str, after: str) -> tuple[bool, LogState | None]:
        """`hold_stream` and, when the place is taken, `newest_log` (a resume's first step)."""
        ...

    def claim_live(self, ref: StreamRef, timeout_ms: int) -> bool: ...
    def release_live(self, ref: StreamRef) -> None: ...
    def alive(self, refs: Sequence[StreamRef]) -> list[bool]: ...
    def heartbeat(self, refs: Sequence[StreamRef], timeout_ms: int) -> list[bool]: ...
    def request_cancel(self, ref: StreamRef) -> None: ...
    def forget_chat(self, chat_id: str, stream_ids: Iterable[str]) -> None:
        """Drop everything kept of the chat and of these streams of it (the chat is deleted)."""
        ...

    def create(self, ref: StreamRef, start_data: dict) -> str:
        """Start the log (and list it as the chat's newest stream); the start event's id."""
        ...

    def claim_and_create(self, ref: StreamRef, start_data: dict, timeout_ms: int) -> str | None:
        """`claim_live` then `create`, at once; None (and nothing done) when the chat is taken."""
        ...

    def hold_and_claim(self, hold: Hold, ref: StreamRef, start_data: dict, timeout_ms: int) -> tuple[bool, str | None]:
        """`hold_stream` and, when the place is taken, `claim_and_create` (a POST's first step):
        whether the place was taken, and the start event's id."""
        ...

    def abandon(self, ref: StreamRef) -> None:
        """Undo `claim_and_create` for a reply that was not stored after all."""
        ...

    def append_deltas(self, batch: Sequence[tuple[StreamRef, Event]]) -> list[str]: ...
    def seal(self, ref: StreamRef) -> None: ...
    def end_log(self, ref: StreamRef, event: str, data: dict) -> Event | None: ...
    def log_ended(self, ref: StreamRef) -> bool: ...
    def exists(self, ref: StreamRef) -> bool: ...
    def read(self, ref: StreamRef, after: str = "0-0", count: int | None = None) -> list[Event]: ...
    def read_text(self, ref: StreamRef) -> str: ...
    def hold_stream(self, hold: Hold) -> bool: ...
    def refresh_hold(self, owner: str, hold_id: str, ttl_ms: int) -> None: ...
    def release_hold(self, owner: str, hold_id: str) -> None: ...


class Follower(Protocol):
    """Follows one log for one client: events after `after`, then each new one as it is added,
    until the terminal event; None items mean "nothing new for a while" (a keepalive is due).
    StreamHub (chat/reader.py) for Redis, LocalStreams for memory."""

    def subscribe(self, ref: StreamRef, after: str, client: ClientSocket | None = None) -> Iterable[Event | None]:
        """`client`: the response's socket, when entries may be written to it directly."""
        ...


def chat_key(chat_id: str, suffix: str) -> str:
    return f"chat:{{{chat_id}}}:{suffix}"


def log_key(ref: StreamRef) -> str:
    return chat_key(ref.chat_id, f"stream:{ref.stream_id}")


class RedisStreams:
    """Reply logs in Redis. Methods are small and named for what the caller means."""

    shared = True
    publishes = ""  # "1": every stored entry is also published to its log's channel (a cluster)

    def __init__(
        self,
        client: redis.Redis,
        *,
        maxlen: int,
        ttl_seconds: int,
        max_reply_seconds: int,
        chat_streams_ttl_seconds: int,
    ) -> None:
        self.client = client
        self.raw = self._raw_reader(client)
        self._writers: dict[str, redis.connection.ConnectionInterface] = {}  # the pump's (see _write)
        self._writer_lock = threading.Lock()
        self.maxlen = maxlen
        self.ttl_seconds = ttl_seconds
        self.live_log_ttl_seconds = max_reply_seconds + ttl_seconds
        self.chat_streams_ttl_seconds = chat_streams_ttl_seconds
        self._seal = client.register_script(SEAL)
        self._end_log = client.register_script(END_LOG)
        self._heartbeat = client.register_script(HEARTBEAT)
        self._release = client.register_script(RELEASE)
        self._hold = client.register_script(HOLD)
        self._claim_and_create = client.register_script(CLAIM_AND_CREATE)
        self._abandon = client.register_script(ABANDON)
        self._newest_log = client.register_script(NEWEST_LOG)
        self._scripts = [
            *(self._seal, self._end_log, self._heartbeat, self._release),
            *(self._hold, self._newest_log, self._claim_and_create),
        ]

    @staticmethod
    def _raw_reader(client: redis.Redis) -> redis.Redis:
        """The same connections, without redis-py's reply parsing for the two read commands: it
        turns every entry's fields into a dict, a large share of the reader's CPU under load."""
        raw = redis.Redis(connection_pool=client.connection_pool)
        for command in ("XRANGE", "XREAD"):
            raw.set_response_callback(command, lambda response, **_options: response)
        return raw

    # -- the chat's list of streams (the seed's chat-store facade) -------------------------
    def append_stream_id(self, chat_id: str, stream_id: str) -> None:
        """LPUSH + LTRIM: keep the newest five stream ids, newest first."""
        with self.client.pipeline(transaction=True) as pipe:
            self._queue_stream_id(pipe, chat_id, stream_id)
            pipe.execute()

    def _queue_stream_id(self, pipe: redis.client.Pipeline, chat_id: str, stream_id: str) -> None:
        key = chat_key(chat_id, "streams")
        pipe.lpush(key, stream_id)
        pipe.ltrim(key, 0, RECENT_STREAMS_KEPT - 1)
        pipe.expire(key, self.chat_streams_ttl_seconds)

    def load_streams(self, chat_id: str) -> list[str]:
        return cast(list[str], self.client.lrange(chat_key(chat_id, "streams"), 0, -1))

    def newest_log(self, chat_id: str, after: str | None = None) -> LogState | None:
        return self._log_state(chat_id, self._newest_log(*self._newest_log_call(chat_id, after)))

    def _newest_log_call(self, chat_id: str, after: str | None) -> tuple[list[str], list[str]]:
        return [chat_key(chat_id, "streams")], [chat_key(chat_id, ""), after or ""]

    @staticmethod
    def _log_state(chat_id: str, found: list | None) -> LogState | None:
        if not found:
            return None
        stream_id, exists, ended, *read = found
        events = [to_event(entry_id, fields) for entry_id, fields in read[0]] if read else None
        return LogState(StreamRef(chat_id, stream_id), bool(exists), bool(ended), events)

    def hold_and_find_newest(self, hold: Hold, chat_id: str, after: str) -> tuple[bool, LogState | None]:
        """Both scripts in one round trip on a pooled connection: a request that waits for
        Redis waits one turn of a loop that every stream of the process shares, so each round
        trip it saves comes off its first event (and a resume's catch-up is read here too)."""
        keys, args = self._newest_log_call(chat_id, after)
        calls = [self._script_call(self._hold, *self._hold_call(hold)), self._script_call(self._newest_log, keys, args)]
        held, found = self._pooled_exchange(calls)
        return bool(held), self._log_state(chat_id, found) if held else None

    def hold_and_claim(self, hold: Hold, ref: StreamRef, start_data: dict, timeout_ms: int) -> tuple[bool, str | None]:
        """Both scripts in one round trip (see hold_and_find_newest). Both run: when the place
        was refused (the caller holds them all, rare), the claim is undone."""
        claim = self._script_call(self._claim_and_create, *self._start_log_call(ref, start_data, timeout_ms))
        held, start_id = self._pooled_exchange([self._script_call(self._hold, *self._hold_call(hold)), claim])
        if not held:
            if start_id:
                self.abandon(ref)
            return False, None
        return True, start_id or None

    def _pooled_exchange(self, calls: list[tuple]) -> list:
        """`calls` in one write on a pooled connection, their replies; an error reply is raised."""
        connection = self.client.connection_pool.get_connection()
        try:
            return raise_errors(self._with_scripts(functools.partial(exchange, connection), calls))
        finally:
            self.client.connection_pool.release(connection)

    # -- the producer's claim on a chat -------------------------------------------------------
    def claim_live(self, ref: StreamRef, timeout_ms: int) -> bool:
        """Atomically make `ref` the chat's one live reply; False when another one is live."""
        return bool(self.client.set(chat_key(ref.chat_id, "live"), ref.stream_id, nx=True, px=timeout_ms))

    def release_live(self, ref: StreamRef) -> None:
        self._release(keys=[chat_key(ref.chat_id, "live")], args=[ref.stream_id])

    def alive(self, refs: Sequence[StreamRef]) -> list[bool]:
        """Whether each stream's producer still holds its chat (its heartbeat is fresh)."""
        with self.client.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.get(chat_key(ref.chat_id, "live"))
            return [value == ref.stream_id for value, ref in zip(pipe.execute(), refs, strict=True)]

    def stalled(self, refs: Sequence[StreamRef]) -> list[bool]:
        """Whether each stream's producer is gone without ending its log: a log that ended a
        moment ago (its producer let go of the chat) is not one to interrupt."""
        with self.client.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.get(chat_key(ref.chat_id, "live"))
                pipe.get(self._state_key(ref, "state"))
            replies = pipe.execute()
        return [
            live != ref.stream_id and state != "done"
            for ref, live, state in zip(refs, replies[::2], replies[1::2], strict=True)
        ]

    def heartbeat(self, refs: Sequence[StreamRef], timeout_ms: int) -> list[bool]:
        """Refresh every producer's liveness in one round trip; returns which were asked to stop."""
        calls = [
            ([chat_key(ref.chat_id, "live"), self._state_key(ref, "cancel")], [ref.stream_id, timeout_ms])
            for ref in refs
        ]
        return [bool(flag) for flag in self._run_script(self._heartbeat, calls)]

    def request_cancel(self, ref: StreamRef) -> None:
        self.client.set(self._state_key(ref, "cancel"), "1", ex=self.live_log_ttl_seconds)

    def forget_chat(self, chat_id: str, stream_ids: Iterable[str]) -> None:
        """One DEL of every key of the chat (one slot: also one command on a cluster)."""
        keys = [chat_key(chat_id, "streams"), chat_key(chat_id, "live")]
        for stream_id in {*stream_ids, *self.load_streams(chat_id)}:
            ref = StreamRef(chat_id, stream_id)
            keys += [log_key(ref), *(self._state_key(ref, what) for what in ("state", "cancel"))]
        self.client.delete(*keys)

    # -- the log --------------------------------------------------------------------------------
    def create(self, ref: StreamRef, start_data: dict) -> str:
        """Start the log with its `start` event and make it the chat's newest stream, in one
        script; returns the start event's id."""
        return cast(str, self._start_log(ref, start_data, ""))

    def claim_and_create(self, ref: StreamRef, start_data: dict, timeout_ms: int) -> str | None:
        return self._start_log(ref, start_data, timeout_ms)

    def _start_log(self, ref: StreamRef, start_data: dict, claim_timeout_ms: int | str) -> str | None:
        keys, args = self._start_log_call(ref, start_data, claim_timeout_ms)
        return self._claim_and_create(keys=keys, args=args) or None

    def _start_log_call(
        self, ref: StreamRef, start_data: dict, claim_timeout_ms: int | str
    ) -> tuple[list[str], list[str | int]]:
        keys = [chat_key(ref.chat_id, "live"), log_key(ref), chat_key(ref.chat_id, "streams")]
        args: list[str | int] = [
            ref.stream_id,
            claim_timeout_ms,
            json.dumps(start_data),
            self.live_log_ttl_seconds,
            RECENT_STREAMS_KEPT,
            self.chat_streams_ttl_seconds,
        ]
        return keys, args

    def abandon(self, ref: StreamRef) -> None:
        keys = [chat_key(ref.chat_id, "live"), log_key(ref), chat_key(ref.chat_id, "streams")]
        self._abandon(keys=keys, args=[ref.stream_id])

    def append_deltas(self, batch: Sequence[tuple[StreamRef, Event]]) -> list[str]:
        """Append each (stream, delta event) with the event's own id, one XADD each, in a single
        pipeline. Returns APPENDED (written now or by an earlier try), SEALED or LOST for each.

        A refused id means the log was sealed, or that an earlier try of this very write landed
        (its round trip failed after Redis ran it): only then, one XRANGE tells which.
        """
        replies = self._write([self._delta_command(ref, event) for ref, event in batch])
        outcomes, refused = [], []
        for i, reply in enumerate(replies):
            if isinstance(reply, redis.ResponseError) and REFUSED_ID in str(reply):
                refused.append(i)
                outcomes.append(SEALED)
            elif isinstance(reply, Exception):
                raise reply
            else:
                outcomes.append(LOST if reply is None else APPENDED)
        if refused:
            found = self._write([("XRANGE", log_key(batch[i][0]), batch[i][1].id, batch[i][1].id) for i in refused])
            for i, entries in zip(refused, found, strict=True):
                outcomes[i] = APPENDED if entries else SEALED
        return outcomes

    def _delta_command(self, ref: StreamRef, event: Event) -> tuple:
        return ("XADD", log_key(ref), "NOMKSTREAM", "MAXLEN", "~", self.maxlen, event.id, "e", "delta", "d", event.data)

    def _write(self, commands: list[tuple]) -> list:
        """Send `commands` in one write on the writer's own connection; every reply, errors as
        values. The pump's hot path: no pool checkout, health poll or retry wrapper per round
        (redis-py's pipeline costs more than the XADDs it sends); a failure drops the
        connection, and the pump sends the same deltas again.

        Scripts go as EVALSHA; one that Redis lacks (first use, a restart, SCRIPT FLUSH) is
        loaded and sent again (see _with_scripts).
        """
        with self._writer_lock:
            return self._with_scripts(self._send, commands)

    def _with_scripts(self, send: Callable[[list[tuple]], list], commands: list[tuple]) -> list:
        """`send(commands)`'s replies; when Redis lacks a script, all are loaded and the
        commands it refused are sent again (only those: the others ran, and a claim that ran
        would refuse its second run)."""
        replies = send(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:
            for script in self._scripts:
                self.client.script_load(script.script)
            for i, reply in zip(missing, send([commands[i] for i in missing]), strict=True):
                replies[i] = reply
        return replies

    @staticmethod
    def _script_call(script: Script, keys: Sequence[str], args: Sequence[str | int]) -> tuple:
        return ("EVALSHA", script.sha, len(keys), *keys, *args)

    def _send(self, commands: list[tuple]) -> list:
        return exchange(self._writer_for(""), commands)

    def _writer_for(self, node_name: str) -> redis.connection.ConnectionInterface:
        """The writer's connection (to the master `node_name` on a cluster)."""
        if node_name not in self._writers:
            self._writers[node_name] = self.client.connection_pool.make_connection()
        return self._writers[node_name]

    def close(self) -> None:
        """Close the writer's connections (the pool's are the client's to close)."""
        with self._writer_lock:
            for connection in self._writers.values():
                connection.disconnect()
            self._writers.clear()

    def _run_script(self, script: Script, calls: list[tuple[list, list]]) -> list:
        """Run `script` once per (keys, args) in one write (redis-py's pipelined scripts send
        SCRIPT EXISTS before every pipeline, and a cluster's pipelines refuse EVALSHA)."""
        return raise_errors(self._write([self._script_call(script, keys, args) for keys, args in calls]))

    def seal(self, ref: StreamRef) -> None:
        """Refuse further deltas, so the text read next is the reply's final text."""
        self._seal(keys=[log_key(ref), self._state_key(ref, "state")], args=[self.live_log_ttl_seconds, SEALED_SEQ])

    def end_log(self, ref: StreamRef, event: str, data: dict) -> Event | None:
        """Append the terminal event unless one exists; the entry, when this call wrote it."""
        payload = json.dumps(data)
        entry_id = self._end_log(
            keys=[
                log_key(ref),
                self._state_key(ref, "state"),
                chat_key(ref.chat_id, "live"),
                self._state_key(ref, "cancel"),
                self._state_key(ref, "events"),
            ],
            args=[self.maxlen, event, payload, self.ttl_seconds, ref.stream_id, self.publishes],
        )
        return Event(cast(str, entry_id), event, payload) if entry_id else None

    def log_ended(self, ref: StreamRef) -> bool:
        return self.client.get(self._state_key(ref, "state")) == "done"

    def exists(self, ref: StreamRef) -> bool:
        return bool(self.client.exists(log_key(ref)))

    def read(self, ref: StreamRef, after: str = "0-0", count: int | None = None) -> list[Event]:
        """Entries after `after` (exclusive), oldest first."""
        args = ["XRANGE", log_key(ref), f"({after}", "+"] + (["COUNT", count] if count else [])
        entries = cast(list[Entry], self.raw.execute_command(*args))
        return [to_event(entry_id, fields) for entry_id, fields in entries]

    def read_text(self, ref: StreamRef) -> str:
        return joined_text(self.read(ref))

    def read_many(
        self, cursors: dict[StreamRef, str], block_ms: int, wake_key: str | None = None, wake_cursor: str = "$"
    ) -> tuple[dict[StreamRef, list[Event]], str | None]:
        """One blocking XREAD over many logs (and the reader's wake-up key).

        Returns the new events by stream and the wake key's newest id (None when not woken).
        """
        keys = {log_key(ref): ref for ref in cursors}
        names, ids = list(keys), [cursors[ref] for ref in keys.values()]
        if wake_key:
            names.append(wake_key)
            ids.append(wake_cursor)
        reply = self.raw.execute_command("XREAD", "COUNT", 500, "BLOCK", block_ms, "STREAMS", *names, *ids)
        # RESP3 (redis-py's default since 6) answers a map of key -> entries, RESP2 a list of pairs.
        by_key = cast(dict[str, list[Entry]], reply).items() if isinstance(reply, dict) else (reply or [])
        events: dict[StreamRef, list[Event]] = {}
        woken = None
        for key, entries in by_key:
            if key == wake_key:
                woken = entries[-1][0]
            else:
                events[keys[key]] = [to_event(entry_id, fields) for entry_id, fields in entries]
        return events, woken

    def wake(self, wake_key: str) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xadd(wake_key, {"w": "1"}, maxlen=16, approximate=True)
            pipe.expire(wake_key, 3600)
            pipe.execute()

    # -- open streams per identity ---------------------------------------------------------------
    def hold_stream(self, hold: Hold) -> bool:
        """Take one of the owner's open-stream places (refreshed while its stream is open)."""
        keys, args = self._hold_call(hold)
        return bool(self._hold(keys=keys, args=args))

    def _hold_call(self, hold: Hold) -> tuple[list[str], list[str | int]]:
        now = int(time.time() * 1000)
        return [self._holds_key(hold.owner)], [now, hold.cap, now + hold.ttl_ms, hold.hold_id, hold.ttl_ms]

    def refresh_hold(self, owner: str, hold_id: str, ttl_ms: int) -> None:
        key = self._holds_key(owner)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {hold_id: int(time.time() * 1000) + ttl_ms}, xx=True)
            pipe.pexpire(key, ttl_ms)
            pipe.execute()

    def release_hold(self, owner: str, hold_id: str) -> None:
        self.client.zrem(self._holds_key(owner), hold_id)

    @staticmethod
    def _holds_key(owner: str) -> str:
        return f"holds:{{{owner}}}"

    @staticmethod
    def wake_key(reader_id: str) -> str:
        return f"reader:{{{reader_id}}}:wake"

    @staticmethod
    def _state_key(ref: StreamRef, what: str) -> str:
        return chat_key(ref.chat_id, f"stream:{ref.stream_id}:{what}")


class ClusterRedisStreams(RedisStreams):
    """Reply logs on a Redis Cluster (REDIS_CLUSTER). The keys and scripts are the same; what
    changes is who is asked: every command goes to the master of its key's slot, and since one
    blocking XREAD cannot span slots, each stored entry is also published on its log's shard
    channel (`...:events`, SPUBLISH) for the readers (chat/cluster_reader.py)."""

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
        return ("EVALSHA", self._append_publish.sha, 2, *keys, self.maxlen, event.id, event.data)

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


def exchange(connection: redis.connection.ConnectionInterface, commands: list[tuple], sent: int = 0) -> list:
    """Send `commands` in one write on `connection` and read every reply (and those of `sent`
    commands sent before), errors as values. A failure drops the connection: a reply may be
    left unread, so it is never reused half-read."""
    try:
        if commands:
            connection.send_packed_command([b"".join(map(hiredis.pack_command, commands))], check_health=False)
        replies: list = []
        for _ in range(sent + len(commands)):
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as error:
                replies.append(error)
        return replies
    except BaseException:
        connection.disconnect()
        raise


def raise_errors(replies: list) -> list:
    """`replies`, unless one of them is an error: then that is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


# A stream entry as Redis sends it (decoded): its id and its fields as [name, value, name, value]
# (or as a dict, parsed by redis-py's cluster client, whose nodes parse replies themselves).
Entry = tuple[str, list[str] | dict[str, str]]


def to_event(entry_id: str, fields: list[str] | dict[str, str]) -> Event:
    """Every entry here is written as `e <type> d <data>`; anything else is read by name."""
    if isinstance(fields, dict):
        return Event(entry_id, fields["e"], fields["d"])
    if len(fields) == 4 and fields[0] == "e" and fields[2] == "d":
        return Event(entry_id, fields[1], fields[3])
    named = dict(zip(fields[::2], fields[1::2], strict=True))
    return Event(entry_id, named["e"], named["d"])


def delta_event(start_id: str, seq: int, text: str) -> Event:
    """The producer's `seq`-th delta (1, 2, …): its id follows the log's `start` entry's id.

    Its data is exactly `json.dumps({"text": text})`, written by the C string encoder alone (a
    tenth of the cost: this runs once per delta of every reply)."""
    ms, first = entry_cursor(start_id)
    return Event(f"{ms}-{first + seq}", "delta", '{"text": ' + encode_json_string(text) + "}")


def joined_text(events: Iterable[Event]) -> str:
    return "".join(event.payload()["text"] for event in events if event.type == "delta")
