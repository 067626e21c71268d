"""What the operator's console reads: each account's standing (balance, spend this month, chats,
last activity), and spend and tokens from the ledger grouped by day, agent or account — the
ledger's own rows, summed, so every figure equals the ledger to the micro-credit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import func, select

from ..extensions import db
from ..vocabulary import LedgerKind, MessageStatus
from .chats import Chat, Message
from .people import Identity, LedgerEntry


@dataclass(frozen=True)
class Standing:
    spent_this_month_micros: int
    chats: int
    last_active: datetime | None


def standings(identity_ids: list[uuid.UUID], month: datetime) -> dict[uuid.UUID, Standing]:
    """Each identity's spend since `month`, chat count and last activity, in two queries."""
    if not identity_ids:
        return {}
    spent = dict(
        db.session.execute(
            select(LedgerEntry.identity_id, func.sum(LedgerEntry.cost_micros))
            .where(
                LedgerEntry.identity_id.in_(identity_ids),
                LedgerEntry.kind == LedgerKind.CHARGE,
                LedgerEntry.created_at >= month,
            )
            .group_by(LedgerEntry.identity_id)
        ).all()
    )
    chats = {
        identity_id: (count, last)
        for identity_id, count, last in db.session.execute(
            select(Chat.identity_id, func.count(Chat.id), func.max(Chat.updated_at))
            .where(Chat.identity_id.in_(identity_ids))
            .group_by(Chat.identity_id)
        )
    }
    return {
        identity_id: Standing(int(spent.get(identity_id) or 0), *chats.get(identity_id, (0, None)))
        for identity_id in identity_ids
    }


class UsageGrouping(StrEnum):
    DAY = "day"
    AGENT = "agent"
    ACCOUNT = "account"


@dataclass(frozen=True)
class UsageRow:
    key: str  # the day (YYYY-MM-DD), the agent's slug, or the account's email ("guests" for guests)
    cost_micros: int
    prompt_tokens: int
    completion_tokens: int
    charges: int


def usage(grouping: UsageGrouping, since: datetime, until: datetime) -> list[UsageRow]:
    """Charges in [since, until) summed per day, agent or account; days oldest first, the
    others by spend, largest first."""
    key = {
        UsageGrouping.DAY: func.date(LedgerEntry.created_at),
        UsageGrouping.AGENT: func.coalesce(LedgerEntry.agent_slug, "(none)"),
        UsageGrouping.ACCOUNT: func.coalesce(Identity.email, "guests"),
    }[grouping]
    cost = func.sum(LedgerEntry.cost_micros)
    query = (
        select(
            key,
            cost,
            func.sum(LedgerEntry.prompt_tokens),
            func.sum(LedgerEntry.completion_tokens),
            func.count(LedgerEntry.id),
        )
        .where(LedgerEntry.kind == LedgerKind.CHARGE, LedgerEntry.created_at >= since, LedgerEntry.created_at < until)
        .group_by(key)
        .order_by(key if grouping == UsageGrouping.DAY else cost.desc())
    )
    if grouping == UsageGrouping.ACCOUNT:
        query = query.join(Identity, Identity.id == LedgerEntry.identity_id)
    return [
        UsageRow(str(k), int(c or 0), int(p or 0), int(t or 0), int(n)) for k, c, p, t, n in db.session.execute(query)
    ]


def active_admins() -> int:
    return (
        db.session.scalar(
            select(func.count(Identity.id)).where(Identity.is_admin.is_(True), Identity.disabled_at.is_(None))
        )
        or 0
    )


def live_chats_of(identity_id: uuid.UUID) -> list[Chat]:
    """The identity's chats with a reply being written."""
    return list(
        db.session.scalars(
            select(Chat)
            .join(Message, Message.chat_id == Chat.id)
            .where(Chat.identity_id == identity_id, Message.status == MessageStatus.STREAMING)
        )
    )
