"""Paging beyond Telegram, on both engines: high and critical alerts also reach ALERT_WEBHOOK_URL
(a local aiohttp receiver here) as Slack-compatible JSON, through the outbox addressed to the
destination "webhook:alerts": retried, paced, dead-lettered, and never alerted about."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select

from database.engine import Database
from database.models import AlertRecord, DeliveryAttempt, Notification
from services.alerts import ALERT_KIND, Alerts, Severity
from services.clock import FakeClock
from services.notifications import outbox
from services.notifications.channels.base import ChannelName
from services.notifications.channels.webhook import WebhookChannel
from services.notifications.destinations import ALERT_WEBHOOK
from services.notifications.dispatcher import Dispatcher, DispatcherConfig
from services.notifications.pacing import MemoryRateLimiter
from tests.support import ScriptedChannel, make_user

ADMIN_TG = 9000
TG = ChannelName.TELEGRAM
WEBHOOK = ChannelName.WEBHOOK


@dataclass
class Receiver:
    """An incoming webhook: records each JSON body; answers the scripted statuses first."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        status, text = self.script.pop(0) if self.script else (200, "ok")
        return web.Response(status=status, text=text)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    # The path is the secret part of a real incoming webhook's URL.
    app.router.add_post("/services/T000/B000/s3cretHookPath", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/services/T000/B000/s3cretHookPath"
    yield hook
    await runner.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class Paging:
    alerts: Alerts
    dispatcher: Dispatcher
    telegram: ScriptedChannel
    webhook: WebhookChannel


@pytest.fixture
async def paging(
    db: Database, clock: FakeClock, receiver: Receiver
) -> AsyncIterator[Paging]:
    alerts = Alerts(admin_telegram_ids=[ADMIN_TG], window=timedelta(hours=1), webhook=True)
    telegram = ScriptedChannel(TG, reach="telegram_id")
    webhook = WebhookChannel(
        {"alerts": receiver.url}, limiter=MemoryRateLimiter(clock), rate_per_second=1.0,
        max_pacing_wait=0,  # a send that would wait is put off instead: no sleeping here
    )
    config = DispatcherConfig(send_retry_wait=0, send_tries=1, workers=1, batch_size=100)
    dispatcher = Dispatcher(
        db, {TG: telegram, WEBHOOK: webhook}, clock, alerts, config, owner="test-dispatcher"
    )
    await make_user(db, clock, telegram_id=ADMIN_TG, roles="requester,admin")
    yield Paging(alerts, dispatcher, telegram, webhook)
    await webhook.close()


async def _alert(db: Database, alerts: Alerts, clock: FakeClock, key: str, severity: Severity,
                 **extra: Any) -> bool:
    return await db.run(lambda s: alerts.alert(
        s, key=key, severity=severity, text=f"something broke ({key})", now=clock.now(), **extra
    ))


async def _webhook_rows(db: Database) -> list[Notification]:
    async with db.transaction() as session:
        return list(await session.scalars(
            select(Notification).where(Notification.destination == ALERT_WEBHOOK)
            .order_by(Notification.id)
        ))


async def test_a_high_alert_is_posted_as_slack_json_with_its_fields(
    db: Database, clock: FakeClock, receiver: Receiver, paging: Paging
) -> None:
    assert await _alert(db, paging.alerts, clock, "errors:abc", Severity.HIGH,
                        support_code="K7M2Q9XA", link="https://desk.example/e/K7M2Q9XA")
    await paging.dispatcher.run_once()

    [body] = receiver.bodies
    assert body["text"] == "🔴 HIGH: something broke (errors:abc)"
    assert (body["severity"], body["key"], body["support_code"], body["link"]) == (
        "high", "errors:abc", "K7M2Q9XA", "https://desk.example/e/K7M2Q9XA"
    )
    [attachment] = body["attachments"]
    assert [(f["title"], f["value"]) for f in attachment["fields"]] == [
        ("Severity", "high"), ("Key", "errors:abc"), ("Support code", "K7M2Q9XA"),
        ("Link", "https://desk.example/e/K7M2Q9XA"),
    ]
    # The admin on Telegram too, as always.
    assert paging.telegram.texts() == ["🔴 HIGH: something broke (errors:abc)"]

    [row] = await _webhook_rows(db)
    assert (row.recipient_id, row.kind, row.status, row.channel) == (
        None, ALERT_KIND, "sent", "webhook"
    )
    async with db.transaction() as session:
        [attempt] = (await session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.notification_id == row.id))).all()
    # The URL is a secret: the attempt records the destination's name only.
    assert (attempt.outcome, attempt.address) == ("sent", ALERT_WEBHOOK)


async def test_warning_and_info_alerts_stay_on_telegram(
    db: Database, clock: FakeClock, receiver: Receiver, paging: Paging
) -> None:
    await _alert(db, paging.alerts, clock, "w", Severity.WARNING)
    await _alert(db, paging.alerts, clock, "i", Severity.INFO)
    await paging.dispatcher.run_once()
    assert receiver.bodies == [] and await _webhook_rows(db) == []
    assert len(paging.telegram.sent) == 2


async def test_a_critical_alert_pages_even_when_no_admin_is_configured(
    db: Database, clock: FakeClock, receiver: Receiver, paging: Paging
) -> None:
    alone = Alerts(admin_telegram_ids=[], window=timedelta(hours=1), webhook=True)
    assert await _alert(db, alone, clock, "db", Severity.CRITICAL)
    await paging.dispatcher.run_once()
    assert [b["severity"] for b in receiver.bodies] == ["critical"]


