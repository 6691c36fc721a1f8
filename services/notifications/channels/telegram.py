"""The Telegram channel: the only service module that talks to aiogram's Bot.

Pacing is not done here: the Telegram limiter sits in the bot's session request middleware, so
handler replies and outbox deliveries share one budget (ARCHITECTURE.md principle 6). Texts are
plain (parse mode off): a notification text with "<" or "&" must arrive as written, whatever the
Bot's default parse mode is. A notification's buttons are domain actions (`services.actions`);
the function that packs one into callback data is given by whoever builds the channel (the
handlers define it, beside the code that decodes it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiogram import Bot
from aiogram.exceptions import AiogramError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from services.actions import Action
from services.notifications.channels.base import (
    ChannelName,
    Outgoing,
    Recipient,
    SendResult,
    render_text,
)
from services.notifications.classify import classify_telegram
from services.notifications.failures import ChannelError, Failure, FailureClass

log = logging.getLogger(__name__)

MAX_CALLBACK_DATA_BYTES = 64  # Telegram's limit on an inline button's callback_data

PROVIDER = "telegram"


class TelegramChannel:
    name = ChannelName.TELEGRAM
    max_text_length = 4096
    max_caption_length = 1024

    def __init__(self, bot: Bot, *, pack_action: Callable[[Action], str]) -> None:
        self.bot = bot
        self.pack_action = pack_action

    @property
    def enabled(self) -> bool:
        return True

    def can_reach(self, recipient: Recipient) -> bool:
        return recipient.telegram_id is not None

    async def close(self) -> None:
        """The Bot (and its session) belongs to the application, which closes it."""

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        chat_id = recipient.telegram_id
        if chat_id is None:
            raise ChannelError(
                Failure(FailureClass.PERMANENT, PROVIDER, "no_chat", "no Telegram id")
            )
        try:
            sent = await self._send(chat_id, message)
        except (AiogramError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ChannelError(classify_telegram(exc)) from exc
        return SendResult(
            provider_message_id=str(sent.message_id),
            sender=f"bot:{self.bot.id}",
            address=str(chat_id),
        )

    async def _send(self, chat_id: int, message: Outgoing) -> Any:
        if message.media:
            media = message.media
            kind = str(media.get("type") or "document")
            source = str(media["source"])
            caption = media.get("caption")
            caption = str(caption)[: self.max_caption_length] if caption else None
            common: dict[str, Any] = {"chat_id": chat_id, "caption": caption, "parse_mode": None}
            if kind == "image":
                return await self.bot.send_photo(photo=source, **common)
            if kind == "audio":
                return await self.bot.send_audio(audio=source, **common)
            if kind == "video":
                return await self.bot.send_video(video=source, **common)
            return await self.bot.send_document(document=source, **common)
        text = render_text(message)
        if not text:
            raise ChannelError(
                Failure(FailureClass.PERMANENT, PROVIDER, "empty", "nothing to send")
            )
        return await self.bot.send_message(
            chat_id=chat_id, text=text, parse_mode=None, reply_markup=self._keyboard(message)
        )

    def _keyboard(self, message: Outgoing) -> InlineKeyboardMarkup | None:
        """The inline buttons a notification carries (an alert's "Retry failed"), one a row."""
        buttons = [
            InlineKeyboardButton(text=str(b["text"]), callback_data=data)
            for b in message.extra.get("buttons") or []
            if b.get("text") and (data := self._callback_data(message, b)) is not None
        ]
        return InlineKeyboardMarkup(inline_keyboard=[[b] for b in buttons]) if buttons else None

    def _callback_data(self, message: Outgoing, button: dict[str, Any]) -> str | None:
        if "callback_data" in button:
            # Stored before buttons were actions: callback data already, sent as it is when
            # Telegram can take it (at most 64 bytes; a longer one would refuse the message).
            data = str(button["callback_data"])
            if len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
                return data
            log.warning("notification %s: legacy button dropped, its data is over 64 bytes",
                        message.notification_id)
            return None
        try:
            action = Action.from_payload(button)
        except (KeyError, TypeError, ValueError):
            # An action this version does not know (stored by a newer one): the message is
            # still worth sending without that button.
            log.warning("notification %s: button %r dropped, not an action this version knows",
                        message.notification_id, button)
            return None
        return self.pack_action(action)
