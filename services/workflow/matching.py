"""Provider matching and job offers.

Tiers, tried in order, the one that found someone recorded on the request:

- exact: providers offering the service in the request's area;
- broad: in a neighbouring area, then in any area;
- emergency (urgent requests only): on-call providers with the skill, wherever they are and
  even when away; admins are alerted.

Every tier keeps to active providers with room: active jobs plus pending offers under their
capacity, which is part of the one candidate query (`candidates`), not a loop. Candidates are
ranked by fewest active jobs, then longest since their last assignment (fair rotation). Offers go
to the best K; the first accept wins by a conditional update of the request; declined and
expired offers move on to the next candidates; nobody left: ESCALATED, the requester told, the
admins alerted once.
"""

from __future__ import annotations

import enum
import functools
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Integer, Select, and_, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import (
    ACTIVE_JOB_STATES,
    Area,
    AreaNeighbour,
    Offer,
    Provider,
    ProviderArea,
    ProviderService,
    ServiceRequest,
    ServiceType,
)
from services import audit
from services.actions import Action as ButtonAction
from services.actions import ActionName
from services.alerts import Alerts, Severity
from services.localization import N_, Localized, render
from services.notifications import outbox
from services.workflow import manager, notify, queries
from services.workflow.config import WorkflowConfig
from services.workflow.definition import Action, State
from services.workflow.errors import (
    NotAllowed,
    OfferClosed,
    OfferNotFound,
    OfferTaken,
    ProviderBusy,
    UnknownCatalogueEntry,
)
from services.workflow.manager import SYSTEM, ActorRef, Context
from services.workflow.views import OfferView, RequestView

if TYPE_CHECKING:
    from services.workflow.service import NewRequest


class Tier(enum.StrEnum):
    EXACT = "exact"
    BROAD = "broad"
    EMERGENCY = "emergency"


class Scope(enum.StrEnum):
    AREA = "area"
    NEIGHBOURS = "neighbours"
    ANYWHERE = "anywhere"
    ON_CALL = "on_call"


def ladder(urgent: bool) -> list[tuple[Tier, Scope]]:
    steps = [(Tier.EXACT, Scope.AREA), (Tier.BROAD, Scope.NEIGHBOURS),
             (Tier.BROAD, Scope.ANYWHERE)]
    return steps + [(Tier.EMERGENCY, Scope.ON_CALL)] if urgent else steps


@functools.cache
def candidate_query(scope: Scope) -> Select[tuple[int]]:
    """The one query that finds and ranks a tier's candidates, built once per scope; its
    parameters: service_type_id, area_id, requester_id, request_id, round, limit."""
    p = Provider
    load = (
        select(func.count()).select_from(ServiceRequest)
        .where(ServiceRequest.assignee_id == p.id, ServiceRequest.state.in_(ACTIVE_JOB_STATES))
        .scalar_subquery()
    )
    pending = (
        select(func.count()).select_from(Offer)
        .where(Offer.provider_id == p.id, Offer.status == "pending")
        .scalar_subquery()
    )
    conditions = [
        p.active,
        p.user_id != bindparam("requester_id"),
        exists().where(ProviderService.provider_id == p.id,
                       ProviderService.service_type_id == bindparam("service_type_id")),
        ~exists().where(Offer.request_id == bindparam("request_id"), Offer.provider_id == p.id,
                        Offer.round == bindparam("round")),
        # The busy exclusion: active jobs and pending offers together under capacity.
        load + pending < p.capacity,
    ]
    if scope is Scope.ON_CALL:
        conditions.append(p.on_call)
    else:
        conditions.append(p.available)
    if scope is Scope.AREA:
        conditions.append(exists().where(ProviderArea.provider_id == p.id,
                                         ProviderArea.area_id == bindparam("area_id")))
    elif scope is Scope.NEIGHBOURS:
        conditions.append(exists().where(
            ProviderArea.provider_id == p.id,
            ProviderArea.area_id == AreaNeighbour.neighbour_id,
            AreaNeighbour.area_id == bindparam("area_id"),
        ))
    return (
        select(p.id)
        .where(and_(*conditions))
        .order_by(load, p.last_assigned_at.asc().nulls_first(), p.id)
        .limit(bindparam("limit", type_=Integer))
    )


