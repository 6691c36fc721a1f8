"""Receipts that arrive before their send is recorded are not lost, on both engines (SQLite, and
PostgreSQL when TEST_DATABASE_URL is set): the dispatcher records a batch only once every send
in it has finished, so a Twilio or WhatsApp receipt for one of its messages may find no row with
its message id yet. Its reference (Twilio: `?ref=<id>` in the signed StatusCallback URL;
WhatsApp: biz_opaque_callback_data, the idempotency key) names the notification being sent: the
receipt is stored, answered 200, and applied when the batch is recorded; one that never matches
is dropped by the sweep after a bound, and counted."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from multidict import MultiDict
from sqlalchemy import func, select

from bot.webhooks import twilio_signature
from database.engine import Database
from database.models import DeliveryAttempt, EarlyReceipt, Notification
from services.alerts import Alerts
from services.clock import FakeClock
from services.notifications import outbox
from services.notifications.batches import Job, batches_for
from services.notifications.channels.base import SendResult
from services.notifications.config import DispatcherConfig
from services.notifications.delivery import Outcome
from services.notifications.receipts import ReceiptOutcome, apply_receipt
from services.notifications.recording import Recorder
from services.scheduler import Scheduler, register_core_jobs
from tests.integration.webhook_app import (
    AUTH_TOKEN,
    TWILIO_PATH,
    Edge,
    status_entry,
    whatsapp_body,
)
from tests.support import make_user

PHONE = "+33612345678"
TOKEN = "worker-1:batch-1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # the same instant as the webhook app's own FakeClock


def _alerts() -> Alerts:
    return Alerts(admin_telegram_ids=(101,), window=timedelta(hours=1))


async def twilio_callback(edge: Edge, fields: dict[str, str], *, ref: str | None,
                          signed_ref: str | None = None) -> int:
    """A status callback as Twilio sends it to the StatusCallback URL `...?ref=<ref>`, signed
    over that URL (or over `?ref=<signed_ref>`, to forge one)."""
    query = "" if ref is None else f"?ref={ref}"
    signed_query = query if signed_ref is None else f"?ref={signed_ref}"
    signature = twilio_signature(AUTH_TOKEN, edge.base_url() + TWILIO_PATH + signed_query,
                                 MultiDict(fields))
    async with edge.client.post(
        TWILIO_PATH + query, data=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": signature},
    ) as response:
        await response.read()
        return response.status


async def claimed(db: Database, clock: FakeClock, *notifications: tuple[str, list[str]]
                  ) -> dict[str, Job]:
    """Enqueue (key, channels) notifications for one person and claim them as one batch: they
    are `sending`, as while the dispatcher sends them."""
    user = await make_user(db, clock, telegram_id=4242, phone=PHONE, email="ann@example.org")
    for key, channels in notifications:
        await db.run(lambda s, key=key, channels=channels: outbox.enqueue(
            s, recipient_id=user, kind="request.update", idempotency_key=key, text="Hello",
            now=clock.now(), channels=channels,
        ))
    batch = await batches_for(db.dialect).claim(
        db, now=clock.now(), owner=TOKEN, lease_until=clock.now() + timedelta(minutes=1),
        limit=10, read_states=False,
    )
    return {job.idempotency_key: job for job in batch.jobs}


def sent(job: Job, message_id: str, clock: FakeClock) -> Outcome:
    """What delivering `job` on its first channel came to: sent, with the provider's id."""
    return Outcome(job=job, status="sent", channel_index=0, channel_attempts=1, parts_sent=1,
                   tries=1, result=SendResult(message_id, sender="s", address="a"),
                   sent_at=clock.now())


async def record(db: Database, clock: FakeClock, outcomes: list[Outcome]) -> None:
    recorder = Recorder(db, batches_for(db.dialect), clock, _alerts(), DispatcherConfig())
    await recorder.record(outcomes, TOKEN)


async def row(db: Database, notification_id: int) -> Notification:
    async with db.transaction() as session:
        return await session.get_one(Notification, notification_id)


async def stored(db: Database) -> int:
    async with db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(EarlyReceipt))


