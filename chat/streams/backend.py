"""What the reply engine asks of a stream log (StreamBackend: the Redis one, the cluster one, the
in-memory one) and of a process's follower (Follower: the multiplexed reader or the local one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .client_socket import ClientSocket
from .events import Event, Hold, LogState, StreamRef

APPENDED, SEALED, LOST = "ok", "sealed", "lost"


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
    def fence(self, ref: StreamRef) -> str | None:
        """Start a new producer epoch of the log: the id its entries number from; a previous
        producer's entries are refused from now on (None: the log is gone)."""
        ...

    def keep_waiting(self, ref: StreamRef, wait_ms: int) -> None:
        """Keep a parked run's chat claimed and its log for `wait_ms` (it waits for an answer)."""
        ...

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
    def end_log(self, ref: StreamRef, event: str, data: dict, before: Sequence[tuple[str, dict]] = ()) -> Event | None:
        """Append the terminal event unless the log has one, after the events `before` (all at
        once); the terminal entry when this call wrote it."""
        ...

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
    StreamHub (chat/replies/reader.py) for Redis, LocalStreams for memory."""

    def subscribe(self, ref: StreamRef, after: str, client: ClientSocket | None = None) -> Iterable[Event | None]:
        """`client`: the response's socket, when entries may be written to it directly."""
        ...
