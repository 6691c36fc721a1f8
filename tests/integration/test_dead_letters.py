"""Dead letters on both engines: the admins' alert and its action, "Retry failed" as the
button's service runs it, and a restart that keeps the row's history."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import Notification, TransactionLog
from services.actions import Action, ActionName
from services.alerts import ALERT_KIND, Alerts
from services.clock import FakeClock
from services.notifications import outbox
from services.notifications.channels.base import ChannelName
from services.notifications.dead_letters import DeadLetters, RetryResult
from services.notifications.dispatcher import Dispatcher, DispatcherConfig
from services.notifications.failures import FailureClass
from tests.support import ScriptedChannel, failure, make_user

TG = ChannelName.TELEGRAM
ADMIN_TG = 9000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def telegram() -> ScriptedChannel:
    return ScriptedChannel(TG, reach="telegram_id")


@pytest.fixture
def dispatcher(db: Database, clock: FakeClock, telegram: ScriptedChannel) -> Dispatcher:
    alerts = Alerts(admin_telegram_ids=[ADMIN_TG], window=timedelta(hours=1))
    config = DispatcherConfig(send_retry_wait=0, workers=1, batch_size=100)
    return Dispatcher(db, {TG: telegram}, clock, alerts, config, owner="test-dispatcher")


async def _enqueue(db: Database, clock: FakeClock, user: int, key: str, kind: str) -> int:
    enqueued = await db.run(lambda s: outbox.enqueue(
        s, recipient_id=user, kind=kind, idempotency_key=key, text=f"about {key}",
        now=clock.now(), channels=["telegram"], allow_fallback=False))
    return enqueued.id


async def _row(db: Database, notification_id: int) -> Notification:
    async with db.transaction() as session:
        return await session.get_one(Notification, notification_id)


async def test_the_dead_letter_alert_carries_a_retry_action_for_that_notification(
    db: Database, clock: FakeClock, telegram: ScriptedChannel, dispatcher: Dispatcher
) -> None:
    user = await make_user(db, clock)
    telegram.fail(failure(FailureClass.PERMANENT, "403"))
    kind = "request.update." + "x" * 45  # the longest a kind can be: 60 characters
    nid = await _enqueue(db, clock, user, "a", kind)
    await dispatcher.run_once()
    async with db.transaction() as session:
        [alert] = (await session.scalars(
            select(Notification).where(Notification.kind == ALERT_KIND))).all()
    # An id, not the kind: "nf:retry:<kind>" had to be cut to fit 64 bytes; an id always fits.
    assert alert.payload["buttons"] == [
        Action(ActionName.RETRY_DEAD_LETTERS_LIKE, nid).as_payload("Retry failed")
    ]


async def test_retry_like_sends_again_every_dead_letter_of_that_kind_and_no_other(
    db: Database, clock: FakeClock, telegram: ScriptedChannel, dispatcher: Dispatcher
) -> None:
    user = await make_user(db, clock)
    admin = await make_user(db, clock, telegram_id=ADMIN_TG, roles="requester,admin")
    telegram.fail(*[failure(FailureClass.PERMANENT, "403")] * 3)
    first = await _enqueue(db, clock, user, "a", "invoice")
    second = await _enqueue(db, clock, user, "b", "invoice")
    other = await _enqueue(db, clock, user, "c", "reminder")
    await dispatcher.run_once()
    assert [(await _row(db, n)).status for n in (first, second, other)] == ["failed"] * 3

    dead_letters = DeadLetters(db, clock)
    clock.advance(60)
    assert await dead_letters.retry_like(second, actor_id=admin) == RetryResult("invoice", 2)
    assert [(await _row(db, n)).status for n in (first, second, other)] == [
        "pending", "pending", "failed"]
    async with db.transaction() as session:
        audit = (await session.scalars(select(TransactionLog).where(
            TransactionLog.operation == "notification.retry_all"))).one()
    assert audit.actor_id == admin and audit.after == {
        "count": 2, "kind": "invoice", "channel": None}

    await dispatcher.run_once()
    assert sorted(t for t in telegram.texts() if t.startswith("about")) == ["about a", "about b"]
    # Pressed again (a second admin, a double tap): nothing left to retry.
    assert await dead_letters.retry_like(second, actor_id=admin) == RetryResult("invoice", 0)
    assert await dead_letters.retry_like(10_000, actor_id=admin) == RetryResult(None, 0)


async def test_a_restarted_dead_letter_keeps_its_history_and_gets_a_fresh_age_budget(
    db: Database, clock: FakeClock, telegram: ScriptedChannel, dispatcher: Dispatcher
) -> None:
    user = await make_user(db, clock)
    created = clock.now()
    five_hundred = [failure(FailureClass.TRANSIENT, "500")] * 3  # the quick retries too
    telegram.fail(*five_hundred)
    nid = await _enqueue(db, clock, user, "a", "invoice")
    await dispatcher.run_once()  # a transient failure: due again in a minute
    clock.advance(hours=25)
    await dispatcher.run_once()  # never delivered within its 24 hours
    row = await _row(db, nid)
    assert row.status == "failed" and "older than" in (row.last_error_text or "")
    await dispatcher.run_once()  # the admins' alert about it

    assert await db.run(lambda s: outbox.retry(s, nid, now=clock.now()))
    row = await _row(db, nid)
    assert (row.created_at, row.restarted_at) == (created, clock.now())
    telegram.fail(*five_hundred)
    await dispatcher.run_once()
    clock.advance(60)
    await dispatcher.run_once()
    # Its age counts from the retry: sent, not dead again at once for being 25 hours old.
    row = await _row(db, nid)
    assert (row.status, row.created_at) == ("sent", created)
    stats = await db.run(lambda s: outbox.statistics(s, now=clock.now()))
    # The longest wait is this row's (the admins' alert went at once): since the retry.
    assert stats["wait_seconds"]["p99"] == 60


async def test_a_retry_wakes_the_dispatchers_of_other_processes(
    db: Database, clock: FakeClock, telegram: ScriptedChannel, dispatcher: Dispatcher
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL: other processes hear of due work through LISTEN/NOTIFY")
    user = await make_user(db, clock)
    telegram.fail(failure(FailureClass.PERMANENT, "403"))
    nid = await _enqueue(db, clock, user, "a", "invoice")
    await dispatcher.run_once()
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with db.engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.add_listener("outbox", lambda *args: heard.put_nowait(args[2]))
        assert await DeadLetters(db, clock).retry_like(nid, actor_id=1) == RetryResult(
            "invoice", 1)
        assert await asyncio.wait_for(heard.get(), timeout=5) == "outbox"
