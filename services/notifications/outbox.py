"""The transactional outbox: notifications are rows written in the caller's unit of work.

`enqueue` never sends: it stores the row in the caller's transaction, so a rollback leaves nothing
to send and a commit makes the row the dispatcher's to deliver. The same idempotency key twice
stores one row. The rest of this module is what admins act with (cancel, retry, archive, pause)
and what they look at (statistics); the state changes it shares with the dispatcher and the
receipts (restart, wake-up) are `transitions`' rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import (
    ChannelState,
    DeliveryAttempt,
    ManualTask,
    Notification,
    NotificationStatus,
    User,
)
from services import audit
from services.actions import Action
from services.notifications import destinations, transitions
from services.notifications.channels.base import DEFAULT_ORDER, ChannelName

# Set when a channel is paused or resumed: this process's dispatcher reads the channels'
# states again at its next claim instead of when its copy is due for a refresh.
STATES_FLAG = "outbox_channel_states"

PRIORITY_INTERACTIVE = 0  # a person is waiting for this answer
PRIORITY_NORMAL = 5
PRIORITY_BULK = 9


class NotificationNotFound(LookupError):
    pass


class InvalidNotification(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: int
    created: bool  # False: the idempotency key was already stored; nothing new will be sent


# Built once: compiled statements are cached by SQLAlchemy, so enqueue stays cheap.
_INSERT = {
    name: insert(Notification.__table__)
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(Notification.__table__.c.id)
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}
_CHANNEL_ORDER = select(User.channel_order).where(User.id == bindparam("user_id"))


def channel_chain(
    channel_order: str | None, *, channels: Sequence[str] | None = None,
    allow_fallback: bool = True, manual: bool = True,
) -> list[str]:
    """The channels to try, in order: the user's preference (or the default order), restricted
    to `channels` when given, ending with the manual channel when fallback is allowed."""
    preferred = [c for c in (channel_order or "").split(",") if c]
    order = preferred + [c.value for c in DEFAULT_ORDER if c.value not in preferred]
    order = [c for c in order if c != ChannelName.MANUAL]
    if channels is not None:
        order = [c for c in order if c in channels]
    if not allow_fallback:
        return order[:1] if channels is None else order
    if manual and (channels is None or ChannelName.MANUAL in channels):
        order.append(ChannelName.MANUAL.value)
    return order


async def enqueue(
    session: AsyncSession,
    *,
    recipient_id: int | None = None,
    destination: str | None = None,
    kind: str,
    idempotency_key: str,
    now: datetime,
    text: str | None = None,
    template: dict[str, Any] | None = None,
    media: dict[str, Any] | None = None,
    subject: str | None = None,
    buttons: Sequence[dict[str, Any]] | None = None,
    fields: Mapping[str, str | None] | None = None,
    priority: int = PRIORITY_NORMAL,
    channels: Sequence[str] | None = None,
    allow_fallback: bool = True,
    manual: bool = True,
    delay: timedelta = timedelta(0),
) -> Enqueued:
    """Store a notification in the caller's transaction (see the module docstring).

    Addressed to exactly one of: a user (`recipient_id`: the channels are theirs, in their
    order, restricted by `channels`, `allow_fallback` and `manual`) or a destination that is not
    a user (`destination`, "<kind>:<target>": the one channel of its kind,
    `destinations.channel_for`; `channels` and `manual` do not apply).

    `buttons` are actions an admin or user can take from the message where the channel can
    show them (Telegram), each as `Action.as_payload(text)` makes it: never callback data,
    which is the handlers' business. `fields` are labelled values a channel that can show them
    shows beside the text (the webhook channel: severity, key, support code, link).
    """
    if sum(x is not None for x in (text, template, media)) != 1:
        raise InvalidNotification("give exactly one of text, template or media")
    if not idempotency_key or len(idempotency_key) > 200:
        raise InvalidNotification("the idempotency key must be 1-200 characters")
    if (recipient_id is None) == (destination is None):
        raise InvalidNotification("give exactly one of recipient_id or destination")
    if destination is not None:
        try:
            chain = [destinations.channel_for(destination).value]
        except destinations.InvalidDestination as exc:
            raise InvalidNotification(str(exc)) from None
    else:
        channel_order = (
            await session.execute(_CHANNEL_ORDER, {"user_id": recipient_id})
        ).first()
        if channel_order is None:
            raise InvalidNotification(f"no user {recipient_id}")
        chain = channel_chain(
            channel_order[0], channels=channels, allow_fallback=allow_fallback, manual=manual
        )
    if not chain:
        raise InvalidNotification("no channel allowed for this notification")
    payload: dict[str, Any] = {}
    if text is not None:
        payload["text"] = text
    if template is not None:
        payload["template"] = template
    if media is not None:
        payload["media"] = media
    if subject is not None:
        payload["subject"] = subject
    if buttons:
        payload["buttons"] = [_button(b) for b in buttons]
    if fields:
        payload["fields"] = {str(k): str(v) for k, v in fields.items() if v is not None}
    values = dict(
        recipient_id=recipient_id,
        destination=destination,
        kind=kind,
        payload=payload,
        priority=priority,
        idempotency_key=idempotency_key,
        allow_fallback=allow_fallback,
        channel_chain=",".join(chain),
        channel_index=0,
        channel=chain[0],
        status=NotificationStatus.PENDING.value,
        attempts=0,
        channel_attempts=0,
        parts_sent=0,
        next_attempt_at=now + delay,
        created_at=now,
        updated_at=now,
    )
    new_id = await session.scalar(_INSERT[session.bind.dialect.name], values)
    if new_id is None:
        existing = await session.scalar(
            select(Notification.id).where(Notification.idempotency_key == idempotency_key)
        )
        assert existing is not None  # the conflict says it exists
        return Enqueued(existing, created=False)
    await transitions.wake(session)
    return Enqueued(new_id, created=True)


def _button(button: dict[str, Any]) -> dict[str, Any]:
    try:
        text = str(button["text"])
        action = Action.from_payload(button)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidNotification(f"a button must be an Action's payload: {button!r}") from exc
    if not text:
        raise InvalidNotification("a button needs a text")
    return action.as_payload(text)


async def _get(session: AsyncSession, notification_id: int) -> Notification:
    row = await session.get(Notification, notification_id, with_for_update=True)
    if row is None:
        raise NotificationNotFound(notification_id)
    return row


async def cancel(
    session: AsyncSession, notification_id: int, *, now: datetime, actor_id: int | None = None
) -> bool:
    """Cancel a notification not yet sent; False if it was already sent, failed or cancelled."""
    row = await _get(session, notification_id)
    if row.status not in (NotificationStatus.PENDING, NotificationStatus.SENDING):
        return False
    _transition(session, row, NotificationStatus.CANCELLED, now=now, actor_id=actor_id)
    row.lease_until = row.lease_owner = None
    return True


async def retry(
    session: AsyncSession, notification_id: int, *, now: datetime, actor_id: int | None = None,
    reason: str | None = None,
) -> bool:
    """Send a dead letter again, from the first channel, with fresh budgets."""
    row = await _get(session, notification_id)
    if row.status != NotificationStatus.FAILED:
        return False
    await transitions.apply(session, row, transitions.restart(now), now=now)
    audit.record(
        session, operation="notification.retry", entity_type="notification",
        entity_id=row.id, before={"status": "failed"}, after={"status": "pending"},
        actor_id=actor_id, at=now, detail=reason,
    )
    return True


async def retry_all_failed(
    session: AsyncSession,
    *,
    now: datetime,
    kind: str | None = None,
    channel: str | None = None,
    actor_id: int | None = None,
    limit: int = 10_000,
    failure_class: str | None = None,
    reason: str | None = None,
) -> int:
    """Retry every dead letter matching the filter; returns how many."""
    query = select(Notification).where(Notification.status == NotificationStatus.FAILED)
    if kind is not None:
        query = query.where(Notification.kind == kind)
    if channel is not None:
        query = query.where(Notification.channel == channel)
    if failure_class is not None:
        query = query.where(Notification.last_error_class == failure_class)
    rows = (await session.scalars(query.limit(limit).with_for_update())).all()
    for row in rows:
        await transitions.apply(session, row, transitions.restart(now), now=now)
    if rows:
        audit.record(
            session, operation="notification.retry_all", entity_type="notification",
            entity_id="*", after={"count": len(rows), "kind": kind, "channel": channel,
                                  **({"failure_class": failure_class} if failure_class else {})},
            actor_id=actor_id, at=now, detail=reason,
        )
    return len(rows)


async def archive(
    session: AsyncSession, notification_id: int, *, now: datetime, actor_id: int | None = None,
    reason: str | None = None,
) -> bool:
    row = await _get(session, notification_id)
    if row.status not in (NotificationStatus.FAILED, NotificationStatus.CANCELLED):
        return False
    _transition(session, row, NotificationStatus.ARCHIVED, now=now, actor_id=actor_id,
                detail=reason)
    return True


async def archive_dead_letters(
    session: AsyncSession, *, now: datetime, older_than: timedelta
) -> int:
    """Archive dead letters that failed more than `older_than` ago (the daily sweep)."""
    result = await session.execute(
        update(Notification)
        .where(
            Notification.status == NotificationStatus.FAILED,
            Notification.failed_at < now - older_than,
        )
        .values(status=NotificationStatus.ARCHIVED.value, updated_at=now)
    )
    return result.rowcount or 0


def _transition(
    session: AsyncSession,
    row: Notification,
    status: NotificationStatus,
    *,
    now: datetime,
    actor_id: int | None,
    detail: str | None = None,
) -> None:
    before = row.status
    row.status = status.value
    row.updated_at = now
    audit.record(
        session, operation=f"notification.{status.value}", entity_type="notification",
        entity_id=row.id, before={"status": before}, after={"status": status.value},
        actor_id=actor_id, at=now, detail=detail,
    )


async def release_expired_leases(session: AsyncSession, *, now: datetime) -> int:
    """Rows whose dispatcher died mid-send are due again (lease rescue)."""
    result = await session.execute(
        update(Notification)
        .where(Notification.status == NotificationStatus.SENDING, Notification.lease_until < now)
        .values(
            status=NotificationStatus.PENDING.value,
            lease_until=None,
            lease_owner=None,
            next_attempt_at=now,
            updated_at=now,
        )
    )
    count = result.rowcount or 0
    if count:
        await transitions.wake(session)
    return count


async def set_channel_paused(
    session: AsyncSession, channel: str, *, paused: bool, now: datetime,
    actor_id: int | None = None,
) -> None:
    """Pause a channel (its rows wait, they do not move on) or resume it."""
    if channel not in {c.value for c in ChannelName}:
        raise InvalidNotification(f"unknown channel {channel!r}")
    state = await session.get(ChannelState, channel, with_for_update=True)
    if state is None:
        state = ChannelState(channel=channel, paused=paused, updated_at=now, circuit_trips=0)
        session.add(state)
    state.paused = paused
    state.updated_at = now
    audit.record(
        session, operation="channel.pause" if paused else "channel.resume",
        entity_type="channel", entity_id=channel, after={"paused": paused},
        actor_id=actor_id, at=now,
    )
    session.info[STATES_FLAG] = True
    if not paused:
        await transitions.wake(session)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def health_figures(session: AsyncSession, *, now: datetime) -> dict[str, Any]:
    """What /health shows about delivery, in one statement that reads partial indexes only
    (ix_notifications_due, ix_notifications_failed, ix_manual_tasks_open): its cost follows
    the rows waiting, never the rows kept.

    `due` counts every pending row (those waiting for a retry too); the age is that of the
    oldest one whose time has come.
    """
    # The states are written into the SQL, not bound: a partial index is used only when the
    # query's condition visibly implies the index's, which a parameter does not on PostgreSQL
    # (its generic plans for prepared statements).
    pending = Notification.status == literal_column("'pending'")
    failed = Notification.status == literal_column("'failed'")
    row = (
        await session.execute(
            select(
                select(func.count()).select_from(Notification).where(pending)
                .scalar_subquery().label("due"),
                select(func.min(Notification.next_attempt_at))
                .where(pending, Notification.next_attempt_at <= now)
                .scalar_subquery().label("oldest_due"),
                select(func.count()).select_from(Notification).where(failed)
                .scalar_subquery().label("dead_letters"),
                select(func.count()).select_from(ManualTask)
                .where(ManualTask.status == literal_column("'open'"))
                .scalar_subquery().label("open_manual_tasks"),
            )
        )
    ).one()
    return {
        "due": row.due or 0,
        "oldest_due_age_seconds": (now - row.oldest_due).total_seconds() if row.oldest_due else 0.0,
        "dead_letters": row.dead_letters or 0,
        "open_manual_tasks": row.open_manual_tasks or 0,
    }


async def statistics(session: AsyncSession, *, now: datetime) -> dict[str, Any]:
    """What the admin menus and /metrics show about delivery (/health: `health_figures`)."""
    depth: dict[str, dict[str, int]] = {}
    for status, channel, count in await session.execute(
        select(Notification.status, Notification.channel, func.count())
        .where(Notification.status.in_(["pending", "sending", "failed"]))
        .group_by(Notification.status, Notification.channel)
    ):
        depth.setdefault(status, {})[channel] = count
    oldest_due = await session.scalar(
        select(func.min(Notification.next_attempt_at)).where(
            Notification.status == NotificationStatus.PENDING,
            Notification.next_attempt_at <= now,
        )
    )
    recent = (
        await session.execute(
            select(Notification.created_at, Notification.restarted_at, Notification.sent_at)
            .where(Notification.sent_at >= now - timedelta(hours=1))
            .order_by(Notification.sent_at.desc())
            .limit(5000)
        )
    ).all()
    # A restarted dead letter waited since its restart, not since its creation.
    waits = [(sent - (restarted or created)).total_seconds() for created, restarted, sent in recent]

    async def attempts_since(outcome: str, since: timedelta) -> int:
        return await session.scalar(
            select(func.count()).select_from(DeliveryAttempt).where(
                DeliveryAttempt.outcome == outcome, DeliveryAttempt.at >= now - since
            )
        ) or 0

    failed_since = {
        name: await session.scalar(
            select(func.count()).select_from(Notification).where(
                Notification.status == NotificationStatus.FAILED,
                Notification.failed_at >= now - since,
            )
        ) or 0
        for name, since in (("minute", timedelta(minutes=1)), ("hour", timedelta(hours=1)))
    }
    return {
        "depth": depth,
        "due": sum(depth.get("pending", {}).values()),
        "oldest_due_age_seconds": (now - oldest_due).total_seconds() if oldest_due else 0.0,
        "wait_seconds": {
            "p50": _percentile(waits, 0.50),
            "p95": _percentile(waits, 0.95),
            "p99": _percentile(waits, 0.99),
        },
        "sent_last_minute": await attempts_since("sent", timedelta(minutes=1)),
        "sent_last_hour": await attempts_since("sent", timedelta(hours=1)),
        "failed_last_minute": failed_since["minute"],
        "failed_last_hour": failed_since["hour"],
        "dead_letters": sum(depth.get("failed", {}).values()),
        "open_manual_tasks": await session.scalar(
            select(func.count()).select_from(ManualTask).where(ManualTask.status == "open")
        ) or 0,
    }
