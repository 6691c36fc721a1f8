"""Inventory reconciliation: where stock and its ledger disagree, what to do about it.

Finds, each in one set-based query:
- negative stock (on hand below zero, or a ledger that sums below zero);
- stock on hand different from the ledger's sum;
- orphaned ledger rows: pointing at a request that does not exist, or issues of a cancelled
  request that were never reversed;
- parts that do not add up: a reversal that gives back another quantity than its issue took
  (the workflow's parts of a request are its ledger lines, services.workflow.queries.parts).

Safe kinds are fixed by `reconcile(..., apply_safe=True)` (the hourly job, or Auto-fix): the
missing reversals are written (through services.inventory, audited), then on hand is set to the
ledger's sum. The rest wait for an admin: an adjustment with a reason (a ledger line, so the
ledger stays the truth) or a dismissal with a reason. Everything lands in
`inventory_reconciliation_log`: each discrepancy once when first found, and what was done.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from database.engine import Database
from database.models import (
    InventoryItem,
    InventoryReconciliationLog,
    InventoryTransaction,
    ServiceRequest,
)
from services import audit, inventory
from services.clock import Clock
from services.errors import DomainError
from services.localization import N_


class Kind(enum.StrEnum):
    NEGATIVE_STOCK = "negative_stock"
    LEDGER_MISMATCH = "ledger_mismatch"
    MISSING_REQUEST = "missing_request"
    CANCELLED_UNREVERSED = "cancelled_unreversed"
    PARTS_MISMATCH = "parts_mismatch"


class Fix(enum.StrEnum):
    RECOMPUTE = "recompute"  # safe: on hand := the ledger's sum
    REVERSE = "reverse"  # safe: write the cancelled request's missing reversals
    ADJUST = "adjust"  # an admin's adjustment (a ledger line) with a reason


class LogAction(enum.StrEnum):
    FOUND = "found"
    AUTO_FIXED = "auto_fixed"
    ADJUSTED = "adjusted"
    DISMISSED = "dismissed"


# The actions that close a discrepancy that state alone does not close (a ledger row's).
_CLOSING = (LogAction.ADJUSTED.value, LogAction.DISMISSED.value)


class NotADiscrepancy(DomainError):
    """The discrepancy is gone (fixed meanwhile, or the key is wrong): the screen redraws."""

    user_message = N_("This discrepancy is no longer there.")


class AdjustmentRefused(DomainError):
    user_message = N_("That adjustment would take the stock below zero.")


@dataclass(frozen=True, slots=True)
class Discrepancy:
    key: str  # stable name, e.g. "mismatch:4", "orphan:120"; under 64 characters
    kind: Kind
    item_id: int
    sku: str
    item_name: str
    fix: Fix
    # ADJUST: the proposed signed quantity (what the admin's adjustment would write).
    delta: int = 0
    on_hand: int | None = None
    ledger_sum: int | None = None
    request_id: int | None = None
    transaction_id: int | None = None
    quantity: int | None = None  # the ledger row's signed quantity (row kinds)

    @property
    def safe(self) -> bool:
        return self.fix is not Fix.ADJUST

    @property
    def ref(self) -> int:
        """The key as one integer (for a button's callback data); `key_of(ref)` undoes it."""
        prefix, _, number = self.key.partition(":")
        return int(number) * len(_PREFIXES) + _PREFIXES.index(prefix)

    def describe(self) -> str:
        """One line for the log (English; screens render their own words)."""
        return (
            f"{self.kind.value} item={self.sku} on_hand={self.on_hand} ledger={self.ledger_sum} "
            f"request={self.request_id} line={self.transaction_id} qty={self.quantity} "
            f"fix={self.fix.value} delta={self.delta}"
        )


# The key prefixes, in a fixed order (Discrepancy.ref): append only.
_PREFIXES = ("mismatch", "negative", "orphan", "unreversed", "parts")


def key_of(ref: int) -> str:
    return f"{_PREFIXES[ref % len(_PREFIXES)]}:{ref // len(_PREFIXES)}"


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    found: tuple[Discrepancy, ...]  # everything open when the run started
    fixed: tuple[Discrepancy, ...]  # the safe ones fixed by this run
    remaining: tuple[Discrepancy, ...]  # what an admin must look at
    new: tuple[Discrepancy, ...] = field(default=())  # first seen in this run

    def summary(self) -> str:
        """For job_runs.summary: "found 3, fixed 2, 1 for an admin"."""
        found, fixed, left = len(self.found), len(self.fixed), len(self.remaining)
        return f"found {found}, fixed {fixed}, {left} for an admin"


async def find(session: AsyncSession) -> list[Discrepancy]:
    """Every open discrepancy, items' ones first (by SKU), then ledger rows' (by id)."""
    found = await _stock_discrepancies(session)
    found += await _row_discrepancies(session)
    closed = await _closed_keys(session, [d.key for d in found if d.kind in _ROW_KINDS])
    return [d for d in found if d.key not in closed]


_ROW_KINDS = (Kind.MISSING_REQUEST, Kind.PARTS_MISMATCH)


async def _stock_discrepancies(session: AsyncSession) -> list[Discrepancy]:
    lines = InventoryTransaction
    sums = (
        select(lines.item_id, func.sum(lines.quantity).label("total"))
        .group_by(lines.item_id).subquery()
    )
    ledger = func.coalesce(sums.c.total, 0)
    rows = await session.execute(
        select(InventoryItem.id, InventoryItem.sku, InventoryItem.name, InventoryItem.on_hand,
               ledger)
        .outerjoin(sums, sums.c.item_id == InventoryItem.id)
        .where((InventoryItem.on_hand != ledger) | (InventoryItem.on_hand < 0) | (ledger < 0))
        .order_by(InventoryItem.sku)
    )
    found = []
    for item_id, sku, name, on_hand, total in rows:
        total = int(total)
        common = {"item_id": item_id, "sku": sku, "item_name": name, "on_hand": on_hand,
                  "ledger_sum": total}
        if total < 0:
            # The ledger itself says negative: only a count of the shelf can say how many.
            found.append(Discrepancy(f"negative:{item_id}", Kind.NEGATIVE_STOCK,
                                     fix=Fix.ADJUST, delta=-total, **common))
        elif on_hand < 0:
            found.append(Discrepancy(f"negative:{item_id}", Kind.NEGATIVE_STOCK,
                                     fix=Fix.RECOMPUTE, **common))
        else:
            found.append(Discrepancy(f"mismatch:{item_id}", Kind.LEDGER_MISMATCH,
                                     fix=Fix.RECOMPUTE, **common))
    return found


async def _row_discrepancies(session: AsyncSession) -> list[Discrepancy]:
    # Plain columns, not entities: a bad day may list thousands of rows.
    lines = InventoryTransaction
    reversal = aliased(InventoryTransaction)
    item = InventoryItem
    columns = (lines.id, lines.kind, lines.quantity, lines.request_id, item.id, item.sku,
               item.name)
    found: list[Discrepancy] = []

    missing = await session.execute(
        select(*columns)
        .join(item, item.id == lines.item_id)
        .outerjoin(ServiceRequest, ServiceRequest.id == lines.request_id)
        .where(lines.request_id.is_not(None), ServiceRequest.id.is_(None))
        .order_by(lines.id)
    )
    for line_id, kind, quantity, request_id, item_id, sku, name in missing:
        # An issue whose request is gone: give the parts back if they came back (or dismiss).
        found.append(Discrepancy(
            f"orphan:{line_id}", Kind.MISSING_REQUEST, item_id, sku, name, Fix.ADJUST,
            delta=-quantity if kind == inventory.Kind.ISSUE else 0, request_id=request_id,
            transaction_id=line_id, quantity=quantity))

    unreversed = await session.execute(
        select(*columns)
        .join(item, item.id == lines.item_id)
        .join(ServiceRequest, ServiceRequest.id == lines.request_id)
        .outerjoin(reversal, reversal.reverses_id == lines.id)
        .where(ServiceRequest.state == "cancelled", lines.kind == inventory.Kind.ISSUE.value,
               reversal.id.is_(None))
        .order_by(lines.id)
    )
    for line_id, _kind, quantity, request_id, item_id, sku, name in unreversed:
        found.append(Discrepancy(
            f"unreversed:{line_id}", Kind.CANCELLED_UNREVERSED, item_id, sku, name, Fix.REVERSE,
            request_id=request_id, transaction_id=line_id, quantity=quantity))

    mismatched = await session.execute(
        select(reversal.id, reversal.quantity, lines.quantity, lines.request_id, item.id,
               item.sku, item.name)
        .join(lines, lines.id == reversal.reverses_id)
        .join(item, item.id == reversal.item_id)
        .where(reversal.quantity != -lines.quantity)
        .order_by(reversal.id)
    )
    for back_id, back_quantity, issued, request_id, item_id, sku, name in mismatched:
        # The reversal gave back more (or less) than its issue took: the difference.
        found.append(Discrepancy(
            f"parts:{back_id}", Kind.PARTS_MISMATCH, item_id, sku, name, Fix.ADJUST,
            delta=-(back_quantity + issued), request_id=request_id, transaction_id=back_id,
            quantity=issued))
    return found


async def _closed_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    """Which of `keys` an admin closed. All closed keys are read (few: each is an admin's
    decision) rather than sending a long IN list."""
    if not keys:
        return set()
    log = InventoryReconciliationLog
    closed = set(await session.scalars(
        select(log.key).where(log.action.in_(_CLOSING)).distinct()))
    return closed.intersection(keys)


async def _log(session: AsyncSession, d: Discrepancy, action: LogAction, now: datetime, *,
               actor_id: int | None = None, reason: str | None = None,
               delta: int | None = None) -> None:
    session.add(InventoryReconciliationLog(
        key=d.key, kind=d.kind.value, action=action.value, item_id=d.item_id,
        request_id=d.request_id, transaction_id=d.transaction_id, delta=delta,
        detail=d.describe(), actor_id=actor_id, reason=reason, at=now,
    ))


async def _log_new(session: AsyncSession, found: Sequence[Discrepancy],
                   now: datetime) -> list[Discrepancy]:
    """Log a discrepancy as found once per appearance: again only after it was closed."""
    if not found:
        return []
    log = InventoryReconciliationLog
    latest = dict((await session.execute(
        select(log.key, func.max(log.id)).where(log.key.in_([d.key for d in found]))
        .group_by(log.key)
    )).all())
    actions = dict((await session.execute(
        select(log.id, log.action).where(log.id.in_(list(latest.values())))
    )).all()) if latest else {}
    new = [d for d in found
           if d.key not in latest or actions.get(latest[d.key]) != LogAction.FOUND.value]
    for d in new:
        await _log(session, d, LogAction.FOUND, now)
    return new


async def _recompute(session: AsyncSession, item_id: int, now: datetime,
                     actor_id: int | None) -> int:
    """On hand := the ledger's sum, which it returns. Audited."""
    total = await inventory.ledger_sum(session, item_id)
    item = await session.get(InventoryItem, item_id, with_for_update=True, populate_existing=True)
    before = item.on_hand if item is not None else None
    t = InventoryItem.__table__.c
    await session.execute(
        update(InventoryItem.__table__).where(t.id == item_id).values(on_hand=total, updated_at=now)
    )
    audit.record(session, operation="inventory.recompute", entity_type="inventory_item",
                 entity_id=item_id, before={"on_hand": before}, after={"on_hand": total},
                 actor_id=actor_id, at=now, detail="stock on hand set to the ledger's sum")
    return total


async def reconcile_in(session: AsyncSession, now: datetime, *, apply_safe: bool,
                       actor_id: int | None = None,
                       reason: str | None = None) -> ReconciliationReport:
    """One unit of work: find, log what is new, and (apply_safe) fix the safe kinds."""
    found = await find(session)
    new = await _log_new(session, found, now)
    if not apply_safe:
        return ReconciliationReport(tuple(found), (), tuple(found), tuple(new))
    fixed: list[Discrepancy] = []
    reversed_requests: set[int] = set()
    for d in found:
        if d.fix is Fix.REVERSE and d.request_id is not None:
            if d.request_id not in reversed_requests:
                await inventory.reverse_for_request(
                    session, request_id=d.request_id, now=now, actor_id=actor_id,
                    note="reconciliation: missing reversal",
                )
                reversed_requests.add(d.request_id)
            await _log(session, d, LogAction.AUTO_FIXED, now, actor_id=actor_id,
                       reason=reason, delta=-(d.quantity or 0))
            fixed.append(d)
    for d in found:
        if d.fix is Fix.RECOMPUTE:
            # Reversals above changed stock and ledger alike: recompute from the ledger now.
            after = await _recompute(session, d.item_id, now, actor_id)
            await _log(session, d, LogAction.AUTO_FIXED, now, actor_id=actor_id,
                       reason=reason, delta=after - (d.on_hand or 0))
            fixed.append(d)
    remaining = tuple(d for d in found if not d.safe)
    return ReconciliationReport(tuple(found), tuple(fixed), remaining, tuple(new))


async def reconcile(db: Database, now: datetime, *, apply_safe: bool,
                    actor_id: int | None = None, reason: str | None = None
                    ) -> ReconciliationReport:
    """For the hourly job: `await reconcile(db, clock.now(), apply_safe=True)`."""
    return await db.run(lambda s: reconcile_in(s, now, apply_safe=apply_safe, actor_id=actor_id,
                                               reason=reason))


async def _open(session: AsyncSession, key: str) -> Discrepancy:
    for d in await find(session):
        if d.key == key:
            return d
    raise NotADiscrepancy()


async def adjust_in(session: AsyncSession, key: str, *, delta: int, reason: str, actor_id: int,
                    now: datetime) -> Discrepancy:
    """An admin's adjustment for one discrepancy: a ledger line of `delta` with the reason,
    then on hand set to the ledger's sum (so the two agree again)."""
    d = await _open(session, key)
    item = await session.get(InventoryItem, d.item_id, with_for_update=True)
    if item is None:
        raise NotADiscrepancy()
    total = await inventory.ledger_sum(session, d.item_id)
    if total + delta < 0:
        raise AdjustmentRefused()
    if delta:
        session.add(InventoryTransaction(
            item_id=d.item_id, kind=inventory.Kind.ADJUST.value, quantity=delta,
            request_id=None, actor_id=actor_id, note=f"reconciliation: {reason}"[:1000],
            at=now,
        ))
        audit.record(session, operation="inventory.adjust", entity_type="inventory_item",
                     entity_id=d.item_id, before={"ledger": total},
                     after={"ledger": total + delta}, actor_id=actor_id, detail=reason, at=now)
        await session.flush()
    await _recompute(session, d.item_id, now, actor_id)
    await _log(session, d, LogAction.ADJUSTED, now, actor_id=actor_id, reason=reason,
               delta=delta)
    return d


async def dismiss_in(session: AsyncSession, key: str, *, reason: str, actor_id: int,
                     now: datetime) -> Discrepancy:
    """An admin looked and decided nothing is to change (a ledger row's discrepancy only:
    stock ones go away only when stock and ledger agree)."""
    d = await _open(session, key)
    if d.kind not in _ROW_KINDS:
        raise NotADiscrepancy()
    audit.record(session, operation="inventory.reconciliation_dismissed",
                 entity_type="inventory_item", entity_id=d.item_id,
                 after={"key": d.key}, actor_id=actor_id, detail=reason, at=now)
    await _log(session, d, LogAction.DISMISSED, now, actor_id=actor_id, reason=reason)
    return d


class InventoryReconciliation:
    """What the Inventory screen of /workflow_recovery does; each method one unit of work."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def discrepancies(self) -> list[Discrepancy]:
        return await self.db.read(find)

    async def get(self, key: str) -> Discrepancy:
        """Raises NotADiscrepancy when it is gone."""
        return await self.db.read(lambda s: _open(s, key))

    async def reconcile(self, now: datetime | None = None, apply_safe: bool = True, *,
                        actor_id: int | None = None,
                        reason: str | None = None) -> ReconciliationReport:
        """The hourly job's call: `reconcile(now, apply_safe=True)`; Auto-fix's, with the
        admin as actor and their reason."""
        return await reconcile(self.db, now or self.clock.now(), apply_safe=apply_safe,
                               actor_id=actor_id, reason=reason)

    async def adjust(self, key: str, *, delta: int, reason: str, actor_id: int) -> Discrepancy:
        return await self.db.run(lambda s: adjust_in(
            s, key, delta=delta, reason=reason, actor_id=actor_id, now=self.clock.now()))

    async def dismiss(self, key: str, *, reason: str, actor_id: int) -> Discrepancy:
        return await self.db.run(lambda s: dismiss_in(
            s, key, reason=reason, actor_id=actor_id, now=self.clock.now()))

    async def log(self, *, limit: int = 20, offset: int = 0) -> list[InventoryLogView]:
        async def work(session: AsyncSession) -> list[InventoryLogView]:
            log = InventoryReconciliationLog
            rows = await session.scalars(
                select(log).order_by(log.id.desc()).limit(limit).offset(offset))
            return [InventoryLogView(r.id, r.key, r.kind, r.action, r.delta, r.actor_id,
                                     r.reason, r.at) for r in rows]

        return await self.db.read(work)


@dataclass(frozen=True, slots=True)
class InventoryLogView:
    id: int
    key: str
    kind: str
    action: str
    delta: int | None
    actor_id: int | None
    reason: str | None
    at: datetime
