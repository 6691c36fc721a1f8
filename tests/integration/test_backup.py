"""Backups taken while the bot dispatches, restored and found whole (issue 14), on both engines;
the daily SQLite job keeping its last copies, on the test clock.

The big test drives the real dispatcher (the production Telegram channel, a real aiogram Bot)
sending 1,000 notifications to the fake Bot API, takes the backup in the middle, restores it
(copying the file / pg_restore into a fresh database) and checks every row against the outbox's
rules: a row is pending (never tried, no lease), sending (leased, its outcome not recorded yet)
or sent (one recorded attempt, which said sent), and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy import Integer, cast, func, select, text
from sqlalchemy.engine import make_url

from database.engine import Database, create_engine
from database.migrate import current_revision, head_revision, schema_differences, upgrade
from database.models import DeliveryAttempt, Notification, User
from services.alerts import Alerts
from services.backup import (
    BACKUP_JOB,
    BackupError,
    back_up,
    libpq_url,
    pg_dump_command,
    register_backup_job,
)
from services.clock import FakeClock, SystemClock
from services.notifications import outbox
from services.notifications.channels.telegram import TelegramChannel
from services.notifications.dispatcher import Dispatcher, DispatcherConfig
from services.recovery_jobs import BackgroundJobs
from services.scheduler import Scheduler
from tests.conftest import TEST_DATABASE_URL, _admin
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram

NOTIFICATIONS = 1000
PEOPLE = 100


async def _people_and_notifications(db: Database) -> None:
    """PEOPLE users with a Telegram chat, NOTIFICATIONS notifications spread over them."""
    now = datetime.now(UTC)

    async def people(session) -> list[int]:
        users = [
            User(telegram_id=5000 + n, display_name=f"Person {n}", language="en",
                 roles="requester", created_at=now, updated_at=now)
            for n in range(PEOPLE)
        ]
        session.add_all(users)
        await session.flush()
        return [u.id for u in users]

    ids = await db.run(people)

    async def notifications(session) -> None:
        for n in range(NOTIFICATIONS):
            await outbox.enqueue(
                session, recipient_id=ids[n % PEOPLE], kind="request.update",
                idempotency_key=f"backup-test-{n}", text=f"Update #{n}", now=now,
            )

    await db.run(notifications)


@asynccontextmanager
async def dispatching(db: Database, fake: FakeTelegram) -> AsyncIterator[Dispatcher]:
    """The production dispatcher and Telegram channel, sending to `fake`."""
    bot = Bot(TEST_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url)))
    channel = TelegramChannel(bot, pack_action=lambda action: f"a:{action}")
    alerts = Alerts(admin_telegram_ids=[], window=timedelta(hours=1))
    dispatcher = Dispatcher(db, {"telegram": channel}, SystemClock(), alerts,
                            DispatcherConfig(send_retry_wait=0, idle_seconds=0.2))
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop(5)
        await channel.close()
        await bot.session.close()


async def _sent(db: Database) -> int:
    return await db.read(lambda s: s.scalar(
        select(func.count()).select_from(Notification).where(Notification.status == "sent")))


async def _eventually(check, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


@asynccontextmanager
async def restored(db_url: str, backup: Path, tmp_path: Path) -> AsyncIterator[str]:
    """The backup restored as an operator would (README): the file copied into place, or
    pg_restore into a fresh database (dropped afterwards). Yields the restored URL."""
    if make_url(db_url).get_backend_name() == "sqlite":
        target = tmp_path / "restored.db"
        shutil.copyfile(backup, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    assert TEST_DATABASE_URL is not None
    name = f"test_restore_{uuid.uuid4().hex[:10]}"
    url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    await _admin(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
    try:
        command = pg_dump_command(url, backup)
        process = await asyncio.create_subprocess_exec(
            "pg_restore", "--no-owner", "--exit-on-error", f"--dbname={libpq_url(make_url(url))}",
            str(backup), env=command.env(),
        )
        assert await process.wait() == 0
        yield url
    finally:
        await _admin(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _coherence(db: Database) -> dict[str, int]:
    """Every notification row obeys the outbox's rules; returns the count per status."""

    async def read(session) -> dict[str, int]:
        n, a = Notification, DeliveryAttempt
        tried = (select(a.notification_id, func.count().label("tries"),
                        func.sum(cast(a.outcome == "sent", Integer)).label("sent"))
                 .group_by(a.notification_id).subquery())
        rows = (await session.execute(
            select(n.status, n.attempts, n.lease_owner, n.lease_until, n.sent_at,
                   n.provider_message_id, tried.c.tries, tried.c.sent)
            .outerjoin(tried, tried.c.notification_id == n.id)
        )).all()
        counts: dict[str, int] = {}
        for status, attempts, owner, until, sent_at, message_id, tries, sent in rows:
            counts[status] = counts.get(status, 0) + 1
            if status == "sent":
                # Its send and its record went together: the attempt row, the time, the id.
                assert (tries, sent, attempts) == (1, 1, 1)
                assert sent_at is not None and message_id and owner is until is None
            elif status == "sending":
                # Claimed when the copy was taken: leased, its outcome not recorded yet.
                assert owner is not None and until is not None and tries is None
            else:
                assert status == "pending" and tries is None and attempts == 0
                assert owner is until is None
        orphans = await session.scalar(
            select(func.count()).select_from(a).outerjoin(n, n.id == a.notification_id)
            .where(n.id.is_(None)))
        assert orphans == 0
        return counts

    return await db.read(read)


