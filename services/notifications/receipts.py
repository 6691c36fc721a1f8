"""Delivery receipts and inbound WhatsApp messages, applied to the outbox and to contacts.

Promises:
- A receipt changes only the notification still on the channel it reports about: it is looked up
  by provider message id and channel, so a receipt for a message that already moved on, a
  duplicated webhook, or a message we never sent changes nothing.
- "delivered" and "read" are timestamps beside the status, each set once; a receipt arriving out
  of order (a "delivered" after "read") changes nothing. "sent", "queued", "accepted" and the
  like are ignored: the dispatcher recorded the hand-over already.
- A failed receipt ("failed" on WhatsApp, "failed"/"undelivered" on Twilio) for a sent message is
  the one way back: it records a failed delivery attempt and takes `transitions.next_channel`:
  the next channel of its chain (pending now, the dispatcher woken after commit) or, when the
  chain is spent or fallback is not allowed, a dead letter (the admins told once per kind, when
  given the alerting service: `dead_letters.alert_admins`). An opt-out code (WhatsApp 131050,
  Twilio 21610) also records the opt-out. A message already delivered or read is never sent
  again because of a late failure.
- A receipt can arrive before its send is recorded: the dispatcher records a batch only once
  every send in it has finished, so the provider's message id is not on the row yet. When the
  receipt's `reference` (what the send carried: WhatsApp's biz_opaque_callback_data, the
  idempotency key; Twilio's StatusCallback `?ref=`, the notification id) names a notification
  still being sent, the receipt is stored (`early_receipts`) and answered as STORED; the record
  applies it through the same path (`apply_stored_receipts`, right after the batch's record),
  and the scheduler's sweep (`sweep_early_receipts`) applies any the record missed and drops,
  counted in the log, the ones that never matched within a bound.
- `keyword` tells STOP (ARRET/ARRÊT) and START in an inbound WhatsApp text; the inbound worker
  (services.whatsapp_inbound) applies them, in the order the customer sent them.

Everything runs in the caller's unit of work; nothing here commits.
"""

from __future__ import annotations

import enum
import logging
import unicodedata
from collections import Counter
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import (
    DeliveryAttempt,
    EarlyReceipt,
    Notification,
    NotificationStatus,
)
from services import contacts
from services.alerts import Alerts
from services.notifications import dead_letters, transitions
from services.notifications.channels.base import ChannelName
from services.notifications.failures import Failure, FailureClass

log = logging.getLogger(__name__)
# A failed delivery receipt is stored as an attempt row with this text: it reports on a try,
# it is not one (services/delivery_stats.py does not count it as a retry).
RECEIPT_TEXT_PREFIX = "delivery receipt: "

# The provider reporting a receipt -> the channel its messages leave by.
PROVIDER_CHANNELS: dict[str, str] = {
    "whatsapp": ChannelName.WHATSAPP.value,
    "twilio": ChannelName.SMS.value,
}

DELIVERED_STATUSES = frozenset({"delivered"})
READ_STATUSES = frozenset({"read"})
# WhatsApp: "failed". Twilio: "failed" (could not be sent) and "undelivered" (the carrier said no).
FAILED_STATUSES = frozenset({"failed", "undelivered"})

STOP_WORDS = frozenset({"stop", "arret", "arrêt"})
START_WORDS = frozenset({"start"})


class ReceiptOutcome(enum.StrEnum):
    UNKNOWN_MESSAGE = "unknown_message"  # no notification on that channel has that message id
    DELIVERED = "delivered"  # delivered_at set
    READ = "read"  # read_at set (and delivered_at when it was missing)
    IGNORED = "ignored"  # nothing to change: a duplicate, out of order, or a status we skip
    FAILED_MOVED_ON = "failed_moved_on"  # pending again, on the next channel
    DEAD_LETTERED = "dead_lettered"  # failed: no channel left, or fallback not allowed
    # The message is still being sent (only knowable with a `reference`): the receipt is
    # stored, and applied once the dispatcher records the send.
    STORED = "stored"