async def attempts(db: Database, notification_id: int) -> list[tuple[str, str, str | None]]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.notification_id == notification_id)
            .order_by(DeliveryAttempt.id)
        )
        return [(a.channel, a.outcome, a.error_code) for a in rows]


# ------------------------------------------------------------------------------------ Twilio


async def test_an_undelivered_sms_reported_while_its_batch_is_sent_moves_on_to_email(
    edge: Edge, clock: FakeClock
) -> None:
    # The reproduction: one SMS batched beside a slow Telegram send; its "undelivered" callback
    # comes back before the batch is recorded.
    jobs = await claimed(edge.db, clock, ("sms:1", ["sms", "email"]), ("tg:1", ["telegram"]))
    sms, telegram = jobs["sms:1"], jobs["tg:1"]
    undelivered = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "undelivered",
                   "ErrorCode": "30005"}

    assert await twilio_callback(edge, undelivered, ref=str(sms.id)) == 200
    assert (await row(edge.db, sms.id)).status == "sending"
    assert await stored(edge.db) == 1

    clock.advance(seconds=2)
    await record(edge.db, clock, [sent(sms, "SM" + "1" * 32, clock),
                                  sent(telegram, "77", clock)])

    moved = await row(edge.db, sms.id)
    assert (moved.status, moved.channel, moved.channel_index) == ("pending", "email", 1)
    assert moved.last_error_code == "30005"
    assert await attempts(edge.db, sms.id) == [("sms", "failed", "30005")]
    assert (await row(edge.db, telegram.id)).status == "sent"
    assert await stored(edge.db) == 0


async def test_an_early_delivered_sms_is_not_lost(edge: Edge, clock: FakeClock) -> None:
    jobs = await claimed(edge.db, clock, ("sms:2", ["sms", "email"]))
    sms = jobs["sms:2"]
    delivered = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "delivered"}

    assert await twilio_callback(edge, delivered, ref=str(sms.id)) == 200

    clock.advance(seconds=2)
    await record(edge.db, clock, [sent(sms, "SM" + "2" * 32, clock)])

    after = await row(edge.db, sms.id)
    assert (after.status, after.channel) == ("sent", "sms")
    assert after.delivered_at is not None
    assert await stored(edge.db) == 0


async def test_the_reference_is_signed_with_the_url(edge: Edge, clock: FakeClock) -> None:
    jobs = await claimed(edge.db, clock, ("sms:3", ["sms", "email"]))
    sms = jobs["sms:3"]
    delivered = {"MessageSid": "SM" + "3" * 32, "MessageStatus": "delivered"}

    # A reference changed after Twilio signed the URL is refused; nothing is stored.
    assert await twilio_callback(edge, delivered, ref=str(sms.id), signed_ref="999") == 403
    # Without a reference, or with one naming no notification being sent, nothing is kept.
    assert await twilio_callback(edge, delivered, ref=None) == 200
    assert await twilio_callback(edge, delivered, ref="999999") == 200
    assert await twilio_callback(edge, delivered, ref="x1") == 200
    assert await stored(edge.db) == 0


# ---------------------------------------------------------------------------------- WhatsApp


async def test_a_failed_whatsapp_status_for_a_row_in_flight_is_answered_200_and_applied(
    edge: Edge, clock: FakeClock
) -> None:
    jobs = await claimed(edge.db, clock, ("wa:1", ["whatsapp", "sms"]))
    wa = jobs["wa:1"]
    failed = status_entry("wamid.EARLY", "failed") | {
        "biz_opaque_callback_data": "wa:1",
        "errors": [{"code": 131026, "title": "Message undeliverable"}],
    }

    # Today a 503: Meta would send the whole batch again, messages included.
    assert await edge.whatsapp(whatsapp_body([failed])) == 200
    assert (await row(edge.db, wa.id)).status == "sending"
    assert await stored(edge.db) == 1

    clock.advance(seconds=2)
    await record(edge.db, clock, [sent(wa, "wamid.EARLY", clock)])

    moved = await row(edge.db, wa.id)
    assert (moved.status, moved.channel, moved.channel_index) == ("pending", "sms", 1)
    assert await attempts(edge.db, wa.id) == [("whatsapp", "failed", "131026")]
    assert await stored(edge.db) == 0


# ------------------------------------------------------------------------------------- sweep


