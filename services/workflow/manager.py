"""The one state manager: every transition of a service request goes through `check` and
`move`, in the caller's unit of work.

`check` refuses (a WorkflowError, nothing changed) a stale version, a transition the
definition does not allow from the current state, an actor who may not take it, a missing
reason. `move` writes the new state, bumps the version, writes the `workflow_transitions` row
and the audit trail, and enqueues the notifications the transition causes; the caller's
`Database.run` commits them together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Offer, Provider, Role, ServiceRequest, WorkflowTransition
from services import audit, inventory
from services.alerts import Alerts, Severity
from services.localization import N_, Localized
from services.workflow import notify, queries
from services.workflow.config import WorkflowConfig
from services.workflow.definition import (
    STATES,
    TRANSITIONS,
    Action,
    Party,
    State,
    target_of,
)
from services.workflow.errors import (
    InvalidRequest,
    InvalidTransition,
    NotAllowed,
    ReasonRequired,
    RequestNotFound,
    StaleVersion,
)
from services.workflow.views import PartView, RequestView

MAX_REASON = 1000


@dataclass(frozen=True, slots=True)
class Context:
    """One unit of work's session, its instant, and what transitions need."""

    session: AsyncSession
    now: datetime
    alerts: Alerts
    config: WorkflowConfig


@dataclass(frozen=True, slots=True)
class ActorRef:
    id: int | None  # users.id; None: the bot itself
    roles: frozenset[Role]


SYSTEM = ActorRef(None, frozenset())


