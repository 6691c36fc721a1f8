"""Does the dispatcher's claim stay cheap as the table grows? (PostgreSQL)

`python -m benchmarks.claim_plan [--quick]` with BENCH_DATABASE_URL pointing at PostgreSQL.

Seeds 10,000 rows, then 1,000,000 (--quick: 100,000), 1% of them due and the rest already sent,
as a long-lived outbox looks. For each size it runs the production claim statement
(`batches.PG_CLAIM`, batch of 100) under EXPLAIN (ANALYZE, BUFFERS) inside a
transaction that is rolled back, prints the plan, and reports the median time of several runs
and whether the partial index `ix_notifications_due` was used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import timedelta

from sqlalchemy import text

from benchmarks.common import bench_database, print_result
from database.engine import Database
from services.clock import SystemClock
from services.notifications.batches import PG_CLAIM

RUNS = 7


async def seed(db: Database, total: int) -> None:
    """Grow the table to `total` rows, 1% due, in one INSERT ... SELECT generate_series."""
    async with db.transaction() as session:
        current = await session.scalar(text("SELECT count(*) FROM notifications"))
        await session.execute(text(
            """
            INSERT INTO notifications (recipient_id, kind, payload, priority, idempotency_key,
                allow_fallback, channel_chain, channel_index, channel, status, attempts,
                channel_attempts, parts_sent, next_attempt_at, created_at, updated_at, sent_at)
            SELECT 1, 'bench', '{"text": "x"}', 5, 'seed:' || g, true, 'telegram', 0,
                   'telegram',
                   CASE WHEN g % 100 = 0 THEN 'pending' ELSE 'sent' END,
                   1, 0, 0, now() - interval '1 minute', now(), now(),
                   CASE WHEN g % 100 = 0 THEN NULL ELSE now() END
            FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS g
            """
        ), {"start": current + 1, "stop": total})
    async with db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE notifications"))


def claim_params() -> tuple[object, ...]:
    """PG_CLAIM's parameters: now, owner, lease_until, limit."""
    now = SystemClock().now()
    return (now, "bench", now + timedelta(minutes=1), 100)


async def measure(db: Database) -> tuple[float, str]:
    timings = []
    plan = ""
    for _ in range(RUNS):
        async with db.engine.connect() as conn:
            transaction = await conn.begin()
            started = time.perf_counter()
            rows = (
                await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {PG_CLAIM}",
                                           claim_params())
            ).all()
            timings.append((time.perf_counter() - started) * 1000)
            plan = "\n".join(r[0] for r in rows)
            await transaction.rollback()
    return statistics.median(timings), plan


async def main(sizes: list[int]) -> None:
    async with bench_database() as (db, _url):
        if db.dialect != "postgresql":
            print("claim_plan needs PostgreSQL: set BENCH_DATABASE_URL=postgresql+asyncpg://...",
                  file=sys.stderr)
            sys.exit(2)
        now = SystemClock().now()
        async with db.transaction() as session:
            await session.execute(text(
                "INSERT INTO users (id, telegram_id, display_name, language, language_chosen, "
                "roles, opt_outs, created_at, updated_at) VALUES (1, 1, 'bench', 'en', false, "
                "'requester', '', :now, :now)"), {"now": now})
        results = {}
        index_used = True
        for size in sizes:
            print(f"seeding to {size:,} rows", flush=True)
            await seed(db, size)
            ms, plan = await measure(db)
            print(f"--- plan at {size:,} rows (median of {RUNS}: {ms:.2f} ms) ---\n{plan}\n",
                  flush=True)
            results[size] = ms
            index_used = index_used and "ix_notifications_due" in plan
        small, large = sizes
    print_result({
        "rows_small": small,
        "rows_large": large,
        "ms_10k": round(results[small], 3),
        "ms_1m": round(results[large], 3),
        "ratio_large_to_small": round(results[large] / results[small], 2),
        "index_used": index_used,
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 then 100,000 rows")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    asyncio.run(main([10_000, 100_000 if args.quick else 1_000_000]))
