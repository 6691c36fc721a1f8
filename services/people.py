"""People and catalogue, as admins keep them from /workflow_recovery: find a person, grant or
revoke a role, set a provider's services, areas, capacity and availability; add, rename and
retire service types, areas (and their neighbours) and stock items. Every change is audited
with the admin who made it.

Roles: `users.roles` is the effective set every update reads (so the admin guard refuses a
revoked admin at the next update, and the command menus follow); `role_grants` records where a
granted role came from. ADMIN_IDS are the owners: their admin right is not revocable here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import (
    Area,
    AreaNeighbour,
    InventoryItem,
    Provider,
    ProviderArea,
    ProviderService,
    Role,
    RoleGrant,
    RoleGrantSource,
    ServiceType,
    TransactionLog,
    User,
)
from services import audit, inventory
from services.clock import Clock
from services.errors import DomainError
from services.localization import N_
from services.masking import mask_phone

__all__ = [
    "GRANTABLE", "AuditEntry", "DuplicateCode", "Entry", "InvalidValue", "NotGrantable",
    "OwnerAdmin", "People", "PeopleError", "PersonView", "ProviderProfile", "Role",
    "UnknownEntry", "UnknownPerson",
]

GRANTABLE = (Role.PROVIDER, Role.OPERATOR, Role.WAREHOUSE, Role.ADMIN)
MAX_CODE = 32
MAX_CATALOGUE_NAME = 64


class PeopleError(DomainError):
    user_message = N_("This cannot be done.")


class UnknownPerson(PeopleError):
    user_message = N_("This person is not known.")


class OwnerAdmin(PeopleError):
    user_message = N_("This admin is an owner (ADMIN_IDS): the right cannot be revoked here.")


class NotGrantable(PeopleError):
    user_message = N_("This role cannot be granted here.")


class UnknownEntry(PeopleError):
    user_message = N_("This entry is not known.")


class DuplicateCode(PeopleError):
    user_message = N_("This code is already taken.")


class InvalidValue(PeopleError):
    user_message = N_("This value is not valid.")


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    id: int
    capacity: int
    active: bool
    available: bool
    service_type_ids: tuple[int, ...]
    area_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PersonView:
    id: int
    telegram_id: int | None
    display_name: str
    username: str | None
    phone_masked: str | None
    language: str
    roles: frozenset[Role]
    owner: bool  # in ADMIN_IDS
    menu_grants: frozenset[Role]  # roles granted in the menu
    provider: ProviderProfile | None = None

    @property
    def label(self) -> str:
        handle = f" @{self.username}" if self.username else ""
        return f"{self.display_name or '—'}{handle} (#{self.id})"


@dataclass(frozen=True, slots=True)
class Entry:
    """A service type, an area or a stock item, as the catalogue screens list them."""

    id: int
    code: str
    name_en: str
    name_fr: str
    active: bool

    def name(self, language: str | None) -> str:
        return self.name_fr if language == "fr" and self.name_fr else self.name_en


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    operation: str
    entity_type: str
    entity_id: str
    actor_id: int | None
    outcome: str
    detail: str | None
    at: datetime


def _roles(stored: str) -> set[str]:
    return {r for r in stored.split(",") if r}


class People:
    """Each method is one unit of work, committed when it returns; refusals raise a
    PeopleError (nothing changed)."""

    def __init__(self, db: Database, clock: Clock, *, admin_ids: Iterable[int]) -> None:
        self.db = db
        self.clock = clock
        self.admin_ids = frozenset(admin_ids)

    # --- people -------------------------------------------------------------------------------

    async def find(self, query: str, *, limit: int = 8) -> list[PersonView]:
        """By @username, Telegram id, the last digits of a phone number (4 or more), or a
        part of the name."""
        query = query.strip()[:64]
        if not query:
            return []

        async def work(session: AsyncSession) -> list[PersonView]:
            conditions = []
            if query.startswith("@"):
                conditions.append(func.lower(User.username) == query[1:].lower())
            elif query.lstrip("+").isdigit():
                digits = query.lstrip("+")
                if len(digits) <= 18:
                    conditions.append(User.telegram_id == int(digits))
                if len(digits) >= 4:
                    conditions.append(User.phone.like(f"%{digits}"))
            else:
                pattern = "%" + query.lower().replace("%", "").replace("_", "") + "%"
                conditions.append(func.lower(User.display_name).like(pattern))
                conditions.append(func.lower(User.username).like(pattern))
            if not conditions:
                return []
            ids = list(await session.scalars(
                select(User.id).where(or_(*conditions)).order_by(User.id).limit(limit)))
            return [await self._view(session, i) for i in ids]

        return await self.db.read(work)

    async def get(self, user_id: int) -> PersonView:
        return await self.db.read(lambda s: self._view(s, user_id))

    async def _view(self, session: AsyncSession, user_id: int) -> PersonView:
        user = await session.get(User, user_id, populate_existing=True)
        if user is None:
            raise UnknownPerson()
        grants = frozenset(
            Role(r) for r in await session.scalars(
                select(RoleGrant.role).where(RoleGrant.user_id == user_id,
                                             RoleGrant.source == RoleGrantSource.MENU.value))
        )
        provider = await session.scalar(select(Provider).where(Provider.user_id == user_id))
        profile = None
        if provider is not None:
            services = tuple(await session.scalars(
                select(ProviderService.service_type_id)
                .where(ProviderService.provider_id == provider.id)
                .order_by(ProviderService.service_type_id)))
            areas = tuple(await session.scalars(
                select(ProviderArea.area_id).where(ProviderArea.provider_id == provider.id)
                .order_by(ProviderArea.area_id)))
            profile = ProviderProfile(provider.id, provider.capacity, provider.active,
                                      provider.available, services, areas)
        return PersonView(
            user.id, user.telegram_id, user.display_name, user.username,
            mask_phone(user.phone) if user.phone else None, user.language, user.role_set,
            user.telegram_id in self.admin_ids, grants, profile,
        )

    async def grant(self, actor_id: int, user_id: int, role: Role, *,
                    reason: str | None = None) -> PersonView:
        """The role, recorded as granted in the menu (an admin keeps it across restarts and
        whatever ADMIN_IDS says until it is revoked here)."""
        if role not in GRANTABLE:
            raise NotGrantable()

        async def work(session: AsyncSession) -> PersonView:
            now = self.clock.now()
            user = await session.get(User, user_id, with_for_update=True)
            if user is None:
                raise UnknownPerson()
            existing = await session.scalar(select(RoleGrant).where(
                RoleGrant.user_id == user_id, RoleGrant.role == role.value,
                RoleGrant.source == RoleGrantSource.MENU.value))
            if existing is None:
                session.add(RoleGrant(user_id=user_id, role=role.value,
                                      source=RoleGrantSource.MENU.value, granted_by=actor_id,
                                      granted_at=now))
            before = user.roles
            user.roles = ",".join(sorted(_roles(user.roles) | {role.value}))
            user.updated_at = now
            if role is Role.PROVIDER:
                provider = await session.scalar(
                    select(Provider).where(Provider.user_id == user_id))
                if provider is not None and not provider.active:
                    provider.active, provider.updated_at = True, now
            audit.record(session, operation="user.role_granted", entity_type="user",
                         entity_id=user_id, before={"roles": before},
                         after={"roles": user.roles, "role": role.value, "source": "menu"},
                         actor_id=actor_id, detail=reason, at=now)
            await session.flush()
            return await self._view(session, user_id)

        return await self.db.run(work)

    async def revoke(self, actor_id: int, user_id: int, role: Role, *,
                     reason: str | None = None) -> PersonView:
        """Takes the role away now: the next update of that person sees it gone (the admin
        guard refuses, the command menu shrinks). An owner's admin right stays (OwnerAdmin)."""
        if role not in GRANTABLE:
            raise NotGrantable()

        async def work(session: AsyncSession) -> PersonView:
            now = self.clock.now()
            user = await session.get(User, user_id, with_for_update=True)
            if user is None:
                raise UnknownPerson()
            if role is Role.ADMIN and user.telegram_id in self.admin_ids:
                raise OwnerAdmin()
            # Every grant of the role goes: a "settings" one left by an id no longer in
            # ADMIN_IDS too (the next update would have dropped it).
            await session.execute(delete(RoleGrant).where(
                RoleGrant.user_id == user_id, RoleGrant.role == role.value))
            before = user.roles
            user.roles = ",".join(sorted(_roles(user.roles) - {role.value}))
            user.updated_at = now
            if role is Role.PROVIDER:
                provider = await session.scalar(
                    select(Provider).where(Provider.user_id == user_id))
                if provider is not None and provider.active:
                    provider.active, provider.updated_at = False, now
            audit.record(session, operation="user.role_revoked", entity_type="user",
                         entity_id=user_id, before={"roles": before},
                         after={"roles": user.roles, "role": role.value},
                         actor_id=actor_id, detail=reason, at=now)
            await session.flush()
            return await self._view(session, user_id)

        return await self.db.run(work)

    # --- providers ----------------------------------------------------------------------------

    async def _provider(self, session: AsyncSession, user_id: int, now: datetime) -> Provider:
        """The person's provider row, made (active, capacity 1) when missing."""
        provider = await session.scalar(
            select(Provider).where(Provider.user_id == user_id).with_for_update())
        if provider is not None:
            return provider
        if await session.get(User, user_id) is None:
            raise UnknownPerson()
        provider = Provider(user_id=user_id, capacity=1, active=True, on_call=False,
                            available=True, created_at=now, updated_at=now)
        session.add(provider)
        await session.flush()
        return provider

    async def toggle_provider_service(
        self, actor_id: int, user_id: int, service_type_id: int
    ) -> PersonView:
        return await self._toggle_link(actor_id, user_id, ProviderService, "service_type_id",
                                       service_type_id, ServiceType, "provider.services")

    async def toggle_provider_area(self, actor_id: int, user_id: int, area_id: int) -> PersonView:
        return await self._toggle_link(actor_id, user_id, ProviderArea, "area_id", area_id,
                                       Area, "provider.areas")

    async def _toggle_link(
        self, actor_id: int, user_id: int, model: type[ProviderService] | type[ProviderArea],
        column: str, target: int, entry: type[ServiceType] | type[Area], operation: str,
    ) -> PersonView:
        async def work(session: AsyncSession) -> PersonView:
            now = self.clock.now()
            if await session.get(entry, target) is None:
                raise UnknownEntry()
            provider = await self._provider(session, user_id, now)
            link = await session.get(model, (provider.id, target))
            if link is None:
                session.add(model(provider_id=provider.id, **{column: target}))
            else:
                await session.delete(link)
            provider.updated_at = now
            audit.record(session, operation=operation, entity_type="provider",
                         entity_id=provider.id,
                         after={column: target, "linked": link is None}, actor_id=actor_id,
                         at=now)
            await session.flush()
            return await self._view(session, user_id)

        return await self.db.run(work)

    async def set_capacity(self, actor_id: int, user_id: int, capacity: int) -> PersonView:
        if not 1 <= capacity <= 50:
            raise InvalidValue()

        async def work(session: AsyncSession) -> PersonView:
            now = self.clock.now()
            provider = await self._provider(session, user_id, now)
            before = provider.capacity
            provider.capacity, provider.updated_at = capacity, now
            audit.record(session, operation="provider.capacity", entity_type="provider",
                         entity_id=provider.id, before={"capacity": before},
                         after={"capacity": capacity}, actor_id=actor_id, at=now)
            await session.flush()
            return await self._view(session, user_id)

        return await self.db.run(work)

    async def set_available(self, actor_id: int, user_id: int, available: bool) -> PersonView:
        async def work(session: AsyncSession) -> PersonView:
            now = self.clock.now()
            provider = await self._provider(session, user_id, now)
            before = provider.available
            provider.available, provider.updated_at = available, now
            audit.record(session, operation="provider.available" if available
                         else "provider.away", entity_type="provider", entity_id=provider.id,
                         before={"available": before}, after={"available": available},
                         actor_id=actor_id, at=now)
            await session.flush()
            return await self._view(session, user_id)

        return await self.db.run(work)

    # --- catalogue ----------------------------------------------------------------------------

    async def entries(self, kind: str) -> list[Entry]:
        """"service" | "area" | "item": every entry, retired ones too, by code."""
        async def work(session: AsyncSession) -> list[Entry]:
            if kind == "item":
                items = await session.scalars(select(InventoryItem).order_by(InventoryItem.sku))
                return [Entry(i.id, i.sku, i.name, i.name, i.active) for i in items]
            model = _CATALOGUE[kind]
            rows = await session.scalars(select(model).order_by(model.code))
            return [Entry(r.id, r.code, r.name_en, r.name_fr, r.active) for r in rows]

        return await self.db.read(work)

    async def neighbours(self, area_id: int) -> list[int]:
        return list(await self.db.read(lambda s: s.scalars(
            select(AreaNeighbour.neighbour_id).where(AreaNeighbour.area_id == area_id))))

    async def add_entry(self, actor_id: int, kind: str, code: str, name_en: str,
                        name_fr: str | None = None) -> Entry:
        code, name_en = code.strip()[:MAX_CODE], name_en.strip()[:MAX_CATALOGUE_NAME]
        name_fr = (name_fr or name_en).strip()[:MAX_CATALOGUE_NAME]
        if not code or not name_en:
            raise InvalidValue()

        async def work(session: AsyncSession) -> Entry:
            now = self.clock.now()
            if kind == "item":
                try:
                    view = await inventory.add_item(session, sku=code, name=name_en, now=now,
                                                    actor_id=actor_id)
                except DomainError:
                    raise DuplicateCode() from None
                return Entry(view.id, view.sku, view.name, view.name, True)
            model = _CATALOGUE[kind]
            row = model(code=code, name_en=name_en, name_fr=name_fr, active=True)
            try:
                async with session.begin_nested():
                    session.add(row)
                    await session.flush()
            except IntegrityError:
                raise DuplicateCode() from None
            audit.record(session, operation=f"catalogue.{kind}.add", entity_type=kind,
                         entity_id=row.id,
                         after={"code": code, "name_en": name_en, "name_fr": name_fr},
                         actor_id=actor_id, at=now)
            return Entry(row.id, code, name_en, name_fr, True)

        return await self.db.run(work)

    async def rename_entry(self, actor_id: int, kind: str, entry_id: int, name_en: str,
                           name_fr: str | None = None) -> Entry:
        name_en = name_en.strip()[:MAX_CATALOGUE_NAME]
        if not name_en:
            raise InvalidValue()

        async def work(session: AsyncSession) -> Entry:
            row = await self._entry(session, kind, entry_id)
            if isinstance(row, InventoryItem):
                before = {"name": row.name}
                row.name, row.updated_at = name_en[: inventory.MAX_NAME], self.clock.now()
                after = {"name": row.name}
            else:
                before = {"name_en": row.name_en, "name_fr": row.name_fr}
                row.name_en, row.name_fr = name_en, (name_fr or name_en)[:MAX_CATALOGUE_NAME]
                after = {"name_en": row.name_en, "name_fr": row.name_fr}
            audit.record(session, operation=f"catalogue.{kind}.rename", entity_type=kind,
                         entity_id=entry_id, before=before, after=after, actor_id=actor_id,
                         at=self.clock.now())
            return _entry_view(row)

        return await self.db.run(work)

    async def set_entry_active(self, actor_id: int, kind: str, entry_id: int,
                               active: bool, *, reason: str | None = None) -> Entry:
        async def work(session: AsyncSession) -> Entry:
            row = await self._entry(session, kind, entry_id)
            before = row.active
            row.active = active
            operation = f"catalogue.{kind}.{'activate' if active else 'retire'}"
            audit.record(session, operation=operation, entity_type=kind, entity_id=entry_id,
                         before={"active": before}, after={"active": active},
                         actor_id=actor_id, detail=reason, at=self.clock.now())
            return _entry_view(row)

        return await self.db.run(work)

    async def toggle_neighbour(self, actor_id: int, area_id: int, other_id: int) -> list[int]:
        """Both directions at once; returns the area's neighbours after."""
        if area_id == other_id:
            raise InvalidValue()

        async def work(session: AsyncSession) -> list[int]:
            for i in (area_id, other_id):
                if await session.get(Area, i) is None:
                    raise UnknownEntry()
            linked = await session.get(AreaNeighbour, (area_id, other_id)) is not None
            pairs = ((area_id, other_id), (other_id, area_id))
            for a, b in pairs:
                row = await session.get(AreaNeighbour, (a, b))
                if linked and row is not None:
                    await session.delete(row)
                elif not linked and row is None:
                    session.add(AreaNeighbour(area_id=a, neighbour_id=b))
            audit.record(session, operation="catalogue.area.neighbours", entity_type="area",
                         entity_id=area_id,
                         after={"neighbour": other_id, "linked": not linked},
                         actor_id=actor_id, at=self.clock.now())
            await session.flush()
            return list(await session.scalars(
                select(AreaNeighbour.neighbour_id).where(AreaNeighbour.area_id == area_id)))

        return await self.db.run(work)

    async def _entry(self, session: AsyncSession, kind: str,
                     entry_id: int) -> ServiceType | Area | InventoryItem:
        model = InventoryItem if kind == "item" else _CATALOGUE.get(kind)
        row = await session.get(model, entry_id) if model is not None else None
        if row is None:
            raise UnknownEntry()
        return row

    # --- audit --------------------------------------------------------------------------------

    async def audit_entries(
        self, *, person_id: int | None = None, request_id: int | None = None,
        limit: int = 10, offset: int = 0,
    ) -> list[AuditEntry]:
        """Newest first: what a person did or had done to them, or what happened to a
        request; everything when neither is given."""
        log = TransactionLog

        async def work(session: AsyncSession) -> list[AuditEntry]:
            statement = select(log)
            if person_id is not None:
                statement = statement.where(or_(
                    log.actor_id == person_id,
                    (log.entity_type == "user") & (log.entity_id == str(person_id))))
            if request_id is not None:
                statement = statement.where(log.entity_type == "service_request",
                                            log.entity_id == str(request_id))
            rows = await session.scalars(
                statement.order_by(log.id.desc()).limit(limit).offset(offset))
            return [AuditEntry(r.id, r.operation, r.entity_type, r.entity_id, r.actor_id,
                               r.outcome, r.detail, r.at) for r in rows]

        return await self.db.read(work)


_CATALOGUE: dict[str, type[ServiceType] | type[Area]] = {"service": ServiceType, "area": Area}


def _entry_view(row: ServiceType | Area | InventoryItem) -> Entry:
    if isinstance(row, InventoryItem):
        return Entry(row.id, row.sku, row.name, row.name, row.active)
    return Entry(row.id, row.code, row.name_en, row.name_fr, row.active)

