"""Health: the rules that make the bot `ok`, `degraded` or `down`, and a snapshot of them that
costs the database almost nothing however often it is asked for.

Promises:
- The database is read at most once every `max_age` seconds, whatever the request rate: a
  caller gets the last snapshot while it is fresh, and callers arriving while one is being
  computed wait for that one (single flight) instead of starting their own.
- That read takes no writer's lock (`Database.read`: a deferred transaction on SQLite, autocommit
  on PostgreSQL), and every check reads through an index, so a burst of /health calls cannot
  queue behind, or slow down, the units of work that serve users and webhooks.
- A snapshot never raises: a database that does not answer is `down` with its reason; a check
  that fails for another reason makes its part `degraded`.
- Its status and reasons say nothing a stranger should not see (no counts, no identifiers);
  the counts are in its components, which the web layer shows only to callers it trusts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, literal_column, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import ConnectionLost, Database
from database.models import (
    ChannelState,
    DeliveryAttempt,
    ErrorGroup,
    ErrorOccurrence,
    JobRun,
    Notification,
    ServiceRequest,
    SystemHealthSnapshot,
)
from services.clock import Clock
from services.notifications import outbox

log = logging.getLogger(__name__)

Status = Literal["ok", "degraded", "down"]

# A due notification older than this means delivery is not keeping up.
OUTBOX_LATE_SECONDS = 300.0
# Longest a snapshot may take: a database that does not answer by then is down (a connection
# to an unreachable host would otherwise wait for the driver's own, much longer, timeout).
SNAPSHOT_TIMEOUT_SECONDS = 10.0

# The errors that mean the database did not answer, rather than a check being wrong.
_DATABASE_ERRORS = (DBAPIError, ConnectionLost, OSError, TimeoutError)


@dataclass(frozen=True)
class Component:
    """One part of the bot as /health shows it: its status, why (words only, safe for anyone),
    and its figures (for trusted callers)."""

    status: Status
    reasons: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


# A check reads what it needs through the snapshot's one read-only session.
Check = Callable[[AsyncSession], Awaitable[Component]]


@dataclass(frozen=True)
class Snapshot:
    status: Status
    reasons: tuple[str, ...]
    components: Mapping[str, Component]
    checked_at: datetime

    def public(self) -> dict[str, Any]:
        """What anyone may see: the status and its reasons."""
        return {"status": self.status, "reasons": list(self.reasons)}

    def full(self) -> dict[str, Any]:
        """Everything: each component's status and figures, and when they were read."""
        return {
            **self.public(),
            "checked_at": self.checked_at.isoformat(),
            "components": {
                name: {"status": c.status, **c.details} for name, c in self.components.items()
            },
        }


def overall(components: Mapping[str, Component]) -> tuple[Status, tuple[str, ...]]:
    """The worst status of the parts, and every part's reasons, each prefixed with its name."""
    statuses = {c.status for c in components.values()}
    status: Status = "down" if "down" in statuses else (
        "degraded" if "degraded" in statuses else "ok"
    )
    reasons = tuple(f"{name}: {r}" for name, c in components.items() for r in c.reasons)
    return status, reasons


async def outbox_health(session: AsyncSession, *, now: datetime) -> Component:
    """The outbox: degraded when due work has waited too long or dead letters wait for an
    admin. Open manual tasks are shown, but are a person's work, not a fault."""
    figures = await outbox.health_figures(session, now=now)
    reasons = []
    if figures["oldest_due_age_seconds"] > OUTBOX_LATE_SECONDS:
        reasons.append(
            f"notifications due for more than {OUTBOX_LATE_SECONDS / 60:g} minutes are unsent"
        )
    if figures["dead_letters"] > 0:
        reasons.append("dead letters wait for an admin")
    return Component("degraded" if reasons else "ok", tuple(reasons), figures)


