"""The audit trail: every state change records what it was, what it became, who did it and when,
in the same transaction as the change itself.

It keeps no contact value in clear: a phone number or an e-mail address in `before` or `after`
(under the names "phone" and "email") is stored masked (services/masking.py), so the trail
shows that it changed, and lets its owner recognise it, but forgetting the value (clearing an
e-mail, say) leaves no copy of it here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import TransactionLog
from services.masking import mask_contact_fields


def record(
    session: AsyncSession,
    *,
    operation: str,
    entity_type: str,
    entity_id: object,
    at: datetime,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor_id: int | None = None,
    outcome: str = "ok",
    detail: str | None = None,
) -> TransactionLog:
    entry = TransactionLog(
        operation=operation,
        entity_type=entity_type,
        entity_id=str(entity_id),
        actor_id=actor_id,
        before=mask_contact_fields(before),
        after=mask_contact_fields(after),
        outcome=outcome,
        detail=detail,
        at=at,
    )
    session.add(entry)
    return entry
