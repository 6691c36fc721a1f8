"""The facades the chat handlers are given (aiogram DI): `ServiceRequests` for everything a
requester, a provider, an operator or an admin does with a request, and `Catalogue` for the
service types and areas keyboards show.

Each method is one unit of work (`Database.run`), committed when it returns, or a read that
takes no writer's turn. A refusal raises a WorkflowError (nothing changed). Actors are
`services.users.UserView`s, or anything with `.id` and `.roles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from services.alerts import Alerts
from services.clock import Clock
from services.localization import N_
from services.workflow import catalogue as catalogue_store
from services.workflow import manager, matching, queries, relay
from services.workflow.config import WorkflowConfig
from services.workflow.definition import Action
from services.workflow.errors import InvalidRequest
from services.workflow.views import (
    ActorLike,
    CatalogueEntry,
    HistoryView,
    MessageView,
    OfferView,
    PartView,
    ProviderView,
    RequestView,
    StuckView,
)

MAX_ADDRESS = 256
MAX_TIME_WINDOW = 128
MAX_DESCRIPTION = 2000
MAX_PHOTOS = 10


@dataclass(frozen=True, slots=True)
class NewRequest:
    """What the /new form collected."""

    service_type_id: int
    area_id: int
    address: str
    time_window: str = ""
    description: str = ""
    photos: Sequence[str] = ()  # Telegram file ids
    urgent: bool = False

    def checked(self) -> NewRequest:
        """Raises InvalidRequest saying which field is empty or too long."""
        if not self.address.strip() or len(self.address) > MAX_ADDRESS:
            raise InvalidRequest(
                user_message=N_("The address must be 1 to 256 characters long."))
        if len(self.time_window) > MAX_TIME_WINDOW:
            raise InvalidRequest(
                user_message=N_("The time window must be at most 128 characters long."))
        if len(self.description) > MAX_DESCRIPTION:
            raise InvalidRequest(
                user_message=N_("The description must be at most 2000 characters long."))
        if len(self.photos) > MAX_PHOTOS:
            raise InvalidRequest(user_message=N_("At most 10 photos, please."))
        return self


class ServiceRequests:
    def __init__(
        self, db: Database, clock: Clock, alerts: Alerts, config: WorkflowConfig | None = None
    ) -> None:
        self.db = db
        self.clock = clock
        self.alerts = alerts
        self.config = config or WorkflowConfig()

    def _ctx(self, session: AsyncSession) -> manager.Context:
        return manager.Context(session, self.clock.now(), self.alerts, self.config)

    # --- requester ---------------------------------------------------------------------------

    async def open_request(self, actor: ActorLike, form: NewRequest) -> RequestView:
        """Create the request and match it at once: it comes back OFFERED (offers sent to the
        best candidates) or ESCALATED (nobody found: requester told, admins alerted)."""
        form = form.checked()
        return await self.db.run(
            lambda s: matching.open_request(self._ctx(s), manager.actor_of(actor), form)
        )

    async def list_for_requester(self, user_id: int, *, limit: int = 20) -> list[RequestView]:
        """The requester's requests, newest first."""
        return await self.db.read(lambda s: queries.for_requester(s, user_id, limit=limit))

    async def get(self, request_id: int) -> RequestView:
        """Raises RequestNotFound."""
        return await self.db.read(lambda s: queries.view(s, request_id))

    async def history(self, request_id: int) -> HistoryView:
        """Transitions, relayed messages and parts of a request, oldest first."""
        return await self.db.read(lambda s: queries.history(s, request_id))

    async def confirm(self, request_id: int, actor: ActorLike, seen_version: int) -> RequestView:
        return await self.transition(request_id, Action.CONFIRM, actor, seen_version)

    async def dispute(
        self, request_id: int, actor: ActorLike, seen_version: int, reason: str
    ) -> RequestView:
        """Admins are alerted; the provider is told."""
        return await self.transition(request_id, Action.DISPUTE, actor, seen_version, reason)

    async def cancel(
        self, request_id: int, actor: ActorLike, seen_version: int, reason: str | None = None
    ) -> RequestView:
        """By the requester or an admin, until COMPLETED; parts issued are reversed, pending
        offers withdrawn, the provider told."""
        return await self.transition(request_id, Action.CANCEL, actor, seen_version, reason)

    # --- provider ----------------------------------------------------------------------------

    async def accept_offer(self, offer_id: int, actor: ActorLike) -> RequestView:
        """First accept wins. The loser gets OfferTaken ("already taken"); an expired or
        answered offer, OfferClosed. The view carries the address."""
        return await self.db.run(
            lambda s: matching.accept(self._ctx(s), offer_id, manager.actor_of(actor))
        )

    async def decline_offer(self, offer_id: int, actor: ActorLike) -> OfferView:
        """The next candidate is offered the job (or the request is escalated)."""
        return await self.db.run(
            lambda s: matching.decline(self._ctx(s), offer_id, manager.actor_of(actor))
        )

    async def get_offer(self, offer_id: int) -> OfferView:
        return await self.db.read(lambda s: queries.offer(s, offer_id))

    async def pending_offers(self, actor: ActorLike) -> list[OfferView]:
        return await self.db.read(lambda s: queries.pending_offers(s, actor.id))

    async def jobs(self, actor: ActorLike) -> list[RequestView]:
        """The provider's open jobs (assigned, in progress, completed or disputed)."""
        return await self.db.read(lambda s: queries.jobs(s, actor.id))

    async def start(self, request_id: int, actor: ActorLike, seen_version: int) -> RequestView:
        return await self.transition(request_id, Action.START, actor, seen_version)

    async def record_parts(
        self, request_id: int, actor: ActorLike, parts: Sequence[tuple[int, int]]
    ) -> list[PartView]:
        """Issue parts (item id, quantity) from inventory for an IN_PROGRESS request, all or
        nothing: OutOfStock (nothing issued) when one is short. Returns the request's parts."""
        return await self.db.run(
            lambda s: manager.record_parts(self._ctx(s), request_id, manager.actor_of(actor), parts)
        )

    async def complete(self, request_id: int, actor: ActorLike, seen_version: int) -> RequestView:
        return await self.transition(request_id, Action.COMPLETE, actor, seen_version)

    async def set_availability(self, actor: ActorLike, available: bool) -> ProviderView:
        """/available and /away. Raises NotAProvider."""
        return await self.db.run(
            lambda s: catalogue_store.set_availability(s, actor.id, available, self.clock.now())
        )

    async def provider_profile(self, user_id: int) -> ProviderView | None:
        return await self.db.read(lambda s: catalogue_store.provider_view(s, user_id))

    # --- both parties --------------------------------------------------------------------------

    async def relay_message(self, request_id: int, sender: ActorLike, text: str) -> MessageView:
        """Send `text` to the other party through the outbox (the bot's own words in their
        language), kept in the request's history. Raises NobodyToMessage before assignment,
        NotAllowed for anyone but the two parties."""
        return await self.db.run(
            lambda s: relay.relay_message(self._ctx(s), request_id, manager.actor_of(sender), text)
        )

    # --- any transition, operators and admins ------------------------------------------------

    async def transition(
        self,
        request_id: int,
        action: Action | str,
        actor: ActorLike,
        seen_version: int,
        reason: str | None = None,
        *,
        provider_id: int | None = None,
    ) -> RequestView:
        """Apply `action` (services.workflow.definition) as `actor`, who saw `seen_version`.
        Recovery actions need an admin and a reason; ASSIGN and REASSIGN need `provider_id`.
        Raises StaleVersion (with `current`), InvalidTransition, NotAllowed, ReasonRequired."""
        return await self.db.run(
            lambda s: manager.act(
                self._ctx(s), request_id, Action(action), manager.actor_of(actor),
                seen_version=seen_version, reason=reason, provider_id=provider_id,
            )
        )

    async def resolve_dispute(
        self, request_id: int, actor: ActorLike, seen_version: int, *, confirm: bool, reason: str
    ) -> RequestView:
        action = Action.RESOLVE_CONFIRM if confirm else Action.RESOLVE_REWORK
        return await self.transition(request_id, action, actor, seen_version, reason)

    async def assign(
        self, request_id: int, actor: ActorLike, seen_version: int, provider_id: int,
        reason: str | None = None,
    ) -> RequestView:
        """An ESCALATED request given to a provider by an operator or an admin."""
        return await self.transition(
            request_id, Action.ASSIGN, actor, seen_version, reason, provider_id=provider_id
        )

    async def rematch(self, request_id: int, actor: ActorLike, seen_version: int) -> RequestView:
        """Run matching again on an ESCALATED request (a new round: everyone may be offered)."""
        return await self.transition(request_id, Action.REMATCH, actor, seen_version)

    async def stuck(self, *, limit: int = 50) -> list[StuckView]:
        """Requests sitting in a state past its threshold, longest first (recovery menus)."""
        now = self.clock.now()
        return await self.db.read(lambda s: queries.stuck(s, self.config, now, limit=limit))

    async def providers_for(self, request_id: int) -> list[ProviderView]:
        """Active providers offering the request's service, least loaded first (to pick one
        when assigning by hand)."""
        return await self.db.read(lambda s: queries.providers_for(s, request_id))

    # --- the scheduler's jobs (services.workflow.jobs), callable by tests with a moved clock --

    async def expire_offers(self, now: datetime | None = None) -> int:
        """Expire due offers and move each request on; returns how many offers expired."""
        return await matching.expire_due_offers(
            self.db, self.alerts, self.config, now or self.clock.now()
        )

    async def sweep_completed(self, now: datetime | None = None) -> tuple[int, int]:
        """Remind (24 h) and auto-confirm (72 h) completed requests; (reminded, confirmed)."""
        return await manager.sweep_completed(
            self.db, self.alerts, self.config, now or self.clock.now()
        )


class Catalogue:
    """Service types and areas for the /new keyboards."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def service_types(self) -> list[CatalogueEntry]:
        return await self.db.read(catalogue_store.service_types)

    async def areas(self) -> list[CatalogueEntry]:
        return await self.db.read(catalogue_store.areas)
