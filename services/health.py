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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import ConnectionLost, Database
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

        try:
            async with asyncio.timeout(self.timeout):
                components = await self.db.read(work)
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