def _no_code_failure(provider: str, status: str) -> Failure:
    return Failure(
        kind=FailureClass.UNKNOWN,
        provider=provider,
        code=status,
        text=f"the provider reported the message {status}, without an error code",
    )


async def apply_receipt(
    session: AsyncSession,
    *,
    provider: str,
    provider_message_id: str,
    status: str,
    at: datetime,
    failure: Failure | None,
    now: datetime,
    reference: str | None = None,
    alerts: Alerts | None = None,
) -> ReceiptOutcome:
    """Apply one provider receipt (see the module docstring); returns what happened.

    `at` is when the provider says it happened (clamped to `now`). `failure` is the classified
    error of a failed receipt (classify_whatsapp / classify_twilio), None when the provider gave
    no code. `reference` is what the send carried to tie its receipts to it (WhatsApp's
    biz_opaque_callback_data: the idempotency key; Twilio's StatusCallback `?ref=`: the
    notification id), used only when no row has the message id yet: a receipt for a
    notification still being sent is stored (STORED) and applied once its send is recorded.
    `alerts`, when given, tells the admins about a dead letter.
    """
    channel = PROVIDER_CHANNELS.get(provider)
    if channel is None:
        raise ValueError(f"unknown receipt provider {provider!r}")
    status = status.strip().lower()
    if status not in DELIVERED_STATUSES | READ_STATUSES | FAILED_STATUSES:
        return ReceiptOutcome.IGNORED
    if not provider_message_id:
        return ReceiptOutcome.UNKNOWN_MESSAGE
    at = min(at, now)
    row = await _by_message_id(session, provider_message_id, channel)
    if row is None:
        if not reference:
            return ReceiptOutcome.UNKNOWN_MESSAGE
        referenced = await _referenced(session, provider, reference)
        if referenced is None:
            return ReceiptOutcome.UNKNOWN_MESSAGE
        if referenced.status == NotificationStatus.SENDING:
            if len(provider_message_id) > _MESSAGE_ID_MAX:
                return ReceiptOutcome.UNKNOWN_MESSAGE  # could never match a stored row
            _store(session, referenced.id, provider=provider, reference=reference,
                   provider_message_id=provider_message_id, status=status, at=at,
                   failure=failure, now=now)
            return ReceiptOutcome.STORED
        # Recorded between the two looks (the lock waited for that record): look again.
        row = await _by_message_id(session, provider_message_id, channel)
        if row is None:
            return ReceiptOutcome.UNKNOWN_MESSAGE

    if status in READ_STATUSES:
        if row.read_at is not None:
            return ReceiptOutcome.IGNORED
        row.read_at = at
        if row.delivered_at is None:
            row.delivered_at = at  # read implies delivered; Meta skips "delivered" then
        row.updated_at = now
        return ReceiptOutcome.READ
    if status in DELIVERED_STATUSES:
        if row.delivered_at is not None:
            return ReceiptOutcome.IGNORED
        row.delivered_at = at
        row.updated_at = now
        return ReceiptOutcome.DELIVERED

    # A failed receipt.
    if row.status != NotificationStatus.SENT:
        return ReceiptOutcome.IGNORED  # dead-lettered, cancelled or archived since
    if row.delivered_at is not None or row.read_at is not None:
        # Several devices: one failed, another got it. Sending again would be a duplicate.
        log.info("notification %s: failed receipt after it was delivered; kept as delivered",
                 row.id)
        return ReceiptOutcome.IGNORED
    failure = failure or _no_code_failure(provider, status)
    return await _fail(session, row, failure, now=now, alerts=alerts)


_MESSAGE_ID_MAX = 128  # notifications.provider_message_id
_REFERENCE_MAX = 200  # notifications.idempotency_key


