"""The delivery engine inside the real bot process, against the fake providers over HTTP and a
real SMTP server: what each provider received, and what the database recorded."""

from __future__ import annotations

from sqlalchemy import func, select

from database.engine import Database
from database.models import DeliveryAttempt, ManualTask, Notification
from tests.e2e.conftest import StartBot
from tests.e2e.delivery import (
    ADMIN,
    Providers,
    add_user,
    attempts,
    enqueue,
    eventually,
    status_of,
)
from tests.fakes.telegram import FakeTelegram

ANN, BOB = 1001, 1002
ANN_PHONE = "+33612345678"


async def test_blocked_user_falls_back_through_every_channel_to_a_manual_task(
    fake_telegram: FakeTelegram, providers: Providers, start_bot: StartBot, db: Database
) -> None:
    user = await add_user(db, ANN, phone=ANN_PHONE, email="ann@example.com")
    fake_telegram.block_user(ANN)
    providers.whatsapp.fail_next(code=131026, count=2)
    providers.twilio.fail_next(code=21614, count=1)
    providers.mailbox.refuse["ann@example.com"] = "550 5.1.1 No such user"
    update = await enqueue(db, user, "update:1", "Your technician arrives at 14:00.")
    reply = await enqueue(db, user, "reply:1", "Operator: we are on it.", kind="operator.reply",
                          channels=["whatsapp"], allow_fallback=False)
    await start_bot(**providers.env)

    async def done() -> bool:
        return (await status_of(db, update))[0] == "sent" and (
            await status_of(db, reply))[0] == "failed"

    await eventually(done)
    assert await status_of(db, update) == ("sent", "manual")
    assert await attempts(db, update) == [
        ("telegram", "failed", "403"),
        ("whatsapp", "failed", "131026"),
        ("sms", "failed", "21614"),
        ("email", "failed", "550"),
        ("manual", "sent", None),
    ]
    async with db.transaction() as session:
        task = await session.scalar(select(ManualTask).where(ManualTask.notification_id == update))
    assert task is not None and task.status == "open"
    assert "Your technician arrives at 14:00." in task.text

    # The operator's reply tried WhatsApp only, and never left by SMS or e-mail.
    assert await attempts(db, reply) == [("whatsapp", "failed", "131026")]
    assert all("Operator" not in sms.body for sms in providers.twilio.sent)
    assert all("Operator" not in str(m.get_content()) for m in providers.mailbox.messages)


async def test_broken_token_opens_the_circuit_alerts_once_and_rows_move_on(
    fake_telegram: FakeTelegram, providers: Providers, start_bot: StartBot, db: Database
) -> None:
    await add_user(db, ADMIN, email="admin@example.com", roles="requester,admin",
                   wrote_on_whatsapp=False)
    users = [await add_user(db, 2000 + i, phone=f"+3361234560{i}") for i in range(5)]
    fake_telegram.fail_next("sendMessage", status=401, description="Unauthorized", count=1000)
    ids = [await enqueue(db, u, f"n{i}", f"update {i}") for i, u in enumerate(users[:3])]
    await start_bot(**providers.env)

    async def all_sent(ids: list[int]) -> bool:
        return all(status == "sent" for status, _ in [await status_of(db, i) for i in ids])

    await eventually(lambda: all_sent(ids))
    assert [await status_of(db, i) for i in ids] == [("sent", "whatsapp")] * 3
    refused = [c for c in fake_telegram.calls if c.method == "sendMessage" and c.status == 401]
    assert 1 <= len(refused) <= 3  # only the rows in flight when it broke tried Telegram

    # Rows queued while the circuit is open go straight to the next channel.
    later = [await enqueue(db, u, f"later{i}", f"later {i}") for i, u in enumerate(users[3:])]
    await eventually(lambda: all_sent(later))
    assert [await status_of(db, i) for i in later] == [("sent", "whatsapp")] * 2
    assert [c for c in fake_telegram.calls if c.method == "sendMessage" and c.status == 401] == (
        refused
    )
    alert_mails = providers.mailbox.to("admin@example.com")
    assert len(alert_mails) == 1
    assert "telegram channel is broken" in alert_mails[0].get_content()


