"""The stuck-workflows screen's service: which requests need an admin (ESCALATED first, then
those past their state's threshold, oldest first) and the recovery actions on them.

An action goes through the state manager (`manager.act`) with the version the admin's screen
showed, so a stale screen gets StaleVersion (carrying the request as it is now) and nothing
changes; in the same unit of work it writes `workflow_recovery_log`. The state manager
enqueues the notifications to the people concerned, in their language; nothing is sent here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import ServiceRequest, WorkflowRecoveryLog
from services.workflow import manager, queries
from services.workflow.config import WorkflowConfig
from services.workflow.definition import RECOVERY_TARGETS, STATES, Action, State, target_of
from services.workflow.errors import NotAllowed
from services.workflow.service import ServiceRequests
from services.workflow.views import ActorLike, HistoryView, ProviderView, RequestView, StuckView

RECOVERY = (Action.FORCE_NEXT, Action.RESET_PREVIOUS, Action.FORCE_COMPLETE, Action.REASSIGN)


@dataclass(frozen=True, slots=True)
class StuckPage:
    items: list[StuckView]
    total: int


@dataclass(frozen=True, slots=True)
class StuckDetail:
    stuck: StuckView
    history: HistoryView
    threshold_seconds: float | None  # the state's threshold; None: a final state


@dataclass(frozen=True, slots=True)
class RecoveryLogView:
    admin_id: int
    action: str
    request_id: int
    from_state: str
    to_state: str
    provider_id: int | None
    reason: str
    at: datetime


def _stuck_condition(config: WorkflowConfig, now: datetime) -> ColumnElement[bool]:
    r = ServiceRequest
    conditions = [r.state == State.ESCALATED.value] + [
        and_(r.state == spec.state.value,
             r.state_entered_at <= now - config.stuck_after[spec.stuck_setting])
        for spec in STATES.values()
        if spec.stuck_setting is not None and spec.stuck_setting in config.stuck_after
        and spec.state is not State.ESCALATED
    ]
    return or_(*conditions)


def _stuck_view(view: RequestView, now: datetime) -> StuckView:
    return StuckView(view, (now - view.state_entered_at).total_seconds(),
                     tuple(a for a in RECOVERY if target_of(a, view.state) is not None))


async def stuck_page(
    session: AsyncSession, config: WorkflowConfig, now: datetime, *, page: int, size: int
) -> StuckPage:
    """One page of the stuck list: ESCALATED first, then oldest in its state first."""
    r = ServiceRequest
    where = _stuck_condition(config, now)
    total = await session.scalar(select(func.count()).select_from(r).where(where)) or 0
    escalated_first = case((r.state == State.ESCALATED.value, 0), else_=1)
    rows = await session.execute(
        queries._request_select().where(where)
        .order_by(escalated_first, r.state_entered_at, r.id)
        .limit(size).offset(page * size)
    )
    return StuckPage([_stuck_view(queries._to_view(tuple(row)), now) for row in rows], total)


async def detail(
    session: AsyncSession, config: WorkflowConfig, now: datetime, request_id: int
) -> StuckDetail:
    """Raises RequestNotFound."""
    history = await queries.history(session, request_id)
    spec = STATES[history.request.state]
    threshold = (config.stuck_after.get(spec.stuck_setting) if spec.stuck_setting else None)
    return StuckDetail(_stuck_view(history.request, now), history,
                       threshold.total_seconds() if threshold is not None else None)


async def recovery_log(session: AsyncSession, request_id: int, *, limit: int = 20
                       ) -> list[RecoveryLogView]:
    rows = await session.scalars(
        select(WorkflowRecoveryLog).where(WorkflowRecoveryLog.request_id == request_id)
        .order_by(WorkflowRecoveryLog.id.desc()).limit(limit)
    )
    return [RecoveryLogView(r.admin_id, r.action, r.request_id, r.from_state, r.to_state,
                            r.provider_id, r.reason, r.at) for r in rows]


class WorkflowRecovery:
    """What the Stuck workflows screen calls (aiogram DI: `workflow_recovery`). Built on the
    ServiceRequests facade, so it shares its clock, alerts and settings."""

    def __init__(self, requests: ServiceRequests) -> None:
        self.requests = requests

    async def stuck(self, *, page: int = 0, size: int = 8) -> StuckPage:
        now = self.requests.clock.now()
        config = self.requests.config
        return await self.requests.db.read(
            lambda s: stuck_page(s, config, now, page=page, size=size))

    async def detail(self, request_id: int) -> StuckDetail:
        now = self.requests.clock.now()
        config = self.requests.config
        return await self.requests.db.read(lambda s: detail(s, config, now, request_id))

    async def log(self, request_id: int) -> list[RecoveryLogView]:
        return await self.requests.db.read(lambda s: recovery_log(s, request_id))

    async def providers(self, request_id: int) -> list[ProviderView]:
        """Active providers offering the request's service who could take it: not the one
        holding it now, not at capacity; least loaded first."""
        view = await self.requests.get(request_id)
        return [
            p for p in await self.requests.providers_for(request_id)
            if p.id != view.assignee_provider_id and p.active and p.active_jobs < p.capacity
        ]

    async def act(
        self, request_id: int, action: Action | str, admin: ActorLike, *, seen_version: int,
        reason: str, provider_id: int | None = None,
    ) -> tuple[State, State]:
        """Apply recovery `action` as `admin` on the version the screen showed; returns (from,
        to). Raises StaleVersion (with `current`), InvalidTransition, NotAllowed,
        ReasonRequired, InvalidRequest (a provider who cannot take it)."""
        action = Action(action)
        if action not in RECOVERY:
            raise NotAllowed()

        async def work(session: AsyncSession) -> tuple[State, State]:
            ctx = self.requests._ctx(session)
            req = await manager.lock(session, request_id)
            from_state = State(req.state)
            view = await manager.act(
                ctx, request_id, action, manager.actor_of(admin), seen_version=seen_version,
                reason=reason, provider_id=provider_id,
            )
            # Reset to MATCHING runs matching again: the request may have moved further.
            to_state = RECOVERY_TARGETS.get(action, {}).get(from_state) or view.state
            session.add(WorkflowRecoveryLog(
                admin_id=admin.id, action=action.value, request_id=request_id,
                from_state=from_state.value, to_state=to_state.value,
                provider_id=provider_id if action is Action.REASSIGN else None,
                reason=reason.strip()[:manager.MAX_REASON], at=ctx.now,
            ))
            return from_state, view.state

        return await self.requests.db.run(work)
