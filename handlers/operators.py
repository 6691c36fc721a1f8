"""The operators' chat (OPERATORS_CHAT_ID): answers to customers, and the "show number" button.

Any member's message in a customer's forum topic, or replying to a message relayed for them, is
their answer (text, a photo or a document): services.relay sends it to the customer, and this
module only tells the operator when it could not go. Anything else said in the chat is ordinary
chatter between operators: this router takes it so that the generic help never answers it.
Commands still reach their handlers.
"""

from __future__ import annotations

from typing import Any

from aiogram import Bot, F, Router
from aiogram.filters import Filter
from aiogram.types import CallbackQuery, Message, TelegramObject
from aiogram.utils.i18n import gettext as _

from handlers.buttons import RevealNumber
from handlers.filters import magic
from services.relay import NotAllowed, OperatorFile, Relay, ReplyOutcome
from services.users import UserView

# What the Bot API lets a bot download (getFile).
MAX_DOWNLOAD = 20 * 1024 * 1024


class OperatorsChat(Filter):
    """The event happens in the operators' chat."""

    async def __call__(self, event: TelegramObject, relay: Relay | None = None) -> bool:
        chat = getattr(event, "chat", None)
        return relay is not None and chat is not None and relay.chat_id == chat.id


def _file(message: Message, bot: Bot) -> OperatorFile | None:
    async def download(file_id: str) -> bytes:
        stream = await bot.download(file_id)
        return stream.read() if stream is not None else b""

    if message.photo:
        photo = message.photo[-1]
        return OperatorFile("image", photo.file_id, "photo.jpg", "image/jpeg", photo.file_size,
                            lambda: download(photo.file_id))
    if message.document:
        document = message.document
        return OperatorFile("document", document.file_id, document.file_name or "document",
                            document.mime_type or "application/octet-stream",
                            document.file_size, lambda: download(document.file_id))
    return None


def _explain(outcome: ReplyOutcome, reason: str, template: str) -> str | None:
    if outcome is ReplyOutcome.WINDOW_CLOSED:
        return _("Not sent: this customer last wrote more than 24 hours ago, and WhatsApp then "
                 "takes only an approved template (WHATSAPP_REPLY_TEMPLATE is not set).")
    if outcome is ReplyOutcome.MEDIA_OUTSIDE_WINDOW:
        return _("Not sent: this customer last wrote more than 24 hours ago; only a text can "
                 "reach them now, as a template.")
    if outcome is ReplyOutcome.OPTED_OUT:
        return _("Not sent: this customer asked for no more WhatsApp messages (STOP).")
    if outcome is ReplyOutcome.MEDIA_FAILED:
        return _("Not sent: the file could not be passed on to WhatsApp ({reason}).").format(
            reason=reason)
    if outcome is ReplyOutcome.TEMPLATE:
        return _("The customer's 24-hour window is closed: your text goes as the template "
                 "{name}.").format(name=template)
    return None


async def operator_message(message: Message, relay: Relay, user: UserView, bot: Bot) -> None:
    topic = message.message_thread_id if message.is_topic_message else None
    replied = message.reply_to_message
    file = _file(message, bot)
    body = message.text or message.caption or ""
    if not body and file is None:
        return  # a sticker, a service message...: nothing to pass on
    if file is not None and file.size is not None and file.size > MAX_DOWNLOAD:
        await message.reply(_("Not sent: files over 20 MB cannot be passed on."))
        return
    result = await relay.reply(
        chat_id=message.chat.id, message_id=message.message_id, topic_id=topic,
        reply_to=replied.message_id if replied is not None else None, operator_id=user.id,
        body=body, file=file,
    )
    answer = _explain(result.outcome, result.reason, relay.config.reply_template or "")
    if answer is not None:
        await message.reply(answer)


async def reveal_number(query: CallbackQuery, callback_data: RevealNumber, relay: Relay,
                        user: UserView) -> None:
    try:
        phone = await relay.reveal(callback_data.user, actor_id=user.id, roles=user.roles)
    except NotAllowed:
        await query.answer(_("Only operators and admins can see a customer's number."),
                           show_alert=True)
        return
    await query.answer(phone or _("No number is known for this customer."), show_alert=True)


def setup(**_: Any) -> Router:
    router = Router(name="operators")
    router.message.register(
        operator_message, OperatorsChat(),
        magic(~F.from_user.is_bot, ~(F.text.startswith("/"))),
    )
    router.callback_query.register(reveal_number, RevealNumber.filter())
    return router
