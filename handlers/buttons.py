"""How the domain's actions (services/actions.py) become callback data, and back.

This is the one place that knows the wire format of a button a service attached to a
notification: the Telegram channel is handed `pack_action` when the bot is put together, and
the admin handlers filter on the same CallbackData classes. Every action packs into Telegram's
64 bytes whatever its target (tests/unit/test_buttons.py); one that could not would raise
here, never be cut.
"""

from __future__ import annotations

from collections.abc import Callable

from aiogram.filters.callback_data import CallbackData

from services.actions import Action, ActionName


class RetryDeadLettersLike(CallbackData, prefix="nfr"):
    """Send again every dead letter of the same kind as notification `target`."""

    target: int


class LegacyRetryDeadLetters(CallbackData, prefix="nf"):
    """"nf:retry:<kind>": the "Retry failed" button of alerts sent before buttons were actions.
    Still honoured, so an alert already in an admin's chat keeps working."""

    action: str
    kind: str


_PACKERS: dict[ActionName, Callable[[int], CallbackData]] = {
    ActionName.RETRY_DEAD_LETTERS_LIKE: lambda target: RetryDeadLettersLike(target=target),
}


def pack_action(action: Action) -> str:
    """The callback data for `action`; ValueError when it cannot be packed."""
    return _PACKERS[action.name](action.target).pack()


class OpenError(CallbackData, prefix="erro"):
    """Show error occurrence `occurrence` (the button on a high or critical error's alert)."""

    occurrence: int


class ResolveError(CallbackData, prefix="errr"):
    """Mark error group `group` resolved."""

    group: int


_PACKERS[ActionName.OPEN_ERROR] = lambda target: OpenError(occurrence=target)


# --- service requests (issue 10): decoded by handlers/requests ---


class OfferAnswer(CallbackData, prefix="ofa"):
    """Accept ("a") or decline ("d") job offer `offer` (the buttons on an offer)."""

    answer: str
    offer: int


class OpenRequest(CallbackData, prefix="rqo"):
    """Show request `request` with fresh, versioned buttons."""

    request: int


_PACKERS[ActionName.OFFER_ACCEPT] = lambda target: OfferAnswer(answer="a", offer=target)
_PACKERS[ActionName.OFFER_DECLINE] = lambda target: OfferAnswer(answer="d", offer=target)
_PACKERS[ActionName.REQUEST_OPEN] = lambda target: OpenRequest(request=target)


# --- relay to the operators' chat (issue 11): decoded by handlers/operators ---


class RevealNumber(CallbackData, prefix="rvn"):
    """Show customer `user`'s full number (operators and admins only)."""

    user: int


_PACKERS[ActionName.REVEAL_NUMBER] = lambda target: RevealNumber(user=target)


# --- /workflow_recovery (issue 12): the stuck-workflow digest's button ---


def _open_stuck(target: int) -> CallbackData:
    from handlers.admin.recovery.callbacks import Nav, Stuck

    return Stuck(request=target) if target else Nav(section="stuck")


_PACKERS[ActionName.OPEN_STUCK] = _open_stuck