async def test_a_backup_taken_while_1000_notifications_are_dispatched_restores_whole(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    await _people_and_notifications(db)
    backup_path = tmp_path / "backups" / "during-dispatch.backup"
    backup_path.parent.mkdir()
    # 5 ms per Bot API call: the dispatch lasts long enough to take the backup in its middle.
    async with FakeTelegram(delay=0.005) as fake, dispatching(db, fake):
        await _eventually(lambda: _gte(db, NOTIFICATIONS // 4))
        sent_before = await _sent(db)
        started = time.monotonic()
        result = await back_up(db_url, backup_path)
        finished = time.monotonic()
        sent_after = await _sent(db)
        await _eventually(lambda: _gte(db, NOTIFICATIONS))
        sends = sorted(c.at for c in fake.calls if c.method == "sendMessage")
    assert len(sends) == NOTIFICATIONS  # each sent once, the backup notwithstanding
    assert result.path == backup_path and result.revision == head_revision()
    assert sorted(p.name for p in backup_path.parent.iterdir()) == [backup_path.name]

    async with restored(db_url, backup_path, tmp_path) as url:
        copy = Database.from_url(url)
        try:
            assert await current_revision(copy.engine) == head_revision()
            assert await schema_differences(copy.engine) == []
            if copy.dialect == "sqlite":
                async with copy.engine.connect() as connection:
                    checked = (await connection.execute(text("PRAGMA integrity_check"))).all()
                assert checked == [("ok",)]
            counts = await _coherence(copy)
        finally:
            await copy.dispose()
    assert sum(counts.values()) == NOTIFICATIONS
    assert sent_before <= counts["sent"] <= sent_after

    during = [t for t in sends if started <= t <= finished]
    pairs = list(zip(sends, sends[1:], strict=False))
    gaps = [b - a for a, b in pairs]
    gaps_during = [b - a for a, b in pairs if started <= b <= finished]
    bursts = sorted(g for g in gaps if g > 0.02)  # the pauses between batches
    print(
        f"\n[backup figures, {db.dialect}] {NOTIFICATIONS} notifications dispatched in "
        f"{sends[-1] - sends[0]:.2f} s; in the copy {counts}; backup {result.seconds:.3f} s "
        f"({result.size} bytes) while dispatching, {len(during)} sends during it; longest "
        f"pause between sends during the backup {max(gaps_during, default=0) * 1000:.0f} ms, "
        f"between batches over the whole dispatch: median "
        f"{bursts[len(bursts) // 2] * 1000 if bursts else 0:.0f} ms, longest "
        f"{max(gaps) * 1000:.0f} ms"
    )


async def _gte(db: Database, count: int) -> bool:
    return await _sent(db) >= count


async def test_a_database_not_at_this_codes_head_is_not_backed_up(tmp_path: Path) -> None:
    """A copy that this code could not run on is refused, and nothing is left behind."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    await upgrade(engine)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '0009'"))
    await engine.dispose()
    folder = tmp_path / "backups"
    folder.mkdir()
    with pytest.raises(BackupError, match=r"revision 0009, not this code's head 00\d\d"):
        await back_up(url, folder / "copy.db")
    assert list(folder.iterdir()) == []


async def test_a_backup_never_overwrites_the_live_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    engine = create_engine(url)
    await upgrade(engine)
    await engine.dispose()
    with pytest.raises(BackupError, match="is the live database itself"):
        await back_up(url, tmp_path / "live.db")
    with sqlite3.connect(tmp_path / "live.db") as live:
        assert live.execute("SELECT version_num FROM alembic_version").fetchone() == (
            head_revision(),)


def test_pg_dump_gets_the_password_through_its_environment_only(tmp_path: Path) -> None:
    command = pg_dump_command(
        "postgresql+asyncpg://desk:s3cret-pw@db.example.com:5433/desk?ssl=require",
        tmp_path / "desk.dump",
    )
    assert command.argv == [
        "pg_dump", "--format=custom", "--file", str(tmp_path / "desk.dump"),
        "postgresql://desk@db.example.com:5433/desk?sslmode=require",
    ]
    assert command.env()["PGPASSWORD"] == "s3cret-pw"
    assert "s3cret" not in command.display()
    assert command.display().startswith("PGPASSWORD=**** pg_dump --format=custom")


# --- the daily job (SQLite) ---------------------------------------------------------------------


async def test_the_daily_backup_job_keeps_the_newest_copies_and_says_so(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    db = Database.from_url(url)
    await upgrade(db.engine)
    clock = FakeClock(datetime(2025, 3, 1, 3, 0, tzinfo=UTC))
    scheduler = Scheduler(db, clock, Alerts(admin_telegram_ids=[], window=timedelta(hours=1)),
                          owner="test:1")
    folder = tmp_path / "backups"
    register_backup_job(scheduler, url, folder=folder, keep=3, every=timedelta(days=1))
    folder.mkdir()
    # Files of other names in the folder are the operator's: never touched.
    for name in ("notes.txt", "bot-before-upgrade.db", "bot-20200101-000000.db.old"):
        (folder / name).write_text("keep me")
    try:
        summaries = []
        for _ in range(5):
            run = await scheduler.run_job(BACKUP_JOB)
            assert run is not None and run.outcome == "ok"
            summaries.append(run.summary or "")
            clock.advance(hours=24)
        assert await scheduler.run_job(BACKUP_JOB) is not None
        assert await scheduler.run_job(BACKUP_JOB) is None  # ran within its day: skipped
        jobs = await BackgroundJobs(db, scheduler).jobs()
    finally:
        await db.dispose()

    assert sorted(os.listdir(folder)) == [
        "bot-20200101-000000.db.old", "bot-20250304-030000.db", "bot-20250305-030000.db",
        "bot-20250306-030000.db", "bot-before-upgrade.db", "notes.txt",
    ]
    assert summaries[0].startswith("bot-20250301-030000.db ")
    assert f"revision {head_revision()}" in summaries[0]
    assert summaries[0].endswith("kept 1, deleted 0")
    assert summaries[4].endswith("kept 3, deleted 1")
    [view] = [j for j in jobs if j.name == BACKUP_JOB]
    assert view.every_seconds == 86400 and view.last is not None
    assert view.last.summary is not None and view.last.summary.startswith("bot-20250306-030000.db")
    with sqlite3.connect(folder / "bot-20250306-030000.db") as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_a_failing_backup_is_recorded_with_its_reason(tmp_path: Path) -> None:
    """The Background jobs screen shows why: here, BACKUP_DIR cannot be created."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    db = Database.from_url(url)
    await upgrade(db.engine)
    (tmp_path / "a-file").write_text("not a folder")
    scheduler = Scheduler(db, FakeClock(), Alerts(admin_telegram_ids=[], window=timedelta(1)),
                          owner="test:1")
    register_backup_job(scheduler, url, folder=tmp_path / "a-file" / "backups", keep=3,
                        every=timedelta(days=1))
    try:
        run = await scheduler.run_job(BACKUP_JOB)
    finally:
        await db.dispose()
    assert run is not None and run.outcome == "failed"
    assert run.error_code in ("FileExistsError", "NotADirectoryError")


def test_the_backup_job_is_for_sqlite_only() -> None:
    with pytest.raises(ValueError, match="schedule pg_dump"):
        register_backup_job(
            None,  # type: ignore[arg-type]
            "postgresql+asyncpg://desk@db/desk", folder=Path("backups"), keep=7,
            every=timedelta(days=1),
        )