async def test_telegram_failing_30_percent_still_delivers_everything_once(
    fake_telegram: FakeTelegram, providers: Providers, start_bot: StartBot, db: Database
) -> None:
    fake_telegram.failure_rate = 0.3
    users = [await add_user(db, 3000 + i) for i in range(40)]
    ids = [await enqueue(db, u, f"k{i}", f"message number {i}") for i, u in enumerate(users)]
    await start_bot(**providers.env)

    async def all_sent() -> bool:
        async with db.transaction() as session:
            sent = await session.scalar(select(func.count()).select_from(Notification).where(
                Notification.id.in_(ids), Notification.status == "sent"))
        return sent == len(ids)

    await eventually(all_sent, timeout=60)
    delivered = [m["text"] for m in fake_telegram.sent_messages() if m["text"].startswith("mess")]
    assert sorted(delivered) == sorted(f"message number {i}" for i in range(40))
    failures = [c for c in fake_telegram.calls if c.method == "sendMessage" and c.status == 500]
    async with db.transaction() as session:
        failed_attempts = await session.scalar(select(func.count()).select_from(DeliveryAttempt)
                                               .where(DeliveryAttempt.outcome == "failed"))
    assert failures and failed_attempts == len(failures)


async def test_retry_after_is_honoured(
    fake_telegram: FakeTelegram, providers: Providers, start_bot: StartBot, db: Database
) -> None:
    user = await add_user(db, ANN)
    fake_telegram.fail_next("sendMessage", status=429, description="Too Many Requests: retry "
                            "after 2", retry_after=2)
    nid = await enqueue(db, user, "k", "after the flood")
    await start_bot(**providers.env)
    await fake_telegram.wait_for_text(ANN, "after the flood", timeout=20)
    calls = [c for c in fake_telegram.calls if c.method == "sendMessage"]
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 2.0
    expected = [("telegram", "rate_limited", "429"), ("telegram", "sent", None)]

    async def recorded() -> bool:
        return await attempts(db, nid) == expected

    await eventually(recorded)


async def test_admin_retries_dead_letters_from_the_alert_button(
    fake_telegram: FakeTelegram, providers: Providers, start_bot: StartBot, db: Database
) -> None:
    user = await add_user(db, ANN)
    fake_telegram.block_user(ANN)
    nid = await enqueue(db, user, "k", "your invoice is ready", channels=["telegram"],
                        allow_fallback=False)
    await start_bot(**providers.env)
    alert = await fake_telegram.wait_for_text(ADMIN, "request.update are failing", timeout=20)
    button = alert["reply_markup"]["inline_keyboard"][0][0]
    assert button["text"] == "Retry failed"
    assert await status_of(db, nid) == ("failed", "telegram")

    # Someone else pressing a forwarded button changes nothing.
    fake_telegram.callback(BOB, button["callback_data"], message_id=alert["message_id"],
                           chat_id=ADMIN)
    refused = await fake_telegram.wait_for_call("answerCallbackQuery")
    assert refused.params["text"] == "Only admins can do this."
    assert await status_of(db, nid) == ("failed", "telegram")

    fake_telegram.unblock_user(ANN)
    seen = len(fake_telegram.calls)
    fake_telegram.callback(ADMIN, button["callback_data"], message_id=alert["message_id"])
    answer = await fake_telegram.wait_for_call("answerCallbackQuery", since=seen)
    assert answer.params["text"] == (
        "Sending 1 failed notification(s) of kind request.update again."
    )
    await fake_telegram.wait_for_text(ANN, "your invoice is ready", timeout=20)

    async def recorded() -> bool:
        return await status_of(db, nid) == ("sent", "telegram")

    await eventually(recorded)
