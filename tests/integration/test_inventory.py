"""The stock ledger on both engines: stock on hand always equals the ledger's sum, an issue
never takes more than there is, and only the warehouse changes the stock."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from database.engine import Database
from database.models import InventoryTransaction, Role
from services import inventory
from services.clock import FakeClock
from services.inventory import Inventory, NotWarehouse
from services.users import ensure_telegram_user
from services.workflow.errors import InvalidQuantity, OutOfStock
from services.workflow.views import Viewer

WAREHOUSE = Viewer(id=1, roles=frozenset({Role.WAREHOUSE}))  # users.id 1: the first user
REQUESTER = Viewer(id=1, roles=frozenset({Role.REQUESTER}))


@pytest.fixture
async def db(db: Database) -> Database:
    """The database with one user, the actor of every change here."""
    clock = FakeClock()

    async def add(session) -> None:  # type: ignore[no-untyped-def]
        user = await ensure_telegram_user(
            session, telegram_id=31337, display_name="Wanda", client_language="en",
            default_language="en", admin=False, now=clock.now())
        assert user.id == WAREHOUSE.id

    await db.run(add)
    return db


async def _ledger(db: Database, item_id: int) -> list[tuple[str, int]]:
    rows = await db.read(lambda s: s.execute(
        select(InventoryTransaction.kind, InventoryTransaction.quantity)
        .where(InventoryTransaction.item_id == item_id).order_by(InventoryTransaction.id)
    ))
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def _item(stock: Inventory, sku: str = "FILTER-1") -> int:
    return (await stock.add_item(WAREHOUSE, sku=sku, name="Filter", unit="pcs",
                                 low_threshold=2)).id


async def test_receive_issue_and_adjust_are_written_to_the_ledger(db: Database) -> None:
    stock = Inventory(db, FakeClock())
    item_id = await _item(stock)
    assert (await stock.receive(WAREHOUSE, item_id, 5, "delivery 42")).on_hand == 5
    assert (await stock.issue(WAREHOUSE, item_id, 2, "broken")).on_hand == 3
    adjusted = await stock.adjust(WAREHOUSE, item_id, -1, "count")
    assert adjusted.on_hand == 2 and adjusted.low  # at its threshold
    assert await _ledger(db, item_id) == [("receive", 5), ("issue", -2), ("adjust", -1)]
    [listed] = await stock.list_stock()
    assert (listed.sku, listed.on_hand, listed.low) == ("FILTER-1", 2, True)


async def test_issuing_more_than_in_stock_is_refused_and_changes_nothing(db: Database) -> None:
    stock = Inventory(db, FakeClock())
    item_id = await _item(stock)
    await stock.receive(WAREHOUSE, item_id, 3)
    with pytest.raises(OutOfStock) as refused:
        await stock.issue(WAREHOUSE, item_id, 4)
    assert refused.value.render("en") == "Not enough Filter in stock: 3 pcs left, 4 asked."
    with pytest.raises(OutOfStock):
        await stock.adjust(WAREHOUSE, item_id, -4)
    with pytest.raises(InvalidQuantity):
        await stock.receive(WAREHOUSE, item_id, 0)
    assert (await stock.get(item_id)).on_hand == 3
    assert await _ledger(db, item_id) == [("receive", 3)]


async def test_only_the_warehouse_changes_the_stock(db: Database) -> None:
    stock = Inventory(db, FakeClock())
    item_id = await _item(stock)
    with pytest.raises(NotWarehouse):
        await stock.receive(REQUESTER, item_id, 3)
    assert (await stock.get(item_id)).on_hand == 0


async def test_issues_for_no_request_are_not_reversed_by_a_cancellation(db: Database) -> None:
    clock = FakeClock()
    stock = Inventory(db, clock)
    item_id = await _item(stock)
    await stock.receive(WAREHOUSE, item_id, 5)
    await db.run(lambda s: inventory.issue(s, item_id=item_id, quantity=2, now=clock.now(),
                                          actor_id=None, request_id=None))
    # Issues with no request are never reversed by a request's cancellation.
    await db.run(lambda s: inventory.reverse_for_request(s, request_id=1, now=clock.now(),
                                                        actor_id=None))
    assert (await stock.get(item_id)).on_hand == 3


_OPERATION = st.one_of(
    st.tuples(st.just("receive"), st.integers(1, 20)),
    st.tuples(st.just("issue"), st.integers(1, 20)),
    st.tuples(st.just("adjust"), st.integers(-20, 20).filter(bool)),
)


@given(operations=st.lists(_OPERATION, max_size=12))
async def test_stock_on_hand_equals_the_ledger_sum_after_any_operations(
    db: Database, operations: list[tuple[str, int]]
) -> None:
    stock = Inventory(db, FakeClock())
    item_id = await _item(stock, sku=uuid.uuid4().hex[:12])
    expected = 0
    for kind, quantity in operations:
        try:
            if kind == "receive":
                await stock.receive(WAREHOUSE, item_id, quantity)
            elif kind == "issue":
                await stock.issue(WAREHOUSE, item_id, quantity)
            else:
                await stock.adjust(WAREHOUSE, item_id, quantity)
        except OutOfStock:
            assert expected + (quantity if kind == "adjust" else -quantity) < 0
            continue
        expected += -quantity if kind == "issue" else quantity
    on_hand = (await stock.get(item_id)).on_hand
    ledger = await db.read(lambda s: s.scalar(
        select(func.coalesce(func.sum(InventoryTransaction.quantity), 0))
        .where(InventoryTransaction.item_id == item_id)))
    assert on_hand == ledger == expected >= 0
