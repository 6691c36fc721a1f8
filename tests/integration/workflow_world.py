"""A small world for the service-request tests: people, a catalogue, providers and stock, on a
real database, with the production services and a clock the test moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from database.engine import Database
from database.models import Notification, ServiceRequest, TransactionLog, WorkflowTransition
from services.alerts import Alerts
from services.clock import FakeClock
from services.inventory import Inventory, ensure_item
from services.users import UserView, ensure_telegram_user
from services.workflow import NewRequest, ServiceRequests, WorkflowConfig
from services.workflow.catalogue import (
    ensure_area,
    ensure_neighbours,
    ensure_provider,
    ensure_service_type,
)
from services.workflow.views import CatalogueEntry, ProviderView

ADMIN_TELEGRAM_ID = 9001

# name: (telegram id, language, admin)
PEOPLE = {
    "ann": (1001, "en", False),
    "fifi": (1002, "fr", False),
    "bob": (2001, "en", False),
    "eve": (2002, "en", False),
    "carl": (2003, "fr", False),
    "dora": (2004, "en", False),
    "ada": (ADMIN_TELEGRAM_ID, "en", True),
}
# provider: (services, areas, on call)
PROVIDERS = {
    "bob": (["plumbing"], ["north"], False),
    "eve": (["plumbing"], ["north"], False),
    "carl": (["plumbing"], ["centre"], False),
    "dora": (["electricity"], ["south"], True),
}


@dataclass
class World:
    db: Database
    clock: FakeClock
    requests: ServiceRequests
    inventory: Inventory
    people: dict[str, UserView] = field(default_factory=dict)
    services: dict[str, CatalogueEntry] = field(default_factory=dict)
    areas: dict[str, CatalogueEntry] = field(default_factory=dict)
    providers: dict[str, ProviderView] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)

    def form(self, service: str = "plumbing", area: str = "north", **changes: Any) -> NewRequest:
        values: dict[str, Any] = dict(
            service_type_id=self.services[service].id, area_id=self.areas[area].id,
            address="12 rue des Lilas", time_window="Monday morning",
            description="The kitchen sink leaks", photos=(), urgent=False,
        )
        values.update(changes)
        return NewRequest(**values)

    async def texts(self, name: str) -> list[str]:
        """The texts the outbox holds for this person, oldest first."""
        user_id = self.people[name].id
        rows = await self.db.read(lambda s: s.scalars(
            select(Notification.payload).where(Notification.recipient_id == user_id)
            .order_by(Notification.id)
        ))
        return [p["text"] for p in rows if "text" in p]

    async def notifications(self, name: str, kind: str | None = None) -> list[Notification]:
        user_id = self.people[name].id
        query = select(Notification).where(Notification.recipient_id == user_id)
        if kind is not None:
            query = query.where(Notification.kind == kind)
        rows = await self.db.read(lambda s: s.scalars(query.order_by(Notification.id)))
        return list(rows)

    async def request_row(self, request_id: int) -> ServiceRequest:
        row = await self.db.read(lambda s: s.get(ServiceRequest, request_id))
        assert row is not None
        return row

    async def transitions(self, request_id: int) -> list[tuple[str, str, str]]:
        rows = await self.db.read(lambda s: s.execute(
            select(WorkflowTransition.action, WorkflowTransition.from_state,
                   WorkflowTransition.to_state)
            .where(WorkflowTransition.request_id == request_id)
            .order_by(WorkflowTransition.id)
        ))
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def audit_operations(self, request_id: int) -> list[str]:
        rows = await self.db.read(lambda s: s.scalars(
            select(TransactionLog.operation)
            .where(TransactionLog.entity_type == "service_request",
                   TransactionLog.entity_id == str(request_id))
            .order_by(TransactionLog.id)
        ))
        return list(rows)

    async def count(self, model: Any, *where: Any) -> int:
        return int(await self.db.read(
            lambda s: s.scalar(select(func.count()).select_from(model).where(*where))
        ) or 0)


async def build_world(db: Database, **config: Any) -> World:
    clock = FakeClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    alerts = Alerts(admin_telegram_ids=(ADMIN_TELEGRAM_ID,), window=timedelta(hours=1))
    world = World(
        db, clock, ServiceRequests(db, clock, alerts, WorkflowConfig(**config)),
        Inventory(db, clock),
    )
    now = clock.now()

    async def seed(session: Any) -> None:
        for name, (telegram_id, language, admin) in PEOPLE.items():
            world.people[name] = await ensure_telegram_user(
                session, telegram_id=telegram_id, display_name=name.title(),
                client_language=language, default_language="en", admin=admin, now=now,
            )
        for code, en, fr in (("plumbing", "Plumbing", "Plomberie"),
                             ("electricity", "Electricity", "Électricité")):
            world.services[code], _ = await ensure_service_type(
                session, code=code, name_en=en, name_fr=fr)
        for code, en, fr in (("north", "North", "Nord"), ("centre", "Centre", "Centre"),
                             ("south", "South", "Sud")):
            world.areas[code], _ = await ensure_area(session, code=code, name_en=en, name_fr=fr)
        await ensure_neighbours(session, world.areas["north"].id, world.areas["centre"].id)
        await ensure_neighbours(session, world.areas["centre"].id, world.areas["south"].id)
        for name, (services, areas, on_call) in PROVIDERS.items():
            world.providers[name], _ = await ensure_provider(
                session, user_id=world.people[name].id,
                service_type_ids=[world.services[s].id for s in services],
                area_ids=[world.areas[a].id for a in areas], now=now, on_call=on_call,
            )
        for sku, name, initial in (("PIPE-15", "Copper pipe", 10), ("VALVE-1", "Valve", 5)):
            item, _ = await ensure_item(session, sku=sku, name=name, unit="pcs",
                                        low_threshold=2, initial=initial, now=now)
            world.items[sku] = item.id

    await db.run(seed)
    return world
