"""The dispatcher after a crash and through a database outage (issue 8, item 9): leadership
taken over in seconds, every worker woken by it, LISTEN made again, an outage logged once."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError

from database.engine import Database
from services import leases
from services.alerts import Alerts
from services.clock import FakeClock
from services.notifications import outbox
from services.notifications.channels.base import ChannelName, Outgoing, Recipient, SendResult
from services.notifications.dispatcher import DISPATCH_LEASE, Dispatcher, DispatcherConfig
from tests.conftest import _admin
from tests.support import ScriptedChannel, make_user

TG = ChannelName.TELEGRAM
DISPATCHER_LOG = "services.notifications.dispatcher"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _alerts() -> Alerts:
    return Alerts(admin_telegram_ids=[], window=timedelta(hours=1))


async def _enqueue(db: Database, clock: FakeClock, user_id: int, key: str) -> int:
    result = await db.run(lambda s: outbox.enqueue(
        s, recipient_id=user_id, kind="request.accepted", idempotency_key=key,
        text=f"message {key}", now=clock.now(),
    ))
    return result.id


async def _until(condition, timeout: float = 10.0) -> None:
    """Bounded wait for something the dispatcher's tasks do."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_without_redis_a_successor_takes_over_within_the_leader_lease_not_the_row_lease(
    db, clock
):
    config = DispatcherConfig(send_retry_wait=0, exclusive=True)  # row lease 60 s
    channels = {TG: ScriptedChannel(TG)}
    first = Dispatcher(db, channels, clock, _alerts(), config, owner="process-a")
    second = Dispatcher(db, channels, clock, _alerts(), config, owner="process-b")
    assert await first._may_dispatch() is True
    assert await second._may_dispatch() is False
    clock.advance(3)  # the leader renews every third of its lease while it lives
    assert await first._may_dispatch() is True
    assert await second._may_dispatch() is False
    clock.advance(11)  # process-a was killed after that renewal: its leader lease ran out
    assert await second._may_dispatch() is True
    assert second._leading() is True
    assert first._leading() is False  # by its own clock it may not claim any more
    holder = await db.run(lambda s: leases.holder(s, name=DISPATCH_LEASE, now=clock.now()))
    assert holder == "process-b"
    # 11 s after the last renewal, while a claimed row's lease (60 s) still holds.
    assert timedelta(seconds=11) < config.lease / 2


class _AllAtOnce(ScriptedChannel):
    """Each send waits until `expected` sends are under way together: only as many workers
    dispatching at the same time get past it."""

    def __init__(self, expected: int) -> None:
        super().__init__(TG)
        self.expected = expected
        self.under_way = 0
        self.all_in = asyncio.Event()

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        self.under_way += 1
        if self.under_way >= self.expected:
            self.all_in.set()
        await self.all_in.wait()
        return await super().send(recipient, message)


async def test_every_worker_dispatches_as_soon_as_leadership_is_taken(db, clock):
    workers = 4
    for i in range(workers):
        user = await make_user(db, clock, telegram_id=2000 + i)
        await _enqueue(db, clock, user, key=f"k{i}")
    channel = _AllAtOnce(workers)
    # A worker that missed the leadership would sleep its idle time: an hour.
    config = DispatcherConfig(send_retry_wait=0, exclusive=True, workers=workers, batch_size=1,
                              idle_seconds=3600)
    dispatcher = Dispatcher(db, {TG: channel}, clock, _alerts(), config, owner="process-b")
    await dispatcher.start()
    try:
        await asyncio.wait_for(channel.all_in.wait(), 10)
        await _until(lambda: len(channel.sent) == workers)
    finally:
        await dispatcher.stop(timeout=5)


async def test_the_dispatcher_listens_again_after_its_listen_connection_is_killed(db, clock):
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL: LISTEN/NOTIFY")
    channel = ScriptedChannel(TG)
    # Only a NOTIFY wakes the worker before an hour is out.
    config = DispatcherConfig(send_retry_wait=0, workers=1, idle_seconds=3600)
    dispatcher = Dispatcher(db, {TG: channel}, clock, _alerts(), config, owner="listening")
    dispatcher.outage_retry_seconds = 0.05
    url = db.engine.url.render_as_string(hide_password=False)
    other = Database.from_url(url)
    await dispatcher.start()
    try:
        old = dispatcher._listener
        pid = (await old.get_raw_connection()).driver_connection.get_server_pid()
        await _admin(url, f"SELECT pg_terminate_backend({pid})")
        await _until(lambda: dispatcher._listener not in (None, old))
        await asyncio.sleep(0.2)  # the wake-up of listening again has been spent
        user = await make_user(other, clock)
        await _enqueue(other, clock, user, key="after-the-cut")
        await _until(lambda: channel.texts() == ["message after-the-cut"], timeout=10)
    finally:
        await dispatcher.stop(timeout=5)
        await other.dispose()


