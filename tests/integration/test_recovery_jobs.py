"""The recovery sweeps on both engines: the stuck-workflow digest tells the admins once per
newly stuck request (time moved by the test clock); the clean-up deletes what is past its age
and archives old dead letters, never deleting them; Run now runs a job at once, and only once
when two processes press it together."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import select

from database.engine import Database
from database.models import (
    DeliveryAttempt,
    ErrorGroup,
    ErrorOccurrence,
    InboundMessage,
    JobRun,
    Notification,
    SystemHealthSnapshot,
    TransactionLog,
)
from services.alerts import ALERT_KIND
from services.clock import FakeClock
from services.recovery_jobs import (
    STUCK_JOB,
    RecoveryJobsConfig,
    clean_up,
    register_recovery_jobs,
    stuck_condition,
)
from services.scheduler import Scheduler
from tests.integration.workflow_world import World, build_world


def scheduler_for(world: World, owner: str = "test:1") -> Scheduler:
    scheduler = Scheduler(world.db, world.clock, world.requests.alerts, owner=owner)
    register_recovery_jobs(
        scheduler, world.db, world.clock, RecoveryJobsConfig(),
        stuck_condition=stuck_condition(world.requests.config), health_checks={},
    )
    return scheduler


async def digests(world: World) -> list[str]:
    """The stuck-workflow digests the admin's outbox holds, oldest first."""
    return [t for t in await world.texts("ada") if "newly stuck" in t]


async def test_the_sweep_reports_a_newly_stuck_request_once(db: Database) -> None:
    world = await build_world(db)
    scheduler = scheduler_for(world)
    opened = await world.requests.open_request(world.people["ann"], world.form())
    assert opened.state.value == "offered"

    await scheduler.run_job(STUCK_JOB)
    assert await digests(world) == []  # offered a minute ago: not stuck

    world.clock.advance(hours=3)  # past STUCK_AFTER_OFFERED_MINUTES (120)
    run = await scheduler.run_job(STUCK_JOB)
    assert run is not None and run.summary == "newly stuck 1"
    [digest] = await digests(world)
    assert f"#{opened.id} offered" in digest
    [note] = await world.notifications("ada", ALERT_KIND)
    assert note.payload["buttons"][0]["action"] == "open_stuck"

    for _ in range(3):  # still stuck, at the same version: never reported again
        world.clock.advance(minutes=31)
        run = await scheduler.run_job(STUCK_JOB)
        assert run is not None and run.summary == "newly stuck 0"
    assert len(await digests(world)) == 1


async def test_cleanup_deletes_what_is_old_and_archives_dead_letters(db: Database) -> None:
    world = await build_world(db)
    now = world.clock.now()
    old, recent = now - timedelta(days=100), now - timedelta(days=1)
    admin = world.people["ada"].id

    async def seed(session) -> None:
        def note(key: str, status: str, at: datetime) -> Notification:
            return Notification(
                recipient_id=admin, kind="test", payload={"text": key}, idempotency_key=key,
                channel_chain="telegram", channel="telegram", status=status,
                next_attempt_at=at, created_at=at, updated_at=at,
                sent_at=at if status == "sent" else None,
                failed_at=at if status == "failed" else None,
            )

        rows = {key: note(key, status, at) for key, status, at in (
            ("sent-old", "sent", old), ("sent-new", "sent", recent),
            ("dead-old", "failed", old), ("dead-new", "failed", recent),
            ("pending-old", "pending", old),
        )}
        session.add_all(rows.values())
        await session.flush()
        for row in rows.values():
            session.add(DeliveryAttempt(notification_id=row.id, channel="telegram",
                                        outcome="sent", at=row.created_at))
        session.add_all([
            TransactionLog(operation="x", entity_type="t", entity_id="old", at=old),
            TransactionLog(operation="x", entity_type="t", entity_id="new", at=recent),
            SystemHealthSnapshot(status="ok", reasons=[], components={}, at=old),
            SystemHealthSnapshot(status="ok", reasons=[], components={}, at=recent),
        ])
        for fingerprint, resolved, seen in (("resolved-old", True, old),
                                            ("open-old", False, old),
                                            ("resolved-new", True, recent)):
            group = ErrorGroup(
                fingerprint=fingerprint, exception_type="E", place="p", category="internal",
                severity="high", count=1, first_seen=seen, last_seen=seen, resolved=resolved,
                resolved_at=seen if resolved else None,
            )
            session.add(group)
            await session.flush()
            session.add(ErrorOccurrence(code=f"C-{fingerprint}", group_id=group.id, context={},
                                        at=seen))
        for wamid, status, at in (("done-old", "done", old), ("done-new", "done", recent),
                                  ("failed-old", "failed", old)):
            session.add(InboundMessage(
                wamid=wamid, sender="33600000000", type="text", payload={}, sent_at=at,
                received_at=at, status=status, next_attempt_at=at,
                processed_at=at if status == "done" else None,
            ))

    await db.run(seed)
    done = await clean_up(db, now, RecoveryJobsConfig())

    async def left(column) -> set[str]:
        return set(await db.read(lambda s: s.scalars(select(column))))

    statuses = dict((await db.read(lambda s: s.execute(
        select(Notification.idempotency_key, Notification.status)))).all())
    assert statuses == {"sent-new": "sent", "dead-old": "archived", "dead-new": "failed",
                        "pending-old": "pending"}
    attempts = await db.read(lambda s: s.scalars(select(DeliveryAttempt.notification_id)))
    assert len(list(attempts)) == 4  # the deleted notification's attempt went with it
    logs = await db.read(lambda s: s.scalars(
        select(TransactionLog.entity_id).where(TransactionLog.entity_type == "t")))
    assert set(logs) == {"new"}
    assert await left(SystemHealthSnapshot.at) == {recent}
    assert await left(ErrorGroup.fingerprint) == {"open-old", "resolved-new"}
    assert await left(ErrorOccurrence.code) == {"C-open-old", "C-resolved-new"}
    assert await left(InboundMessage.wamid) == {"done-new", "failed-old"}
    assert done["dead_letters_archived"] == 1 and done["notifications"] == 1


async def test_run_now_runs_within_the_interval_and_once_when_two_race(db: Database) -> None:
    clock = FakeClock()
    world = await build_world(db)
    started = asyncio.Event()
    release = asyncio.Event()
    calls = []

    async def slow(now: datetime) -> str:
        calls.append(now)
        started.set()
        await release.wait()
        return "done"

    schedulers = [
        Scheduler(db, clock, world.requests.alerts, owner=f"host:{n}") for n in (1, 2)
    ]
    for scheduler in schedulers:
        scheduler.add_job("slow", slow, every=timedelta(hours=1))

    first = asyncio.create_task(schedulers[0].run_now("slow"))
    await started.wait()
    # Pressed in both processes while the first run holds the lease: neither starts another.
    assert await schedulers[1].run_now("slow") is None
    assert await schedulers[0].run_now("slow") is None
    release.set()
    assert (await first) is not None
    assert len(calls) == 1

    # The job just ran: its timer would skip it, Run now runs it at once.
    release.set()
    assert await schedulers[1].run_job("slow") is None
    forced = await schedulers[1].run_now("slow")
    assert forced is not None and forced.outcome == "ok"
    runs = await db.read(lambda s: s.scalars(select(JobRun.owner).where(JobRun.job == "slow")))
    assert sorted(runs) == ["host:1", "host:2"]
