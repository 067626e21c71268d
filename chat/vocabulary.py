"""The words of the domain: statuses, finish reasons, ledger kinds, the credit unit. Plain
enums and constants that any layer may import (agents, views, storage) without touching storage.
"""

from __future__ import annotations

from enum import StrEnum

MICROS_PER_CREDIT = 1_000_000


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    STREAMING = "streaming"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    ERROR = "error"


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(StrEnum):
    """Why a reply ended: the `finishReason` of the API's `finish` event, and the message's
    `finish_reason` column (`error` ends with an `error` event instead)."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    ERROR = "error"

    @property
    def status(self) -> MessageStatus:
        """The stored status of a reply that ended for this reason."""
        return {
            FinishReason.STOP: MessageStatus.COMPLETE,
            FinishReason.LENGTH: MessageStatus.COMPLETE,
            FinishReason.CANCELLED: MessageStatus.CANCELLED,
            FinishReason.INTERRUPTED: MessageStatus.INTERRUPTED,
            FinishReason.ERROR: MessageStatus.ERROR,
        }[self]

    @property
    def tool_status(self) -> ToolStatus:
        """How a tool call still running when the reply ends this way is settled: only a stop
        cancels it; otherwise its producer is gone and nobody knows whether it took effect."""
        return ToolStatus.CANCELLED if self == FinishReason.CANCELLED else ToolStatus.INTERRUPTED

    @property
    def tool_result(self) -> str:
        if self == FinishReason.CANCELLED:
            return "Stopped: the call was cancelled."
        return "Interrupted: the reply's server stopped during the call; it may or may not have taken effect."


class ToolStatus(StrEnum):
    """A tool call's state: `running` from the moment it is recorded (before it starts), or
    `waiting` for a person's answer first, until it settles, once, into one of the others, the
    `status` of the API's `tool-result` event."""

    RUNNING = "running"
    WAITING = "waiting"  # for a person's yes (an `approval` event told it)
    OK = "ok"
    ERROR = "error"
    DENIED = "denied"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


UNSETTLED_TOOL_STATUSES = frozenset({ToolStatus.RUNNING, ToolStatus.WAITING})


# The statuses a reply can end in short of complete; the page offers Retry on them.
FAILED_STATUSES = frozenset({MessageStatus.INTERRUPTED, MessageStatus.CANCELLED, MessageStatus.ERROR})

CHAT_TITLE_MAX = 200


class AdminActionKind(StrEnum):
    """What an operator did in the console (the audit trail's `action`)."""

    GRANT = "grant"
    TAKE = "take"
    STOP_REPLY = "stop-reply"
    REAP = "reap"
    DISABLE = "disable"
    ENABLE = "enable"
    MAKE_ADMIN = "make-admin"
    UNMAKE_ADMIN = "unmake-admin"
    LIMITS = "limits"


class LedgerKind(StrEnum):
    CHARGE = "charge"  # a reply or a chat title
    GRANT = "grant"  # credits given: to a new guest, at sign-up, by an operator
    TRANSFER = "transfer"  # a guest's balance moved into the account it signed in to


def credits_text(credits: float) -> str:
    """Credits as people read them: two decimals, and "< 0.01" for a cost too small to show
    (the ledger keeps every micro-credit)."""
    if 0 < credits < 0.005:
        return "< 0.01"
    return f"{credits:.2f}"
