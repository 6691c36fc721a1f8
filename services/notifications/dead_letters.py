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

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import ChannelState, DeliveryAttempt, Notification, NotificationStatus
from services.actions import Action, ActionName
from services.alerts import ALERT_KIND, Alerts, Severity
from services.clock import Clock
from services.masking import mask_text
from services.notifications import outbox
from services.notifications.channels.base import ChannelName

log = logging.getLogger(__name__)

RETRY_BUTTON_TEXT = "Retry failed"


async def alert_admins(
    session: AsyncSession,
    alerts: Alerts | None,
    *,
    notification_id: int,
    kind: str,
    recipient_id: int | None,
    reason: str,
    now: datetime,
    destination: str | None = None,
) -> None:
    """Tell the admins a notification became a dead letter (see the module docstring).
    Without `alerts` (a caller that alerts nobody) it is only logged."""
    text = f"notification {notification_id} ({kind}) failed: {reason}"
    if kind == ALERT_KIND:
        # The alert webhook's copy too: its failures are never alerted about, only logged.
        to = f"destination {destination}" if destination else f"user {recipient_id}"
        log.error("ALERT UNDELIVERABLE to %s: %s", to, text)
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


# --- the Failed notifications screen (/workflow_recovery) ---------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters a screen lists: None matches any."""

    kind: str | None = None
    channel: str | None = None
    failure_class: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    id: int
    kind: str
    channel: str  # the last channel tried
    chain: str
    recipient_id: int | None
    destination: str | None
    attempts: int
    failure_class: str | None
    error_code: str | None
    error_text: str | None  # masked
    created_at: datetime
    failed_at: datetime | None
    status: str  # "failed" while it is a dead letter

    @property
    def dead(self) -> bool:
        return self.status == NotificationStatus.FAILED.value


@dataclass(frozen=True, slots=True)
class AttemptView:
    channel: str
    sender: str | None
    outcome: str
    error_class: str | None
    error_code: str | None
    error_text: str | None  # masked
    at: datetime


@dataclass(frozen=True, slots=True)
class Facets:
    """What the filters can pick from: (value, count) among the dead letters; for kinds, a
    notification of that kind stands for it (callback data cannot carry a long kind)."""

    kinds: list[tuple[str, int, int]]  # (kind, count, a notification id of that kind)
    channels: list[tuple[str, int]]
    failure_classes: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class ChannelView:
    name: str
    paused: bool
    circuit_open_until: datetime | None
    reason: str | None

    def circuit(self, now: datetime) -> str:
        """"open" (sends wait for the probe) or "closed" (normal)."""
        return "open" if self.circuit_open_until and self.circuit_open_until > now else "closed"


def _where(filters: DeadLetterFilter) -> list[ColumnElement[bool]]:
    n = Notification
    where = [n.status == NotificationStatus.FAILED.value]
    if filters.kind is not None:
        where.append(n.kind == filters.kind)
    if filters.channel is not None:
        where.append(n.channel == filters.channel)
    if filters.failure_class is not None:
        where.append(n.last_error_class == filters.failure_class)
    return where


def _view(n: Notification) -> DeadLetterView:
    return DeadLetterView(
        n.id, n.kind, n.channel, n.channel_chain, n.recipient_id, n.destination, n.attempts,
        n.last_error_class, n.last_error_code,
        mask_text(n.last_error_text, limit=300) if n.last_error_text else None,
        n.created_at, n.failed_at, n.status,
    )


async def list_dead(
    session: AsyncSession, filters: DeadLetterFilter, *, limit: int, offset: int = 0
) -> tuple[list[DeadLetterView], int]:
    """One page of dead letters matching `filters`, latest failure first, and the count."""
    where = _where(filters)
    total = await session.scalar(select(func.count()).select_from(Notification).where(*where))
    rows = await session.scalars(
        select(Notification).where(*where)
        .order_by(Notification.failed_at.desc(), Notification.id.desc())
        .limit(limit).offset(offset)
    )
    return [_view(n) for n in rows], int(total or 0)


