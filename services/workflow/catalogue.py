"""The catalogue (service types, areas and their neighbours) and the providers: read for the
keyboards, written by seed-demo (each `ensure_*` changes nothing when the row is there) and
by providers switching themselves available or away."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import (
    Area,
    AreaNeighbour,
    Provider,
    ProviderArea,
    ProviderService,
    Role,
    ServiceType,
    User,
)
from services import audit
from services.workflow import queries
from services.workflow.errors import NotAProvider, UnknownCatalogueEntry
from services.workflow.views import CatalogueEntry, ProviderView


async def service_types(session: AsyncSession) -> list[CatalogueEntry]:
    rows = await session.scalars(
        select(ServiceType).where(ServiceType.active).order_by(ServiceType.id)
    )
    return [queries.entry(r) for r in rows]


async def areas(session: AsyncSession) -> list[CatalogueEntry]:
    rows = await session.scalars(select(Area).where(Area.active).order_by(Area.id))
    return [queries.entry(r) for r in rows]


async def ensure_service_type(
    session: AsyncSession, *, code: str, name_en: str, name_fr: str
) -> tuple[CatalogueEntry, bool]:
    return await _ensure(session, ServiceType, code=code, name_en=name_en, name_fr=name_fr)


async def ensure_area(
    session: AsyncSession, *, code: str, name_en: str, name_fr: str
) -> tuple[CatalogueEntry, bool]:
    return await _ensure(session, Area, code=code, name_en=name_en, name_fr=name_fr)


async def _ensure(
    session: AsyncSession, model: type[ServiceType] | type[Area], *, code: str, name_en: str,
    name_fr: str,
) -> tuple[CatalogueEntry, bool]:
    """The entry with `code`, made if missing; True when it was made (seed-demo says so)."""
    row = await session.scalar(select(model).where(model.code == code))
    if row is not None:
        return queries.entry(row), False
    row = model(code=code, name_en=name_en, name_fr=name_fr, active=True)
    session.add(row)
    await session.flush()
    return queries.entry(row), True


async def ensure_neighbours(session: AsyncSession, area_id: int, other_id: int) -> bool:
    """Make two areas neighbours (both directions); False when they already were."""
    created = False
    for a, b in ((area_id, other_id), (other_id, area_id)):
        if await session.get(AreaNeighbour, (a, b)) is None:
            session.add(AreaNeighbour(area_id=a, neighbour_id=b))
            created = True
    await session.flush()
    return created


async def ensure_provider(
    session: AsyncSession, *, user_id: int, service_type_ids: Sequence[int],
    area_ids: Sequence[int], now: datetime, capacity: int = 1, on_call: bool = False,
) -> tuple[ProviderView, bool]:
    """The user as a provider (the provider role added), with these services and areas;
    (view, created). An existing provider is left as it is."""
    existing = await session.scalar(select(Provider).where(Provider.user_id == user_id))
    if existing is not None:
        return (await queries.provider_views(session, [existing.id]))[0], False
    user = await session.get(User, user_id)
    if user is None:
        raise NotAProvider()
    known_services = set(await session.scalars(
        select(ServiceType.id).where(ServiceType.id.in_(service_type_ids))))
    known_areas = set(await session.scalars(select(Area.id).where(Area.id.in_(area_ids))))
    if known_services != set(service_type_ids) or known_areas != set(area_ids):
        raise UnknownCatalogueEntry()
    provider = Provider(
        user_id=user_id, capacity=max(1, capacity), active=True, on_call=on_call,
        available=True, created_at=now, updated_at=now,
    )
    session.add(provider)
    await session.flush()
    session.add_all([ProviderService(provider_id=provider.id, service_type_id=s)
                     for s in sorted(known_services)])
    session.add_all([ProviderArea(provider_id=provider.id, area_id=a)
                     for a in sorted(known_areas)])
    roles = {r for r in user.roles.split(",") if r}
    if Role.PROVIDER.value not in roles:
        user.roles = ",".join(sorted(roles | {Role.PROVIDER.value}))
        user.updated_at = now
    audit.record(
        session, operation="provider.create", entity_type="provider", entity_id=provider.id,
        after={"user_id": user_id, "services": sorted(known_services),
               "areas": sorted(known_areas), "capacity": provider.capacity,
               "on_call": on_call},
        at=now,
    )
    await session.flush()
    return (await queries.provider_views(session, [provider.id]))[0], True


async def provider_view(session: AsyncSession, user_id: int) -> ProviderView | None:
    provider_id = await session.scalar(select(Provider.id).where(Provider.user_id == user_id))
    if provider_id is None:
        return None
    return (await queries.provider_views(session, [provider_id]))[0]


async def set_availability(
    session: AsyncSession, user_id: int, available: bool, now: datetime
) -> ProviderView:
    provider = await session.scalar(
        select(Provider).where(Provider.user_id == user_id).with_for_update()
    )
    if provider is None:
        raise NotAProvider()
    if provider.available != available:
        audit.record(
            session, operation="provider.available" if available else "provider.away",
            entity_type="provider", entity_id=provider.id,
            before={"available": provider.available}, after={"available": available},
            actor_id=user_id, at=now,
        )
        provider.available = available
        provider.updated_at = now
        await session.flush()
    return (await queries.provider_views(session, [provider.id]))[0]
