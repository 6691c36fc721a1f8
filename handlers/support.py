"""/support: a Telegram user talks to a person. Their messages (text, photos, documents) are
relayed to the operators' chat in a thread of their own (services.relay), and the operators'
answers come back here. /done ends it."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _

from handlers.filters import magic
from services.relay import Relay
from services.users import UserView


class SupportStates(StatesGroup):
    talking = State()


async def start_support(message: Message, state: FSMContext, relay: Relay,
                        user: UserView) -> None:
    if not await relay.open_support(user.id):
        await message.answer(_("Talking to a person is not available right now, sorry."))
        return
    await state.set_state(SupportStates.talking)
    await message.answer(_("You are now writing to our operators: send your message (text, "
                           "photos or documents) and they will answer here. Send /done when "
                           "you have finished."))


async def relay_message(message: Message, relay: Relay, user: UserView) -> None:
    media: tuple[str, str] | None = None
    if message.photo:
        media = ("image", message.photo[-1].file_id)
    elif message.document:
        media = ("document", message.document.file_id)
    body = message.text or message.caption or ""
    if media is None and not body:
        await message.answer(_("Only text, photos and documents reach the operators."))
        return
    if not await relay.from_telegram_user(user.id, message.message_id, body=body, media=media):
        await message.answer(_("Talking to a person is not available right now, sorry."))


async def stop_support(message: Message, state: FSMContext) -> None:
    await state.clear()
    await message.answer(_("Conversation closed. Send /support to write to us again."))


def setup() -> Router:
    router = Router(name="support")
    router.message.filter(magic(F.chat.type == ChatType.PRIVATE))
    router.message.register(start_support, Command("support"))
    router.message.register(stop_support, Command("done"), StateFilter(SupportStates.talking))
    router.message.register(relay_message, StateFilter(SupportStates.talking),
                            magic(~(F.text.startswith("/"))))
    return router