class HealthMonitor:
    """Computes snapshots from `checks` (read at each computation, so checks can be added after
    the monitor is built) and keeps the last one for `max_age` seconds of `clock`."""

    def __init__(
        self,
        db: Database,
        checks: Mapping[str, Check],
        *,
        clock: Clock,
        max_age: float,
        timeout: float = SNAPSHOT_TIMEOUT_SECONDS,
    ) -> None:
        self.db = db
        self.checks = checks
        self.clock = clock
        self.max_age = max_age
        self.timeout = timeout
        self.computations = 0  # how many snapshots were computed; for tests and metrics
        self._last: Snapshot | None = None
        self._last_at = 0.0
        self._computing: asyncio.Future[Snapshot] | None = None

    async def snapshot(self) -> Snapshot:
        if self._last is not None and self.clock.monotonic() - self._last_at < self.max_age:
            return self._last
        if self._computing is None:
            self._computing = asyncio.ensure_future(self._compute())
        # Shielded: a caller that goes away must not cancel the computation others wait for.
        return await asyncio.shield(self._computing)

    async def _compute(self) -> Snapshot:
        try:
            self.computations += 1
            snapshot = await self._read()
            self._last, self._last_at = snapshot, self.clock.monotonic()
            return snapshot
        finally:
            # Cleared only now, with the result stored: a caller arriving from here on finds it.
            self._computing = None

    async def _read(self) -> Snapshot:
        checks = dict(self.checks)

        async def work(session: AsyncSession) -> dict[str, Component]:
            parts = {"database": Component("ok")}
            for name, check in checks.items():
                try:
                    parts[name] = await check(session)
                except _DATABASE_ERRORS:
                    raise
                except Exception:
                    log.exception("health check %r failed", name)
                    parts[name] = Component("degraded", ("its check failed",))
            return parts

        started = self.clock.monotonic()  # the injected clock: a test decides what is slow
        try:
            async with asyncio.timeout(self.timeout):
                components = await self.db.read(work)
            components["database"] = database_health(self.clock.monotonic() - started)
        except TimeoutError:
            log.warning("health: the database did not answer within %g s", self.timeout)
            components = {
                "database": Component("down", (f"no answer within {self.timeout:g} s",))
            }
        except _DATABASE_ERRORS as exc:
            log.warning("health: the database is unreachable: %s", type(exc).__name__)
            components = {"database": Component("down", ("unreachable",))}
        status, reasons = overall(components)
        return Snapshot(status, reasons, components, self.clock.now())


# --- the parts (issue 12) ---------------------------------------------------------------------
#
# Each part is a Check over the snapshot's one read-only session. The cheap ones read through an
# index and run in every snapshot (at most every HEALTH_CACHE_SECONDS); the heavy one (inventory
# discrepancies) is computed by the health-snapshot job every few minutes and read back from the
# latest stored snapshot. /metrics renders the same components' figures (bot/metrics.py).

# A snapshot's reads taking longer than this make the database degraded.
DATABASE_SLOW_MS = 500.0
# Delivery figures (sends, failures, waits) cover this window before now.
DELIVERY_WINDOW = timedelta(hours=1)
# Upper bounds (seconds) of the enqueue-to-send wait histogram of /metrics.
WAIT_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
# Sent notifications read for the wait histogram at most (the newest ones).
WAIT_SAMPLE = 5000


def database_health(elapsed: float) -> Component:
    """Reachable (the snapshot's reads answered) and how long they took, all of them: no
    statement of its own, so a snapshot stays the few indexed reads of its parts."""
    latency_ms = round(elapsed * 1000, 2)
    if latency_ms > DATABASE_SLOW_MS:
        return Component("degraded", (f"slow to answer (over {DATABASE_SLOW_MS:g} ms)",),
                         {"latency_ms": latency_ms})
    return Component("ok", (), {"latency_ms": latency_ms})


