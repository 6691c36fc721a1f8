"""/mydata and /forget: a person gets what is stored about them as a file, or has it erased
after confirming. Private chats only. The rules live in services.privacy; this module talks.

The confirmation's buttons name the person they were drawn for and when: a press by anyone
else (a forwarded or forged button), or one older than `CONFIRM_MINUTES`, is refused and
changes nothing.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.types import BufferedInputFile, CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from handlers.filters import magic
from handlers.keyboards import one_per_row
from services.clock import Clock
from services.privacy import Privacy, PrivacyError
from services.users import UserView

CONFIRM_MINUTES = 10
FILE_NAME = "my-data.json"


class ForgetAnswer(CallbackData, prefix="fgt"):
    answer: str  # "y": erase, "n": keep
    user: int  # users.id of the person the confirmation was drawn for
    drawn: int  # minutes since the epoch (the bot's clock) when it was drawn


def _minutes(clock: Clock) -> int:
    return int(clock.now().timestamp() // 60)


def _refusal(exc: PrivacyError) -> str:
    return _(exc.user_message).format(**exc.params) if exc.params else _(exc.user_message)


async def my_data(message: Message, user: UserView, privacy: Privacy) -> None:
    document = await privacy.export(user.id)
    await message.answer_document(
        BufferedInputFile(document, filename=FILE_NAME),
        caption=_("Here is everything this desk stores about you (a JSON file)."),
    )


async def forget(message: Message, user: UserView, privacy: Privacy, clock: Clock) -> None:
    try:
        await privacy.check_forget(user.id)
    except PrivacyError as exc:
        await message.answer(_refusal(exc))
        return
    drawn = _minutes(clock)
    await message.answer(
        _("Erase your data? Your name, phone number, e-mail address and the texts of your "
          "requests will be erased for good. Your requests stay in our records without them, "
          "and you will no longer see them here. If you write again, you start afresh."),
        reply_markup=one_per_row([
            (_("Yes, erase my data"), ForgetAnswer(answer="y", user=user.id, drawn=drawn)),
            (_("No, keep my data"), ForgetAnswer(answer="n", user=user.id, drawn=drawn)),
        ]),
    )


async def forget_answer(query: CallbackQuery, callback_data: ForgetAnswer, user: UserView,
                        privacy: Privacy, clock: Clock, state: FSMContext) -> None:
    age = _minutes(clock) - callback_data.drawn
    if callback_data.user != user.id or not 0 <= age <= CONFIRM_MINUTES or (
        callback_data.answer not in ("y", "n")
    ):
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    if callback_data.answer == "n":
        text = _("Nothing was erased.")
    else:
        try:
            await privacy.forget(user.id)
        except PrivacyError as exc:
            await query.answer(_refusal(exc), show_alert=True)
            return
        # A form half-way through holds what they typed: it goes too.
        await state.clear()
        text = _("Your data has been erased. If you write to me again, you start afresh as a "
                 "new user (/start).")
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(text)
    else:
        await query.bot.send_message(query.from_user.id, text)  # type: ignore[union-attr]


def setup() -> Router:
    router = Router(name="privacy")
    router.message.filter(magic(F.chat.type == ChatType.PRIVATE))
    router.message.register(my_data, Command("mydata"))
    router.message.register(forget, Command("forget"))
    router.callback_query.register(forget_answer, ForgetAnswer.filter())
    return router
