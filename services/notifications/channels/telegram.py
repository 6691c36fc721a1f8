"""The Telegram channel: the only service module that talks to aiogram's Bot.

Pacing is not done here: the Telegram limiter sits in the bot's session request middleware, so
handler replies and outbox deliveries share one budget (ARCHITECTURE.md principle 6). Texts are
plain (parse mode off): a notification text with "<" or "&" must arrive as written, whatever the
Bot's default parse mode is.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiogram import Bot
from aiogram.exceptions import AiogramError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from services.notifications.channels.base import ChannelName, Outgoing, Recipient, SendResult
from services.notifications.channels.sms import render_text
from services.notifications.classify import classify_telegram
from services.notifications.failures import ChannelError, Failure, FailureClass

PROVIDER = "telegram"


class TelegramChannel:
    name = ChannelName.TELEGRAM
    max_text_length = 4096
    max_caption_length = 1024

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

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
            chat_id=chat_id, text=text, parse_mode=None, reply_markup=_keyboard(message)
        )


def _keyboard(message: Outgoing) -> InlineKeyboardMarkup | None:
    """Inline buttons ({"text", "callback_data"}) a notification carries, e.g. an alert's
    "Retry failed"; callback data over Telegram's 64 bytes is dropped rather than refused."""
    buttons = [
        InlineKeyboardButton(text=str(b["text"]), callback_data=str(b["callback_data"]))
        for b in message.extra.get("buttons") or []
        if b.get("text") and 0 < len(str(b.get("callback_data", "")).encode()) <= 64
    ]
    return InlineKeyboardMarkup(inline_keyboard=[[b] for b in buttons]) if buttons else None
