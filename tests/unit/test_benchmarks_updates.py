"""benchmarks/updates.py still runs against the production Dispatcher: a few updates, every
answer checked by the benchmark itself, the statement counts sane. No timing is asserted."""

from __future__ import annotations

from benchmarks.updates import run, targets
from database.engine import Database


async def test_the_updates_benchmark_runs_and_counts_statements(db: Database) -> None:
    result = await run(db, updates=20, users=5, rounds=1, freeze=False)

    assert result["engine"] == db.dialect
    assert result["updates"] == 20
    assert result["updates_per_s"] > 0 and result["floor_updates_per_s"] > 0
    assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    # Every update loads its user; the Back press also reads the profile it redraws.
    assert result["reads_per_help"] >= 1 and result["reads_per_press"] >= 1
    assert result["reads_per_update"] > 0
    # A returning user's update writes nothing and never takes SQLite's writer's lock.
    assert result["writes_per_update"] == 0
    assert result["writer_locks_per_update"] == 0
    assert result["reads_per_help"] == 1
    assert len(targets(result)) == 4
