"""Two `python main.py run` processes against one PostgreSQL: each recovery sweep runs once per
interval across both (the scheduler's lease and gap rule), never twice at once, though both
have every sweep on their timers. Intervals are shortened through the settings."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import JobRun, SystemHealthSnapshot
from services.recovery_jobs import CLEANUP_JOB, RECONCILIATION_JOB, SNAPSHOT_JOB, STUCK_JOB
from tests.e2e.conftest import StartBot

INTERVAL = 2.0
SWEEPS = (STUCK_JOB, RECONCILIATION_JOB, SNAPSHOT_JOB, CLEANUP_JOB)
SHORT = {
    "STUCK_SWEEP_INTERVAL_SECONDS": str(INTERVAL),
    "INVENTORY_RECONCILIATION_INTERVAL_SECONDS": str(INTERVAL),
    "HEALTH_SNAPSHOT_INTERVAL_SECONDS": str(INTERVAL),
    "CLEANUP_INTERVAL_SECONDS": str(INTERVAL),
}
RUNS_WANTED = 4


async def runs_of(db: Database) -> dict[str, list[JobRun]]:
    rows = await db.read(lambda s: s.scalars(
        select(JobRun).where(JobRun.job.in_(SWEEPS)).order_by(JobRun.started_at)))
    found: dict[str, list[JobRun]] = {name: [] for name in SWEEPS}
    for row in rows:
        found[row.job].append(row)
    return found


async def test_two_processes_run_each_sweep_once_per_interval(
    start_bot: StartBot, db: Database, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("several bot processes share one PostgreSQL (SQLite has one writer)")
    first = await start_bot(**SHORT)
    second = await start_bot(**SHORT)
    async with asyncio.timeout(90):
        while min(len(r) for r in (await runs_of(db)).values()) < RUNS_WANTED:
            await asyncio.sleep(0.5)
    await asyncio.gather(first.stop(), second.stop())

    found = await runs_of(db)
    for job, runs in found.items():
        finished = [r for r in runs if r.outcome != "running"]
        assert all(r.outcome == "ok" for r in finished), [(r.error_code, r.error_text)
                                                          for r in finished]
        for before, after in zip(runs, runs[1:], strict=False):
            # Never two at once, and never again within 90% of the interval.
            assert before.finished_at is not None and before.finished_at <= after.started_at
            assert after.started_at - before.started_at >= timedelta(seconds=INTERVAL * 0.9), job
    # Both processes had every sweep on their timers: without the lease and the gap rule each
    # sweep would have run about twice per interval.
    for process in (first, second):
        [started] = [line for line in process.output if "scheduler started" in line]
        assert all(job in started for job in SWEEPS), started
    snapshots = await db.read(lambda s: s.scalars(select(SystemHealthSnapshot.status)))
    assert len(list(snapshots)) >= RUNS_WANTED
