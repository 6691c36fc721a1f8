"""The recovery sweeps on the scheduler base (services/scheduler.py: once per cluster, every run
recorded, three failures in a row alerted), and what the Background jobs screen calls.

- stuck workflows, every 30 minutes: one digest to the admins (through Alerts, so the outbox)
  of the requests that became stuck since the last one; a request is reported once per version
  (`stuck_reports`), again only after it moved and got stuck anew;
- inventory reconciliation, hourly: safe fixes applied, the rest left for an admin;
- a health snapshot every 5 minutes (`system_health_snapshots`);
- the daily clean-up: resolved error groups and their occurrences, transaction logs, health
  snapshots, sent notifications with their attempts, processed inbound WhatsApp messages, each
  past its age; dead letters past theirs are archived, never deleted; WhatsApp customers
  inactive for WHATSAPP_CUSTOMER_RETENTION_MONTHS are anonymized (services.privacy). Deletes
  go in short batches (one unit of work each) through an index or the primary key, so the
  clean-up never holds the writer for long.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import (
    DeliveryAttempt,
    ErrorGroup,
    ErrorOccurrence,
    InboundMessage,
    JobRun,
    Notification,
    ServiceRequest,
    StuckReport,
    TransactionLog,
)
from services import dashboard_access, health, privacy
from services.actions import Action, ActionName
from services.alerts import Alerts, Severity
from services.clock import Clock
from services.localization import N_, Localized
from services.notifications import outbox
from services.scheduler import JobSpec, Scheduler
from services.workflow.config import WorkflowConfig

# Rows deleted per unit of work, and units of work per run at most ("more left" then: the next
# day goes on).
CLEANUP_BATCH = 1000
CLEANUP_BATCHES_PER_RUN = 500
# Newly stuck requests recorded per digest at most (the rest are found by the next one), and
# listed in the message.
DIGEST_LIMIT = 200
DIGEST_LINES = 15

STUCK_DIGEST_KIND = "stuck_digest"


@dataclass(frozen=True, slots=True)
class RecoveryJobsConfig:
    stuck_sweep_every: timedelta = timedelta(minutes=30)
    reconciliation_every: timedelta = timedelta(hours=1)
    health_snapshot_every: timedelta = timedelta(minutes=5)
    cleanup_every: timedelta = timedelta(days=1)
    error_retention: timedelta = timedelta(days=30)
    transaction_log_retention: timedelta = timedelta(days=90)
    health_snapshot_retention: timedelta = timedelta(days=7)
    sent_notification_retention: timedelta = timedelta(days=30)
    inbound_message_retention: timedelta = timedelta(days=30)
    dead_letter_retention: timedelta = timedelta(days=30)
    # WhatsApp customers with no activity for this many months are anonymized (issue 14).
    whatsapp_customer_retention_months: int = 12


# --- stuck workflows ---------------------------------------------------------------------------


async def report_newly_stuck(
    session: AsyncSession,
    *,
    stuck_condition: Callable[[datetime], Any],
    alerts: Alerts,
    now: datetime,
    limit: int = DIGEST_LIMIT,
) -> int:
    """Tell the admins, in one digest, about the requests stuck since the last digest; remember
    them. Returns how many were new."""
    r, sr = ServiceRequest, StuckReport
    # Reports of requests that moved on since are forgotten: stuck again later, they are new.
    await session.execute(
        delete(StuckReport).where(
            StuckReport.request_id.in_(
                select(sr.request_id).join(r, r.id == sr.request_id).where(r.version != sr.version)
            )
        )
    )
    escalated_first = case((r.state == literal_column("'escalated'"), 0), else_=1)
    rows = (
        await session.execute(
            select(r.id, r.state, r.version, r.state_entered_at)
            .outerjoin(sr, sr.request_id == r.id)
            .where(stuck_condition(now), or_(sr.request_id.is_(None), sr.version != r.version))
            .order_by(escalated_first, r.state_entered_at, r.id)
            .limit(limit)
        )
    ).all()
    if not rows:
        return 0
    for request_id, _state, version, _entered in rows:
        await session.merge(StuckReport(request_id=request_id, version=version, reported_at=now))
    lines = "\n".join(
        f"#{request_id} {state} ({_hours(now - entered)})"
        for request_id, state, _version, entered in rows[:DIGEST_LINES]
    )
    more = len(rows) - DIGEST_LINES
    text = Localized(
        N_("Stuck workflows: {count} request(s) newly stuck.\n{lines}"),
        {"count": len(rows), "lines": lines + (f"\n+{more}" if more > 0 else "")},
    )
    await alerts.alert(
        session,
        key=f"{STUCK_DIGEST_KIND}:{now.isoformat()}",
        severity=Severity.WARNING,
        text=text,
        now=now,
        button=Action(ActionName.OPEN_STUCK, 0).as_payload(
            Localized(N_("Open stuck workflows"))  # type: ignore[arg-type]
        ),
    )
    return len(rows)


def _hours(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}"


# --- the daily clean-up ------------------------------------------------------------------------

BatchDelete = Callable[[AsyncSession, datetime], Awaitable[int]]


async def _delete_ids(session: AsyncSession, model: Any, ids: list[int]) -> int:
    if not ids:
        return 0
    result = await session.execute(delete(model).where(model.id.in_(ids)))
    return result.rowcount or 0


async def delete_resolved_errors(session: AsyncSession, cutoff: datetime) -> int:
    """Occurrences older than `cutoff` of resolved groups; then resolved groups last seen and
    resolved before `cutoff` (with whatever occurrences they still have). One batch."""
    g, o = ErrorGroup, ErrorOccurrence
    resolved = select(g.id).where(g.resolved.is_(True))
    ids = list(await session.scalars(
        select(o.id).where(o.at < cutoff, o.group_id.in_(resolved)).order_by(o.at)
        .limit(CLEANUP_BATCH)
    ))
    deleted = await _delete_ids(session, ErrorOccurrence, ids)
    if deleted:
        return deleted
    groups = list(await session.scalars(
        select(g.id).where(g.resolved.is_(True), g.last_seen < cutoff, g.resolved_at < cutoff)
        .limit(CLEANUP_BATCH // 10)
    ))
    if not groups:
        return 0
    await session.execute(delete(ErrorOccurrence).where(ErrorOccurrence.group_id.in_(groups)))
    return await _delete_ids(session, ErrorGroup, groups)


async def delete_transaction_logs(session: AsyncSession, cutoff: datetime) -> int:
    ids = list(await session.scalars(
        select(TransactionLog.id).where(TransactionLog.at < cutoff)
        .order_by(TransactionLog.at).limit(CLEANUP_BATCH)
    ))
    return await _delete_ids(session, TransactionLog, ids)


async def delete_snapshots(session: AsyncSession, cutoff: datetime) -> int:
    return await health.delete_snapshots_before(session, cutoff, limit=CLEANUP_BATCH)


async def delete_sent_notifications(
    session: AsyncSession, cutoff: datetime, after_id: int
) -> tuple[int, int | None]:
    """Sent notifications older than `cutoff` with their attempts, walking the primary key
    from `after_id` (ids grow with time, so old rows come first; no index on sent_at is kept
    for this once-a-day walk). Returns (deleted, the last id seen or None at the end)."""
    n = Notification
    ids = list(await session.scalars(
        select(n.id).where(n.id > after_id, n.status == literal_column("'sent'"),
                           n.sent_at < cutoff)
        .order_by(n.id).limit(CLEANUP_BATCH)
    ))
    if not ids:
        return 0, None
    await session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.notification_id.in_(ids)))
    deleted = await _delete_ids(session, Notification, ids)
    return deleted, ids[-1] if len(ids) == CLEANUP_BATCH else None


async def delete_inbound_messages(
    session: AsyncSession, cutoff: datetime, after_id: int
) -> tuple[int, int | None]:
    """Processed inbound WhatsApp messages older than `cutoff`, walking the primary key."""
    m = InboundMessage
    ids = list(await session.scalars(
        select(m.id).where(m.id > after_id, m.status == literal_column("'done'"),
                           m.processed_at < cutoff)
        .order_by(m.id).limit(CLEANUP_BATCH)
    ))
    deleted = await _delete_ids(session, InboundMessage, ids)
    return deleted, ids[-1] if len(ids) == CLEANUP_BATCH else None


async def clean_up(db: Database, now: datetime, config: RecoveryJobsConfig) -> dict[str, int]:
    """The daily clean-up; returns how many rows each part deleted (or archived)."""
    done: dict[str, int] = {}
    budget = CLEANUP_BATCHES_PER_RUN

    async def simple(name: str, work: BatchDelete, cutoff: datetime) -> None:
        nonlocal budget
        total = 0
        while budget > 0:
            budget -= 1
            count = await db.run(lambda s: work(s, cutoff))
            total += count
            if count == 0:
                break
        done[name] = total

    async def walk(name: str, work: Callable[..., Awaitable[tuple[int, int | None]]],
                   cutoff: datetime) -> None:
        nonlocal budget
        total, after = 0, 0
        while budget > 0:
            budget -= 1
            count, last = await db.run(lambda s, after=after: work(s, cutoff, after))
            total += count
            if last is None:
                break
            after = last
        done[name] = total

    await simple("errors", delete_resolved_errors, now - config.error_retention)
    await simple("transaction_log", delete_transaction_logs, now - config.transaction_log_retention)
    await simple("snapshots", delete_snapshots, now - config.health_snapshot_retention)
    # Dashboard sign-in links and sessions past their expiry are worth nothing any more.
    await simple("dashboard_access", dashboard_access.delete_expired, now)
    await walk("notifications", delete_sent_notifications,
               now - config.sent_notification_retention)
    await walk("inbound", delete_inbound_messages, now - config.inbound_message_retention)
    done["dead_letters_archived"] = await db.run(
        lambda s: outbox.archive_dead_letters(s, now=now, older_than=config.dead_letter_retention)
    )
    # The same erasure as /forget (services.privacy), a few customers per unit of work.
    await simple(
        "customers_anonymized",
        lambda s, cutoff: privacy.erase_inactive_customers(s, cutoff=cutoff, now=now),
        privacy.months_before(now, config.whatsapp_customer_retention_months),
    )
    if budget <= 0:
        done["more_left"] = 1
    return done


# --- registration ------------------------------------------------------------------------------

STUCK_JOB = "stuck_workflows"
RECONCILIATION_JOB = "inventory_reconciliation"
SNAPSHOT_JOB = "health_snapshot"
CLEANUP_JOB = "cleanup"


def register_recovery_jobs(
    scheduler: Scheduler,
    db: Database,
    clock: Clock,
    config: RecoveryJobsConfig,
    *,
    stuck_condition: Callable[[datetime], Any],
    health_checks: Mapping[str, health.Check],
) -> None:
    async def stuck(now: datetime) -> str:
        count = await db.run(lambda s: report_newly_stuck(
            s, stuck_condition=stuck_condition, alerts=scheduler.alerts, now=now))
        return f"newly stuck {count}"

    async def reconciliation(now: datetime) -> str:
        from services.inventory_reconciliation import reconcile

        report = await reconcile(db, now, apply_safe=True)
        return report.summary()

    async def snapshot(now: datetime) -> str:
        taken = await health.take_snapshot(db, health_checks, clock)
        return taken.status

    async def cleanup(now: datetime) -> str:
        done = await clean_up(db, now, config)
        return ", ".join(f"{name} {count}" for name, count in done.items())

    scheduler.add_job(STUCK_JOB, stuck, every=config.stuck_sweep_every,
                      lease=timedelta(minutes=5))
    scheduler.add_job(RECONCILIATION_JOB, reconciliation, every=config.reconciliation_every,
                      lease=timedelta(minutes=10))
    scheduler.add_job(SNAPSHOT_JOB, snapshot, every=config.health_snapshot_every,
                      lease=timedelta(minutes=2))
    scheduler.add_job(CLEANUP_JOB, cleanup, every=config.cleanup_every,
                      lease=timedelta(minutes=30))


# --- the Background jobs screen ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunView:
    id: int
    owner: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    summary: str | None
    error_code: str | None
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class JobView:
    name: str
    every_seconds: float | None
    last: RunView | None


def _run_view(run: JobRun) -> RunView:
    return RunView(run.id, run.owner, run.started_at, run.finished_at, run.outcome, run.summary,
                   run.error_code, run.consecutive_failures)


async def recent_runs(session: AsyncSession, job: str, *, limit: int) -> list[RunView]:
    """The job's latest runs, newest first (through ix_job_runs_job_started)."""
    rows = await session.scalars(
        select(JobRun).where(JobRun.job == job)
        .order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(limit)
    )
    return [_run_view(r) for r in rows]


