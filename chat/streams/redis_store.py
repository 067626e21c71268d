"""The Redis side of resumable streams: the only module that knows keys and commands (the
cluster's routing is in cluster_store.py).

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
from typing import TYPE_CHECKING, cast

import hiredis
import redis
from redis.commands.core import Script

if TYPE_CHECKING:
    pass
from .backend import APPENDED, LOST, SEALED
from .events import Entry, Event, Hold, LogState, StreamRef, joined_text, to_event

RECENT_STREAMS_KEPT = 5

# Refuse further deltas: mark the log sealed and raise its top id above every id its producer can
# still write (`T-n`, T being the millisecond of its epoch's entries: the log's last generated
# id's, which a fence may have raised above its last entry's). A log whose top entry
# is already the terminal event is raised the same way, harmlessly. A log that is gone (lost, or
# its chat deleted) takes no delta anyway (NOMKSTREAM): nothing is left behind for it.
SEAL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return end
redis.call('SET', KEYS[2], 'sealed', 'NX', 'EX', ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    redis.call('XSETID', KEYS[1], string.match(info[i + 1], '^%d+') .. '-' .. ARGV[2])
  end
end
"""

# Start a new epoch of a log's producer entries: raise its top id to `<ms>-0`, ms above every id
# it holds and at least now, so entries a previous producer still writes (`T-n`, its own epoch's
# millisecond T) are refused, while the new producer's (`<ms>-n`) go in. Returns the new base id;
# nothing for a log that is sealed or ended (somebody is finishing the reply: no new epoch).
FENCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if not top then return false end
local ms = math.max(tonumber(string.match(top[1], '^%d+')) + 1, tonumber(ARGV[1]))
local base = ms .. '-0'
redis.call('XSETID', KEYS[1], base)
return base
"""

SEALED_SEQ = "9223372036854775807"  # 2^63 - 1: above any delta number, below the id space's end

REFUSED_ID = "equal or smaller than the target stream top item"

# Write the terminal event exactly once (after the events ARGV[7..] names in pairs: the results of
# tool calls its finisher settled), start the retention clock and free the chat. On a
# cluster the events are also published to the log's shard channel (KEYS[5]) for its readers.
END_LOG = """
if redis.call('GET', KEYS[2]) == 'done' then return false end
local ttl = tonumber(ARGV[4])
redis.call('SET', KEYS[2], 'done', 'EX', ttl)
for i = 7, #ARGV, 2 do
  local before = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i], 'd', ARGV[i + 1])
  if ARGV[6] == '1' then redis.call('SPUBLISH', KEYS[5], before .. ' ' .. ARGV[i] .. ' ' .. ARGV[i + 1]) end
end
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
local id = redis.call('XADD', KEYS[1], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[1], ARGV[2], 'e', ARGV[4], 'd', ARGV[3])
if id then redis.call('SPUBLISH', KEYS[2], id .. ' ' .. ARGV[4] .. ' ' .. ARGV[3]) end
return id
"""

# Refresh the producer's liveness if it still holds the chat; report whether it should stop: a
# stop was asked, or somebody sealed or ended its log (a stop's finisher deletes the cancel flag
# as it ends the log, and a producer running a tool writes nothing that a seal would refuse).
HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('EXISTS', KEYS[2]) + redis.call('EXISTS', KEYS[3])
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
        self._fence = client.register_script(FENCE)
        self._heartbeat = client.register_script(HEARTBEAT)
        self._release = client.register_script(RELEASE)
        self._hold = client.register_script(HOLD)
        self._claim_and_create = client.register_script(CLAIM_AND_CREATE)
        self._abandon = client.register_script(ABANDON)
        self._newest_log = client.register_script(NEWEST_LOG)
        self._scripts = [
            *(self._seal, self._end_log, self._heartbeat, self._release, self._fence),
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
            (
                [chat_key(ref.chat_id, "live"), self._state_key(ref, "cancel"), self._state_key(ref, "state")],
                [ref.stream_id, timeout_ms],
            )
            for ref in refs
        ]
        return [bool(flag) for flag in self._run_script(self._heartbeat, calls)]

    def fence(self, ref: StreamRef) -> str | None:
        """A new producer takes the log on: the base id of its entries (`<ms>-0`, its epoch);
        a previous producer's entries are refused from now on. None when the log is gone, sealed
        or ended (a finisher got there first)."""
        keys = [log_key(ref), self._state_key(ref, "state")]
        base = self._run_script(self._fence, [(keys, [int(time.time() * 1000)])])[0]
        return cast(str | None, base) or None

    def keep_waiting(self, ref: StreamRef, wait_ms: int) -> None:
        """A run parked for a person's answer: its chat stays claimed and its log kept for
        `wait_ms` at least (the claim as a heartbeat would keep it; the log's TTL only raised)."""
        self.heartbeat([ref], wait_ms)
        self.client.execute_command("EXPIRE", log_key(ref), wait_ms // 1000 + self.ttl_seconds, "GT")

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
        """Append each (stream, producer event: a delta or a tool event) with the event's own id, one XADD each, in a single
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
        return (
            "XADD",
            log_key(ref),
            "NOMKSTREAM",
            "MAXLEN",
            "~",
            self.maxlen,
            event.id,
            "e",
            event.type,
            "d",
            event.data,
        )

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

    def end_log(self, ref: StreamRef, event: str, data: dict, before: Sequence[tuple[str, dict]] = ()) -> Event | None:
        """Append the terminal event unless one exists (and `before` it, in the same step, those
        events); the terminal entry, when this call wrote it."""
        payload = json.dumps(data)
        preceding = [part for kind, body in before for part in (kind, json.dumps(body))]
        entry_id = self._end_log(
            keys=[
                log_key(ref),
                self._state_key(ref, "state"),
                chat_key(ref.chat_id, "live"),
                self._state_key(ref, "cancel"),
                self._state_key(ref, "events"),
            ],
            args=[self.maxlen, event, payload, self.ttl_seconds, ref.stream_id, self.publishes, *preceding],
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
