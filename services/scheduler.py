"""Background jobs that run once per cluster, each run recorded, repeated failures alerted.

APScheduler's AsyncIOScheduler only provides the timers. Every run goes through
`Scheduler.run_job`, which promises (docs/architecture.md, principle 13):

- **Once per cluster.** A run first takes the database lease `job:{name}`; while another process
  holds a live one, the run is skipped. A run is also skipped when any process started this job
  less than 90% of its period ago, so several processes whose timers are offset still run it once
  per period.
- **Every run recorded.** A `job_runs` row is written (`running`) before the job starts and
  finished (`ok` with the job's summary, or `failed` with the exception's class name and a short,
  redacted message) after it ends, with the count of consecutive failures.
- **Crashes heal.** A process killed mid-run leaves its lease and a `running` row; the lease
  expires, and the next run marks that row failed (`abandoned`) and runs the job, however
  recently the dead run started. A run never outlives its lease: it is stopped (and recorded as
  failed) at 90% of it, so two runs never overlap.
- **Loud failures.** A job's exception never escapes into APScheduler: it is logged with its
  traceback and recorded. At `failure_alert_threshold` consecutive failures, admins are alerted
  through `Alerts` (key `job_failing:{name}`, deduplicated within the alert window) in the same
  unit of work as the failed run's record.

Ages and leases use the injected clock, so tests move time instead of sleeping; only the timers
that fire the runs are APScheduler's own (wall clock).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database, is_connection_failure
from database.models import DeliveryAttempt, JobRun
from services import leases
from services.alerts import Alerts, Severity
from services.clock import Clock
from services.masking import mask_text
from services.notifications import outbox, receipts

log = logging.getLogger(__name__)

# A job: called with the run's start time (the instant recorded in job_runs); does its own units
# of work through Database.run; returns a short summary ("released 3") or None.
JobFunc = Callable[[datetime], Awaitable[str | None]]

RUNNING, OK, FAILED = "running", "ok", "failed"
ABANDONED = "abandoned"  # error_code of a run whose process died (or lost its lease) mid-run
CANCELLED = "cancelled"  # error_code of a run cut off by shutdown
_UNFINISHED = (ABANDONED, CANCELLED)
# A run is skipped if any process started this job less than this share of its period ago.
MIN_GAP_RATIO = 0.9
# A run is stopped at this share of its lease, so it ends before someone else can take over.
RUN_TIMEOUT_RATIO = 0.9
DEFAULT_LEASE = timedelta(minutes=5)
_NAME_MAX = 64 - len("job:")  # leases.name and job_runs.job are 64 characters
_SUMMARY_MAX = 500
_ERROR_TEXT_MAX = 300


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    func: JobFunc
    trigger: BaseTrigger
    every: timedelta | None
    lease: timedelta


def default_owner() -> str:
    """This process's name in leases and job_runs: host and pid, unique across a cluster."""
    return f"{socket.gethostname()}:{os.getpid()}"[-64:]