async def channels_health(
    session: AsyncSession, *, now: datetime, enabled: Iterable[str] = ()
) -> Component:
    """Each channel: on or off (configured), paused by an admin, circuit open or closed."""
    states = {s.channel: s for s in await session.scalars(select(ChannelState))}
    names = list(dict.fromkeys([*enabled, *states]))
    enabled_set = set(enabled)
    figures: dict[str, Any] = {}
    reasons: list[str] = []
    for name in names:
        state = states.get(name)
        paused = bool(state and state.paused)
        open_until = state.circuit_open_until if state is not None else None
        circuit = "open" if open_until is not None and open_until > now else "closed"
        figures[name] = {
            "enabled": name in enabled_set, "paused": paused, "circuit": circuit,
            "circuit_open_until": open_until.isoformat() if circuit == "open" else None,
        }
        if paused:
            reasons.append(f"{name} is paused by an admin")
        if circuit == "open":
            reasons.append(f"{name} is failing (circuit open)")
    return Component("degraded" if reasons else "ok", tuple(reasons), {"channels": figures})


async def delivery_health(session: AsyncSession, *, now: datetime) -> Component:
    """The outbox (depth by status and channel, oldest due age, dead letters in the last 24 h
    and in all, open manual tasks), and the last hour's sends, failures and waits."""
    base = await outbox_health(session, now=now)
    figures = dict(base.details)
    failed = Notification.status == literal_column("'failed'")
    figures["dead_letters_24h"] = await session.scalar(
        select(func.count()).select_from(Notification)
        .where(failed, Notification.failed_at >= now - timedelta(hours=24))
    ) or 0
    depth: dict[str, dict[str, int]] = {}
    for status in ("pending", "sending", "failed"):
        rows = await session.execute(
            select(Notification.channel, func.count())
            .where(Notification.status == literal_column(f"'{status}'"))
            .group_by(Notification.channel)
        )
        depth[status] = {channel: count for channel, count in rows}
    figures["depth"] = depth
    since = now - DELIVERY_WINDOW
    sends: dict[str, int] = {}
    failures: dict[str, dict[str, int]] = {}
    for channel, outcome, error_class, count in await session.execute(
        select(DeliveryAttempt.channel, DeliveryAttempt.outcome, DeliveryAttempt.error_class,
               func.count())
        .where(DeliveryAttempt.at >= since)
        .group_by(DeliveryAttempt.channel, DeliveryAttempt.outcome, DeliveryAttempt.error_class)
    ):
        if outcome == "sent":
            sends[channel] = sends.get(channel, 0) + count
        elif outcome in ("failed", "rate_limited"):
            kind = error_class or ("rate_limited" if outcome == "rate_limited" else "unknown")
            per = failures.setdefault(channel, {})
            per[kind] = per.get(kind, 0) + count
    figures["sends_1h"] = sends
    figures["failures_1h"] = failures
    # From the hour's accepted attempts (indexed by time) to their notifications (by key):
    # notifications keep no index on sent_at.
    waits = [
        (sent - (restarted or created)).total_seconds()
        for created, restarted, sent in await session.execute(
            select(Notification.created_at, Notification.restarted_at, DeliveryAttempt.at)
            .join(Notification, Notification.id == DeliveryAttempt.notification_id)
            .where(DeliveryAttempt.at >= since, DeliveryAttempt.outcome == "sent")
            .order_by(DeliveryAttempt.at.desc())
            .limit(WAIT_SAMPLE)
        )
    ]
    figures["wait_1h"] = {
        "buckets": {f"{b:g}": sum(1 for w in waits if w <= b) for b in WAIT_BUCKETS},
        "count": len(waits),
        "sum": round(sum(waits), 3),
    }
    return Component(base.status, base.reasons, figures)