async def _by_message_id(
    session: AsyncSession, provider_message_id: str, channel: str
) -> Notification | None:
    return await session.scalar(
        select(Notification)
        .where(
            Notification.provider_message_id == provider_message_id,
            Notification.channel == channel,
        )
        .order_by(Notification.id.desc())
        .limit(1)
        .with_for_update()
    )


async def _referenced(session: AsyncSession, provider: str, reference: str) -> Notification | None:
    """The notification a receipt's reference names, locked: WhatsApp's is the idempotency key,
    Twilio's the notification id.

    Locked, so the dispatcher's record of that row waits for this unit of work (PostgreSQL), or
    this one sees the row as the record left it: a receipt stored here is always seen by the
    record's look for stored receipts, and one arriving after the record finds the row. Its
    `channel` is not checked: while a row is leased it still names the channel it was claimed
    on, which may be an earlier one the dispatcher has since moved past.
    """
    if len(reference) > _REFERENCE_MAX:
        return None
    if provider == "twilio":
        if not reference.isascii() or not reference.isdigit() or len(reference) > 18:
            return None
        where = Notification.id == int(reference)
    else:
        where = Notification.idempotency_key == reference
    return await session.scalar(select(Notification).where(where).with_for_update())


def _store(
    session: AsyncSession, notification_id: int, *, provider: str, reference: str,
    provider_message_id: str, status: str, at: datetime, failure: Failure | None, now: datetime,
) -> None:
    session.add(
        EarlyReceipt(
            notification_id=notification_id,
            provider=provider,
            reference=reference,
            provider_message_id=provider_message_id,
            status=status[:16],
            error_class=failure.kind.value if failure else None,
            error_code=failure.code[:32] if failure else None,
            error_text=failure.text if failure else None,
            opt_out=bool(failure and failure.opt_out),
            at=at,
            received_at=now,
        )
    )
    log.info("notification %s: %s receipt %r arrived before its send was recorded; stored",
             notification_id, provider, status)


def _stored_failure(stored: EarlyReceipt) -> Failure | None:
    if stored.error_class is None:
        return None
    try:
        kind = FailureClass(stored.error_class)
    except ValueError:
        kind = FailureClass.UNKNOWN
    return Failure(kind=kind, provider=stored.provider, code=stored.error_code or "",
                   text=stored.error_text or "", opt_out=stored.opt_out)


async def apply_stored_receipts(
    session: AsyncSession,
    notification_ids: Collection[int],
    *,
    now: datetime,
    alerts: Alerts | None = None,
) -> Counter[str]:
    """Apply the stored early receipts of these notifications whose send is recorded now (no
    longer `sending`), through `apply_receipt`, in the order they arrived, and delete them.
    One that still matches nothing is dropped (logged). Receipts of a notification still
    being sent are kept. Returns the count of each outcome."""
    outcomes: Counter[str] = Counter()
    if not notification_ids:
        return outcomes
    rows = (
        await session.execute(
            select(EarlyReceipt, Notification.status)
            .join(Notification, Notification.id == EarlyReceipt.notification_id)
            .where(EarlyReceipt.notification_id.in_(list(notification_ids)))
            .order_by(EarlyReceipt.id)
            .with_for_update(of=EarlyReceipt, skip_locked=True)
        )
    ).all()
    for stored, status in rows:
        if status == NotificationStatus.SENDING:
            continue
        await session.delete(stored)
        outcome = await apply_receipt(
            session, provider=stored.provider, provider_message_id=stored.provider_message_id,
            status=stored.status, at=stored.at, failure=_stored_failure(stored), now=now,
            alerts=alerts,
        )
        outcomes[outcome.value] += 1
        if outcome is ReceiptOutcome.UNKNOWN_MESSAGE:
            log.warning("notification %s: stored %s receipt %r matches no recorded message; "
                        "dropped", stored.notification_id, stored.provider, stored.status)
    return outcomes