def short_error(exc: BaseException) -> str:
    """The first line of an exception's message, masked (services.masking: secrets, URL
    passwords, phone numbers, e-mail addresses) and short. The full traceback goes to the log,
    masked by the same rules."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return mask_text(message, limit=4 * _ERROR_TEXT_MAX)[:_ERROR_TEXT_MAX]


class Scheduler:
    """Runs registered jobs on timers, once per cluster, recording each run."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        alerts: Alerts,
        *,
        owner: str,
        failure_alert_threshold: int = 3,
        misfire_grace_time: float = 60.0,
        start_delay: timedelta = timedelta(seconds=2),
        shutdown_timeout: float = 20.0,
    ) -> None:
        if not 0 < len(owner) <= 64:
            raise ValueError("owner must be 1-64 characters")
        if failure_alert_threshold < 1:
            raise ValueError("failure_alert_threshold must be at least 1")
        self.db = db
        self.clock = clock
        self.alerts = alerts
        self.owner = owner
        self.failure_alert_threshold = failure_alert_threshold
        self.misfire_grace_time = misfire_grace_time
        self.start_delay = start_delay
        self.shutdown_timeout = shutdown_timeout
        self._jobs: dict[str, JobSpec] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._stopping = False
        self._aps: AsyncIOScheduler | None = None

    @property
    def jobs(self) -> dict[str, JobSpec]:
        return dict(self._jobs)

    def add_job(
        self,
        name: str,
        func: JobFunc,
        *,
        every: timedelta | None = None,
        cron: dict[str, Any] | None = None,
        lease: timedelta | None = None,
    ) -> JobSpec:
        """Register `func` to run every `every`, or on a UTC cron schedule (APScheduler's
        CronTrigger fields, e.g. {"hour": 3, "minute": 30}).

        `lease` bounds one run (default 5 minutes): a longer run is stopped and recorded as
        failed, and after a crash the job waits at most this long before another process runs it.
        """
        if not name or len(name) > _NAME_MAX:
            raise ValueError(f"job name must be 1-{_NAME_MAX} characters")
        if name in self._jobs:
            raise ValueError(f"job {name!r} is already registered")
        if (every is None) == (cron is None):
            raise ValueError("give exactly one of every or cron")
        if every is not None and every <= timedelta(0):
            raise ValueError("every must be positive")
        lease = lease or DEFAULT_LEASE
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        trigger: BaseTrigger = (
            IntervalTrigger(seconds=every.total_seconds(), timezone=UTC)
            if every is not None
            else CronTrigger(timezone=UTC, **(cron or {}))
        )
        spec = JobSpec(name=name, func=func, trigger=trigger, every=every, lease=lease)
        self._jobs[name] = spec
        if self._aps is not None:
            self._schedule(spec)
        return spec

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timers (call from the running event loop). Interval jobs also run once
        `start_delay` after start; cron jobs wait for their first time."""
        if self._aps is not None:
            raise RuntimeError("scheduler already started")
        self._stopping = False
        self._aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.misfire_grace_time,
            },
        )
        for spec in self._jobs.values():
            self._schedule(spec)
        self._aps.start()
        log.info("scheduler started as %s with jobs: %s", self.owner, ", ".join(self._jobs))

    def _schedule(self, spec: JobSpec) -> None:
        assert self._aps is not None
        extra: dict[str, Any] = {}
        if spec.every is not None:
            extra["next_run_time"] = datetime.now(UTC) + self.start_delay
        self._aps.add_job(
            self._fire, spec.trigger, args=[spec.name], id=spec.name, name=spec.name, **extra
        )

    async def shutdown(self, timeout: float | None = None) -> None:
        """Take no new runs; let running ones finish within `timeout` seconds (default
        `shutdown_timeout`), then cancel the rest (recorded as failed, `cancelled`)."""
        self._stopping = True
        if self._aps is not None and self._aps.running:
            self._aps.pause()
        bound = self.shutdown_timeout if timeout is None else timeout
        running = set(self._running.values())
        if running:
            log.info("scheduler stopping; waiting for %d running job(s)", len(running))
            _, late = await asyncio.wait(running, timeout=bound)
            if late:
                log.warning(
                    "%d job(s) still running after %.1f s; cancelling: %s",
                    len(late), bound, ", ".join(n for n, t in self._running.items() if t in late),
                )
                for task in late:
                    task.cancel()
                # Give the cancelled runs a moment to record themselves and release their leases.
                await asyncio.wait(late, timeout=5.0)
        if self._aps is not None:
            if self._aps.running:
                self._aps.shutdown(wait=False)
                await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the next loop turn
            self._aps = None
        log.info("scheduler stopped")

    async def _fire(self, name: str) -> None:
        """APScheduler's entry point: nothing escapes into APScheduler."""
        try:
            await self.run_job(name)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # shutdown() cancelled this run past its bound and the run recorded that; returning
            # spares APScheduler logging the cancellation as a job error.
            return
        except Exception as exc:
            # run_job records the job's own failures; this is the wrapper failing (the database
            # unreachable, say). The lease expires and the next run marks the row abandoned.
            if is_connection_failure(exc):  # an outage: one line, no traceback per job
                log.warning("job %s skipped: the database is unreachable (%s)", name,
                            type(exc).__name__)
                return
            log.exception("job %s: could not start or record its run", name)

    # --- one run ---------------------------------------------------------------------------------

    async def run_job(self, name: str, *, force: bool = False) -> JobRun | None:
        """Run job `name` now if it is this process's turn; return its finished record, or None
        when skipped (another process holds the lease, it ran recently, or shutdown began).

        `force` (an admin's Run now: `run_now`) runs it even if it ran within its interval;
        never while a run holds its lease, in this process or another.

        The job's exceptions are recorded, not raised; database errors of the wrapper itself
        propagate (after the unit-of-work retries).
        """
        spec = self._jobs[name]
        if self._stopping or name in self._running:
            return None
        task = asyncio.current_task()
        assert task is not None
        self._running[name] = task
        try:
            started = await self.db.run(lambda session: self._begin(session, spec, force=force))
            if started is None:
                return None
            return await self._execute(spec, started)
        finally:
            del self._running[name]

    async def run_now(self, name: str) -> JobRun | None:
        """Run job `name` at once, even within its interval (the Background jobs screen's Run
        now); None when a run of it is under way here or in another process. KeyError for a
        job that is not registered."""
        return await self.run_job(name, force=True)

    async def _begin(
        self, session: AsyncSession, spec: JobSpec, *, force: bool = False
    ) -> JobRun | None:
        """Take the lease, heal abandoned runs, check the gap, and write the `running` row."""
        now = self.clock.now()
        lease_name = f"job:{spec.name}"
        if not await leases.try_acquire(
            session, name=lease_name, owner=self.owner, now=now, ttl=spec.lease
        ):
            log.debug("job %s: skipped, lease held by another process", spec.name)
            return None
        # We hold the lease and are not running this job: any `running` row is a dead run's.
        await self._mark_abandoned(session, spec, now)
        period = _period(spec, now)
        last_started = await session.scalar(
            select(func.max(JobRun.started_at)).where(
                JobRun.job == spec.name,
                # A run its process never got to finish does not hold the next one off.
                or_(JobRun.error_code.is_(None), JobRun.error_code.not_in(_UNFINISHED)),
            )
        )
        if not force and last_started is not None and now - last_started < period * MIN_GAP_RATIO:
            log.debug("job %s: skipped, last started at %s", spec.name, last_started.isoformat())
            await leases.release(session, name=lease_name, owner=self.owner)
            return None
        run = JobRun(
            job=spec.name, owner=self.owner, started_at=now, outcome=RUNNING,
            consecutive_failures=0,
        )
        session.add(run)
        await session.flush()
        return run

    async def _execute(self, spec: JobSpec, run: JobRun) -> JobRun:
        timeout = spec.lease.total_seconds() * RUN_TIMEOUT_RATIO
        try:
            async with asyncio.timeout(timeout):
                summary = await spec.func(run.started_at)
        except asyncio.CancelledError:
            log.warning("job %s: cancelled by shutdown", spec.name)
            await self._finish(spec, run.id, error=(CANCELLED, "stopped by shutdown"))
            raise
        except Exception as exc:
            log.exception("job %s failed", spec.name)
            code = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            text = f"ran longer than {timeout:.0f} s" if code == "timeout" else short_error(exc)
            return await self._finish(spec, run.id, error=(code, text))
        return await self._finish(spec, run.id, summary=summary)

    async def _finish(
        self,
        spec: JobSpec,
        run_id: int,
        *,
        summary: str | None = None,
        error: tuple[str, str] | None = None,
    ) -> JobRun:
        """Record the outcome, alert if the job keeps failing, and release the lease: one unit."""

        async def work(session: AsyncSession) -> JobRun:
            now = self.clock.now()
            run = await session.get(JobRun, run_id)
            assert run is not None
            previous = await _previous_failures(session, spec.name, before=run)
            run.finished_at = now
            if error is None:
                run.outcome, run.consecutive_failures = OK, 0
                run.error_code, run.error_text = None, None
                run.summary = (summary or "")[:_SUMMARY_MAX] or None
                log.debug("job %s ok: %s", spec.name, summary)
            else:
                await self._fail(session, run, previous, error, now)
            await leases.release(session, name=f"job:{spec.name}", owner=self.owner)
            return run

        return await self.db.run(work)

    async def _fail(
        self,
        session: AsyncSession,
        run: JobRun,
        previous: int,
        error: tuple[str, str],
        now: datetime,
    ) -> None:
        run.outcome = FAILED
        run.error_code, run.error_text = error[0][:64], error[1]
        run.finished_at = run.finished_at or now
        run.consecutive_failures = previous + 1
        if run.consecutive_failures >= self.failure_alert_threshold:
            await self.alerts.alert(
                session,
                key=f"job_failing:{run.job}",
                severity=Severity.HIGH,
                text=(
                    f"Background job {run.job} failed {run.consecutive_failures} times in a "
                    f"row; last error: {run.error_code}"
                    + (f" ({run.error_text})" if run.error_text else "")
                ),
                now=now,
            )

    async def _mark_abandoned(self, session: AsyncSession, spec: JobSpec, now: datetime) -> None:
        stale = (
            await session.scalars(
                select(JobRun)
                .where(JobRun.job == spec.name, JobRun.outcome == RUNNING)
                .order_by(JobRun.id)
                .with_for_update()
            )
        ).all()
        for run in stale:
            previous = await _previous_failures(session, spec.name, before=run)
            log.warning(
                "job %s: run %d by %s (started %s) was abandoned", spec.name, run.id, run.owner,
                run.started_at.isoformat(),
            )
            await self._fail(
                session, run, previous,
                (ABANDONED, f"{run.owner} stopped without finishing (crash or lost lease)"), now,
            )
            await session.flush()