async def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
    db, clock, caplog, monkeypatch
):
    user = await make_user(db, clock)
    await _enqueue(db, clock, user, key="waited")
    channel = ScriptedChannel(TG)
    config = DispatcherConfig(send_retry_wait=0, workers=4, idle_seconds=3600)
    dispatcher = Dispatcher(db, {TG: channel}, clock, _alerts(), config, owner="outage")
    dispatcher.outage_retry_seconds = 0.01
    failures = 60

    def failing(method):
        async def call(work):
            nonlocal failures
            if failures > 0:
                failures -= 1
                raise OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused"))
            return await method(work)
        return call

    caplog.set_level(logging.INFO, logger=DISPATCHER_LOG)
    await dispatcher.start()
    monkeypatch.setattr(db, "run", failing(db.run))
    monkeypatch.setattr(db, "run_statement", failing(db.run_statement))
    try:
        await _until(lambda: channel.texts() == ["message waited"])
    finally:
        await dispatcher.stop(timeout=5)
    assert failures == 0
    mine = [r for r in caplog.records if r.name == DISPATCHER_LOG]
    errors = [r for r in mine if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "OperationalError" in errors[0].getMessage() and errors[0].exc_info is None
    back = [r for r in mine if "database is back after" in r.getMessage()]
    assert len(back) == 1 and back[0].levelno == logging.WARNING
    assert "1 notification(s) due or in flight" in back[0].getMessage()


def _record_fails(dispatcher: Dispatcher, times: int, clock: FakeClock | None = None,
                  advance: float = 0.0) -> list[int]:
    """The database is away for the batch's record `times` times (each failure moving the
    clock on by `advance` seconds), then back. Returns a counter of the failures left."""
    left = [times]
    record = dispatcher.recorder.record

    async def flaky(outcomes, token):
        if left[0] > 0:
            left[0] -= 1
            if clock is not None:
                clock.advance(seconds=advance)
            raise OperationalError("UPDATE", {}, ConnectionRefusedError(111, "refused"))
        return await record(outcomes, token)

    dispatcher.recorder.record = flaky  # type: ignore[method-assign]
    return left


async def _status(db: Database, notification_id: int) -> str:
    from database.models import Notification

    async with db.transaction() as session:
        return (await session.get_one(Notification, notification_id)).status


async def test_an_outage_shorter_than_the_lease_sends_nothing_twice(db, clock) -> None:
    """The record fails while the database is away: the outcomes are kept and recorded when
    it returns, so the row is sent once and ends 'sent', with its attempt on file."""
    user = await make_user(db, clock)
    nid = await _enqueue(db, clock, user, key="during-outage")
    channel = ScriptedChannel(TG)
    dispatcher = Dispatcher(db, {TG: channel}, clock, _alerts(),
                            DispatcherConfig(send_retry_wait=0), owner="outage")
    dispatcher.outage_retry_seconds = 0.01
    left = _record_fails(dispatcher, 5, clock, advance=5)  # 25 s of a 60 s lease

    assert await dispatcher.run_once() == 1
    assert left == [0]
    assert await _status(db, nid) == "sent"
    assert await dispatcher.run_once() == 0  # nothing due again: nothing sent twice
    assert channel.texts() == ["message during-outage"]


async def test_an_outage_longer_than_the_lease_leaves_the_rows_to_be_sent_again(db, clock):
    """Past the lease the rows may be someone else's: the batch gives up its outcomes, and
    the rows are due again when the lease is rescued (at most this batch is sent twice)."""
    user = await make_user(db, clock)
    nid = await _enqueue(db, clock, user, key="long-outage")
    channel = ScriptedChannel(TG)
    dispatcher = Dispatcher(db, {TG: channel}, clock, _alerts(),
                            DispatcherConfig(send_retry_wait=0), owner="outage")
    dispatcher.outage_retry_seconds = 0.01
    _record_fails(dispatcher, 100, clock, advance=30)

    with pytest.raises(OperationalError):
        await dispatcher.run_once()
    assert await _status(db, nid) == "sending"
