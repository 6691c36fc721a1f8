"""/help, and a short help for anything the bot does not understand."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

router = Router(name="common")


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


@router.message(Command("help"))
async def show_help(message: Message) -> None:
    await message.answer(help_text())


@router.message()
async def fallback(message: Message) -> None:
    await message.answer(_("I did not understand that. Send /help to see what I can do."))


@router.callback_query()
async def stale_button(query: CallbackQuery) -> None:
    """A button from an old message, or data we never issued."""
    await query.answer(_("This button is no longer valid."), show_alert=True)
