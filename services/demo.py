"""The demo catalogue `python main.py seed-demo` loads: service types, areas with neighbours, a
requester, three providers, a warehouse person and stock items, each by a Telegram id you can
chat as with the fake Bot API. Safe to run again: everything is looked up first (by code, SKU
or Telegram id) and only what is missing is created, in one unit of work."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Role, User
from services import audit, inventory
from services.clock import Clock
from services.users import ensure_telegram_user
from services.workflow import catalogue

SERVICE_TYPES = (
    ("plumbing", "Plumbing", "Plomberie"),
    ("electrical", "Electrical", "Électricité"),
    ("heating", "Heating", "Chauffage"),
)
AREAS = (
    ("north", "North", "Nord"),
    ("centre", "Centre", "Centre"),
    ("south", "South", "Sud"),
)
NEIGHBOURS = (("north", "centre"), ("centre", "south"))


@dataclass(frozen=True, slots=True)
class DemoPerson:
    telegram_id: int
    name: str
    language: str
    role: str  # what they play: requester, provider, warehouse
    services: tuple[str, ...] = ()
    areas: tuple[str, ...] = ()
    capacity: int = 1
    on_call: bool = False


PEOPLE = (
    DemoPerson(1001, "Ann Requester", "en", "requester"),
    DemoPerson(1002, "Paul Provider", "en", "provider", ("plumbing", "heating"), ("centre",),
               capacity=2),
    DemoPerson(1003, "Fatou Prestataire", "fr", "provider", ("plumbing", "electrical"),
               ("north",), on_call=True),
    DemoPerson(1004, "Sam Provider", "en", "provider", ("electrical", "heating"), ("south",)),
    DemoPerson(1005, "Wendy Warehouse", "en", "warehouse"),
)
# sku, name, unit, low-stock threshold, initial stock
STOCK = (
    ("PIPE-15", "Copper pipe 15 mm", "m", 10, 40),
    ("VALVE-1", "Ball valve", "pcs", 5, 12),
    ("SEAL-KIT", "Seal kit", "pcs", 4, 20),
    ("FUSE-10", "Fuse 10 A", "pcs", 5, 3),
)


@dataclass
class SeedReport:
    created: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created)


async def add_role(session: AsyncSession, *, user_id: int, role: Role, now: datetime) -> bool:
    """Give the user `role`; False when they had it already."""
    user = await session.get_one(User, user_id)
    roles = {r for r in user.roles.split(",") if r}
    if role.value in roles:
        return False
    before = user.roles
    user.roles = ",".join(sorted(roles | {role.value}))
    user.updated_at = now
    audit.record(
        session, operation="user.role_granted", entity_type="user", entity_id=user.id,
        before={"roles": before}, after={"roles": user.roles}, at=now,
    )
    return True


async def seed(session: AsyncSession, *, now: datetime, admin_ids: Iterable[int],
               default_language: str) -> SeedReport:
    report = SeedReport()
    admins = set(admin_ids)
    types: dict[str, int] = {}
    for code, name_en, name_fr in SERVICE_TYPES:
        entry, created = await catalogue.ensure_service_type(
            session, code=code, name_en=name_en, name_fr=name_fr
        )
        types[code] = entry.id
        if created:
            report.created.append(f"service type {code}")
    areas: dict[str, int] = {}
    for code, name_en, name_fr in AREAS:
        entry, created = await catalogue.ensure_area(
            session, code=code, name_en=name_en, name_fr=name_fr
        )
        areas[code] = entry.id
        if created:
            report.created.append(f"area {code}")
    for a, b in NEIGHBOURS:
        if await catalogue.ensure_neighbours(session, areas[a], areas[b]):
            report.created.append(f"neighbours {a}-{b}")
    for person in PEOPLE:
        user = await ensure_telegram_user(
            session, telegram_id=person.telegram_id, display_name=person.name,
            client_language=person.language, default_language=default_language,
            admin=person.telegram_id in admins, now=now,
        )
        if user.is_new:
            report.created.append(f"user {person.telegram_id} ({person.name})")
        if person.role == "provider":
            _, created = await catalogue.ensure_provider(
                session, user_id=user.id,
                service_type_ids=[types[s] for s in person.services],
                area_ids=[areas[a] for a in person.areas], now=now,
                capacity=person.capacity, on_call=person.on_call,
            )
            if created:
                report.created.append(f"provider {person.name}")
        elif person.role == "warehouse" and await add_role(
            session, user_id=user.id, role=Role.WAREHOUSE, now=now
        ):
            report.created.append(f"warehouse role for {person.name}")
    for sku, name, unit, low, initial in STOCK:
        _, created = await inventory.ensure_item(
            session, sku=sku, name=name, unit=unit, low_threshold=low, initial=initial, now=now
        )
        if created:
            report.created.append(f"stock item {sku}")
    return report


class Demo:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def seed(self, *, admin_ids: Iterable[int], default_language: str) -> SeedReport:
        """Load what is missing of the demo catalogue, in one unit of work."""
        ids = tuple(admin_ids)
        return await self.db.run(lambda s: seed(
            s, now=self.clock.now(), admin_ids=ids, default_language=default_language
        ))