class _HasIdRoles(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def roles(self) -> frozenset[Role]: ...


def actor_of(actor: _HasIdRoles) -> ActorRef:
    return ActorRef(actor.id, frozenset(actor.roles))


async def lock(session: AsyncSession, request_id: int) -> ServiceRequest:
    """The request, locked for this unit of work (PostgreSQL; SQLite has one writer)."""
    req = await session.get(
        ServiceRequest, request_id, with_for_update=True, populate_existing=True
    )
    if req is None:
        raise RequestNotFound()
    return req


async def provider_user_id(session: AsyncSession, provider_id: int | None) -> int | None:
    if provider_id is None:
        return None
    return await session.scalar(select(Provider.user_id).where(Provider.id == provider_id))


async def parties(session: AsyncSession, req: ServiceRequest, actor: ActorRef) -> set[Party]:
    if actor.id is None:
        return {Party.SYSTEM}
    found: set[Party] = set()
    if actor.id == req.requester_id:
        found.add(Party.REQUESTER)
    if req.assignee_id is not None and actor.id == await provider_user_id(
        session, req.assignee_id
    ):
        found.add(Party.PROVIDER)
    if Role.ADMIN in actor.roles:
        found.add(Party.ADMIN)
    if Role.OPERATOR in actor.roles:
        found.add(Party.OPERATOR)
    return found


async def check(
    ctx: Context, req: ServiceRequest, action: Action, actor: ActorRef, *,
    seen_version: int | None, reason: str | None,
) -> State:
    """The state `action` leads to, or a refusal. The version is checked first: whatever
    else is wrong, a stale screen is redrawn."""
    if seen_version is not None and seen_version != req.version:
        raise StaleVersion(await queries.view(ctx.session, req.id))
    target = target_of(action, State(req.state))
    if target is None:
        raise InvalidTransition(await queries.view(ctx.session, req.id))
    transition = TRANSITIONS[action]
    if not transition.parties & await parties(ctx.session, req, actor):
        raise NotAllowed()
    if transition.needs_reason and not (reason or "").strip():
        raise ReasonRequired()
    return target


async def move(
    ctx: Context, req: ServiceRequest, action: Action, target: State, actor: ActorRef, *,
    reason: str | None = None, previous_provider_user_id: int | None = None,
    answered: int | None = None,
) -> RequestView:
    """Write the transition (state, version, history, audit) and enqueue its notifications:
    to everyone concerned but the actor and `answered` (a user whose own screen is telling
    them already, such as the requester whose /new found nobody)."""
    reason = (reason or "").strip()[:MAX_REASON] or None
    before = {"state": req.state, "version": req.version, "assignee_id": req.assignee_id}
    from_state = req.state
    req.state = target.value
    spec = STATES[target]
    req.acting_role = spec.acting_role.value if spec.acting_role is not None else None
    req.version += 1
    req.state_entered_at = ctx.now
    req.updated_at = ctx.now
    ctx.session.add(
        WorkflowTransition(
            request_id=req.id, action=action.value, from_state=from_state, to_state=target.value,
            actor_id=actor.id, reason=reason, version=req.version, at=ctx.now,
        )
    )
    audit.record(
        ctx.session, operation=f"request.{action.value}", entity_type="service_request",
        entity_id=req.id, before=before,
        after={"state": req.state, "version": req.version, "assignee_id": req.assignee_id},
        actor_id=actor.id, detail=reason, at=ctx.now,
    )
    await ctx.session.flush()
    view = await queries.view(ctx.session, req.id)
    await notify.transition_notices(
        ctx.session, action, view, actor_id=actor.id, reason=reason, now=ctx.now,
        previous_provider_user_id=previous_provider_user_id, answered=answered,
    )
    return view


async def withdraw_offers(ctx: Context, req: ServiceRequest, *, except_offer: int | None = None
                          ) -> None:
    """Close the request's pending offers, telling their providers the job is gone."""
    offers = (
        await ctx.session.scalars(
            select(Offer).where(Offer.request_id == req.id, Offer.status == "pending")
        )
    ).all()
    offers = [o for o in offers if o.id != except_offer]
    if not offers:
        return
    users = dict(
        (await ctx.session.execute(
            select(Provider.id, Provider.user_id)
            .where(Provider.id.in_([o.provider_id for o in offers]))
        )).tuples().all()
    )
    people = await notify.recipients(ctx.session, users.values())
    view = await queries.view(ctx.session, req.id)
    for offer in offers:
        offer.status, offer.answered_at = "withdrawn", ctx.now
        recipient = people.get(users[offer.provider_id])
        if recipient is not None:
            await notify.send(
                ctx.session, recipient, notify.OFFER_WITHDRAWN, now=ctx.now, view=view,
                button=False, key=f"offer:{offer.id}:withdrawn",
            )


async def act(
    ctx: Context, request_id: int, action: Action, actor: ActorRef, *,
    seen_version: int | None, reason: str | None = None, provider_id: int | None = None,
) -> RequestView:
    """Any transition a person takes from a screen (the facade's `transition`)."""
    from services.workflow import matching  # matching builds on this module

    if action in (Action.ACCEPT, Action.SUBMIT, Action.OFFER, Action.ESCALATE,
                  Action.AUTO_CONFIRM):
        raise NotAllowed()  # taken by the offers and the bot itself, never from a screen
    req = await lock(ctx.session, request_id)
    target = await check(ctx, req, action, actor, seen_version=seen_version, reason=reason)
    previous = await provider_user_id(ctx.session, req.assignee_id)

    if target is State.MATCHING:  # rematch, or reset back to matching: a new round
        await withdraw_offers(ctx, req)
        req.assignee_id = None
        req.matching_tier = None
        await move(ctx, req, action, target, actor, reason=reason,
                   previous_provider_user_id=previous)
        return await matching.run_matching(ctx, req)

    if action in (Action.ASSIGN, Action.REASSIGN):
        provider = await ctx.session.get(Provider, provider_id) if provider_id else None
        if provider is None or not provider.active:
            raise InvalidRequest(user_message=N_("This provider cannot take requests."))
        await withdraw_offers(ctx, req)
        req.assignee_id = provider.id
        provider.last_assigned_at = ctx.now
        return await move(ctx, req, action, target, actor, reason=reason,
                          previous_provider_user_id=previous)

    if action is Action.CANCEL:
        await withdraw_offers(ctx, req)
        await inventory.reverse_for_request(
            ctx.session, request_id=req.id, now=ctx.now, actor_id=actor.id,
            note=f"request {req.id} cancelled",
        )

    view = await move(ctx, req, action, target, actor, reason=reason)
    if action is Action.DISPUTE:
        await ctx.alerts.alert(
            ctx.session, key=f"request_disputed:{req.id}:{req.version}", severity=Severity.WARNING,
            text=Localized(N_("Request #{id} was disputed by its requester: {reason}"),
                           {"id": req.id, "reason": reason}),
            now=ctx.now, button=notify.open_request_button(req.id),
        )
    return view


async def record_parts(
    ctx: Context, request_id: int, actor: ActorRef, parts: Sequence[tuple[int, int]]
) -> list[PartView]:
    """Issue parts for an IN_PROGRESS request, as its provider; all or nothing."""
    req = await lock(ctx.session, request_id)
    if State(req.state) is not State.IN_PROGRESS:
        raise InvalidTransition(await queries.view(ctx.session, req.id))
    if Party.PROVIDER not in await parties(ctx.session, req, actor):
        raise NotAllowed()
    for item_id, quantity in parts:
        await inventory.issue(
            ctx.session, item_id=item_id, quantity=quantity, now=ctx.now, actor_id=actor.id,
            request_id=req.id,
        )
    req.updated_at = ctx.now
    return await queries.parts(ctx.session, req.id)


async def sweep_completed(
    db: Database, alerts: Alerts, config: WorkflowConfig, now: datetime, *, batch: int = 200
) -> tuple[int, int]:
    """Completed requests nobody confirmed: confirmed automatically after
    `auto_confirm_after`; reminded once after `completion_reminder_after`. Each request is a
    unit of work of its own; one whose state moved meanwhile is left alone."""
    r = ServiceRequest
    confirm_before = now - config.auto_confirm_after
    remind_before = now - config.completion_reminder_after

    async def due(session: AsyncSession) -> tuple[list[int], list[int]]:
        confirm = list(await session.scalars(
            select(r.id).where(r.state == State.COMPLETED.value,
                               r.state_entered_at <= confirm_before)
            .order_by(r.state_entered_at).limit(batch)
        ))
        remind = list(await session.scalars(
            select(r.id).where(r.state == State.COMPLETED.value,
                               r.state_entered_at <= remind_before,
                               r.state_entered_at > confirm_before, r.reminded_at.is_(None))
            .order_by(r.state_entered_at).limit(batch)
        ))
        return confirm, remind

    to_confirm, to_remind = await db.read(due)

    async def auto_confirm(session: AsyncSession, request_id: int) -> bool:
        ctx = Context(session, now, alerts, config)
        req = await lock(session, request_id)
        if req.state != State.COMPLETED.value or req.state_entered_at > confirm_before:
            return False
        await move(ctx, req, Action.AUTO_CONFIRM, State.CONFIRMED, SYSTEM,
                   reason="no answer from the requester")
        return True

    async def remind(session: AsyncSession, request_id: int) -> bool:
        req = await lock(session, request_id)
        if req.state != State.COMPLETED.value or req.reminded_at is not None:
            return False
        req.reminded_at = now
        view = await queries.view(session, req.id)
        people = await notify.recipients(session, [req.requester_id])
        await notify.send(session, people[req.requester_id], notify.REMINDER, now=now,
                          view=view, key=f"req:{req.id}:v{req.version}:remind")
        return True

    confirmed = sum([await db.run(lambda s, i=i: auto_confirm(s, i)) for i in to_confirm])
    reminded = sum([await db.run(lambda s, i=i: remind(s, i)) for i in to_remind])
    return reminded, confirmed