async def _previous_failures(session: AsyncSession, job: str, *, before: JobRun) -> int:
    """Consecutive failures of the latest finished run of `job` before `before`.

    Runs are ordered by id: rows are inserted under the job's lease, so ids follow the real order
    even when the processes' clocks disagree.
    """
    value = await session.scalar(
        select(JobRun.consecutive_failures)
        .where(JobRun.job == job, JobRun.outcome != RUNNING, JobRun.id < before.id)
        .order_by(JobRun.id.desc())
        .limit(1)
    )
    return value or 0


def _period(spec: JobSpec, now: datetime) -> timedelta:
    """The job's interval; for a cron job, the gap between its next two times."""
    if spec.every is not None:
        return spec.every
    first = spec.trigger.get_next_fire_time(None, now)
    if first is None:
        return timedelta(0)
    second = spec.trigger.get_next_fire_time(first, first + timedelta(seconds=1))
    return second - first if second is not None else timedelta(0)


async def last_runs(session: AsyncSession) -> list[JobRun]:
    """The latest run of every job that ever ran, by job name (for the admin menus)."""
    latest = select(func.max(JobRun.id)).group_by(JobRun.job)
    return list(
        (
            await session.scalars(select(JobRun).where(JobRun.id.in_(latest)).order_by(JobRun.job))
        ).all()
    )


