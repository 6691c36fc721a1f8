"""Refusals of the workflow and the inventory: domain errors whose `user_message` is an
`N_`-marked msgid, so a handler shows the reason in its user's language (`_(e.user_message)
.format(**e.params)`, or `e.render(language)` for text written for someone else). A refused
call changed nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.errors import DomainError, ErrorCategory
from services.localization import N_, render

if TYPE_CHECKING:
    from services.workflow.views import RequestView

class WorkflowError(DomainError):
    """A refused workflow or inventory operation; nothing changed."""

    user_message: str = N_("This cannot be done.")

    def render(self, language: str | None) -> str:
        """The reason in `language` (for text written for someone else than the update's)."""
        return render(language, self.user_message, **self.params)


class RequestNotFound(WorkflowError):
    user_message = N_("This request no longer exists.")


class InvalidTransition(WorkflowError):
    """The request is not in a state this action applies to. `current` is the request as it
    is now, to redraw the screen with."""

    user_message = N_("This cannot be done in the request's current state; here it is now.")

    def __init__(self, current: RequestView) -> None:
        super().__init__(f"{current.state} request {current.id}")
        self.current = current


class StaleVersion(WorkflowError):
    """The caller saw an older version of the request: its screen is out of date. `current`
    is the request as it is now, to redraw the screen with."""

    user_message = N_("This request changed in the meantime; here is how it stands now.")

    def __init__(self, current: RequestView) -> None:
        super().__init__(f"stale version of request {current.id}")
        self.current = current


class NotAllowed(WorkflowError):
    """The actor may not take this action on this request."""

    user_message = N_("You are not allowed to do this on this request.")


class ReasonRequired(WorkflowError):
    user_message = N_("Please give a reason.")


class OfferNotFound(WorkflowError):
    user_message = N_("This offer no longer exists.")


class OfferTaken(WorkflowError):
    """Another provider accepted first (or the offer was withdrawn)."""

    user_message = N_("Sorry, this job has already been taken.")


class OfferClosed(WorkflowError):
    """The offer expired or was already answered."""

    user_message = N_("This offer is no longer open.")


class ProviderBusy(WorkflowError):
    """Accepting would take the provider over their capacity."""

    user_message = N_("You already have as many jobs as you can take; finish one first.")


class NotAProvider(WorkflowError):
    user_message = N_("You are not registered as a provider.")


class UnknownCatalogueEntry(WorkflowError):
    user_message = N_("This service type or area is not available.")


class InvalidRequest(WorkflowError):
    """A field of a new request (or the provider picked) does not fit; the instance's
    `user_message` says which."""

    user_message = N_("Please check your request.")


class NobodyToMessage(WorkflowError):
    user_message = N_("Nobody is assigned to this request yet, so there is nobody to message.")


class EmptyMessage(WorkflowError):
    user_message = N_("The message is empty.")


class UnknownItem(WorkflowError):
    category = ErrorCategory.INVENTORY
    user_message = N_("This stock item does not exist.")


class InvalidQuantity(WorkflowError):
    category = ErrorCategory.INVENTORY
    user_message = N_("The quantity must be a whole number above zero.")


class OutOfStock(WorkflowError):
    category = ErrorCategory.INVENTORY
    user_message = N_("Not enough {name} in stock: {on_hand} {unit} left, {wanted} asked.")


class DuplicateSku(WorkflowError):
    category = ErrorCategory.INVENTORY
    user_message = N_("An item with this SKU already exists.")
