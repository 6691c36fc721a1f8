"""/help, and a short help for anything the bot does not understand."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from services.menus import sections_for
from services.users import UserView


def help_text(user: UserView | None = None) -> str:
    """Everyone's commands, then a section for each role the person holds (services.menus)."""
    lines = [_("Here is what I can do:")]
    for title, commands in sections_for(user.roles if user is not None else ()):
        if title is not None:
            lines += ["", "<b>" + _(title) + "</b>"]
        lines += [f"/{name} - {_(description)}" for name, description in commands]
    return "\n".join(lines)


async def show_help(message: Message, user: UserView | None = None) -> None:
    await message.answer(help_text(user))


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
