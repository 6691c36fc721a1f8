"""What screens show: detached snapshots, safe after the unit of work closed, carrying every
value a handler needs so it never queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from database.models import Role
from services.workflow.definition import (
    CONVERSING,
    TRANSITIONS,
    Action,
    Party,
    State,
    recovery_actions,
    target_of,
)


class ActorLike(Protocol):
    """Whoever acts (a UserView from the handlers, a test's stand-in): an id and roles."""

    @property
    def id(self) -> int: ...

    @property
    def roles(self) -> frozenset[Role]: ...


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """A service type or an area."""

    id: int
    code: str
    name_en: str
    name_fr: str

    def name(self, language: str | None) -> str:
        return self.name_fr if language == "fr" and self.name_fr else self.name_en


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at or acts on a request: a user id and their roles (a services.users.UserView
    fits), or None for the bot itself."""

    id: int
    roles: frozenset[Role]


@dataclass(frozen=True, slots=True)
class RequestView:
    id: int
    version: int  # name it back (seen_version) when acting from this screen
    state: State
    acting_role: Role | None  # who must act next
    requester_id: int  # users.id
    requester_name: str
    service_type: CatalogueEntry
    area: CatalogueEntry
    address: str  # show it to the provider only once assigned (`address_visible_to`)
    time_window: str
    description: str
    photos: tuple[str, ...]  # Telegram file ids
    urgent: bool
    assignee_provider_id: int | None
    assignee_user_id: int | None
    assignee_name: str | None  # who is on it
    matching_tier: str | None  # exact | neighbour | any | emergency
    state_entered_at: datetime  # when it last moved
    created_at: datetime

    @property
    def final(self) -> bool:
        return self.state in (State.CONFIRMED, State.CANCELLED)

    def party_of(self, user_id: int) -> Party | None:
        if user_id == self.requester_id:
            return Party.REQUESTER
        if self.assignee_user_id is not None and user_id == self.assignee_user_id:
            return Party.PROVIDER
        return None

    def actions_for(self, user_id: int, roles: frozenset[Role]) -> list[Action]:
        """The transitions this user may take from this screen, in definition order (the
        buttons to draw). Offers are answered with accept_offer / decline_offer, not here."""
        parties = {p for p in (self.party_of(user_id),) if p is not None}
        if Role.ADMIN in roles:
            parties.add(Party.ADMIN)
        if Role.OPERATOR in roles:
            parties.add(Party.OPERATOR)
        recovery = set(recovery_actions(self.state))
        allowed = []
        for action, transition in TRANSITIONS.items():
            if action in (Action.ACCEPT, Action.SUBMIT) or action in recovery:
                continue
            if target_of(action, self.state) is None:
                continue
            if transition.parties & parties:
                allowed.append(action)
        return allowed

    def can_message(self, user_id: int) -> bool:
        return self.state in CONVERSING and self.party_of(user_id) is not None

    def address_visible_to(self, user_id: int) -> bool:
        return self.party_of(user_id) is not None


@dataclass(frozen=True, slots=True)
class OfferView:
    id: int
    status: str  # pending | accepted | declined | expired | withdrawn
    provider_id: int
    expires_at: datetime
    request: RequestView  # the area, description and photos; the address once accepted


@dataclass(frozen=True, slots=True)
class TransitionView:
    action: str
    from_state: State
    to_state: State
    actor_id: int | None
    actor_name: str | None
    reason: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class MessageView:
    id: int
    request_id: int
    sender_id: int
    recipient_id: int
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PartView:
    """A ledger line of a request: parts issued (negative) and reversed (positive)."""

    item_id: int
    sku: str
    name: str
    unit: str
    quantity: int
    kind: str
    at: datetime


@dataclass(frozen=True, slots=True)
class HistoryView:
    request: RequestView
    transitions: tuple[TransitionView, ...]
    messages: tuple[MessageView, ...]
    parts: tuple[PartView, ...]


@dataclass(frozen=True, slots=True)
class ProviderView:
    id: int
    user_id: int
    display_name: str
    capacity: int
    active: bool
    on_call: bool
    available: bool
    active_jobs: int
    service_type_ids: tuple[int, ...]
    area_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StuckView:
    """A request sitting in its state past the state's threshold (recovery menus)."""

    request: RequestView
    stuck_for_seconds: float
    recovery_actions: tuple[Action, ...]