async def has_stored_receipts(session: AsyncSession, notification_ids: Collection[int]) -> bool:
    """Whether any early receipt is stored for these notifications (one indexed read)."""
    if not notification_ids:
        return False
    found = await session.scalar(
        select(EarlyReceipt.id)
        .where(EarlyReceipt.notification_id.in_(list(notification_ids)))
        .limit(1)
    )
    return found is not None


# Stored receipts applied per sweep run at most; the rest wait for the next run.
SWEEP_LIMIT = 1000


async def sweep_early_receipts(
    session: AsyncSession,
    *,
    now: datetime,
    older_than: timedelta,
    alerts: Alerts | None = None,
) -> tuple[int, int]:
    """Apply stored receipts whose send has been recorded since (the record's own look failed
    or its lease was lost), then drop, and count in the log, those received more than
    `older_than` ago that still match nothing. Returns (applied, dropped)."""
    recorded = (
        await session.scalars(
            select(EarlyReceipt.notification_id)
            .join(Notification, Notification.id == EarlyReceipt.notification_id)
            .where(Notification.status != NotificationStatus.SENDING.value)
            .order_by(EarlyReceipt.id)
            .limit(SWEEP_LIMIT)
        )
    ).all()
    applied = await apply_stored_receipts(session, set(recorded), now=now, alerts=alerts)
    stale = EarlyReceipt.received_at < now - older_than
    dropped = await session.scalar(select(func.count()).select_from(EarlyReceipt).where(stale))
    if dropped:
        await session.execute(delete(EarlyReceipt).where(stale))
        log.warning("dropped %d early receipt(s) that matched no recorded send within %s",
                    dropped, older_than)
    unmatched = applied[ReceiptOutcome.UNKNOWN_MESSAGE.value]
    return sum(applied.values()) - unmatched, int(dropped or 0) + unmatched


async def _fail(
    session: AsyncSession,
    row: Notification,
    failure: Failure,
    *,
    now: datetime,
    alerts: Alerts | None,
) -> ReceiptOutcome:
    failed_channel = row.channel
    session.add(
        DeliveryAttempt(
            notification_id=row.id,
            channel=failed_channel,
            outcome="failed",
            error_class=failure.kind.value,
            error_code=failure.code[:32],
            error_text=f"{RECEIPT_TEXT_PREFIX}{failure.text}"[:500],
            at=now,
        )
    )
    row.last_error_class = failure.kind.value
    row.last_error_code = failure.code[:32]
    if failure.opt_out and failed_channel in contacts.CHOOSABLE_CHANNELS:
        reason = f"{failure.provider} {failure.code} (delivery receipt)"
        if await contacts.record_opt_out(
            session, user_id=row.recipient_id, channel=failed_channel, now=now, reason=reason
        ):
            log.info("user %s opted out of %s (%s)", row.recipient_id, failed_channel, reason)

    row.last_error_text = failure.text
    step = transitions.next_channel(
        row.channel_index, len(row.chain), allow_fallback=row.allow_fallback, after=failure,
        now=now,
    )
    await transitions.apply(session, row, step, now=now)
    if step.status is transitions.PENDING:
        log.info("notification %s failed on %s after it was sent (%s %s): moved on to %s",
                 row.id, failed_channel, failure.provider, failure.code, row.channel)
        return ReceiptOutcome.FAILED_MOVED_ON
    await dead_letters.alert_admins(
        session, alerts, notification_id=row.id, kind=row.kind, recipient_id=row.recipient_id,
        reason=step.reason or "?", now=now,
    )
    return ReceiptOutcome.DEAD_LETTERED


def keyword(text: str | None) -> str | None:
    """ "stop" or "start" when an inbound text is one of the opt-out / opt-in words, else None."""
    if not text:
        return None
    word = unicodedata.normalize("NFC", text).strip().strip(".!").strip().casefold()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    return None