def candidate_params(req: ServiceRequest, limit: int) -> dict[str, int]:
    return {
        "service_type_id": req.service_type_id, "area_id": req.area_id,
        "requester_id": req.requester_id, "request_id": req.id, "round": req.match_round,
        "limit": limit,
    }


async def candidates(
    session: AsyncSession, req: ServiceRequest, scope: Scope, limit: int
) -> list[int]:
    return list(await session.scalars(candidate_query(scope), candidate_params(req, limit)))


async def find(session: AsyncSession, req: ServiceRequest, limit: int
               ) -> tuple[Tier | None, list[int]]:
    """The first tier with candidates, and its best `limit` providers."""
    for tier, scope in ladder(req.urgent):
        found = await candidates(session, req, scope, limit)
        if found:
            return tier, found
    return None, []


async def open_request(ctx: Context, actor: ActorRef, form: NewRequest) -> RequestView:
    """Create a request from the /new form, submit it and match it, in one unit of work."""
    assert actor.id is not None
    session = ctx.session
    service_type = await session.get(ServiceType, form.service_type_id)
    area = await session.get(Area, form.area_id)
    if service_type is None or area is None or not service_type.active or not area.active:
        raise UnknownCatalogueEntry()
    req = ServiceRequest(
        requester_id=actor.id, service_type_id=service_type.id, area_id=area.id,
        address=form.address.strip(), time_window=form.time_window.strip(),
        description=form.description.strip(), photos=list(form.photos), urgent=form.urgent,
        state=State.NEW.value, acting_role=None, match_round=0, version=1,
        state_entered_at=ctx.now, created_at=ctx.now, updated_at=ctx.now,
    )
    session.add(req)
    await session.flush()
    audit.record(
        session, operation="request.open", entity_type="service_request", entity_id=req.id,
        after={"service_type": service_type.code, "area": area.code, "urgent": req.urgent},
        actor_id=actor.id, at=ctx.now,
    )
    await manager.move(ctx, req, Action.SUBMIT, State.MATCHING, actor)
    # The requester's screen answers them with the outcome: no notification on top.
    return await run_matching(ctx, req, answered=actor.id)


async def run_matching(ctx: Context, req: ServiceRequest, *, answered: int | None = None
                       ) -> RequestView:
    """A new round for a request in MATCHING: offers to the best candidates (OFFERED), or
    nobody (ESCALATED)."""
    req.match_round += 1
    offers = await _offer_next(ctx, req, ctx.config.offer_candidates)
    if not offers:
        return await _escalate(ctx, req, answered=answered)
    view = await manager.move(ctx, req, Action.OFFER, State.OFFERED, SYSTEM,
                              reason=f"tier {req.matching_tier}")
    await _send_offers(ctx, view, offers)
    return view


async def _offer_next(ctx: Context, req: ServiceRequest, wanted: int) -> list[Offer]:
    if wanted <= 0:
        return []
    tier, provider_ids = await find(ctx.session, req, wanted)
    if tier is None:
        return []
    offers = [
        Offer(request_id=req.id, provider_id=pid, round=req.match_round, tier=tier.value,
              status="pending", created_at=ctx.now, expires_at=ctx.now + ctx.config.offer_expiry)
        for pid in provider_ids
    ]
    ctx.session.add_all(offers)
    req.matching_tier = tier.value
    req.updated_at = ctx.now
    await ctx.session.flush()
    audit.record(
        ctx.session, operation="request.offers", entity_type="service_request", entity_id=req.id,
        after={"tier": tier.value, "providers": provider_ids, "round": req.match_round},
        at=ctx.now,
    )
    if tier is Tier.EMERGENCY:
        await ctx.alerts.alert(
            ctx.session, key=f"request_emergency:{req.id}", severity=Severity.HIGH,
            text=Localized(N_("Urgent request #{id} found nobody available: offered to "
                              "{count} on-call provider(s)."),
                           {"id": req.id, "count": len(provider_ids)}),
            now=ctx.now, button=notify.open_request_button(req.id),
        )
    return offers


