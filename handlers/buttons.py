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
