"""Service requests end to end: the workflow as data (`definition`), the one state manager
(`manager`), provider matching and offers (`matching`), the facade handlers use
(`ServiceRequests`), the catalogue (`Catalogue`) and the scheduler jobs (`jobs`).

For the chat handlers (injected by aiogram DI from bot/app.py):
  `service_requests: ServiceRequests`, `catalogue: Catalogue`, `inventory: Inventory`
  (services.inventory). Every method is one unit of work, committed when it returns; a refusal
  raises a WorkflowError (services.workflow.errors) whose `user_message` is a msgid
  (`_(exc.user_message).format(**exc.params)`), nothing changed. StaleVersion carries
  `current`, the request as it is now, to redraw the screen. Actors are `UserView`s (anything
  with `.id` and `.roles`). Notifications to the other party are enqueued by the service, in
  the recipient's language; handlers only answer their own user.
  Buttons on notifications are services.actions Actions: OFFER_ACCEPT / OFFER_DECLINE (target
  offer id) on an offer, REQUEST_OPEN (target request id) on every other request notification:
  its handler shows the request with versioned buttons (RequestView.actions_for).
  open_request returns OFFERED or ESCALATED: the requester is not sent a notification about
  that outcome, their /new screen says it. Errors derive from services.errors.DomainError, so
  the error middleware answers a refusal nobody caught with its user_message.
"""

from services.workflow.config import WorkflowConfig
from services.workflow.definition import (
    RECOVERY_TARGETS,
    STATES,
    TRANSITIONS,
    Action,
    Party,
    State,
    recovery_actions,
    target_of,
)
from services.workflow.errors import (
    InvalidTransition,
    NotAllowed,
    OfferClosed,
    OfferTaken,
    OutOfStock,
    StaleVersion,
    WorkflowError,
)
from services.workflow.service import Catalogue, NewRequest, ServiceRequests
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

__all__ = [
    "RECOVERY_TARGETS", "STATES", "TRANSITIONS", "Action", "Catalogue", "CatalogueEntry",
    "HistoryView", "InvalidTransition", "MessageView", "NewRequest", "NotAllowed", "OfferClosed",
    "OfferTaken", "OfferView", "OutOfStock", "PartView", "Party", "ProviderView", "RequestView",
    "ServiceRequests", "StaleVersion", "State", "StuckView", "TransitionView", "WorkflowConfig",
    "WorkflowError", "recovery_actions", "target_of",
]
