"""The stock of parts and its ledger.

Every change of `inventory_items.on_hand` writes an `inventory_transactions` row with the same
signed quantity in the same transaction, so stock on hand always equals the ledger's sum. An
issue takes stock with a conditional update (never below zero): issuing more than is in stock is
refused (OutOfStock) and changes nothing. Cancelling a request writes a reversal for each of its
issues, once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import InventoryItem, InventoryTransaction, Role
from services import audit
from services.clock import Clock
from services.localization import N_
from services.workflow.errors import (
    DuplicateSku,
    InvalidQuantity,
    OutOfStock,
    UnknownItem,
    WorkflowError,
)
from services.workflow.views import ActorLike

MAX_SKU = 32
MAX_NAME = 128


class Kind(enum.StrEnum):
    RECEIVE = "receive"
    ISSUE = "issue"
    ADJUST = "adjust"
    REVERSAL = "reversal"


class NotWarehouse(WorkflowError):
    user_message = N_("Only the warehouse can change the stock.")


@dataclass(frozen=True, slots=True)
class StockItemView:
    id: int
    sku: str
    name: str
    unit: str
    on_hand: int
    low_threshold: int

    @property
    def low(self) -> bool:
        """At or under its low-stock threshold (a mark on /stock)."""
        return self.on_hand <= self.low_threshold

    @classmethod
    def of(cls, item: InventoryItem) -> StockItemView:
        return cls(item.id, item.sku, item.name, item.unit, item.on_hand, item.low_threshold)


@dataclass(frozen=True, slots=True)
class LedgerLine:
    id: int
    item_id: int
    kind: str
    quantity: int
    request_id: int | None
    actor_id: int | None
    note: str | None
    at: datetime


def _positive(quantity: int) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise InvalidQuantity()
    return quantity


async def _item(session: AsyncSession, item_id: int) -> InventoryItem:
    item = await session.get(InventoryItem, item_id, populate_existing=True)
    if item is None:
        raise UnknownItem()
    return item


def _ledger(
    session: AsyncSession, item: InventoryItem, kind: Kind, quantity: int, *, now: datetime,
    actor_id: int | None, request_id: int | None = None, note: str | None = None,
    reverses_id: int | None = None,
) -> InventoryTransaction:
    line = InventoryTransaction(
        item_id=item.id, kind=kind.value, quantity=quantity, request_id=request_id,
        reverses_id=reverses_id, actor_id=actor_id, note=note, at=now,
    )
    session.add(line)
    audit.record(
        session, operation=f"inventory.{kind.value}", entity_type="inventory_item",
        entity_id=item.id, before={"on_hand": item.on_hand - quantity},
        after={"on_hand": item.on_hand, "request_id": request_id}, actor_id=actor_id,
        detail=note, at=now,
    )
    return line


async def add_item(
    session: AsyncSession, *, sku: str, name: str, unit: str = "pcs", low_threshold: int = 0,
    now: datetime, actor_id: int | None = None,
) -> StockItemView:
    """A new item with nothing in stock; DuplicateSku if the SKU exists."""
    sku, name = sku.strip()[:MAX_SKU], name.strip()[:MAX_NAME]
    if not sku or not name or low_threshold < 0:
        raise InvalidQuantity()
    item = InventoryItem(
        sku=sku, name=name, unit=unit[:16] or "pcs", on_hand=0, low_threshold=low_threshold,
        created_at=now, updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(item)
            await session.flush()
    except IntegrityError:
        raise DuplicateSku() from None
    audit.record(
        session, operation="inventory.add_item", entity_type="inventory_item", entity_id=item.id,
        after={"sku": sku, "name": name, "unit": item.unit, "low_threshold": low_threshold},
        actor_id=actor_id, at=now,
    )
    return StockItemView.of(item)


async def ensure_item(
    session: AsyncSession, *, sku: str, name: str, unit: str = "pcs", low_threshold: int = 0,
    initial: int = 0, now: datetime,
) -> tuple[StockItemView, bool]:
    """The item with this SKU, created (and `initial` received) when missing; (view, created).
    For seed-demo: a second run changes nothing."""
    existing = await session.scalar(select(InventoryItem).where(InventoryItem.sku == sku))
    if existing is not None:
        return StockItemView.of(existing), False
    view = await add_item(session, sku=sku, name=name, unit=unit, low_threshold=low_threshold,
                          now=now)
    if initial > 0:
        view = await receive(session, item_id=view.id, quantity=initial, now=now, actor_id=None,
                             note="initial stock")
    return view, True


async def receive(
    session: AsyncSession, *, item_id: int, quantity: int, now: datetime, actor_id: int | None,
    note: str | None = None,
) -> StockItemView:
    _positive(quantity)
    return await _change(session, item_id, Kind.RECEIVE, quantity, now=now, actor_id=actor_id,
                         note=note)


async def adjust(
    session: AsyncSession, *, item_id: int, delta: int, now: datetime, actor_id: int | None,
    note: str | None = None,
) -> StockItemView:
    """A count correction, up or down; never below zero (OutOfStock)."""
    if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0:
        raise InvalidQuantity()
    return await _change(session, item_id, Kind.ADJUST, delta, now=now, actor_id=actor_id,
                         note=note)


async def issue(
    session: AsyncSession, *, item_id: int, quantity: int, now: datetime, actor_id: int | None,
    request_id: int | None = None, note: str | None = None,
) -> StockItemView:
    """Take `quantity` out of stock; OutOfStock (nothing changed) when there is less."""
    _positive(quantity)
    return await _change(session, item_id, Kind.ISSUE, -quantity, now=now, actor_id=actor_id,
                         request_id=request_id, note=note)


async def _change(
    session: AsyncSession, item_id: int, kind: Kind, quantity: int, *, now: datetime,
    actor_id: int | None, request_id: int | None = None, note: str | None = None,
    reverses_id: int | None = None,
) -> StockItemView:
    t = InventoryItem.__table__.c
    statement = (
        update(InventoryItem.__table__)
        .where(t.id == item_id)
        .values(on_hand=t.on_hand + quantity, updated_at=now)
        .returning(t.on_hand)
    )
    if quantity < 0:
        # The conditional update: two issues racing for the last part cannot both succeed.
        statement = statement.where(t.on_hand >= -quantity)
    on_hand = (await session.execute(statement)).scalar()
    item = await _item(session, item_id)  # after the update: fresh, and locked on PostgreSQL
    if on_hand is None:
        raise OutOfStock(name=item.name, on_hand=item.on_hand, unit=item.unit, wanted=-quantity)
    _ledger(session, item, kind, quantity, now=now, actor_id=actor_id, request_id=request_id,
            note=note, reverses_id=reverses_id)
    return StockItemView.of(item)


async def reverse_for_request(
    session: AsyncSession, *, request_id: int, now: datetime, actor_id: int | None,
    note: str | None = None,
) -> list[StockItemView]:
    """A reversal for every issue of the request not reversed yet (so twice is harmless)."""
    lines = InventoryTransaction
    reversed_ids = select(lines.reverses_id).where(lines.reverses_id.is_not(None))
    issues = (
        await session.scalars(
            select(lines)
            .where(lines.request_id == request_id, lines.kind == Kind.ISSUE.value,
                   lines.id.not_in(reversed_ids))
            .order_by(lines.id)
        )
    ).all()
    return [
        await _change(session, line.item_id, Kind.REVERSAL, -line.quantity, now=now,
                      actor_id=actor_id, request_id=request_id, note=note,
                      reverses_id=line.id)
        for line in issues
    ]


async def stock(session: AsyncSession) -> list[StockItemView]:
    # Items an admin retired (issue 12) keep their ledger but are no longer offered.
    items = await session.scalars(
        select(InventoryItem).where(InventoryItem.active).order_by(InventoryItem.sku))
    return [StockItemView.of(i) for i in items]


async def ledger_sum(session: AsyncSession, item_id: int) -> int:
    return int(
        await session.scalar(
            select(func.coalesce(func.sum(InventoryTransaction.quantity), 0)).where(
                InventoryTransaction.item_id == item_id
            )
        )
        or 0
    )


def _check_warehouse(actor: ActorLike) -> None:
    if not actor.roles & {Role.WAREHOUSE, Role.ADMIN}:
        raise NotWarehouse()


class Inventory:
    """What the warehouse screens do (/stock, receiving). Changes need the warehouse or the
    admin role (NotWarehouse); issues for a request go through ServiceRequests.record_parts."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def list_stock(self) -> list[StockItemView]:
        """Every item by SKU; `.low` marks those at or under their threshold."""
        return await self.db.read(stock)

    async def get(self, item_id: int) -> StockItemView:
        async def work(session: AsyncSession) -> StockItemView:
            return StockItemView.of(await _item(session, item_id))

        return await self.db.read(work)

    async def add_item(
        self, actor: ActorLike, *, sku: str, name: str, unit: str = "pcs", low_threshold: int = 0
    ) -> StockItemView:
        _check_warehouse(actor)
        return await self.db.run(lambda s: add_item(
            s, sku=sku, name=name, unit=unit, low_threshold=low_threshold,
            now=self.clock.now(), actor_id=actor.id,
        ))

    async def receive(
        self, actor: ActorLike, item_id: int, quantity: int, note: str | None = None
    ) -> StockItemView:
        _check_warehouse(actor)
        return await self.db.run(lambda s: receive(
            s, item_id=item_id, quantity=quantity, now=self.clock.now(), actor_id=actor.id,
            note=note,
        ))

    async def issue(
        self, actor: ActorLike, item_id: int, quantity: int, note: str | None = None
    ) -> StockItemView:
        """Stock taken out for no request (breakage, say); OutOfStock when short."""
        _check_warehouse(actor)
        return await self.db.run(lambda s: issue(
            s, item_id=item_id, quantity=quantity, now=self.clock.now(), actor_id=actor.id,
            note=note,
        ))

    async def adjust(
        self, actor: ActorLike, item_id: int, delta: int, note: str | None = None
    ) -> StockItemView:
        _check_warehouse(actor)
        return await self.db.run(lambda s: adjust(
            s, item_id=item_id, delta=delta, now=self.clock.now(), actor_id=actor.id, note=note,
        ))

    async def ledger(self, item_id: int, *, limit: int = 50) -> list[LedgerLine]:
        """The item's latest ledger lines, newest first."""

        async def work(session: AsyncSession) -> list[LedgerLine]:
            rows = await session.scalars(
                select(InventoryTransaction)
                .where(InventoryTransaction.item_id == item_id)
                .order_by(InventoryTransaction.id.desc())
                .limit(limit)
            )
            return [
                LedgerLine(r.id, r.item_id, r.kind, r.quantity, r.request_id, r.actor_id,
                           r.note, r.at)
                for r in rows
            ]

        return await self.db.read(work)

