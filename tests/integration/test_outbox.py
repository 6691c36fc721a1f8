"""The outbox and its dispatcher, on both engines, with time moved by a FakeClock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from database.engine import Database
from database.models import ChannelState, DeliveryAttempt, Notification, User
from services.actions import Action, ActionName
from services.alerts import Alerts
from services.clock import FakeClock, SystemClock
from services.notifications import outbox
from services.notifications.channels.base import ChannelName, SendResult
from services.notifications.dispatcher import Dispatcher, DispatcherConfig
from services.notifications.failures import Failure, FailureClass
from tests.conftest import _admin
from tests.support import ScriptedChannel, failure, make_user

TG, WA, SMS, EMAIL, MANUAL = (ChannelName.TELEGRAM, ChannelName.WHATSAPP, ChannelName.SMS,
                              ChannelName.EMAIL, ChannelName.MANUAL)
ADMIN_TG = 9000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def channels() -> dict[str, ScriptedChannel]:
    return {
        TG: ScriptedChannel(TG, reach="telegram_id"),
        WA: ScriptedChannel(WA, reach="phone"),
        SMS: ScriptedChannel(SMS, max_text_length=1600, reach="phone"),
        EMAIL: ScriptedChannel(EMAIL, reach="email"),
        MANUAL: ScriptedChannel(MANUAL),
    }


@pytest.fixture
def dispatcher(db: Database, clock: FakeClock, channels) -> Dispatcher:
    alerts = Alerts(admin_telegram_ids=[ADMIN_TG], window=timedelta(hours=1))
    config = DispatcherConfig(send_retry_wait=0, workers=1, batch_size=100)
    return Dispatcher(db, channels, clock, alerts, config, owner="test-dispatcher")


async def _enqueue(db: Database, clock: FakeClock, user_id: int, key: str = "k1", **kw) -> int:
    kw.setdefault("text", "Your request #12 was accepted.")
    result = await db.run(
        lambda s: outbox.enqueue(s, recipient_id=user_id, kind=kw.pop("kind", "request.accepted"),
                                 idempotency_key=key, now=clock.now(), **kw)
    )
    return result.id


async def _row(db: Database, notification_id: int) -> Notification:
    async with db.transaction() as session:
        return await session.get_one(Notification, notification_id)


async def _attempts(db: Database, notification_id: int) -> list[tuple[str, str, str | None]]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.notification_id == notification_id)
            .order_by(DeliveryAttempt.id)
        )
        return [(a.channel, a.outcome, a.error_class) for a in rows]


async def _alerts(db: Database) -> list[str]:
    async with db.transaction() as session:
        rows = await session.scalars(select(Notification).where(Notification.kind == "alert"))
        return [r.payload["text"] for r in rows]


async def test_rollback_after_enqueue_leaves_nothing_to_send(db, clock, channels, dispatcher):
    user = await make_user(db, clock)

    async def enqueue_then_fail(session):
        await outbox.enqueue(session, recipient_id=user, kind="k", idempotency_key="rolled-back",
                             text="never", now=clock.now())
        raise RuntimeError("the business change failed")

    with pytest.raises(RuntimeError):
        await db.run(enqueue_then_fail)
    assert await dispatcher.run_once() == 0
    assert channels[TG].sent == []


async def test_same_idempotency_key_twice_stores_one_row_and_sends_once(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock)
    first = await db.run(lambda s: outbox.enqueue(
        s, recipient_id=user, kind="k", idempotency_key="same", text="hi", now=clock.now()))
    second = await db.run(lambda s: outbox.enqueue(
        s, recipient_id=user, kind="k", idempotency_key="same", text="hi", now=clock.now()))
    assert first.created and not second.created and first.id == second.id
    await dispatcher.run_once()
    await dispatcher.run_once()
    assert channels[TG].texts() == ["hi"]


async def test_commit_wakes_the_dispatcher_and_rollback_does_not(db, clock, dispatcher):
    user = await make_user(db, clock)
    dispatcher._wake.clear()

    async def rolled_back(session):
        await outbox.enqueue(session, recipient_id=user, kind="k", idempotency_key="r",
                             text="x", now=clock.now())
        raise RuntimeError

    with pytest.raises(RuntimeError):
        await db.run(rolled_back)
    assert not dispatcher._wake.is_set()
    await _enqueue(db, clock, user)
    assert dispatcher._wake.is_set()


async def test_transient_failures_follow_the_schedule_then_the_next_channel(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock, phone="+33612345678")
    channels[TG].fail(*[failure(FailureClass.TRANSIENT, "500")] * 12)
    nid = await _enqueue(db, clock, user)

    await dispatcher.run_once()  # attempt 1: three quick tries, all 5xx
    row = await _row(db, nid)
    assert (row.status, row.channel, row.channel_attempts) == ("pending", "telegram", 1)
    assert row.next_attempt_at == clock.now() + timedelta(seconds=60)
    assert channels[TG].calls == 3

    assert await dispatcher.run_once() == 0  # not due yet
    for step in (60, 300, 900):
        clock.advance(step)
        await dispatcher.run_once()
    row = await _row(db, nid)
    # Four attempts spent on Telegram: WhatsApp took over and delivered.
    assert row.status == "sent" and row.channel == "whatsapp"
    assert channels[WA].texts() == ["Your request #12 was accepted."]
    attempts = await _attempts(db, nid)
    assert attempts.count(("telegram", "failed", "transient")) == 12
    assert attempts[-1] == ("whatsapp", "sent", None)


async def test_quick_retries_wait_1x_then_2x_and_only_for_transient_failures(
    db, clock, channels, dispatcher
):
    alerts = Alerts(admin_telegram_ids=[ADMIN_TG], window=timedelta(hours=1))
    dispatcher = Dispatcher(db, channels, clock, alerts,
                            DispatcherConfig(send_retry_wait=1.0, send_tries=3))
    waits: list[float] = []

    async def record_wait(seconds: float) -> None:
        waits.append(seconds)

    dispatcher.delivery.retry_sleep = record_wait
    user = await make_user(db, clock, phone="+33612345678")
    channels[TG].fail(
        failure(FailureClass.TRANSIENT, "500"), failure(FailureClass.TRANSIENT, "502")
    )
    nid = await _enqueue(db, clock, user)
    await dispatcher.run_once()
    row = await _row(db, nid)
    # Delivered by the third quick try on Telegram, within one attempt of the schedule.
    assert (row.status, row.channel, row.attempts) == ("sent", "telegram", 3)
    assert channels[TG].calls == 3
    assert len(waits) == 2
    assert 1.0 <= waits[0] <= 1.5 and 2.0 <= waits[1] <= 2.5

    waits.clear()
    channels[TG].fail(failure(FailureClass.PERMANENT, "403"))
    second = await _enqueue(db, clock, user, key="k2")
    await dispatcher.run_once()
    # A permanent failure is not retried on the same channel: WhatsApp takes it at once.
    assert waits == []
    assert (await _row(db, second)).channel == "whatsapp"


async def test_provider_strings_a_column_cannot_hold_do_not_block_the_batch(
    db, clock, channels, dispatcher
):
    """A NUL in an error text (PostgreSQL text cannot hold it) or a sender longer than its
    column must not make the record fail: its whole batch would be sent again and again."""
    user = await make_user(db, clock)
    channels[TG].fail(Failure(FailureClass.TRANSIENT, "test", "5\x0000", "bad\x00gateway"))
    long_sender = ScriptedChannel(TG, reach="telegram_id")

    async def send(recipient, message):
        return SendResult(provider_message_id="id\x00" + "9" * 300, sender="s" * 300,
                          address="a" * 300)

    long_sender.send = send
    first = await _enqueue(db, clock, user, key="nul")
    await dispatcher.run_once()
    assert (await _row(db, first)).status == "sent"  # the quick retry got through
    dispatcher.delivery.channels[TG] = long_sender
    second = await _enqueue(db, clock, user, key="long")
    await dispatcher.run_once()
    row = await _row(db, second)
    assert row.status == "sent" and row.provider_message_id == "id" + "9" * 126
    async with db.transaction() as session:
        failed = (await session.execute(
            select(DeliveryAttempt.error_code, DeliveryAttempt.error_text)
            .where(DeliveryAttempt.notification_id == first, DeliveryAttempt.outcome == "failed")
        )).one()
        sender = (await session.execute(
            select(DeliveryAttempt.sender).where(DeliveryAttempt.notification_id == second)
        )).scalar_one()
    assert tuple(failed) == ("500", "bad\ufffdgateway") and sender == "s" * 64


async def test_sqlite_record_stores_times_exactly_as_sqlalchemy_does(
    db, clock, channels, dispatcher
):
    """SQLite compares times as text: the record's plain SQL must write the same format as
    SQLAlchemy (microseconds included), or equal instants would compare unequal."""
    if db.dialect != "sqlite":
        pytest.skip("SQLite stores times as text")
    user = await make_user(db, clock)
    nid = await _enqueue(db, clock, user)
    await dispatcher.run_once()
    async with db.transaction() as session:
        row = (await session.execute(text(
            "SELECT created_at, sent_at, next_attempt_at, updated_at FROM notifications "
            "WHERE id = :id"), {"id": nid})).one()
        at = await session.scalar(text(
            "SELECT at FROM delivery_attempts WHERE notification_id = :id"), {"id": nid})
    written_by_sqlalchemy = row.created_at
    assert written_by_sqlalchemy == "2026-01-01 00:00:00.000000"  # the FakeClock's start
    assert row.sent_at == row.next_attempt_at == row.updated_at == at == written_by_sqlalchemy


async def test_blocked_user_falls_through_every_channel_to_a_manual_task(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock, phone="+33612345678", email="ann@example.com")
    channels[TG].fail(failure(FailureClass.PERMANENT, "403"))
    channels[WA].fail(failure(FailureClass.PERMANENT, "131026"))
    channels[SMS].fail(failure(FailureClass.PERMANENT, "21610", opt_out=True))
    channels[EMAIL].fail(failure(FailureClass.PERMANENT, "550"))
    nid = await _enqueue(db, clock, user)
    await dispatcher.run_once()
    row = await _row(db, nid)
    assert (row.status, row.channel) == ("sent", "manual")
    assert await _attempts(db, nid) == [
        ("telegram", "failed", "permanent"),
        ("whatsapp", "failed", "permanent"),
        ("sms", "failed", "permanent"),
        ("email", "failed", "permanent"),
        ("manual", "sent", None),
    ]
    async with db.transaction() as session:
        assert (await session.get_one(User, user)).opt_outs == "sms"


async def test_operator_reply_never_leaves_whatsapp(db, clock, channels, dispatcher):
    user = await make_user(db, clock, phone="+33612345678", email="ann@example.com")
    channels[WA].fail(failure(FailureClass.PERMANENT, "131026"))
    nid = await _enqueue(db, clock, user, kind="operator.reply", channels=["whatsapp"],
                         allow_fallback=False)
    await dispatcher.run_once()
    row = await _row(db, nid)
    assert row.status == "failed" and row.channel == "whatsapp"
    assert "131026" in row.last_error_text
    assert channels[SMS].calls == channels[EMAIL].calls == channels[MANUAL].calls == 0
    assert len(await _alerts(db)) == 1  # the dead letter reached the admin


async def test_dead_letters_alert_once_per_kind_per_window(db, clock, channels, dispatcher):
    user = await make_user(db, clock)  # Telegram only; so is the admin, who is blocked too
    channels[TG].fail(*[failure(FailureClass.PERMANENT, "403")] * 10)
    for key in ("a", "b"):
        await _enqueue(db, clock, user, key=key, channels=["telegram"], allow_fallback=False)
    await dispatcher.run_once()
    alerts = await _alerts(db)
    assert len(alerts) == 1 and "request.accepted" in alerts[0]
    clock.advance(3601)
    await _enqueue(db, clock, user, key="c", channels=["telegram"], allow_fallback=False)
    await dispatcher.run_once()
    assert len(await _alerts(db)) == 2


async def test_rate_limited_waits_as_told_and_is_not_a_failed_attempt(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock)
    channels[TG].fail(failure(FailureClass.RATE_LIMITED, "429", retry_after=17))
    nid = await _enqueue(db, clock, user)
    await dispatcher.run_once()
    row = await _row(db, nid)
    assert (row.status, row.attempts, row.channel_attempts) == ("pending", 0, 0)
    assert row.next_attempt_at == clock.now() + timedelta(seconds=17)
    clock.advance(17)
    await dispatcher.run_once()
    assert (await _row(db, nid)).status == "sent"


async def test_broken_channel_opens_its_circuit_alerts_once_and_moves_rows_on(
    db, clock, channels, dispatcher
):
    admin = await make_user(db, clock, telegram_id=ADMIN_TG, roles="requester,admin",
                            email="admin@example.com")
    user = await make_user(db, clock, telegram_id=1001, phone="+33612345678")
    channels[TG].fail(failure(FailureClass.BROKEN, "401"))
    first = await _enqueue(db, clock, user, key="one")
    await dispatcher.run_once()
    assert (await _row(db, first)).channel == "whatsapp"
    async with db.transaction() as session:
        state = await session.get_one(ChannelState, "telegram")
        alert_rows = (await session.scalars(
            select(Notification).where(Notification.kind == "alert"))).all()
    assert state.circuit_open_until == clock.now() + timedelta(seconds=60)
    assert len(alert_rows) == 1 and alert_rows[0].recipient_id == admin
    assert "telegram channel is broken" in alert_rows[0].payload["text"]

    # While the circuit is open, rows skip Telegram without trying it.
    calls = channels[TG].calls
    second = await _enqueue(db, clock, user, key="two")
    await dispatcher.run_once()
    assert channels[TG].calls == calls
    assert (await _row(db, second)).channel == "whatsapp"

    # After the probe delay a send on Telegram is tried again; success closes the circuit.
    clock.advance(61)
    third = await _enqueue(db, clock, user, key="three")
    await dispatcher.run_once()
    assert (await _row(db, third)).channel == "telegram"
    async with db.transaction() as session:
        state = await session.get_one(ChannelState, "telegram")
    assert state.circuit_trips == 0 and state.circuit_open_until is None


async def test_dispatching_survives_the_server_closing_its_connections(
    db, clock, channels, dispatcher
):
    """The PostgreSQL path sends its statements through the driver's own API: a connection
    the server ended must be dropped from the pool and the batch claimed on a fresh one."""
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL: the server ends the sessions")
    user = await make_user(db, clock)
    await _enqueue(db, clock, user, key="before")
    await dispatcher.run_once()  # the pool now holds live connections
    after = await _enqueue(db, clock, user, key="after")
    url = db.engine.url.render_as_string(hide_password=False)
    await _admin(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    await dispatcher.run_once()  # its first statement meets a closed connection
    assert (await _row(db, after)).status == "sent"
    assert channels[TG].texts() == ["Your request #12 was accepted."] * 2


async def test_expired_lease_makes_a_crashed_workers_rows_due_again(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock)
    nid = await _enqueue(db, clock, user)
    # The worker dies right after claiming.
    claimed = await dispatcher._claim("test-dispatcher:dead")
    assert [j.id for j in claimed.jobs] == [nid]
    assert await dispatcher.run_once() == 0  # leased: nobody else takes it
    clock.advance(61)
    released = await db.run(lambda s: outbox.release_expired_leases(s, now=clock.now()))
    assert released == 1
    await dispatcher.run_once()
    assert (await _row(db, nid)).status == "sent"
    assert channels[TG].texts() == ["Your request #12 was accepted."]


async def test_too_old_notifications_are_dead_lettered(db, clock, channels, dispatcher):
    user = await make_user(db, clock)
    channels[TG].fail(failure(FailureClass.TRANSIENT, "500"), *[None])
    nid = await _enqueue(db, clock, user, channels=["telegram"], allow_fallback=False)
    channels[TG].script.clear()
    channels[TG].fail(*[failure(FailureClass.TRANSIENT, "500")] * 3)
    await dispatcher.run_once()
    clock.advance(hours=25)
    await dispatcher.run_once()
    row = await _row(db, nid)
    assert row.status == "failed" and "older than" in row.last_error_text


async def test_people_waiting_go_before_a_bulk_backlog(db, clock, channels, dispatcher):
    user = await make_user(db, clock)
    for i in range(5):
        await _enqueue(db, clock, user, key=f"bulk{i}", text=f"bulk {i}",
                       priority=outbox.PRIORITY_BULK)
    clock.advance(1)
    await _enqueue(db, clock, user, key="answer", text="your answer",
                   priority=outbox.PRIORITY_INTERACTIVE)
    alerts = Alerts(admin_telegram_ids=[], window=timedelta(hours=1))
    dispatcher = Dispatcher(db, channels, clock, alerts,
                            DispatcherConfig(send_retry_wait=0, batch_size=2))
    await dispatcher.run_once()
    assert channels[TG].texts() == ["your answer", "bulk 0"]


async def test_long_text_is_split_and_a_retry_never_resends_a_delivered_part(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock)
    text = ("word " * 1000).strip()  # 4,999 characters: two Telegram messages
    five_hundred = failure(FailureClass.TRANSIENT, "500")
    channels[TG].fail(None, five_hundred, five_hundred, five_hundred)
    nid = await _enqueue(db, clock, user, text=text)
    await dispatcher.run_once()
    assert len(channels[TG].sent) == 1 and (await _row(db, nid)).parts_sent == 1
    clock.advance(60)
    await dispatcher.run_once()
    sent = channels[TG].texts()
    assert len(sent) == 2 and all(len(p) <= 4096 for p in sent)
    assert " ".join(sent) == text


async def test_paused_channel_holds_its_rows_until_resumed(db, clock, channels, dispatcher):
    user = await make_user(db, clock, phone="+33612345678")
    await _enqueue(db, clock, user, key="before")
    await dispatcher.run_once()  # sent, and the channels' states are now in the dispatcher
    channels[TG].calls = 0
    # Paused in this process: it applies to the very next claim, without waiting.
    await db.run(lambda s: outbox.set_channel_paused(s, "telegram", paused=True, now=clock.now()))
    nid = await _enqueue(db, clock, user)
    await dispatcher.run_once()
    row = await _row(db, nid)
    assert (row.status, row.channel) == ("pending", "telegram")
    assert channels[TG].calls == channels[WA].calls == 0
    await db.run(lambda s: outbox.set_channel_paused(s, "telegram", paused=False, now=clock.now()))
    clock.advance(30)
    await dispatcher.run_once()
    assert (await _row(db, nid)).status == "sent" and channels[TG].calls == 1


async def test_a_pause_made_by_another_process_applies_within_the_states_ttl(
    db_url, db, clock, channels, dispatcher
):
    user = await make_user(db, clock)
    await _enqueue(db, clock, user, key="before")
    await dispatcher.run_once()  # the channels' states are read with this claim
    other_process = Database.from_url(db_url)  # its commits do not reach our dispatcher
    try:
        await other_process.run(
            lambda s: outbox.set_channel_paused(s, "telegram", paused=True, now=clock.now())
        )
    finally:
        await other_process.dispose()
    clock.advance(dispatcher.config.states_ttl_seconds)
    nid = await _enqueue(db, clock, user, key="after")
    await dispatcher.run_once()
    assert (await _row(db, nid)).status == "pending"
    assert channels[TG].texts() == ["Your request #12 was accepted."]  # only the first


async def test_retry_and_archive_of_dead_letters(db, clock, channels, dispatcher):
    user = await make_user(db, clock)
    channels[TG].fail(failure(FailureClass.PERMANENT, "403"))
    nid = await _enqueue(db, clock, user, channels=["telegram"], allow_fallback=False)
    await dispatcher.run_once()
    assert (await _row(db, nid)).status == "failed"
    assert await db.run(lambda s: outbox.retry(s, nid, now=clock.now()))
    await dispatcher.run_once()
    assert (await _row(db, nid)).status == "sent"

    channels[TG].fail(failure(FailureClass.PERMANENT, "403"))
    other = await _enqueue(db, clock, user, key="k2", channels=["telegram"],
                           allow_fallback=False)
    await dispatcher.run_once()
    clock.advance(days=29)
    assert await db.run(lambda s: outbox.archive_dead_letters(
        s, now=clock.now(), older_than=timedelta(days=30))) == 0
    clock.advance(days=2)
    assert await db.run(lambda s: outbox.archive_dead_letters(
        s, now=clock.now(), older_than=timedelta(days=30))) == 1
    assert (await _row(db, other)).status == "archived"


async def test_statistics_report_depth_dead_letters_and_waits(db, clock, channels, dispatcher):
    user = await make_user(db, clock)
    await _enqueue(db, clock, user, key="a")
    clock.advance(2)
    await dispatcher.run_once()
    await _enqueue(db, clock, user, key="b")
    clock.advance(5)
    stats = await db.run(lambda s: outbox.statistics(s, now=clock.now()))
    assert stats["due"] == 1
    assert stats["oldest_due_age_seconds"] == 5
    assert stats["wait_seconds"]["p50"] == 2
    assert stats["sent_last_hour"] == 1 and stats["dead_letters"] == 0


async def test_enqueue_rejects_bad_input_and_stores_nothing(db, clock):
    user = await make_user(db, clock)
    with pytest.raises(outbox.InvalidNotification):
        await db.run(lambda s: outbox.enqueue(s, recipient_id=user, kind="k", idempotency_key="x",
                                              now=clock.now()))
    with pytest.raises(outbox.InvalidNotification):
        await db.run(lambda s: outbox.enqueue(s, recipient_id=user, kind="k", idempotency_key="",
                                              text="t", now=clock.now()))
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Notification)) == 0


async def test_buttons_are_stored_as_actions_and_callback_data_is_refused(db, clock):
    """A service says what a button does; how it becomes callback data is the handlers'
    business (handlers/buttons.py), so raw callback data is refused at the door."""
    user = await make_user(db, clock)
    retry = Action(ActionName.RETRY_DEAD_LETTERS_LIKE, 7).as_payload("Retry failed")
    nid = await _enqueue(db, clock, user, key="with-button", buttons=[retry])
    assert (await _row(db, nid)).payload["buttons"] == [retry]
    for bad in ({"text": "Retry failed", "callback_data": "nf:retry:k"},
                {"text": "Later", "action": "something_unknown", "target": 1},
                {"text": "", "action": ActionName.RETRY_DEAD_LETTERS_LIKE.value, "target": 1}):
        with pytest.raises(outbox.InvalidNotification):
            await _enqueue(db, clock, user, key="bad-button", buttons=[bad])


async def test_without_redis_one_process_dispatches_and_another_takes_over_when_it_dies(
    db, clock, channels
):
    alerts = Alerts(admin_telegram_ids=[], window=timedelta(hours=1))
    config = DispatcherConfig(send_retry_wait=0, exclusive=True)
    first = Dispatcher(db, channels, clock, alerts, config, owner="process-a")
    second = Dispatcher(db, channels, clock, alerts, config, owner="process-b")
    assert await first._may_dispatch() is True
    assert await second._may_dispatch() is False
    clock.advance(3)  # the holder renews its leader lease (10 s) while it lives
    assert await first._may_dispatch() is True
    clock.advance(3)
    assert await second._may_dispatch() is False
    clock.advance(11)  # process-a died: its leader lease ran out
    assert await second._may_dispatch() is True


async def test_a_reply_that_may_not_fall_back_waits_for_a_broken_channel_to_mend(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock, phone="+33612345678")
    channels[WA].fail(failure(FailureClass.BROKEN, "190"))
    nid = await _enqueue(db, clock, user, kind="operator.reply", channels=["whatsapp"],
                         allow_fallback=False)
    await dispatcher.run_once()
    row = await _row(db, nid)
    assert (row.status, row.channel) == ("pending", "whatsapp")
    assert row.next_attempt_at == clock.now() + timedelta(seconds=60)
    clock.advance(61)  # the admin renewed the token; the probe goes through
    await dispatcher.run_once()
    assert (await _row(db, nid)).status == "sent"
    assert channels[SMS].calls == 0


async def test_a_notification_that_trips_a_bug_ends_as_a_dead_letter_not_a_loop(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock)
    channels[TG].max_text_length = 0  # splitting the text now raises inside the dispatcher
    nid = await _enqueue(db, clock, user)
    await dispatcher.run_once()
    row = await _row(db, nid)
    assert (row.status, row.last_error_class, row.attempts) == ("pending", "unknown", 1)
    clock.advance(60)
    await dispatcher.run_once()
    row = await _row(db, nid)
    assert row.status == "failed" and "internal error" in row.last_error_text


async def test_a_batch_slower_than_its_lease_keeps_its_rows(db, channels):
    """The batch renews its lease while sending: a second dispatcher sweeping for expired
    leases meanwhile finds nothing to take, and the message goes out once."""
    clock = SystemClock()
    user = await make_user(db, clock)
    await _enqueue(db, clock, user)
    slow = channels[TG]
    original_send = slow.send

    async def send_slowly(recipient, message):
        await asyncio.sleep(0.8)  # four times the lease below
        return await original_send(recipient, message)

    slow.send = send_slowly
    alerts = Alerts(admin_telegram_ids=[], window=timedelta(hours=1))
    config = DispatcherConfig(send_retry_wait=0, lease=timedelta(seconds=0.2))
    first = Dispatcher(db, channels, clock, alerts, config, owner="process-a")
    second = Dispatcher(db, channels, clock, alerts, config, owner="process-b")
    batch = asyncio.create_task(first.run_once())
    for _ in range(6):
        await asyncio.sleep(0.12)
        await db.run(lambda s: outbox.release_expired_leases(s, now=clock.now()))
        assert await second.run_once() == 0
    assert await batch == 1
    assert slow.texts() == ["Your request #12 was accepted."]


async def test_a_stopping_dispatcher_hands_back_what_it_did_not_start(
    db, clock, channels, dispatcher
):
    user = await make_user(db, clock)
    nid = await _enqueue(db, clock, user)
    dispatcher._stopping.set()  # SIGTERM arrived just after this batch was claimed
    assert await dispatcher.run_once() == 1
    row = await _row(db, nid)
    assert (row.status, row.attempts, row.lease_owner) == ("pending", 0, None)
    assert channels[TG].calls == 0