# Addresses blanked per unit of work: short transactions, so the sweep never holds SQLite's one
# writer (or PostgreSQL's row locks) for long while the dispatcher records its batches.
ADDRESS_BATCH = 1000
# Batches per run at most: a first run over a long history stops here, reports "more left", and
# the next day's run goes on; a run that hit its time limit would be recorded as failed.
ADDRESS_BATCHES_PER_RUN = 200
# A receipt stored because it arrived before its send was recorded, and still unmatched after
# this long, never will be (a batch's sends take seconds; the lease is a minute): dropped.
EARLY_RECEIPT_BOUND = timedelta(hours=1)


async def blank_delivery_addresses(
    session: AsyncSession, *, before: datetime, since: datetime | None, limit: int
) -> tuple[int, datetime | None]:
    """Blank the address of up to `limit` delivery attempts made before `before` (at or after
    `since`, when given), oldest first, whatever became of their notification (dead letters
    included). Returns how many were blanked and the latest `at` among them."""
    t = DeliveryAttempt.__table__.c
    oldest = select(t.id).where(t.address.is_not(None), t.at < before)
    if since is not None:
        oldest = oldest.where(t.at >= since)
    blanked = await session.execute(
        update(DeliveryAttempt.__table__)
        .where(t.id.in_(oldest.order_by(t.at).limit(limit).scalar_subquery()))
        .values(address=None)
        .returning(t.at)
    )
    times = blanked.scalars().all()
    return len(times), max(times, default=None)