class BackgroundJobs:
    """What the Background jobs screen calls (aiogram DI: `background_jobs`). The scheduler is
    attached when the delivery engine is built; without one (a process that runs no jobs) the
    screen shows the recorded runs and Run now is refused."""

    def __init__(self, db: Database, scheduler: Scheduler | None = None) -> None:
        self.db = db
        self.scheduler = scheduler

    def specs(self) -> dict[str, JobSpec]:
        return self.scheduler.jobs if self.scheduler is not None else {}

    async def jobs(self) -> list[JobView]:
        specs = self.specs()

        async def read(session: AsyncSession) -> list[JobView]:
            names = sorted(specs) or sorted(
                set(await session.scalars(select(JobRun.job).distinct()))
            )
            views = []
            for name in names:
                last = await recent_runs(session, name, limit=1)
                spec = specs.get(name)
                every = spec.every.total_seconds() if spec and spec.every else None
                views.append(JobView(name, every, last[0] if last else None))
            return views

        return await self.db.read(read)

    async def runs(self, name: str, *, limit: int = 8) -> list[RunView]:
        return await self.db.read(lambda s: recent_runs(s, name, limit=limit))

    async def run_now(self, name: str) -> RunView | None:
        """Run `name` at once; None when it is already running (here or elsewhere). KeyError
        when this process has no such job."""
        if self.scheduler is None or name not in self.scheduler.jobs:
            raise KeyError(name)
        run = await self.scheduler.run_now(name)
        return _run_view(run) if run is not None else None


