"""/health on both engines: however many callers ask, the database is read once per
HEALTH_CACHE_SECONDS, in one indexed statement, without the SQLite writer's lock; strangers see
the status and its reasons, trusted callers the counts; 503 only when the database is down.

Statements are counted, not timed: SQLAlchemy's `before_cursor_execute` sees every statement
sent through it, `Database.driver_statement_listeners` those sent below it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import event, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.web import APP_KEY_CHECKS, APP_KEY_HEALTH, build_web_app
from database.engine import Database, create_engine
from database.models import Notification
from services.clock import FakeClock
from services.health import Component, HealthMonitor, outbox_health
from services.notifications import outbox
from tests.support import make_user

CALLERS = 50
TOKEN = "health-token-for-tests-0123"
FROM_OUTSIDE = {"X-Forwarded-For": "203.0.113.9"}  # through a proxy: not a local caller


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def record_statements(db: Database) -> list[str]:
    """Every statement `db` sends from now on, as SQL text."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    db.driver_statement_listeners.append(seen.append)
    return seen


def outbox_check(clock: FakeClock) -> Callable[[AsyncSession], Any]:
    """The check bot/app.py registers (`Delivery.health`), without a whole delivery engine."""
    return lambda session: outbox_health(session, now=clock.now())


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def get_health(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{base}/health", headers=headers or {}) as response:
        return response.status, await response.json()


async def add_dead_letter(db: Database, clock: FakeClock) -> None:
    user = await make_user(db, clock)
    enqueued = await db.run(lambda s: outbox.enqueue(
        s, recipient_id=user, kind="test", idempotency_key="dead-1", text="hello",
        now=clock.now(), channels=["telegram"], allow_fallback=False))
    await db.run(lambda s: s.execute(
        update(Notification).where(Notification.id == enqueued.id)
        .values(status="failed", failed_at=clock.now())))


async def test_many_concurrent_callers_read_the_database_once_per_cache_period(
    db: Database, clock: FakeClock
) -> None:
    app = build_web_app(db, {"outbox": outbox_check(clock)}, clock=clock, health_cache_seconds=5)
    seen = record_statements(db)
    async with serving(app) as base, aiohttp.ClientSession() as http:
        for _round in range(3):  # the first computes; the next two are served from the cache
            answers = await asyncio.gather(
                *(get_health(http, base, FROM_OUTSIDE) for _ in range(CALLERS))
            )
            assert {status for status, _ in answers} == {200}
            clock.advance(seconds=2)
        reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
        assert len(reads) == 1, seen
        assert app[APP_KEY_HEALTH].computations == 1
        # Fresh data once the cache period is over: one more statement for the next burst.
        await asyncio.gather(*(get_health(http, base, FROM_OUTSIDE) for _ in range(CALLERS)))
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 2, seen
    # Nothing else: on SQLite a deferred BEGIN per read; on PostgreSQL (autocommit) not even it.
    assert len(seen) == (4 if db.dialect == "sqlite" else 2), seen


async def test_callers_during_a_computation_wait_for_that_one(
    db: Database, clock: FakeClock
) -> None:
    release = asyncio.Event()
    started = 0

    async def slow(session: AsyncSession) -> Component:
        nonlocal started
        started += 1
        await release.wait()
        return await outbox_health(session, now=clock.now())

    monitor = HealthMonitor(db, {"outbox": slow}, clock=clock, max_age=5)
    seen = record_statements(db)
    callers = [asyncio.create_task(monitor.snapshot()) for _ in range(CALLERS)]
    while started == 0:
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not any(task.done() for task in callers)  # all of them are waiting
    release.set()
    snapshots = await asyncio.gather(*callers)
    assert started == 1 and monitor.computations == 1
    assert len({id(s) for s in snapshots}) == 1
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 1


async def test_health_takes_no_writer_lock_and_answers_while_a_writer_holds_it(
    db: Database, clock: FakeClock
) -> None:
    app = build_web_app(db, {"outbox": outbox_check(clock)}, clock=clock, health_cache_seconds=0)
    seen = record_statements(db)
    async with serving(app) as base, aiohttp.ClientSession() as http:
        async with db.transaction() as session:
            # A unit of work in the middle of its writes: on SQLite it holds the one writer's
            # lock (BEGIN IMMEDIATE) and this process's writer turn until it commits.
            await session.execute(text("UPDATE channel_states SET paused = paused"))
            health_statements_from = len(seen)
            status, body = await asyncio.wait_for(get_health(http, base), timeout=15)
            assert status == 200 and body["status"] == "ok"
            health_statements = seen[health_statements_from:]
    assert health_statements, "the health read sent nothing"
    assert not [s for s in health_statements if "IMMEDIATE" in s.upper()]


async def test_strangers_see_the_status_and_reasons_and_trusted_callers_the_counts(
    db: Database, clock: FakeClock
) -> None:
    await add_dead_letter(db, clock)
    app = build_web_app(
        db, clock=clock, health_token=TOKEN, health_cache_seconds=5
    )
    # Added after the app is built, as bot/app.py does once the delivery engine exists.
    app[APP_KEY_CHECKS]["outbox"] = outbox_check(clock)
    public = {"status": "degraded", "reasons": ["outbox: dead letters wait for an admin"]}
    async with serving(app) as base, aiohttp.ClientSession() as http:
        assert await get_health(http, base, FROM_OUTSIDE) == (200, public)
        for wrong in (f"Bearer {TOKEN}x", "Bearer ", TOKEN, f"Basic {TOKEN}"):
            assert await get_health(http, base, {**FROM_OUTSIDE, "Authorization": wrong}) == (
                200, public
            ), wrong
        for headers in ({**FROM_OUTSIDE, "Authorization": f"Bearer {TOKEN}"}, {}):
            status, body = await get_health(http, base, headers)  # {}: loopback, no proxy
            assert status == 200
            assert body["status"] == "degraded" and body["reasons"] == public["reasons"]
            database = body["components"]["database"]
            assert database["status"] == "ok" and database["latency_ms"] >= 0
            assert body["components"]["outbox"] == {
                "status": "degraded", "due": 0, "oldest_due_age_seconds": 0.0,
                "dead_letters": 1, "open_manual_tasks": 0,
            }
        # /health/live and /health/ready are as they were.
        for path in ("/health/live", "/health/ready"):
            async with http.get(f"{base}{path}", headers=FROM_OUTSIDE) as response:
                assert response.status == 200 and (await response.json())["status"] == "ok"


async def test_due_work_waiting_too_long_is_degraded_with_its_age(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock)
    await db.run(lambda s: outbox.enqueue(
        s, recipient_id=user, kind="test", idempotency_key="late-1", text="hello",
        now=clock.now(), channels=["telegram"], allow_fallback=False))
    monitor = HealthMonitor(db, {"outbox": outbox_check(clock)}, clock=clock, max_age=5)
    assert (await monitor.snapshot()).status == "ok"
    clock.advance(seconds=301)
    snapshot = await monitor.snapshot()
    assert snapshot.status == "degraded"
    assert snapshot.reasons == ("outbox: notifications due for more than 5 minutes are unsent",)
    assert snapshot.components["outbox"].details["due"] == 1
    assert snapshot.components["outbox"].details["oldest_due_age_seconds"] == 301.0


async def test_health_statement_reads_indexes_only(db: Database, clock: FakeClock) -> None:
    captured: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    await db.read(lambda s: outbox.health_figures(s, now=clock.now()))
    event.remove(db.engine.sync_engine, "before_cursor_execute", before)
    [(statement, parameters)] = captured
    async with db.engine.connect() as conn:
        if db.dialect == "sqlite":
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [row[-1] for row in rows]
            scans = [
                line for line in plan
                if line.startswith(("SCAN", "SEARCH")) and line != "SCAN CONSTANT ROW"
            ]
            assert len(scans) == 4, plan
            assert all("INDEX" in line for line in scans), plan
        else:
            # With sequential scans priced out, a table that has no usable index still shows one.
            await conn.exec_driver_sql("SET enable_seqscan = off")
            rows = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plan = [row[0] for row in rows]
            assert not [line for line in plan if "Seq Scan" in line], plan
            assert len([line for line in plan if "Index" in line]) >= 4, plan


async def test_health_is_503_only_when_the_database_does_not_answer(clock: FakeClock) -> None:
    unreachable = Database(create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none"))
    try:
        app = build_web_app(unreachable, {"outbox": outbox_check(clock)}, clock=clock)
        async with serving(app) as base, aiohttp.ClientSession() as http:
            assert await get_health(http, base, FROM_OUTSIDE) == (
                503, {"status": "down", "reasons": ["database: unreachable"]}
            )
            status, body = await get_health(http, base)
            assert status == 503 and body["components"] == {"database": {"status": "down"}}
    finally:
        await unreachable.dispose()


async def test_a_failing_check_degrades_its_part_without_taking_health_down(
    db: Database, clock: FakeClock
) -> None:
    async def broken(session: AsyncSession) -> Component:
        raise RuntimeError("a bug in a check")

    monitor = HealthMonitor(db, {"broken": broken}, clock=clock, max_age=5)
    snapshot = await monitor.snapshot()
    assert snapshot.status == "degraded"
    assert snapshot.reasons == ("broken: its check failed",)
    assert snapshot.components["database"].status == "ok"