def _scheduler(db: Database, clock: FakeClock) -> Scheduler:
    scheduler = Scheduler(db, clock, _alerts(), owner="host-a:1")
    register_core_jobs(scheduler, db, dead_letter_retention=timedelta(days=30))
    return scheduler


async def test_a_stored_receipt_that_never_matches_is_dropped_after_the_bound_and_counted(
    edge: Edge, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = await claimed(edge.db, clock, ("wa:2", ["whatsapp", "sms"]))
    early = status_entry("wamid.NEVER", "delivered") | {"biz_opaque_callback_data": "wa:2"}
    assert await edge.whatsapp(whatsapp_body([early])) == 200
    assert await stored(edge.db) == 1
    scheduler = _scheduler(edge.db, clock)

    # Still within the bound, and still being sent: kept.
    clock.advance(minutes=30)
    run = await scheduler.run_job("early_receipts")
    assert run is not None and run.summary == "applied 0, dropped 0"
    assert await stored(edge.db) == 1

    clock.advance(minutes=31)
    with caplog.at_level(logging.WARNING, logger="services.notifications.receipts"):
        run = await scheduler.run_job("early_receipts")
    assert run is not None and run.outcome == "ok" and run.summary == "applied 0, dropped 1"
    assert await stored(edge.db) == 0
    assert "dropped 1 early receipt(s)" in caplog.text
    assert (await row(edge.db, jobs["wa:2"].id)).delivered_at is None


async def test_the_sweep_applies_a_stored_receipt_whose_record_missed_it(
    edge: Edge, clock: FakeClock
) -> None:
    jobs = await claimed(edge.db, clock, ("sms:4", ["sms", "email"]))
    sms = jobs["sms:4"]
    undelivered = {"MessageSid": "SM" + "4" * 32, "MessageStatus": "undelivered",
                   "ErrorCode": "30005"}
    assert await twilio_callback(edge, undelivered, ref=str(sms.id)) == 200

    # Recorded without the look for stored receipts (as when that look failed).
    clock.advance(seconds=2)
    recorder = Recorder(edge.db, batches_for(edge.db.dialect), clock, _alerts(),
                        DispatcherConfig())
    outcome = sent(sms, "SM" + "4" * 32, clock)
    written = await batches_for(edge.db.dialect).record(
        edge.db, now=clock.now(), owner=TOKEN, outcomes=[recorder._row(outcome, clock.now())],
        attempts=[],
    )
    assert written == 1 and (await row(edge.db, sms.id)).status == "sent"

    clock.advance(minutes=5)
    run = await _scheduler(edge.db, clock).run_job("early_receipts")
    assert run is not None and run.summary == "applied 1, dropped 0"
    moved = await row(edge.db, sms.id)
    assert (moved.status, moved.channel) == ("pending", "email")
    assert await stored(edge.db) == 0


# ------------------------------------------------------------------------------------- races


async def test_a_receipt_racing_the_record_is_applied_not_stored_and_forgotten(
    db: Database, clock: FakeClock
) -> None:
    # The receipt arrives while the record's transaction is open: it waits on the row's lock
    # (PostgreSQL) or for the writer's turn (SQLite), then finds the recorded message.
    jobs = await claimed(db, clock, ("sms:5", ["sms", "email"]))
    sms = jobs["sms:5"]
    recorder = Recorder(db, batches_for(db.dialect), clock, _alerts(), DispatcherConfig())
    outcome_row = recorder._row(sent(sms, "SM5", clock), clock.now())
    receipt: asyncio.Task[ReceiptOutcome] | None = None

    async with db.transaction() as session:
        assert await batches_for(db.dialect).record_in(
            session, now=clock.now(), owner=TOKEN, outcomes=[outcome_row], attempts=[]
        ) == 1
        receipt = asyncio.create_task(db.run(lambda s: apply_receipt(
            s, provider="twilio", provider_message_id="SM5", status="delivered",
            at=clock.now(), failure=None, now=clock.now(), reference=str(sms.id),
        )))
        await asyncio.sleep(0.3)
        assert not receipt.done()

    assert await receipt == ReceiptOutcome.DELIVERED
    assert (await row(db, sms.id)).delivered_at is not None
    assert await stored(db) == 0