def stuck_condition(config: WorkflowConfig) -> Callable[[datetime], Any]:
    """The workflow's own "stuck" rule (escalated, or past the state's threshold) at `now`."""
    from services.workflow.recovery import _stuck_condition

    return lambda now: _stuck_condition(config, now)


def jobs_config(settings: Any) -> RecoveryJobsConfig:
    """The sweeps' intervals and ages from the settings (bot/config.py names)."""
    return RecoveryJobsConfig(
        stuck_sweep_every=timedelta(seconds=settings.stuck_sweep_interval_seconds),
        reconciliation_every=timedelta(
            seconds=settings.inventory_reconciliation_interval_seconds),
        health_snapshot_every=timedelta(seconds=settings.health_snapshot_interval_seconds),
        cleanup_every=timedelta(seconds=settings.cleanup_interval_seconds),
        error_retention=timedelta(days=settings.error_retention_days),
        transaction_log_retention=timedelta(days=settings.transaction_log_retention_days),
        health_snapshot_retention=timedelta(days=settings.health_snapshot_retention_days),
        sent_notification_retention=timedelta(days=settings.sent_notification_retention_days),
        inbound_message_retention=timedelta(days=settings.inbound_message_retention_days),
        dead_letter_retention=timedelta(days=settings.dead_letter_retention_days),
        whatsapp_customer_retention_months=settings.whatsapp_customer_retention_months,
    )