async def _send_offers(ctx: Context, view: RequestView, offers: list[Offer]) -> None:
    users = dict(
        (await ctx.session.execute(
            select(Provider.id, Provider.user_id)
            .where(Provider.id.in_([o.provider_id for o in offers]))
        )).tuples().all()
    )
    people = await notify.recipients(ctx.session, users.values())
    minutes = max(1, int(ctx.config.offer_expiry.total_seconds() // 60))
    for offer in offers:
        person = people[users[offer.provider_id]]
        language = person.language
        text = render(
            language, notify.URGENT_OFFER_TEXT if view.urgent else notify.OFFER_TEXT,
            **notify.params(view, language, minutes=minutes),
        )
        buttons = [
            ButtonAction(ActionName.OFFER_ACCEPT, offer.id).as_payload(
                render(language, notify.ACCEPT_BUTTON)),
            ButtonAction(ActionName.OFFER_DECLINE, offer.id).as_payload(
                render(language, notify.DECLINE_BUTTON)),
        ]
        await outbox.enqueue(
            ctx.session, recipient_id=person.id, kind="job_offer",
            idempotency_key=f"offer:{offer.id}", text=text, buttons=buttons, now=ctx.now,
            priority=outbox.PRIORITY_INTERACTIVE,
        )
        for index, photo in enumerate(view.photos):
            # Telegram file ids: only Telegram can show them.
            await outbox.enqueue(
                ctx.session, recipient_id=person.id, kind="job_offer_photo",
                idempotency_key=f"offer:{offer.id}:photo:{index}",
                media={"type": "image", "source": photo}, now=ctx.now,
                channels=["telegram"], allow_fallback=False,
            )


async def _escalate(ctx: Context, req: ServiceRequest, *, answered: int | None = None
                    ) -> RequestView:
    view = await manager.move(ctx, req, Action.ESCALATE, State.ESCALATED, SYSTEM,
                              reason="no provider found", answered=answered)
    await ctx.alerts.alert(
        ctx.session, key=f"request_escalated:{req.id}:{req.match_round}",
        severity=Severity.WARNING,
        text=Localized(N_("Request #{id} ({service} in {area}) found no provider: it waits "
                          "for an operator to assign someone or match it again."),
                       {"id": req.id, "service": view.service_type.code,
                        "area": view.area.code}),
        now=ctx.now, button=notify.open_request_button(req.id),
    )
    return view


async def _provider_of(session: AsyncSession, actor: ActorRef) -> Provider | None:
    if actor.id is None:
        return None
    return await session.scalar(select(Provider).where(Provider.user_id == actor.id))


async def _offer_for(ctx: Context, offer_id: int, actor: ActorRef) -> tuple[Offer, Provider]:
    offer = await ctx.session.get(Offer, offer_id, populate_existing=True)
    if offer is None:
        raise OfferNotFound()
    provider = await _provider_of(ctx.session, actor)
    if provider is None or provider.id != offer.provider_id:
        raise NotAllowed()
    return offer, provider


async def accept(ctx: Context, offer_id: int, actor: ActorRef) -> RequestView:
    offer, provider = await _offer_for(ctx, offer_id, actor)
    if offer.status == "withdrawn":
        raise OfferTaken()
    if offer.status != "pending" or offer.expires_at <= ctx.now:
        raise OfferClosed()
    active = await ctx.session.scalar(
        select(func.count()).select_from(ServiceRequest)
        .where(ServiceRequest.assignee_id == provider.id,
               ServiceRequest.state.in_(ACTIVE_JOB_STATES))
    ) or 0
    if active >= provider.capacity:
        raise ProviderBusy()  # given other jobs by hand since the offer was made
    r = ServiceRequest.__table__.c
    # The first accept wins: the request is claimed only while it is still on offer in this
    # round. A second accept waits for the first's row lock, then finds nothing to claim.
    claimed = await ctx.session.execute(
        update(ServiceRequest.__table__)
        .where(r.id == offer.request_id, r.state == State.OFFERED.value,
               r.match_round == offer.round, r.assignee_id.is_(None))
        .values(assignee_id=provider.id, matching_tier=offer.tier, updated_at=ctx.now)
        .returning(r.id)
    )
    if claimed.first() is None:
        raise OfferTaken()
    req = await manager.lock(ctx.session, offer.request_id)
    await ctx.session.refresh(offer)
    offer.status, offer.answered_at = "accepted", ctx.now
    provider.last_assigned_at = ctx.now
    await manager.withdraw_offers(ctx, req, except_offer=offer.id)
    return await manager.move(ctx, req, Action.ACCEPT, State.ASSIGNED, actor)


async def decline(ctx: Context, offer_id: int, actor: ActorRef) -> OfferView:
    offer, _provider = await _offer_for(ctx, offer_id, actor)
    if offer.status == "withdrawn":
        raise OfferTaken()
    await manager.lock(ctx.session, offer.request_id)  # requests before offers, always
    o = Offer.__table__.c
    done = await ctx.session.execute(
        update(Offer.__table__)
        .where(o.id == offer.id, o.status == "pending")
        .values(status="declined", answered_at=ctx.now)
        .returning(o.id)
    )
    if done.first() is None:
        raise OfferClosed()
    await advance(ctx, offer.request_id)
    return await queries.offer(ctx.session, offer.id)


async def advance(ctx: Context, request_id: int) -> RequestView:
    """After offers were declined or expired: top the offers up to K with the next
    candidates; nobody pending and nobody left: ESCALATED."""
    req = await manager.lock(ctx.session, request_id)
    if req.state != State.OFFERED.value:
        return await queries.view(ctx.session, req.id)
    pending = await ctx.session.scalar(
        select(func.count()).select_from(Offer)
        .where(Offer.request_id == req.id, Offer.status == "pending")
    ) or 0
    offers = await _offer_next(ctx, req, ctx.config.offer_candidates - pending)
    if offers:
        view = await queries.view(ctx.session, req.id)
        await _send_offers(ctx, view, offers)
        return view
    if pending == 0:
        return await _escalate(ctx, req)
    return await queries.view(ctx.session, req.id)


async def expire_due_offers(
    db: Database, alerts: Alerts, config: WorkflowConfig, now: datetime, *, batch: int = 200
) -> int:
    """The offer-expiry job: per request with due offers, one unit of work that expires them
    and moves the request on."""

    async def due(session: AsyncSession) -> list[int]:
        return list(await session.scalars(
            select(Offer.request_id)
            .where(Offer.status == "pending", Offer.expires_at <= now)
            .group_by(Offer.request_id)
            .order_by(func.min(Offer.expires_at))
            .limit(batch)
        ))

    async def expire(session: AsyncSession, request_id: int) -> int:
        ctx = Context(session, now, alerts, config)
        await manager.lock(session, request_id)
        o = Offer.__table__.c
        expired = await session.execute(
            update(Offer.__table__)
            .where(o.request_id == request_id, o.status == "pending", o.expires_at <= now)
            .values(status="expired", answered_at=now)
            .returning(o.id)
        )
        count = len(expired.all())
        if count:
            await advance(ctx, request_id)
        return count

    total = 0
    for request_id in await db.read(due):
        total += await db.run(lambda s, i=request_id: expire(s, i))
    return total
