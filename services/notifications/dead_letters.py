"""Dead letters: the admins told about them, and sent again at their request.

A notification that no channel could deliver is failed (`transitions.dead`). `alert_admins`
tells the admins, once per kind per window, with a "Retry failed" button that stands for
`ActionName.RETRY_DEAD_LETTERS_LIKE` of that notification; a dead alert is never alerted about
(that way lies a loop), it is logged loudly instead. `DeadLetters.retry_like` is what the button
does: every dead letter of that notification's kind starts again (`transitions.restart`).

Apart from `transitions` because alerting goes through the outbox, which uses `transitions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Notification
from services.actions import Action, ActionName
from services.alerts import ALERT_KIND, Alerts, Severity
from services.clock import Clock
from services.notifications import outbox

log = logging.getLogger(__name__)

RETRY_BUTTON_TEXT = "Retry failed"


async def alert_admins(
    session: AsyncSession,
    alerts: Alerts | None,
    *,
    notification_id: int,
    kind: str,
    recipient_id: int,
    reason: str,
    now: datetime,
) -> None:
    """Tell the admins a notification became a dead letter (see the module docstring).
    Without `alerts` (a caller that alerts nobody) it is only logged."""
    text = f"notification {notification_id} ({kind}) failed: {reason}"
    if kind == ALERT_KIND:
        log.error("ALERT UNDELIVERABLE to user %s: %s", recipient_id, text)
        return
    log.warning("dead letter: %s", text)
    if alerts is None:
        return
    retry = Action(ActionName.RETRY_DEAD_LETTERS_LIKE, notification_id)
    await alerts.alert(
        session,
        key=f"dead_letter:{kind}",
        severity=Severity.HIGH,
        text=f"Notifications of kind {kind} are failing. Latest: {text}",
        now=now,
        button=retry.as_payload(RETRY_BUTTON_TEXT),
    )


@dataclass(frozen=True, slots=True)
class RetryResult:
    kind: str | None  # None: no notification has that id
    count: int  # how many dead letters of that kind were sent again


class DeadLetters:
    """What the admins' "Retry failed" button does; each call is its own unit of work."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def retry_like(self, notification_id: int, *, actor_id: int) -> RetryResult:
        """Send again every dead letter of the same kind as notification `notification_id`
        (itself included when it is still one)."""

        async def work(session: AsyncSession) -> RetryResult:
            kind = await session.scalar(
                select(Notification.kind).where(Notification.id == notification_id)
            )
            if kind is None:
                return RetryResult(None, 0)
            return await self._retry(session, kind, actor_id)

        return await self.db.run(work)

    async def retry_kind(self, kind: str, *, actor_id: int) -> RetryResult:
        """Send again every dead letter of `kind`: what the buttons of alerts sent before buttons
        named a notification ("nf:retry:<kind>") still do."""
        return await self.db.run(lambda session: self._retry(session, kind, actor_id))

    async def _retry(self, session: AsyncSession, kind: str, actor_id: int) -> RetryResult:
        count = await outbox.retry_all_failed(
            session, now=self.clock.now(), kind=kind, actor_id=actor_id
        )
        return RetryResult(kind, count)