def stuck_health(stuck_condition: Callable[[datetime], Any]) -> Callable[..., Awaitable[Component]]:
    """Stuck workflows: `stuck_condition(now)` is the workflow's own rule (past its state's
    threshold, or escalated). Any stuck request makes the part degraded."""

    async def check(session: AsyncSession, *, now: datetime) -> Component:
        rows = await session.execute(
            select(ServiceRequest.state, func.count())
            .where(stuck_condition(now)).group_by(ServiceRequest.state)
        )
        by_state = {state: count for state, count in rows}
        total = sum(by_state.values())
        reasons = ("requests are stuck and wait for an admin",) if total else ()
        return Component("degraded" if total else "ok", reasons,
                         {"stuck": total, "by_state": by_state})

    return check


async def errors_health(session: AsyncSession, *, now: datetime) -> Component:
    """Error occurrences of the last hour by category and severity; a critical one in that
    hour makes the part degraded."""
    rows = await session.execute(
        select(ErrorGroup.category, ErrorGroup.severity, func.count())
        .select_from(ErrorOccurrence)
        .join(ErrorGroup, ErrorGroup.id == ErrorOccurrence.group_id)
        .where(ErrorOccurrence.at >= now - timedelta(hours=1))
        .group_by(ErrorGroup.category, ErrorGroup.severity)
    )
    by_severity: dict[str, int] = {}
    by_category: dict[str, dict[str, int]] = {}
    for category, severity, count in rows:
        by_severity[severity] = by_severity.get(severity, 0) + count
        by_category.setdefault(category, {})[severity] = count
    reasons = ("critical errors in the last hour",) if by_severity.get("critical") else ()
    return Component("degraded" if reasons else "ok", reasons,
                     {"last_hour_by_severity": by_severity, "last_hour_by_category": by_category})


def jobs_health(job_names: Callable[[], Iterable[str]]) -> Callable[..., Awaitable[Component]]:
    """Each scheduled job's latest run (one indexed look-up per job): degraded when a job's
    latest finished run failed."""

    async def check(session: AsyncSession, *, now: datetime) -> Component:
        jobs: dict[str, Any] = {}
        failing = []
        for name in sorted(job_names()):
            run = await session.scalar(
                select(JobRun).where(JobRun.job == name)
                .order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(1)
            )
            if run is None:
                jobs[name] = {"outcome": None}
                continue
            jobs[name] = {
                "outcome": run.outcome, "started_at": run.started_at.isoformat(),
                "consecutive_failures": run.consecutive_failures,
            }
            if run.outcome == "failed":
                failing.append(name)
        reasons = tuple(f"job {name} failed its last run" for name in failing)
        return Component("degraded" if reasons else "ok", reasons, {"jobs": jobs})

    return check


async def inventory_health(session: AsyncSession, *, now: datetime) -> Component:
    """Inventory discrepancies, as the latest stored snapshot found them (finding them reads
    the whole ledger: the snapshot job does it every few minutes, not every /health)."""
    latest = await latest_snapshot(session)
    part = (latest.components or {}).get("inventory") if latest is not None else None
    if not part:
        return Component("ok", (), {"discrepancies": None, "as_of": None})
    figures = {k: v for k, v in part.items() if k != "status"}
    figures["as_of"] = latest.at.isoformat() if latest is not None else None
    reasons = ("inventory and its ledger disagree",) if figures.get("discrepancies") else ()
    return Component("degraded" if reasons else "ok", reasons, figures)


async def inventory_discrepancies(session: AsyncSession) -> Component:
    """The heavy part, for the snapshot job: every open discrepancy, counted by kind."""
    from services import inventory_reconciliation

    found = await inventory_reconciliation.find(session)
    by_kind: dict[str, int] = {}
    for d in found:
        by_kind[d.kind.value] = by_kind.get(d.kind.value, 0) + 1
    safe = sum(1 for d in found if d.safe)
    reasons = ("inventory and its ledger disagree",) if found else ()
    return Component("degraded" if found else "ok", reasons,
                     {"discrepancies": len(found), "safe": safe, "by_kind": by_kind})


