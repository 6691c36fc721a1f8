"""/help, and a short help for anything the bot does not understand."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _


def help_text() -> str:
    return "\n".join(
        [
            _("Here is what I can do:"),
            _("/start - register and say hello"),
            _("/language - choose English or French"),
            _("/profile - your phone, e-mail and how we reach you"),
            _("/help - show this list"),
        ]
    )


async def show_help(message: Message) -> None:
    await message.answer(help_text())


async def fallback(message: Message) -> None:
    await message.answer(_("I did not understand that. Send /help to see what I can do."))


async def stale_button(query: CallbackQuery) -> None:
    """A button from an old message, or data we never issued."""
    await query.answer(_("This button is no longer valid."), show_alert=True)


def setup() -> Router:
    """The catch-alls: this router must come last."""
    router = Router(name="common")
    router.message.register(show_help, Command("help"))
    router.message.register(fallback)
    router.callback_query.register(stale_button)
    return router