async def dead_letter(
    session: AsyncSession, notification_id: int, *, attempts: int = 10
) -> tuple[DeadLetterView, list[AttemptView]] | None:
    """A notification (any status: the screen says when it is no longer a dead letter) and its
    latest attempts, oldest first; None when it does not exist."""
    n = await session.get(Notification, notification_id, populate_existing=True)
    if n is None:
        return None
    rows = list(await session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.notification_id == notification_id)
        .order_by(DeliveryAttempt.id.desc()).limit(attempts)
    ))
    return _view(n), [
        AttemptView(a.channel, a.sender, a.outcome, a.error_class, a.error_code,
                    mask_text(a.error_text, limit=200) if a.error_text else None, a.at)
        for a in reversed(rows)
    ]


async def facets(session: AsyncSession, *, limit: int = 20) -> Facets:
    failed = Notification.status == NotificationStatus.FAILED.value
    n = Notification
    kinds = (await session.execute(
        select(n.kind, func.count(), func.min(n.id)).where(failed).group_by(n.kind)
        .order_by(func.count().desc(), n.kind).limit(limit)
    )).tuples().all()
    channels = (await session.execute(
        select(n.channel, func.count()).where(failed).group_by(n.channel).order_by(n.channel)
    )).tuples().all()
    classes = (await session.execute(
        select(n.last_error_class, func.count()).where(failed, n.last_error_class.is_not(None))
        .group_by(n.last_error_class).order_by(n.last_error_class)
    )).tuples().all()
    return Facets([(k, int(c), int(i)) for k, c, i in kinds],
                  [(ch, int(c)) for ch, c in channels],
                  [(str(fc), int(c)) for fc, c in classes])


async def channel_views(session: AsyncSession) -> list[ChannelView]:
    """Every channel, paused or not, with its circuit."""
    states = {s.channel: s for s in await session.scalars(
        select(ChannelState).execution_options(populate_existing=True))}
    views = []
    for name in ChannelName:
        state = states.get(name.value)
        views.append(ChannelView(
            name.value, bool(state and state.paused), state.circuit_open_until if state else None,
            state.reason if state else None,
        ))
    return views


class FailedNotifications:
    """What the Failed notifications and Channels screens call (aiogram DI:
    `failed_notifications`); each call is one unit of work."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def list_dead(self, filters: DeadLetterFilter, *, limit: int, offset: int = 0
                        ) -> tuple[list[DeadLetterView], int]:
        return await self.db.read(
            lambda s: list_dead(s, filters, limit=limit, offset=offset))

    async def count(self, filters: DeadLetterFilter) -> int:
        return (await self.list_dead(filters, limit=0))[1]

    async def detail(self, notification_id: int, *, attempts: int = 10
                     ) -> tuple[DeadLetterView, list[AttemptView]] | None:
        """The notification and its latest `attempts` attempts (the dashboard asks for all)."""
        return await self.db.read(lambda s: dead_letter(s, notification_id, attempts=attempts))

    async def facets(self) -> Facets:
        return await self.db.read(facets)

    async def kind_of(self, notification_id: int) -> str | None:
        return await self.db.read(lambda s: s.scalar(
            select(Notification.kind).where(Notification.id == notification_id)))

    async def retry_one(self, notification_id: int, *, actor_id: int, reason: str) -> bool:
        """Send one dead letter again, from its first channel with a fresh budget; False when
        it is no longer a dead letter."""
        now = self.clock.now()
        return await self.db.run(lambda s: outbox.retry(
            s, notification_id, now=now, actor_id=actor_id, reason=reason))

    async def retry_matching(self, filters: DeadLetterFilter, *, actor_id: int, reason: str
                             ) -> int:
        now = self.clock.now()
        return await self.db.run(lambda s: outbox.retry_all_failed(
            s, now=now, kind=filters.kind, channel=filters.channel,
            failure_class=filters.failure_class, actor_id=actor_id, reason=reason))

    async def archive_one(self, notification_id: int, *, actor_id: int, reason: str) -> bool:
        """Put a dead letter away (kept, never deleted); False when it is not one any more."""
        now = self.clock.now()
        return await self.db.run(lambda s: outbox.archive(
            s, notification_id, now=now, actor_id=actor_id, reason=reason))

    async def channels(self) -> list[ChannelView]:
        return await self.db.read(channel_views)

    async def set_paused(self, channel: str, *, paused: bool, actor_id: int) -> None:
        now = self.clock.now()
        await self.db.run(lambda s: outbox.set_channel_paused(
            s, channel, paused=paused, now=now, actor_id=actor_id))
