"""Reads that build the views screens show: one query per screen, never a loop of queries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, ScalarSelect, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from database.models import (
    Area,
    InventoryItem,
    InventoryTransaction,
    Offer,
    Provider,
    ProviderArea,
    ProviderService,
    RequestMessage,
    ServiceRequest,
    ServiceType,
    User,
    WorkflowTransition,
)
from services.workflow.config import WorkflowConfig
from services.workflow.definition import ACTIVE, STATES, State, recovery_actions
from services.workflow.errors import OfferNotFound, RequestNotFound
from services.workflow.views import (
    CatalogueEntry,
    HistoryView,
    MessageView,
    OfferView,
    PartView,
    ProviderView,
    RequestView,
    StuckView,
    TransitionView,
)

_Requester = aliased(User, name="requester")
_AssigneeUser = aliased(User, name="assignee_user")

_ACTIVE_VALUES = tuple(s.value for s in ACTIVE)


def _request_select() -> Select[tuple[object, ...]]:
    r = ServiceRequest
    return (
        select(
            r, _Requester.display_name, ServiceType, Area, Provider.user_id,
            _AssigneeUser.display_name,
        )
        .join(_Requester, _Requester.id == r.requester_id)
        .join(ServiceType, ServiceType.id == r.service_type_id)
        .join(Area, Area.id == r.area_id)
        .outerjoin(Provider, Provider.id == r.assignee_id)
        .outerjoin(_AssigneeUser, _AssigneeUser.id == Provider.user_id)
    )


def entry(row: ServiceType | Area) -> CatalogueEntry:
    return CatalogueEntry(row.id, row.code, row.name_en, row.name_fr)


def _to_view(row: tuple[object, ...]) -> RequestView:
    req, requester_name, service_type, area, assignee_user_id, assignee_name = row
    assert isinstance(req, ServiceRequest)
    assert isinstance(service_type, ServiceType) and isinstance(area, Area)
    state = State(req.state)
    return RequestView(
        id=req.id,
        version=req.version,
        state=state,
        acting_role=STATES[state].acting_role,
        requester_id=req.requester_id,
        requester_name=str(requester_name or ""),
        service_type=entry(service_type),
        area=entry(area),
        address=req.address,
        time_window=req.time_window,
        description=req.description,
        photos=tuple(req.photos or ()),
        urgent=req.urgent,
        assignee_provider_id=req.assignee_id,
        assignee_user_id=assignee_user_id if isinstance(assignee_user_id, int) else None,
        assignee_name=str(assignee_name) if assignee_name is not None else None,
        matching_tier=req.matching_tier,
        state_entered_at=req.state_entered_at,
        created_at=req.created_at,
    )


async def view(session: AsyncSession, request_id: int) -> RequestView:
    row = (
        await session.execute(
            _request_select().where(ServiceRequest.id == request_id),
            execution_options={"populate_existing": True},
        )
    ).first()
    if row is None:
        raise RequestNotFound()
    return _to_view(tuple(row))


async def for_requester(session: AsyncSession, user_id: int, *, limit: int) -> list[RequestView]:
    rows = await session.execute(
        _request_select()
        .where(ServiceRequest.requester_id == user_id)
        .order_by(ServiceRequest.created_at.desc(), ServiceRequest.id.desc())
        .limit(limit)
    )
    return [_to_view(tuple(r)) for r in rows]


async def jobs(session: AsyncSession, user_id: int) -> list[RequestView]:
    open_states = [s.value for s in (*ACTIVE, State.COMPLETED, State.DISPUTED)]
    rows = await session.execute(
        _request_select()
        .where(Provider.user_id == user_id, ServiceRequest.state.in_(open_states))
        .order_by(ServiceRequest.state_entered_at)
    )
    return [_to_view(tuple(r)) for r in rows]


def _offer_view(offer: Offer, request: RequestView) -> OfferView:
    return OfferView(offer.id, offer.status, offer.provider_id, offer.expires_at, request)


async def offer(session: AsyncSession, offer_id: int) -> OfferView:
    found = await session.get(Offer, offer_id, populate_existing=True)
    if found is None:
        raise OfferNotFound()
    return _offer_view(found, await view(session, found.request_id))


async def pending_offers(session: AsyncSession, user_id: int) -> list[OfferView]:
    provider_id = await session.scalar(select(Provider.id).where(Provider.user_id == user_id))
    if provider_id is None:
        return []
    offers = (
        await session.scalars(
            select(Offer)
            .where(Offer.provider_id == provider_id, Offer.status == "pending")
            .order_by(Offer.id)
        )
    ).all()
    if not offers:
        return []
    views = {
        v.id: v
        for v in (
            _to_view(tuple(r))
            for r in await session.execute(
                _request_select().where(ServiceRequest.id.in_([o.request_id for o in offers]))
            )
        )
    }
    return [_offer_view(o, views[o.request_id]) for o in offers]


async def history(session: AsyncSession, request_id: int) -> HistoryView:
    request = await view(session, request_id)
    actor = aliased(User)
    transitions = [
        TransitionView(t.action, State(t.from_state), State(t.to_state), t.actor_id, name,
                       t.reason, t.at)
        for t, name in await session.execute(
            select(WorkflowTransition, actor.display_name)
            .outerjoin(actor, actor.id == WorkflowTransition.actor_id)
            .where(WorkflowTransition.request_id == request_id)
            .order_by(WorkflowTransition.id)
        )
    ]
    messages = [
        MessageView(m.id, m.request_id, m.sender_id, m.recipient_id, m.text, m.at)
        for m in await session.scalars(
            select(RequestMessage)
            .where(RequestMessage.request_id == request_id)
            .order_by(RequestMessage.id)
        )
    ]
    return HistoryView(request, tuple(transitions), tuple(messages),
                       tuple(await parts(session, request_id)))


async def parts(session: AsyncSession, request_id: int) -> list[PartView]:
    return [
        PartView(item.id, item.sku, item.name, item.unit, line.quantity, line.kind, line.at)
        for line, item in await session.execute(
            select(InventoryTransaction, InventoryItem)
            .join(InventoryItem, InventoryItem.id == InventoryTransaction.item_id)
            .where(InventoryTransaction.request_id == request_id)
            .order_by(InventoryTransaction.id)
        )
    ]


async def stuck(
    session: AsyncSession, config: WorkflowConfig, now: datetime, *, limit: int
) -> list[StuckView]:
    """Each state's own threshold, in one query (state, state_entered_at is indexed)."""
    conditions = [
        and_(ServiceRequest.state == spec.state.value,
             ServiceRequest.state_entered_at <= now - config.stuck_after[spec.stuck_setting])
        for spec in STATES.values()
        if spec.stuck_setting is not None and spec.stuck_setting in config.stuck_after
    ]
    if not conditions:
        return []
    rows = await session.execute(
        _request_select().where(or_(*conditions))
        .order_by(ServiceRequest.state_entered_at).limit(limit)
    )
    views = [_to_view(tuple(r)) for r in rows]
    return [
        StuckView(v, (now - v.state_entered_at).total_seconds(),
                  tuple(recovery_actions(v.state)))
        for v in views
    ]


