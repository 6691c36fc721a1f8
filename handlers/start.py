"""/start, /language and the language keyboard."""

from __future__ import annotations

from html import escape

from aiogram import F, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _

from database.engine import Database
from handlers.keyboards import LANGUAGE_NAMES, LanguageChoice, language_keyboard
from services import users
from services.clock import Clock
from services.users import UserView

router = Router(name="start")


@router.message(CommandStart())
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


@router.message(Command("language"))
async def ask_language(message: Message) -> None:
    await message.answer(_("Choose your language:"), reply_markup=language_keyboard())


@router.callback_query(LanguageChoice.filter(F.code.in_(LANGUAGE_NAMES)))
async def choose_language(
    query: CallbackQuery,
    callback_data: LanguageChoice,
    user: UserView,
    db: Database,
    clock: Clock,
    i18n: I18n,
) -> None:
    async def save(session: object) -> UserView:
        return await users.set_language(
            session,  # type: ignore[arg-type]
            user_id=user.id,
            language=callback_data.code,
            now=clock.now(),
        )

    updated = await db.run(save)
    # The rest of this update speaks the new language.
    with i18n.use_locale(updated.language):
        text = _("Welcome! I will speak English with you.\nSend /help to see what I can do.")
        await query.answer()
        if query.message is not None:
            await query.message.edit_text(text)  # type: ignore[union-attr]
        else:
            await query.bot.send_message(query.from_user.id, text)  # type: ignore[union-attr]


@router.callback_query(LanguageChoice.filter())
async def unknown_language(query: CallbackQuery) -> None:
    """Forged or stale data (a language we do not offer): say so, change nothing."""
    await query.answer(_("This button is no longer valid."), show_alert=True)
