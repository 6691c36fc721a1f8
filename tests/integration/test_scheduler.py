"""Scheduled jobs run once per cluster, are recorded, heal after a crash and alert when failing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from database.engine import Database
from database.models import JobRun, Lease, Notification, User
from services import leases
from services.alerts import Alerts
from services.clock import FakeClock, SystemClock
from services.scheduler import Scheduler, last_runs, register_core_jobs, short_error

MINUTE = timedelta(minutes=1)


def _alerts() -> Alerts:
    return Alerts(admin_telegram_ids=(101, 102), window=timedelta(hours=1))


def _scheduler(db: Database, clock: FakeClock | SystemClock, owner: str = "host-a:1", **kw):
    return Scheduler(db, clock, _alerts(), owner=owner, **kw)


async def _add_user(db: Database, now: datetime, telegram_id: int, roles: str) -> int:
    async def work(session) -> int:
        user = User(
            telegram_id=telegram_id, display_name=f"u{telegram_id}", roles=roles,
            created_at=now, updated_at=now,
        )
        session.add(user)
        await session.flush()
        return user.id

    return await db.run(work)


async def _add_notification(db: Database, recipient_id: int, key: str, **fields) -> int:
    async def work(session) -> int:
        row = Notification(
            recipient_id=recipient_id, kind="status", payload={"text": "hi"},
            idempotency_key=key, channel_chain="telegram", channel="telegram", **fields,
        )
        session.add(row)
        await session.flush()
        return row.id

    return await db.run(work)


async def _runs(db: Database, job: str) -> list[JobRun]:
    async with db.transaction() as session:
        return list(
            await session.scalars(select(JobRun).where(JobRun.job == job).order_by(JobRun.id))
        )


async def _count(db: Database, model, *where) -> int:
    async with db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
async def other_db(db_url: str) -> AsyncIterator[Database]:
    """A second engine on the same database: what a second bot process would have."""
    database = Database.from_url(db_url)
    yield database
    await database.dispose()


async def test_a_run_is_recorded_with_start_end_outcome_and_summary(db: Database) -> None:
    clock = FakeClock()
    start = clock.now()
    scheduler = _scheduler(db, clock)
    given: list[datetime] = []

    async def sweep(now: datetime) -> str:
        given.append(now)
        clock.advance(3)
        return "swept 7"

    scheduler.add_job("sweep", sweep, every=MINUTE)
    run = await scheduler.run_job("sweep")

    assert run is not None and given == [start]
    [stored] = await _runs(db, "sweep")
    assert stored.owner == "host-a:1"
    assert stored.started_at == start and stored.finished_at == start + timedelta(seconds=3)
    assert stored.outcome == "ok" and stored.error_code is None
    assert stored.summary == "swept 7"
    assert stored.consecutive_failures == 0
    assert await _count(db, Lease) == 0  # released at the end


async def test_failures_are_counted_and_the_third_alerts_each_admin_once(db: Database) -> None:
    clock = FakeClock()
    admins = [
        await _add_user(db, clock.now(), 101, "requester,admin"),
        await _add_user(db, clock.now(), 102, "requester,admin"),
    ]
    await _add_user(db, clock.now(), 103, "requester")
    scheduler = _scheduler(db, clock)
    healthy = False

    async def flaky(now: datetime) -> str:
        if not healthy:
            raise ConnectionError("provider unreachable")
        return "fine"

    scheduler.add_job("flaky", flaky, every=MINUTE)
    alerts_after: list[int] = []
    for _ in range(4):
        run = await scheduler.run_job("flaky")
        assert run is not None and run.outcome == "failed"
        alerts_after.append(await _count(db, Notification, Notification.kind == "alert"))
        clock.advance(minutes=1)

    runs = await _runs(db, "flaky")
    assert [r.consecutive_failures for r in runs] == [1, 2, 3, 4]
    assert {(r.outcome, r.error_code, r.error_text) for r in runs} == {
        ("failed", "ConnectionError", "provider unreachable")
    }
    assert all(r.finished_at == r.started_at for r in runs)
    # The third failure tells every admin (not the requester); the fourth is within the window.
    assert alerts_after == [0, 0, 2, 2]
    async with db.transaction() as session:
        alerts = (await session.scalars(select(Notification))).all()
    assert sorted(n.recipient_id for n in alerts) == sorted(admins)
    assert all("flaky" in n.payload["text"] and "3 times" in n.payload["text"] for n in alerts)

    healthy = True
    ok = await scheduler.run_job("flaky")
    assert ok is not None and (ok.outcome, ok.consecutive_failures) == ("ok", 0)
    healthy = False
    clock.advance(minutes=1)
    again = await scheduler.run_job("flaky")
    assert again is not None and again.consecutive_failures == 1


async def test_two_processes_run_a_job_once_per_interval(
    db: Database, other_db: Database
) -> None:
    clock = FakeClock()
    calls: list[str] = []
    first = _scheduler(db, clock, "host-a:1")
    second = _scheduler(other_db, clock, "host-b:2")
    for scheduler in (first, second):

        async def sweep(now: datetime, owner: str = scheduler.owner) -> str:
            calls.append(owner)
            return "ok"

        scheduler.add_job("sweep", sweep, every=MINUTE)

    # Same instant: one runs, the other sees the fresh run and skips.
    results = [await first.run_job("sweep"), await second.run_job("sweep")]
    assert sum(r is not None for r in results) == 1 and calls == ["host-a:1"]
    # Offset timers inside the interval: still nothing.
    clock.advance(seconds=30)
    assert await second.run_job("sweep") is None and await first.run_job("sweep") is None
    # The next interval: once, by whoever comes first.
    clock.advance(seconds=30)
    assert await second.run_job("sweep") is not None
    assert await first.run_job("sweep") is None
    assert calls == ["host-a:1", "host-b:2"]
    assert [r.outcome for r in await _runs(db, "sweep")] == ["ok", "ok"]


async def test_a_run_in_progress_holds_off_the_other_process(
    db: Database, other_db: Database
) -> None:
    clock = FakeClock()
    go_on = asyncio.Event()
    calls = 0

    async def slow(now: datetime) -> str:
        nonlocal calls
        calls += 1
        await go_on.wait()
        return "done"

    schedulers = [_scheduler(db, clock, "host-a:1"), _scheduler(other_db, clock, "host-b:2")]
    for scheduler in schedulers:
        scheduler.add_job("slow", slow, every=MINUTE)
    tasks = [asyncio.create_task(s.run_job("slow")) for s in schedulers]
    done, _ = await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert [t.result() for t in done] == [None]  # the loser skipped while the winner runs
    go_on.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1 and sum(r is not None for r in results) == 1


async def test_a_dead_owners_lease_blocks_until_it_expires_then_its_run_is_abandoned(
    db: Database,
) -> None:
    clock = FakeClock()
    crashed_at = clock.now()
    lease = timedelta(minutes=5)

    async def crashed(session) -> None:
        assert await leases.try_acquire(
            session, name="job:nightly", owner="host-dead:9", now=crashed_at, ttl=lease
        )
        session.add(JobRun(job="nightly", owner="host-dead:9", started_at=crashed_at))

    await db.run(crashed)
    scheduler = _scheduler(db, clock)
    calls = 0

    async def nightly(now: datetime) -> str:
        nonlocal calls
        calls += 1
        return "done"

    scheduler.add_job("nightly", nightly, every=timedelta(hours=1), lease=lease)
    clock.advance(minutes=4)
    assert await scheduler.run_job("nightly") is None and calls == 0
    clock.advance(minutes=1)  # the dead owner's lease has run out
    run = await scheduler.run_job("nightly")
    assert run is not None and run.outcome == "ok" and calls == 1

    abandoned, fresh = await _runs(db, "nightly")
    assert (abandoned.outcome, abandoned.error_code) == ("failed", "abandoned")
    assert abandoned.finished_at == crashed_at + timedelta(minutes=5)
    assert abandoned.consecutive_failures == 1
    assert fresh.id == run.id and fresh.consecutive_failures == 0


async def test_a_run_longer_than_its_lease_is_stopped_and_recorded(db: Database) -> None:
    clock = FakeClock()
    scheduler = _scheduler(db, clock)

    async def stuck(now: datetime) -> str:
        await asyncio.sleep(30)
        return "never"

    scheduler.add_job("stuck", stuck, every=MINUTE, lease=timedelta(seconds=0.2))
    run = await scheduler.run_job("stuck")
    assert run is not None and (run.outcome, run.error_code) == ("failed", "timeout")
    assert await _count(db, Lease) == 0


async def test_a_cron_job_runs_once_per_period(db: Database) -> None:
    clock = FakeClock()
    scheduler = _scheduler(db, clock)
    calls = 0

    async def daily(now: datetime) -> None:
        nonlocal calls
        calls += 1

    scheduler.add_job("daily", daily, cron={"hour": 3, "minute": 30})
    assert await scheduler.run_job("daily") is not None
    clock.advance(hours=20)
    assert await scheduler.run_job("daily") is None
    clock.advance(hours=4)
    assert await scheduler.run_job("daily") is not None
    assert calls == 2


async def test_lease_rescue_makes_an_expired_sending_notification_pending(db: Database) -> None:
    clock = FakeClock()
    now = clock.now()
    user = await _add_user(db, now, 201, "requester")
    common = dict(status="sending", next_attempt_at=now, created_at=now, updated_at=now,
                  lease_owner="host-dead:9")
    expired = await _add_notification(db, user, "a", lease_until=now + timedelta(seconds=30),
                                      **common)
    live = await _add_notification(db, user, "b", lease_until=now + timedelta(minutes=10),
                                   **common)
    scheduler = _scheduler(db, clock)
    register_core_jobs(scheduler, db, dead_letter_retention=timedelta(days=30))

    clock.advance(minutes=1)
    run = await scheduler.run_job("lease_rescue")

    assert run is not None and run.outcome == "ok" and run.summary == "released 1"
    async with db.transaction() as session:
        rescued = await session.get(Notification, expired)
        still = await session.get(Notification, live)
    assert (rescued.status, rescued.lease_owner, rescued.lease_until) == ("pending", None, None)
    assert rescued.next_attempt_at == clock.now()
    assert still.status == "sending"


async def test_dead_letters_are_archived_only_after_the_retention(db: Database) -> None:
    clock = FakeClock()
    start = clock.now()
    user = await _add_user(db, start, 301, "requester")

    async def failed_at(key: str, at: datetime, status: str = "failed") -> int:
        return await _add_notification(
            db, user, key, status=status, next_attempt_at=at, created_at=at, updated_at=at,
            failed_at=at if status == "failed" else None,
        )

    old = await failed_at("old", start)
    recent = await failed_at("recent", start + timedelta(days=20))
    pending = await failed_at("pending", start, status="pending")
    scheduler = _scheduler(db, clock)
    register_core_jobs(scheduler, db, dead_letter_retention=timedelta(days=30))

    clock.advance(days=29)
    first = await scheduler.run_job("archive_dead_letters")
    assert first is not None and first.summary == "archived 0"
    clock.advance(days=2)  # 31 days after the old one failed, 11 after the recent one
    second = await scheduler.run_job("archive_dead_letters")
    assert second is not None and second.summary == "archived 1"
    async with db.transaction() as session:
        statuses = {
            i: (await session.get(Notification, i)).status for i in (old, recent, pending)
        }
    assert statuses == {old: "archived", recent: "failed", pending: "pending"}


async def test_last_runs_shows_the_latest_run_of_each_job(db: Database) -> None:
    clock = FakeClock()
    scheduler = _scheduler(db, clock)

    async def fine(now: datetime) -> str:
        return f"at {now:%H:%M}"

    async def broken(now: datetime) -> None:
        raise ValueError("bad row")

    scheduler.add_job("fine", fine, every=MINUTE)
    scheduler.add_job("broken", broken, every=MINUTE)
    for _ in range(2):
        await scheduler.run_job("fine")
        await scheduler.run_job("broken")
        clock.advance(minutes=1)

    async with db.transaction() as session:
        runs = await last_runs(session)
    assert [(r.job, r.outcome, r.consecutive_failures) for r in runs] == [
        ("broken", "failed", 2),
        ("fine", "ok", 0),
    ]
    assert runs[1].summary == "at 00:01"


async def test_the_real_timers_run_interval_jobs_and_shutdown_waits(db: Database) -> None:
    scheduler = _scheduler(db, SystemClock(), start_delay=timedelta(0), shutdown_timeout=2.0)
    ran = asyncio.Event()
    finishing = asyncio.Event()

    async def tick(now: datetime) -> str:
        ran.set()
        return "tick"

    async def long(now: datetime) -> str:
        finishing.set()
        await asyncio.sleep(0.3)
        return "finished during shutdown"

    scheduler.add_job("tick", tick, every=timedelta(seconds=0.2))
    scheduler.add_job("long", long, every=timedelta(hours=1))
    scheduler.start()
    await asyncio.wait_for(ran.wait(), timeout=2)
    await asyncio.wait_for(finishing.wait(), timeout=2)
    await scheduler.shutdown()

    assert any(r.outcome == "ok" for r in await _runs(db, "tick"))
    [long_run] = await _runs(db, "long")
    assert (long_run.outcome, long_run.summary) == ("ok", "finished during shutdown")
    assert await _count(db, JobRun, JobRun.outcome == "running") == 0
    assert await scheduler.run_job("tick") is None  # no new runs once stopped


async def test_shutdown_cancels_a_run_past_the_bound_and_records_it(db: Database) -> None:
    scheduler = _scheduler(db, SystemClock(), start_delay=timedelta(0))
    started = asyncio.Event()

    async def hung(now: datetime) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    scheduler.add_job("hung", hung, every=timedelta(hours=1))
    scheduler.start()
    await asyncio.wait_for(started.wait(), timeout=2)
    await scheduler.shutdown(timeout=0.1)

    [run] = await _runs(db, "hung")
    assert (run.outcome, run.error_code) == ("failed", "cancelled")
    assert await _count(db, Lease) == 0

    # After a restart the cut-off run does not hold the job off for an interval.
    restarted = _scheduler(db, SystemClock())

    async def quick(now: datetime) -> str:
        return "caught up"

    restarted.add_job("hung", quick, every=timedelta(hours=1))
    again = await restarted.run_job("hung")
    assert again is not None and again.summary == "caught up"


def test_error_text_keeps_no_urls_tokens_or_phone_numbers() -> None:
    exc = RuntimeError(
        "POST https://api.telegram.org/bot123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/x failed"
        " for +33612345678 with key 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw\nsecond line"
    )
    text = short_error(exc)
    assert text == (
        "POST https://api.telegram.org/bot[REDACTED]/x failed for +•••••••••78 with key [REDACTED]"
    )
    assert short_error(ValueError()) == ""


async def test_a_job_due_while_the_database_is_unreachable_logs_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outage is reported once by whoever waits for the database; each job that could not
    start says so in one line, not with a traceback per job and per interval."""
    unreachable = Database.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    scheduler = _scheduler(unreachable, FakeClock())
    ran: list[datetime] = []

    async def sweep(now: datetime) -> None:
        ran.append(now)

    scheduler.add_job("sweep", sweep, every=MINUTE)
    try:
        await scheduler._fire("sweep")
    finally:
        await unreachable.dispose()
    assert ran == []
    lines = [r for r in caplog.records if r.name == "services.scheduler"]
    assert [(r.levelname, r.exc_info) for r in lines] == [("WARNING", None)]
    assert "job sweep skipped: the database is unreachable" in lines[0].getMessage()
