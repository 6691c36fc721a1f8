"""How fast the production outbox moves notifications, against the database's own floor.

`python -m benchmarks.outbox_throughput [--quick] [--count N] [--rounds R]`

1. Enqueue N notifications with `outbox.enqueue` (100 per unit of work): enqueue_per_s.
2. Dispatch them with the production Dispatcher (4 workers, batches of 100) to a channel that
   does nothing, writing delivery_attempts as in production. Then check that every
   notification was sent exactly once (lost, duplicates).
3. On PostgreSQL, the floor: raw asyncpg doing the same database work per notification with
   4 workers (claim 100 with FOR UPDATE SKIP LOCKED, insert the attempt rows, mark sent).
4. Rounds 2..R repeat steps 2 and 3 on N freshly loaded rows. Both sides start each round
   from an emptied, vacuumed and analyzed outbox; they alternate, so a noisy moment on a
   shared machine hits both. delivered_per_s and floor_per_s are the medians over the
   rounds, ratio = delivered_per_s / floor_per_s; every round's figure is in RESULT too.
5. Memory: 100,000 pending rows bulk-inserted, the dispatcher started on them for a few
   seconds: peak_rss_mb.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import time
from datetime import timedelta

import asyncpg
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from benchmarks.common import bench_database, print_result, rss_mb
from bot.memory import freeze_startup_objects
from database.engine import Database
from database.models import DeliveryAttempt, Notification, User
from services.alerts import Alerts
from services.clock import SystemClock
from services.notifications import outbox
from services.notifications.channels.base import ChannelName, Outgoing, Recipient, SendResult
from services.notifications.dispatcher import Dispatcher, DispatcherConfig

WORKERS = 4
BATCH = 100


class NoopChannel:
    """Accepts everything instantly: the benchmark measures the outbox, not a provider."""

    name = ChannelName.TELEGRAM
    max_text_length = 4096
    enabled = True

    def __init__(self, expected: int = 0) -> None:
        self.sent = 0
        self.expected = expected
        self.all_sent = asyncio.Event()

    def can_reach(self, recipient: Recipient) -> bool:
        return True

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        self.sent += 1
        if self.sent == self.expected:
            self.all_sent.set()
        return SendResult(provider_message_id=str(message.notification_id), sender="noop")

    async def close(self) -> None:
        return None


async def _make_user(db: Database) -> int:
    now = SystemClock().now()

    async def work(session) -> int:
        user = User(telegram_id=1, display_name="bench", language="en", roles="requester",
                    created_at=now, updated_at=now)
        session.add(user)
        await session.flush()
        return user.id

    return await db.run(work)


async def enqueue_all(db: Database, user_id: int, count: int, prefix: str) -> float:
    clock = SystemClock()
    started = time.perf_counter()
    for start in range(0, count, 100):

        async def work(session, start=start) -> None:
            for i in range(start, min(start + 100, count)):
                await outbox.enqueue(session, recipient_id=user_id, kind="bench",
                                     idempotency_key=f"{prefix}:{i}", text=f"message {i}",
                                     now=clock.now())

        await db.run(work)
    return count / (time.perf_counter() - started)


async def fresh_rows(db: Database, user_id: int, count: int, prefix: str) -> None:
    """Empty the outbox, then load `count` due rows, so every round starts alike."""
    async with db.transaction() as session:
        await session.execute(DeliveryAttempt.__table__.delete())
        await session.execute(Notification.__table__.delete())
    await vacuum(db, "VACUUM ANALYZE")
    await _bulk_pending(db, user_id, count, prefix)
    await vacuum(db, "ANALYZE")


async def vacuum(db: Database, command: str) -> None:
    """VACUUM and/or ANALYZE the outbox tables (PostgreSQL), as autovacuum does in a database
    that has been running a while.

    Straight after a bulk load the statistics still describe the empty table: the planner
    then expects a handful of due rows and, for every claim, reads and sorts all of them
    instead of walking the partial index in order and stopping after a batch. Both the
    dispatcher and the floor are measured on fresh statistics.
    """
    if db.dialect != "postgresql":
        return
    async with db.engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f"{command} notifications"))
        await connection.execute(text(f"{command} delivery_attempts"))


async def dispatch_all(db: Database, count: int) -> float:
    clock = SystemClock()
    alerts = Alerts(admin_telegram_ids=[], window=timedelta(hours=1))
    config = DispatcherConfig(workers=WORKERS, batch_size=BATCH, idle_seconds=0.05)
    channel = NoopChannel(expected=count)
    dispatcher = Dispatcher(db, {ChannelName.TELEGRAM: channel}, clock, alerts, config)
    started = time.perf_counter()
    await dispatcher.start()
    # Done when every notification was sent and every outcome recorded: nothing due or leased.
    # The database is asked only once all were sent, so asking costs the run nothing; each
    # look reads one partial index (status = 'pending' / 'sending').
    with contextlib.suppress(TimeoutError):  # something went wrong: verify() will say what
        await asyncio.wait_for(channel.all_sent.wait(), timeout=max(60.0, count / 100))
    unfinished = [
        select(Notification.id).where(Notification.status == status).limit(1)
        for status in ("pending", "sending")
    ]
    while True:
        async with db.transaction() as session:
            if all([await session.scalar(look) is None for look in unfinished]):
                break
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    await dispatcher.stop()
    return count / elapsed


async def verify(db: Database, count: int) -> tuple[int, int]:
    async with db.transaction() as session:
        sent = await session.scalar(
            select(func.count()).select_from(Notification).where(Notification.status == "sent")
        )
        duplicates = await session.scalar(
            select(func.count()).select_from(
                select(DeliveryAttempt.notification_id)
                .where(DeliveryAttempt.outcome == "sent")
                .group_by(DeliveryAttempt.notification_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
    return count - sent, duplicates


async def floor(url: str, count: int) -> float:
    """Raw asyncpg, the same database work per notification, no ORM, no channel."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    pool = await asyncpg.create_pool(dsn, min_size=WORKERS, max_size=WORKERS)
    claim = """
        UPDATE notifications SET status = 'sending', lease_owner = $1,
               lease_until = now() + interval '60 seconds', updated_at = now()
        WHERE id IN (SELECT id FROM notifications
                     WHERE status = 'pending' AND next_attempt_at <= now()
                     ORDER BY priority, next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING id"""
    record_attempts = """
        INSERT INTO delivery_attempts (notification_id, channel, sender, outcome, latency_ms, at)
        SELECT unnest($1::bigint[]), 'telegram', 'noop', 'sent', 0, now()"""
    mark_sent = """
        UPDATE notifications SET status = 'sent', sent_at = now(), lease_owner = NULL,
               lease_until = NULL, attempts = attempts + 1, updated_at = now()
        WHERE id = ANY($1::bigint[]) AND lease_owner = $2"""

    async def worker(name: str) -> None:
        while True:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    ids = [r["id"] for r in await conn.fetch(claim, name, BATCH)]
                if not ids:
                    return
                async with conn.transaction():
                    await conn.execute(record_attempts, ids)
                    await conn.execute(mark_sent, ids, name)

    started = time.perf_counter()
    await asyncio.gather(*(worker(f"floor-{i}") for i in range(WORKERS)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return count / elapsed


async def _bulk_pending(db: Database, user_id: int, count: int, prefix: str) -> None:
    now = SystemClock().now()
    for start in range(0, count, 5000):
        rows = [
            dict(recipient_id=user_id, kind="bench", payload={"text": f"m{i}"}, priority=5,
                 idempotency_key=f"{prefix}:{i}", allow_fallback=True, channel_chain="telegram",
                 channel_index=0, channel="telegram", status="pending", attempts=0,
                 channel_attempts=0, parts_sent=0, next_attempt_at=now, created_at=now,
                 updated_at=now)
            for i in range(start, min(start + 5000, count))
        ]
        async with db.transaction() as session:
            await session.execute(insert(Notification), rows)


async def peak_rss_with_backlog(db: Database, user_id: int, backlog: int, seconds: float) -> float:
    await _bulk_pending(db, user_id, backlog, "backlog")
    alerts = Alerts(admin_telegram_ids=[], window=timedelta(hours=1))
    config = DispatcherConfig(workers=WORKERS, batch_size=BATCH, idle_seconds=0.05)
    dispatcher = Dispatcher(db, {ChannelName.TELEGRAM: NoopChannel()}, SystemClock(), alerts,
                            config)
    peak = rss_mb()
    await dispatcher.start()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        peak = max(peak, rss_mb())
        await asyncio.sleep(0.1)
    await dispatcher.stop()
    return max(peak, rss_mb())


async def main(count: int, backlog: int, rss_seconds: float, rounds: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    async with bench_database() as (db, url):
        engine = db.dialect
        user_id = await _make_user(db)
        freeze_startup_objects()  # as the bot does once it has started (bot/memory.py)
        print(f"engine={engine} count={count}: enqueueing", flush=True)
        enqueue_rate = await enqueue_all(db, user_id, count, "bench")
        await vacuum(db, "ANALYZE")
        delivered: list[float] = []
        floors: list[float] = []
        lost = duplicates = 0
        for number in range(rounds):
            if number:  # the first round dispatches what enqueue_all wrote
                await fresh_rows(db, user_id, count, f"round{number}")
            delivered.append(await dispatch_all(db, count))
            round_lost, round_duplicates = await verify(db, count)
            lost, duplicates = lost + round_lost, duplicates + round_duplicates
            line = f"round {number + 1}: delivered {delivered[-1]:,.0f}/s"
            if engine == "postgresql":
                await fresh_rows(db, user_id, count, f"floor{number}")
                floors.append(await floor(url, count))
                line += f", floor (raw asyncpg) {floors[-1]:,.0f}/s"
            print(f"{line} (lost {round_lost}, duplicates {round_duplicates})", flush=True)
        delivered_rate = statistics.median(delivered)
        floor_rate = statistics.median(floors) if floors else None
        async with db.transaction() as session:
            await session.execute(DeliveryAttempt.__table__.delete())
            await session.execute(Notification.__table__.delete())
        print(f"memory: {backlog:,} pending rows, dispatching for {rss_seconds:.0f} s", flush=True)
        peak = await peak_rss_with_backlog(db, user_id, backlog, rss_seconds)
    print_result({
        "engine": engine,
        "count": count,
        "rounds": rounds,
        "enqueue_per_s": round(enqueue_rate, 1),
        "delivered_per_s": round(delivered_rate, 1),
        "delivered_per_s_rounds": [round(rate) for rate in delivered],
        "floor_per_s": round(floor_rate, 1) if floor_rate else None,
        "floor_per_s_rounds": [round(rate) for rate in floors] or None,
        "ratio": round(delivered_rate / floor_rate, 3) if floor_rate else None,
        "lost": lost,
        "duplicates": duplicates,
        "backlog_rows": backlog,
        "peak_rss_mb": round(peak, 1),
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 notifications")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3,
                        help="dispatcher and floor runs, interleaved; the medians are reported")
    args = parser.parse_args()
    count = args.count or (5_000 if args.quick else 20_000)
    asyncio.run(main(count, backlog=100_000, rss_seconds=3 if args.quick else 5,
                     rounds=max(1, args.rounds)))