def register_core_jobs(
    scheduler: Scheduler,
    db: Database,
    *,
    dead_letter_retention: timedelta,
    delivery_address_retention: timedelta = timedelta(days=30),
    early_receipt_bound: timedelta = EARLY_RECEIPT_BOUND,
) -> None:
    """This issue's sweeps: lease rescue every minute; early receipts every five minutes (those
    whose send was recorded since are applied, those older than `early_receipt_bound` that never
    matched are dropped and counted); dead-letter archiving, and the blanking of delivery
    addresses older than `delivery_address_retention`, daily."""

    async def lease_rescue(now: datetime) -> str:
        released = await db.run(lambda s: outbox.release_expired_leases(s, now=now))
        return f"released {released}"

    async def early_receipts(now: datetime) -> str:
        applied, dropped = await db.run(lambda s: receipts.sweep_early_receipts(
            s, now=now, older_than=early_receipt_bound, alerts=scheduler.alerts
        ))
        return f"applied {applied}, dropped {dropped}"

    async def archive_dead_letters(now: datetime) -> str:
        archived = await db.run(
            lambda s: outbox.archive_dead_letters(s, now=now, older_than=dead_letter_retention)
        )
        return f"archived {archived}"

    async def blank_old_addresses(now: datetime) -> str:
        # Where a message went (a chat id, a phone number, an e-mail address) is needed while
        # its delivery may still be questioned, not for ever.
        cutoff = now - delivery_address_retention
        total, since = 0, None
        for _ in range(ADDRESS_BATCHES_PER_RUN):
            count, latest = await db.run(
                lambda s, since=since: blank_delivery_addresses(
                    s, before=cutoff, since=since, limit=ADDRESS_BATCH
                )
            )
            total += count
            if count < ADDRESS_BATCH:
                return f"blanked {total}"
            # The next batch starts where this one ended, rather than walking again over the
            # rows just blanked (>=: rows sharing that instant may not all have fitted).
            since = latest
        return f"blanked {total}, more left"

    scheduler.add_job(
        "lease_rescue", lease_rescue, every=timedelta(minutes=1), lease=timedelta(minutes=1)
    )
    scheduler.add_job(
        "early_receipts", early_receipts, every=timedelta(minutes=5), lease=timedelta(minutes=2)
    )
    # Daily as an interval rather than a cron time: it also runs soon after a start when the
    # last run is more than ~22 h old, so downtime never skips a day.
    scheduler.add_job(
        "archive_dead_letters", archive_dead_letters, every=timedelta(days=1),
        lease=timedelta(minutes=10),
    )
    scheduler.add_job(
        "blank_delivery_addresses", blank_old_addresses, every=timedelta(days=1),
        lease=timedelta(minutes=10),
    )