async def test_without_a_webhook_url_nothing_is_paged(
    db: Database, clock: FakeClock, receiver: Receiver, paging: Paging
) -> None:
    telegram_only = Alerts(admin_telegram_ids=[ADMIN_TG], window=timedelta(hours=1))
    await _alert(db, telegram_only, clock, "k", Severity.CRITICAL)
    await paging.dispatcher.run_once()
    assert receiver.bodies == [] and await _webhook_rows(db) == []


async def test_a_failing_webhook_is_retried_on_the_schedule_then_delivered(
    db: Database, clock: FakeClock, receiver: Receiver, paging: Paging
) -> None:
    receiver.script = [(503, "rollup_error")]
    await _alert(db, paging.alerts, clock, "k", Severity.HIGH)
    await paging.dispatcher.run_once()
    [row] = await _webhook_rows(db)
    assert (row.status, row.last_error_class, row.last_error_code) == (
        "pending", "transient", "503"
    )
    clock.advance(60)
    await paging.dispatcher.run_once()
    [row] = await _webhook_rows(db)
    assert row.status == "sent" and len(receiver.bodies) == 2


async def test_the_webhook_is_paced_and_a_429_waits_as_told(
    db: Database, clock: FakeClock, receiver: Receiver, paging: Paging
) -> None:
    # Two alerts in the same second: one a second is the webhook's rate.
    await _alert(db, paging.alerts, clock, "a", Severity.HIGH)
    await _alert(db, paging.alerts, clock, "b", Severity.HIGH)
    await paging.dispatcher.run_once()
    assert len(receiver.bodies) == 1
    waiting = [r for r in await _webhook_rows(db) if r.status == "pending"]
    assert [r.last_error_class for r in waiting] == ["rate_limited"]
    clock.advance(1)
    receiver.script = [(429, "rate_limited")]
    await paging.dispatcher.run_once()
    [row] = [r for r in await _webhook_rows(db) if r.status == "pending"]
    assert (row.last_error_class, row.last_error_code) == ("rate_limited", "429")
    clock.advance(2)
    await paging.dispatcher.run_once()
    assert {r.status for r in await _webhook_rows(db)} == {"sent"}
    assert len(receiver.bodies) == 3


async def test_a_dead_webhook_copy_is_logged_loudly_and_never_alerted_about(
    db: Database, clock: FakeClock, receiver: Receiver, paging: Paging,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver.script = [(404, "no_service")]
    await _alert(db, paging.alerts, clock, "k", Severity.CRITICAL)
    with caplog.at_level(logging.ERROR):
        await paging.dispatcher.run_once()
    [row] = await _webhook_rows(db)
    assert (row.status, row.last_error_code) == ("failed", "404")
    assert any(
        "ALERT UNDELIVERABLE to destination webhook:alerts" in r.getMessage()
        for r in caplog.records
    )
    async with db.transaction() as session:
        alerts = await session.scalar(select(func.count()).select_from(AlertRecord))
        rows = await session.scalar(select(func.count()).select_from(Notification))
    assert alerts == 1  # the original alert only: nothing about the webhook's failure
    assert rows == 2  # the admin's copy and the webhook's
    # Its URL (a secret) is in no stored text.
    async with db.transaction() as session:
        texts = [t for t in await session.scalars(select(DeliveryAttempt.error_text)) if t]
    assert texts and not any("s3cretHookPath" in t for t in texts)


async def test_enqueue_takes_exactly_one_addressee_and_known_destinations_only(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock)
    for addressee in ({}, {"recipient_id": user, "destination": ALERT_WEBHOOK},
                      {"destination": "pigeon:home"}, {"destination": "webhook:"}):
        with pytest.raises(outbox.InvalidNotification):
            await db.run(lambda s, a=addressee: outbox.enqueue(
                s, kind="x", idempotency_key="k", text="t", now=clock.now(), **a))


async def test_the_migration_keeps_every_notification_and_its_attempts_both_ways(
    db: Database, clock: FakeClock
) -> None:
    """SQLite cannot rebuild notifications without cascading into its attempts (foreign keys
    are on during migrations): 0006 edits the table's definition instead. Nothing is lost,
    going down and up again."""
    from database.migrate import downgrade, upgrade

    user = await make_user(db, clock)
    sent = await db.run(lambda s: outbox.enqueue(
        s, recipient_id=user, kind="x", idempotency_key="kept", text="t", now=clock.now()))
    async with db.transaction() as session:
        session.add(DeliveryAttempt(notification_id=sent.id, channel="telegram",
                                    outcome="sent", at=clock.now()))

    async def counts() -> tuple[int, int]:
        async with db.engine.connect() as connection:
            notifications = (await connection.exec_driver_sql(
                "SELECT count(*) FROM notifications")).scalar_one()
            attempts = (await connection.exec_driver_sql(
                "SELECT count(*) FROM delivery_attempts")).scalar_one()
        return notifications, attempts

    await downgrade(db.engine, "0005")
    assert await counts() == (1, 1)
    await upgrade(db.engine)
    assert await counts() == (1, 1)
    paged = await db.run(lambda s: outbox.enqueue(
        s, destination=ALERT_WEBHOOK, kind=ALERT_KIND, idempotency_key="p", text="t",
        now=clock.now()))
    assert paged.created and await counts() == (2, 1)
    # Exactly one addressee, whoever writes the row.
    async with db.engine.connect() as connection:
        with pytest.raises(Exception, match="(?i)check"):
            await connection.exec_driver_sql(
                "UPDATE notifications SET recipient_id = NULL WHERE destination IS NULL")