def health_checks(
    clock: Clock,
    *,
    stuck_condition: Callable[[datetime], Any] | None = None,
    job_names: Callable[[], Iterable[str]] | None = None,
    channels: Callable[[], Iterable[str]] | None = None,
) -> dict[str, Check]:
    """Every cheap part of /health, each reading `clock.now()` when the snapshot is taken."""

    def at_now(check: Callable[..., Awaitable[Component]]) -> Check:
        return lambda session: check(session, now=clock.now())

    checks: dict[str, Check] = {
        "channels": lambda session: channels_health(
            session, now=clock.now(), enabled=list(channels()) if channels else ()
        ),
        "outbox": at_now(delivery_health),
        "errors": at_now(errors_health),
        "inventory": at_now(inventory_health),
    }
    if stuck_condition is not None:
        checks["workflows"] = at_now(stuck_health(stuck_condition))
    if job_names is not None:
        checks["jobs"] = at_now(jobs_health(job_names))
    return checks


# --- stored snapshots --------------------------------------------------------------------------


async def latest_snapshot(session: AsyncSession) -> SystemHealthSnapshot | None:
    return await session.scalar(
        select(SystemHealthSnapshot).order_by(SystemHealthSnapshot.at.desc()).limit(1)
    )


async def take_snapshot(db: Database, checks: Mapping[str, Check], clock: Clock) -> Snapshot:
    """The five-minute job: every part computed now (the heavy one too), stored as a row of
    system_health_snapshots, and returned."""
    monitor = HealthMonitor(db, {**checks, "inventory": inventory_discrepancies},
                            clock=clock, max_age=0)
    snapshot = await monitor.snapshot()

    async def store(session: AsyncSession) -> None:
        full = snapshot.full()
        session.add(SystemHealthSnapshot(
            status=snapshot.status, reasons=list(snapshot.reasons),
            components=full.get("components", {}), at=snapshot.checked_at,
        ))

    await db.run(store)
    return snapshot


async def snapshots(session: AsyncSession, *, limit: int = 12) -> list[SystemHealthSnapshot]:
    """The latest stored snapshots, newest first (the System health screen's history)."""
    return list(await session.scalars(
        select(SystemHealthSnapshot).order_by(SystemHealthSnapshot.at.desc()).limit(limit)
    ))


async def delete_snapshots_before(session: AsyncSession, cutoff: datetime, *, limit: int) -> int:
    """Delete up to `limit` snapshots older than `cutoff`, through the index on `at`."""
    t = SystemHealthSnapshot.__table__.c
    ids = select(t.id).where(t.at < cutoff).order_by(t.at).limit(limit).scalar_subquery()
    result = await session.execute(delete(SystemHealthSnapshot).where(t.id.in_(ids)))
    return result.rowcount or 0


class SystemHealth:
    """What the System health screen calls (aiogram DI: `system_health`): the cached snapshot
    of every cheap part (read at most every `max_age` seconds) and the stored history. What the
    process knows only once its delivery engine is built (the channels that are on, the jobs
    it schedules) is set on it then."""

    def __init__(
        self, db: Database, clock: Clock, *, stuck_condition: Callable[[datetime], Any] | None,
        max_age: float,
    ) -> None:
        self.db = db
        self.enabled_channels: tuple[str, ...] = ()
        self.job_names: Callable[[], Iterable[str]] = tuple
        self.checks = health_checks(
            clock, stuck_condition=stuck_condition,
            job_names=lambda: self.job_names(), channels=lambda: self.enabled_channels,
        )
        self.monitor = HealthMonitor(db, self.checks, clock=clock, max_age=max_age)

    async def snapshot(self) -> Snapshot:
        return await self.monitor.snapshot()

    async def history(self, *, limit: int = 12) -> list[tuple[datetime, str, list[str]]]:
        """The latest stored snapshots, newest first: when, status, reasons."""
        rows = await self.db.read(lambda s: snapshots(s, limit=limit))
        return [(r.at, r.status, list(r.reasons or [])) for r in rows]