def active_jobs_of(provider_id: ColumnElement[int]) -> ScalarSelect[int]:
    """How many requests a provider holds now (a correlated count on the partial index)."""
    return (
        select(func.count())
        .select_from(ServiceRequest)
        .where(ServiceRequest.assignee_id == provider_id,
               ServiceRequest.state.in_(_ACTIVE_VALUES))
        .scalar_subquery()
    )


async def provider_views(session: AsyncSession, provider_ids: list[int]) -> list[ProviderView]:
    if not provider_ids:
        return []
    load = active_jobs_of(Provider.id).label("load")
    rows = (
        await session.execute(
            select(Provider, User.display_name, load)
            .join(User, User.id == Provider.user_id)
            .where(Provider.id.in_(provider_ids))
            .execution_options(populate_existing=True)
        )
    ).all()
    services: dict[int, list[int]] = {}
    for pid, sid in await session.execute(
        select(ProviderService.provider_id, ProviderService.service_type_id)
        .where(ProviderService.provider_id.in_(provider_ids))
    ):
        services.setdefault(pid, []).append(sid)
    areas: dict[int, list[int]] = {}
    for pid, aid in await session.execute(
        select(ProviderArea.provider_id, ProviderArea.area_id)
        .where(ProviderArea.provider_id.in_(provider_ids))
    ):
        areas.setdefault(pid, []).append(aid)
    by_id = {
        p.id: ProviderView(
            p.id, p.user_id, name, p.capacity, p.active, p.on_call, p.available, int(n),
            tuple(sorted(services.get(p.id, []))), tuple(sorted(areas.get(p.id, []))),
        )
        for p, name, n in rows
    }
    return [by_id[i] for i in provider_ids if i in by_id]


async def providers_for(session: AsyncSession, request_id: int) -> list[ProviderView]:
    req = await session.get(ServiceRequest, request_id)
    if req is None:
        raise RequestNotFound()
    load = active_jobs_of(Provider.id)
    ids = list(
        await session.scalars(
            select(Provider.id)
            .join(ProviderService, ProviderService.provider_id == Provider.id)
            .where(ProviderService.service_type_id == req.service_type_id, Provider.active)
            .order_by(load, Provider.last_assigned_at.asc().nulls_first(), Provider.id)
            .limit(50)
        )
    )
    return await provider_views(session, ids)
