"""Money: every change of a balance is a ledger row written in the same transaction as the
balance itself, so a balance is always what its ledger adds up to. Charges, grants and transfers
all go through here; none of them commits (the caller's transaction does).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from ..models import Chat, Identity, LedgerEntry, add_to_balance, insert_or_ignore, insert_rows
from ..vocabulary import MICROS_PER_CREDIT, LedgerKind


def credits_to_micros(credits: float) -> int:
    return round(credits * MICROS_PER_CREDIT)


def charge(
    chat: Chat,
    charge_id: str,
    message_id: uuid.UUID,
    prompt_tokens: int,
    completion_tokens: int,
    estimated: bool,
    cost: int,
) -> None:
    """Add the ledger row (unique per `charge_id`: a second charge raises IntegrityError) and
    debit the chat's owner."""
    _record(
        chat.identity_id,
        cost,
        kind=LedgerKind.CHARGE,
        stream_id=charge_id,
        message_id=message_id,
        agent_slug=chat.agent_slug,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        usage_estimated=estimated,
    )


def grant(identity_id: uuid.UUID, micros: int, key: str, note: str) -> None:
    """Give credits. `key` makes the grant unique: a second grant with it fails the transaction
    (IntegrityError), so a retried request cannot grant twice."""
    _record(identity_id, -micros, kind=LedgerKind.GRANT, stream_id=key, note=note)


def store_guest(identity_id: uuid.UUID, micros: int, created_at: datetime) -> None:
    """Store a new guest with its grant, unless a concurrent request of the same guest stored it
    first: both rows are inserted or neither (`INSERT … ON CONFLICT DO NOTHING`), no error."""
    insert_or_ignore(Identity, id=identity_id, balance_micros=micros, created_at=created_at)
    insert_or_ignore(
        LedgerEntry,
        id=uuid.uuid4(),
        identity_id=identity_id,
        kind=LedgerKind.GRANT,
        stream_id=f"grant-guest-{identity_id}",
        cost_micros=-micros,
        note="Guest credits",
        created_at=created_at,
    )


def transfer_balance(source: Identity, target_id: uuid.UUID, note: str) -> int:
    """Move all of `source`'s balance to `target_id` (a guest signing in to its account);
    returns the micro-credits moved. Keyed by the source: it can happen once."""
    amount = source.balance_micros
    if amount <= 0:
        return 0
    for identity_id, cost, direction in ((source.id, amount, "out"), (target_id, -amount, "in")):
        _record(identity_id, cost, kind=LedgerKind.TRANSFER, stream_id=f"transfer-{direction}-{source.id}", note=note)
    return amount


def _record(identity_id: uuid.UUID, cost: int, **entry: object) -> None:
    """The ledger row taking `cost` from the identity's balance, and the balance with it."""
    insert_rows(LedgerEntry, [{"identity_id": identity_id, "cost_micros": cost, **entry}])
    add_to_balance(identity_id, -cost)
