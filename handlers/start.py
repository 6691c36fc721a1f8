"""/start, /language and the language keyboard."""

from __future__ import annotations

from html import escape

from aiogram import F, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _

from handlers.keyboards import LANGUAGE_NAMES, LanguageChoice, language_keyboard
from services.users import Users, UserView


async def start(message: Message, user: UserView) -> None:
    name = escape(user.display_name or "")
    if not user.language_chosen:
        await message.answer(
            _("Welcome, {name}! I am the service desk bot.\nPlease choose your language:").format(
                name=name
            ),
            reply_markup=language_keyboard(),
        )
        return
    await message.answer(
        _("Welcome back, {name}! Send /help to see what I can do.").format(name=name)
    )


async def ask_language(message: Message) -> None:
    await message.answer(_("Choose your language:"), reply_markup=language_keyboard())


async def choose_language(
    query: CallbackQuery, callback_data: LanguageChoice, user: UserView, users: Users, i18n: I18n
) -> None:
    updated = await users.set_language(user.id, callback_data.code)
    # The rest of this update speaks the new language.
    with i18n.use_locale(updated.language):
        text = _("Welcome! I will speak English with you.\nSend /help to see what I can do.")
        await query.answer()
        if isinstance(query.message, Message):
            await query.message.edit_text(text)
        else:
            await query.bot.send_message(query.from_user.id, text)  # type: ignore[union-attr]


async def unknown_language(query: CallbackQuery) -> None:
    """Forged or stale data (a language we do not offer): say so, change nothing."""
    await query.answer(_("This button is no longer valid."), show_alert=True)


def setup() -> Router:
    router = Router(name="start")
    router.message.register(start, CommandStart())
    router.message.register(ask_language, Command("language"))
    router.callback_query.register(
        choose_language, LanguageChoice.filter(F.code.in_(LANGUAGE_NAMES))
    )
    router.callback_query.register(unknown_language, LanguageChoice.filter())
    return router
