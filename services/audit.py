"""The audit trail: every state change records what it was, what it became, who did it and when,
in the same transaction as the change itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import TransactionLog


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
        before=before,
        after=after,
        outcome=outcome,
        detail=detail,
        at=at,
    )
    session.add(entry)
    return entry
