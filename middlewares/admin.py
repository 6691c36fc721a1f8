"""The one admin guard: every message and button of the admin routers passes it.

Admin rights are checked on the server for each event, because a button can be forwarded and
callback data forged. A refusal is polite, in the person's language, and logged (who, what);
nothing else runs. Registered as an inner middleware of the admin router, so it sees only the
events one of its handlers would take, never an ordinary user's ordinary message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject
from aiogram.utils.i18n import gettext as _

from services.users import UserView

log = logging.getLogger(__name__)


class AdminGuard(BaseMiddleware):
    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: UserView | None = data.get("user")
        if user is not None and user.is_admin:
            return await handler(event, data)
        log.warning(
            "refused %s from user %s: not an admin",
            _describe(event),
            user.id if user is not None else "unknown",
        )
        text = _("Only admins can do this.")
        if isinstance(event, CallbackQuery):
            await event.answer(text, show_alert=True)
        elif isinstance(event, Message):
            await event.answer(text)
        return None


def _describe(event: TelegramObject) -> str:
    """What was attempted, for the log: the button's data or the command, never free text."""
    if isinstance(event, CallbackQuery):
        return f"button {event.data!r}"
    if isinstance(event, Message) and event.text and event.text.startswith("/"):
        return f"command {event.text.split()[0][:64]!r}"
    return type(event).__name__
