"""The parts of /health on both engines: each part's figures and reasons, the overall status
from them, and the heavy part (inventory discrepancies) read from the latest stored snapshot."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from database.engine import Database
from database.models import (
    ChannelState,
    ErrorGroup,
    ErrorOccurrence,
    InventoryItem,
    JobRun,
    Notification,
)
from services import health
from services.clock import FakeClock
from services.health import HealthMonitor, SystemHealth
from services.notifications import outbox
from services.recovery_jobs import stuck_condition
from tests.integration.workflow_world import World, build_world


def monitor(world: World, jobs: tuple[str, ...] = ()) -> SystemHealth:
    system = SystemHealth(world.db, world.clock,
                          stuck_condition=stuck_condition(world.requests.config), max_age=0)
    system.enabled_channels = ("telegram", "email")
    system.job_names = lambda: jobs
    return system


async def test_every_part_reports_its_figures_and_why_it_is_not_ok(db: Database) -> None:
    world = await build_world(db)
    clock = world.clock
    snapshot = await monitor(world, ("cleanup",)).snapshot()
    assert snapshot.status == "ok", snapshot.reasons
    assert snapshot.components["inventory"].details["discrepancies"] is None  # no snapshot yet

    opened = await world.requests.open_request(world.people["ann"], world.form())
    admin = world.people["ada"].id
    clock.advance(hours=3)  # the request offered 3 h ago is stuck (threshold 2 h)
    now = clock.now()

    async def break_things(session) -> None:
        dead = await outbox.enqueue(session, recipient_id=admin, kind="test",
                                    idempotency_key="dead-1", text="hi", now=now)
        await session.execute(update(Notification).where(Notification.id == dead.id).values(
            status="failed", failed_at=now))
        session.add(ChannelState(channel="email", paused=False, circuit_trips=1,
                                 circuit_open_until=now + timedelta(hours=1), updated_at=now))
        group = ErrorGroup(fingerprint="f", exception_type="E", place="p", category="database",
                           severity="critical", count=1, first_seen=now, last_seen=now)
        session.add(group)
        await session.flush()
        session.add(ErrorOccurrence(code="ABC123", group_id=group.id, context={}, at=now))
        session.add(JobRun(job="cleanup", owner="h:1", started_at=now, finished_at=now,
                           outcome="failed", error_code="Boom", consecutive_failures=1))

    await db.run(break_things)
    snapshot = await monitor(world, ("cleanup",)).snapshot()
    parts = snapshot.components
    assert snapshot.status == "degraded"
    assert set(snapshot.reasons) >= {
        "channels: email is failing (circuit open)",
        "outbox: dead letters wait for an admin",
        "workflows: requests are stuck and wait for an admin",
        "errors: critical errors in the last hour",
        "jobs: job cleanup failed its last run",
    }
    assert parts["database"].status == "ok" and parts["database"].details["latency_ms"] >= 0
    assert parts["channels"].details["channels"]["email"]["circuit"] == "open"
    assert parts["channels"].details["channels"]["telegram"] == {
        "enabled": True, "paused": False, "circuit": "closed", "circuit_open_until": None}
    outbox_figures = parts["outbox"].details
    assert outbox_figures["dead_letters"] == 1 and outbox_figures["dead_letters_24h"] == 1
    assert outbox_figures["depth"]["failed"] == {"telegram": 1}
    assert parts["workflows"].details == {"stuck": 1, "by_state": {"offered": 1}}
    assert parts["errors"].details["last_hour_by_category"] == {"database": {"critical": 1}}
    assert parts["jobs"].details["jobs"]["cleanup"]["outcome"] == "failed"
    assert opened.state.value == "offered"

    clock.advance(hours=30)  # the error and the dead letter leave their windows
    later = await monitor(world).snapshot()
    assert later.components["outbox"].details["dead_letters_24h"] == 0
    assert later.components["errors"].status == "ok"


async def test_inventory_discrepancies_come_from_the_latest_stored_snapshot(
    db: Database
) -> None:
    world = await build_world(db)
    system = monitor(world)
    item = world.items["PIPE-15"]
    await db.run(lambda s: s.execute(
        update(InventoryItem).where(InventoryItem.id == item).values(on_hand=7)))

    before = await system.snapshot()
    assert before.components["inventory"].details["discrepancies"] is None

    taken = await health.take_snapshot(db, system.checks, world.clock)
    assert taken.components["inventory"].details["discrepancies"] == 1
    assert "inventory: inventory and its ledger disagree" in taken.reasons

    after = await HealthMonitor(db, system.checks, clock=world.clock, max_age=0).snapshot()
    inventory = after.components["inventory"]
    assert inventory.status == "degraded" and inventory.details["discrepancies"] == 1
    assert inventory.details["by_kind"] == {"ledger_mismatch": 1}
    [(at, status, reasons)] = await system.history()
    assert status == "degraded" and at == world.clock.now()


async def test_a_database_slow_to_answer_degrades_health_timed_by_the_injected_clock(
    db: Database,
) -> None:
    """The database part times the snapshot's reads on the monitor's clock: a slow machine
    running the tests is not a slow database, and a test can make one."""
    clock = FakeClock()

    async def slow(session):  # the reads take 0.6 s of the monitor's time
        clock.advance(0.6)
        return health.Component("ok", ())

    snapshot = await HealthMonitor(db, {"slow": slow}, clock=clock, max_age=0).snapshot()
    database = snapshot.components["database"]
    assert snapshot.status == "degraded" and database.details["latency_ms"] == 600.0
    assert "database: slow to answer (over 500 ms)" in snapshot.reasons

    fast = await HealthMonitor(db, {}, clock=FakeClock(), max_age=0).snapshot()
    assert fast.components["database"].status == "ok"
