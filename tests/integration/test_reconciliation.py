"""Inventory reconciliation on both engines: seeded discrepancies are found, the safe ones are
fixed by the hourly call (and only once), the rest stay listed for an admin, whose adjustment
or dismissal closes them; everything is in inventory_reconciliation_log."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from database.engine import Database
from database.models import (
    Area,
    InventoryItem,
    InventoryReconciliationLog,
    InventoryTransaction,
    ServiceRequest,
    ServiceType,
)
from services.clock import FakeClock
from services.inventory_reconciliation import (
    AdjustmentRefused,
    Fix,
    InventoryReconciliation,
    Kind,
    NotADiscrepancy,
)
from services.users import ensure_telegram_user

MISSING_REQUEST = 999_999

class Seeded:
    """Ids of what `_seed` wrote."""

    items: dict[str, int]
    requests: dict[str, int]
    admin: int

async def _seed(db: Database, clock: FakeClock) -> Seeded:
    seeded = Seeded()
    now = clock.now()

    async def work(session) -> None:  # type: ignore[no-untyped-def]
        user = await ensure_telegram_user(
            session, telegram_id=4242, display_name="Ada", client_language="en",
            default_language="en", admin=True, now=now)
        seeded.admin = user.id
        service, area = ServiceType(code="plumb", name_en="Plumbing", name_fr="Plomberie"), \
            Area(code="north", name_en="North", name_fr="Nord")
        session.add_all([service, area])
        await session.flush()
        requests = {}
        for name, state in (("cancelled", "cancelled"), ("done", "confirmed")):
            req = ServiceRequest(
                requester_id=user.id, service_type_id=service.id, area_id=area.id,
                address="1 rue", state=state, version=3, state_entered_at=now,
                created_at=now, updated_at=now)
            session.add(req)
            await session.flush()
            requests[name] = req.id
        items = {}
        # sku: (on_hand, [(kind, quantity, request)])
        plan = {
            "MISMATCH": (10, [("receive", 7, None)]),
            "NEGLEDGER": (-2, [("receive", 1, None), ("issue", -3, None)]),
            "NEGSTOCK": (-1, [("receive", 3, None)]),
            "CANCELLED": (3, [("receive", 5, None), ("issue", -2, "cancelled")]),
            "PARTS": (12, [("receive", 10, None), ("issue", -3, "done"), ("reversal", 5, "done")]),
            "ORPHAN": (4, [("receive", 4, None)]),
            "FINE": (2, [("receive", 3, None), ("issue", -1, "done")]),
        }
        for sku, (on_hand, lines) in plan.items():
            item = InventoryItem(sku=sku, name=sku.title(), unit="pcs", on_hand=on_hand,
                                 low_threshold=0, created_at=now, updated_at=now)
            session.add(item)
            await session.flush()
            items[sku] = item.id
            last = None
            for kind, quantity, request in lines:
                line = InventoryTransaction(
                    item_id=item.id, kind=kind, quantity=quantity,
                    request_id=requests[request] if request else None,
                    reverses_id=last.id if kind == "reversal" and last else None,
                    actor_id=user.id, at=now)
                session.add(line)
                await session.flush()
                last = line
        seeded.items, seeded.requests = items, requests

    await db.run(work)
    await _orphan_issue(db, seeded.items["ORPHAN"], quantity=-1, at=now)
    return seeded

async def _orphan_issue(db: Database, item_id: int, *, quantity: int, at) -> None:  # type: ignore[no-untyped-def]
    """A ledger row pointing at a request that does not exist: only a write that went around
    the foreign keys (a restore, a hand-made fix) leaves one, so the test goes around them."""
    if db.dialect == "sqlite":
        async with db.engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            await raw.execute("PRAGMA foreign_keys=OFF")
            try:
                await raw.execute(
                    "INSERT INTO inventory_transactions (item_id, kind, quantity, request_id, at)"
                    " VALUES (?, 'issue', ?, ?, ?)",
                    (item_id, quantity, MISSING_REQUEST, at.isoformat()))
                await raw.commit()
            finally:
                await raw.execute("PRAGMA foreign_keys=ON")
    else:
        async with db.transaction() as session:
            await session.execute(text("SET LOCAL session_replication_role = replica"))
            session.add(InventoryTransaction(item_id=item_id, kind="issue", quantity=quantity,
                                             request_id=MISSING_REQUEST, at=at))
    async with db.transaction() as session:
        item = await session.get_one(InventoryItem, item_id)
        item.on_hand += quantity  # the stock moved with it: only the request is missing

async def _on_hand(db: Database) -> dict[str, int]:
    rows = await db.read(lambda s: s.execute(select(InventoryItem.sku, InventoryItem.on_hand)))
    return dict(rows.all())  # type: ignore[arg-type]

async def _log(db: Database) -> list[tuple[str, str]]:
    rows = await db.read(lambda s: s.execute(
        select(InventoryReconciliationLog.key, InventoryReconciliationLog.action)
        .order_by(InventoryReconciliationLog.id)))
    return [tuple(r) for r in rows]  # type: ignore[misc]

async def test_seeded_discrepancies_are_found_with_their_fixes(db: Database) -> None:
    clock = FakeClock()
    seeded = await _seed(db, clock)
    found = await InventoryReconciliation(db, clock).discrepancies()
    by_key = {d.key: d for d in found}
    items, orphan_line = seeded.items, next(d for d in found if d.kind is Kind.MISSING_REQUEST)
    assert set(by_key) == {
        f"mismatch:{items['MISMATCH']}", f"negative:{items['NEGLEDGER']}",
        f"negative:{items['NEGSTOCK']}", orphan_line.key,
        next(d.key for d in found if d.kind is Kind.CANCELLED_UNREVERSED),
        next(d.key for d in found if d.kind is Kind.PARTS_MISMATCH),
    }
    assert by_key[f"mismatch:{items['MISMATCH']}"].fix is Fix.RECOMPUTE
    negative = by_key[f"negative:{items['NEGLEDGER']}"]
    assert negative.fix is Fix.ADJUST and negative.delta == 2 and not negative.safe
    assert by_key[f"negative:{items['NEGSTOCK']}"].fix is Fix.RECOMPUTE
    assert orphan_line.request_id == MISSING_REQUEST and orphan_line.delta == 1
    unreversed = next(d for d in found if d.kind is Kind.CANCELLED_UNREVERSED)
    assert unreversed.request_id == seeded.requests["cancelled"] and unreversed.fix is Fix.REVERSE
    parts = next(d for d in found if d.kind is Kind.PARTS_MISMATCH)
    assert parts.request_id == seeded.requests["done"] and parts.delta == -2
    assert all(d.item_id != items["FINE"] for d in found)

async def test_the_hourly_run_fixes_the_safe_ones_once_and_lists_the_rest(db: Database) -> None:
    clock = FakeClock()
    seeded = await _seed(db, clock)
    service = InventoryReconciliation(db, clock)

    dry = await service.reconcile(clock.now(), apply_safe=False)
    assert len(dry.found) == 6 and not dry.fixed and len(dry.new) == 6
    assert (await _on_hand(db))["MISMATCH"] == 10  # nothing changed

    clock.advance(hours=1)
    report = await service.reconcile(clock.now(), apply_safe=True)
    assert {d.kind for d in report.fixed} == {Kind.LEDGER_MISMATCH, Kind.NEGATIVE_STOCK,
                                              Kind.CANCELLED_UNREVERSED}
    assert {d.kind for d in report.remaining} == {Kind.NEGATIVE_STOCK, Kind.MISSING_REQUEST,
                                                  Kind.PARTS_MISMATCH}
    assert not report.new  # found an hour ago: logged once
    stock = await _on_hand(db)
    assert stock["MISMATCH"] == 7 and stock["NEGSTOCK"] == 3
    assert stock["CANCELLED"] == 5  # the missing reversal gave the 2 parts back
    reversal = await db.read(lambda s: s.scalar(
        select(InventoryTransaction).where(InventoryTransaction.kind == "reversal",
                                           InventoryTransaction.item_id
                                           == seeded.items["CANCELLED"])))
    assert reversal is not None and reversal.quantity == 2

    again = await service.reconcile(clock.now(), apply_safe=True)
    assert not again.fixed and {d.key for d in again.remaining} == {
        d.key for d in report.remaining}
    log = await _log(db)
    assert sum(action == "found" for _, action in log) == 6
    assert sum(action == "auto_fixed" for _, action in log) == 3

async def test_an_admin_adjusts_or_dismisses_what_is_left(db: Database) -> None:
    clock = FakeClock()
    seeded = await _seed(db, clock)
    service = InventoryReconciliation(db, clock)
    await service.reconcile(clock.now(), apply_safe=True)
    left = {d.kind: d for d in await service.discrepancies()}
    negative = left[Kind.NEGATIVE_STOCK]

    with pytest.raises(AdjustmentRefused):
        await service.adjust(negative.key, delta=1, reason="counted", actor_id=seeded.admin)
    await service.adjust(negative.key, delta=negative.delta, reason="counted the shelf",
                         actor_id=seeded.admin)
    await service.dismiss(left[Kind.MISSING_REQUEST].key, reason="request was purged",
                          actor_id=seeded.admin)
    await service.adjust(left[Kind.PARTS_MISMATCH].key, delta=-2, reason="reversal typo",
                         actor_id=seeded.admin)

    assert await service.discrepancies() == []
    stock = await _on_hand(db)
    assert stock["NEGLEDGER"] == 0 and stock["PARTS"] == 10
    with pytest.raises(NotADiscrepancy):
        await service.dismiss(negative.key, reason="again", actor_id=seeded.admin)
    log = await _log(db)
    assert (negative.key, "adjusted") in log
    assert (left[Kind.MISSING_REQUEST].key, "dismissed") in log
    reasons = await db.read(lambda s: s.scalars(
        select(InventoryReconciliationLog.reason)
        .where(InventoryReconciliationLog.actor_id == seeded.admin)))
    assert set(reasons) == {"counted the shelf", "request was purged", "reversal typo"}
