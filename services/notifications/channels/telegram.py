"""The Telegram channel: the only service module that talks to aiogram's Bot.

Pacing is not done here: the Telegram limiter sits in the bot's session request middleware, so
handler replies and outbox deliveries share one budget (docs/architecture.md, principle 6).
Texts are plain (parse mode off): a notification text with "<" or "&" must arrive as written,
whatever the Bot's default parse mode is. A notification's buttons are domain actions
(`services.actions`); the function that packs one into callback data is given by whoever builds
the channel (the handlers define it, beside the code that decodes it).

Besides a user's private chat, a notification may be addressed to a chat ("telegram_chat:
<chat_id>[:<thread_id>]", notifications.destinations): the operators' chat, in a forum topic
when a thread id is given. Messages relayed to a thread that may not exist yet (a customer's
first message) are placed by `ThreadHooks` (services/relay): a forum topic, or a reply to the
thread's first message; the hooks also fetch media the message refers to (a WhatsApp media id)
and learn the id each relayed message got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiogram import Bot
from aiogram.exceptions import AiogramError, TelegramBadRequest, TelegramForbiddenError
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReplyParameters,
)

from services.actions import Action
from services.notifications import destinations
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
# Telegram's multipart upload limits (Bot API): photos 10 MB, other files 50 MB.
MAX_PHOTO_UPLOAD = 10 * 1024 * 1024
MAX_FILE_UPLOAD = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Placement:
    """Where in a chat a message goes: a forum topic, or as a reply to a message."""

    thread_id: int | None = None
    reply_to: int | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """A file a relayed message refers to, fetched at send time."""

    data: bytes
    filename: str


class ChatApi(Protocol):
    """What the thread hooks may ask of Telegram (the channel answers, through its Bot)."""

    async def is_forum(self, chat_id: int) -> bool: ...

    async def create_topic(self, chat_id: int, name: str) -> int | None: ...


class ThreadHooks(Protocol):
    """Placement of relayed messages in per-person threads (services/relay implements it)."""

    def handles(self, message: Outgoing) -> bool: ...

    async def place(self, chats: ChatApi, chat_id: int, message: Outgoing) -> Placement: ...

    async def fetch(self, message: Outgoing) -> Fetched | str:
        """The media's file, or a notice to send in its place (why it cannot be fetched);
        raises ChannelError (transient) to be tried again later."""
        ...

    async def sent(self, chat_id: int, message: Outgoing, message_id: int) -> None: ...

    async def topic_gone(self, chat_id: int, message: Outgoing) -> None:
        """Telegram no longer knows the topic `message` was placed in (deleted)."""
        ...


class TelegramChannel:
    name = ChannelName.TELEGRAM
    max_text_length = 4096
    max_caption_length = 1024

    def __init__(
        self, bot: Bot, *, pack_action: Callable[[Action], str],
        threads: ThreadHooks | None = None,
    ) -> None:
        self.bot = bot
        self.pack_action = pack_action
        self.threads = threads

    @property
    def enabled(self) -> bool:
        return True

    def can_reach(self, recipient: Recipient) -> bool:
        if recipient.destination is not None:
            return recipient.destination.startswith("telegram_chat:")
        return recipient.telegram_id is not None

    # ChatApi, for the thread hooks.
    async def is_forum(self, chat_id: int) -> bool:
        chat = await self.bot.get_chat(chat_id)
        return bool(getattr(chat, "is_forum", False))

    async def create_topic(self, chat_id: int, name: str) -> int | None:
        """A new forum topic's thread id; None when Telegram refuses (no right to manage
        topics, say): the caller threads some other way."""
        try:
            topic = await self.bot.create_forum_topic(chat_id=chat_id, name=name[:128])
        except (TelegramBadRequest, TelegramForbiddenError) as exc:
            log.warning("chat %s: cannot create a forum topic (%s)", chat_id, exc.message)
            return None
        return int(topic.message_thread_id)

    def _address(self, recipient: Recipient) -> tuple[int, int | None]:
        if recipient.destination is not None:
            try:
                return destinations.parse_telegram_chat(recipient.destination)
            except destinations.InvalidDestination:
                pass
        elif recipient.telegram_id is not None:
            return recipient.telegram_id, None
        raise ChannelError(
            Failure(FailureClass.PERMANENT, PROVIDER, "no_chat", "no Telegram id")
        )

    async def close(self) -> None:
        """The Bot (and its session) belongs to the application, which closes it."""

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        chat_id, thread_id = self._address(recipient)
        hooks = self.threads if self.threads is not None and self.threads.handles(message) \
            else None
        try:
            placement = Placement(thread_id)
            if hooks is not None:
                placement = await hooks.place(self, chat_id, message)
            sent = await self._send(chat_id, message, placement, hooks)
        except (AiogramError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            if (hooks is not None and placement.thread_id is not None
                    and isinstance(exc, TelegramBadRequest)
                    and "thread not found" in exc.message.lower()):
                await hooks.topic_gone(chat_id, message)  # deleted: the next try makes another
            raise ChannelError(classify_telegram(exc)) from exc
        if hooks is not None:
            try:
                await hooks.sent(chat_id, message, sent.message_id)
            except Exception:  # sent all the same: sending again would relay it twice
                log.exception("notification %s: sent, but its thread could not be updated",
                              message.notification_id)
        return SendResult(
            provider_message_id=str(sent.message_id),
            sender=f"bot:{self.bot.id}",
            address=str(chat_id),
        )

    async def _send(
        self, chat_id: int, message: Outgoing, placement: Placement,
        hooks: ThreadHooks | None,
    ) -> Any:
        where: dict[str, Any] = {"chat_id": chat_id, "reply_markup": self._keyboard(message)}
        if placement.thread_id is not None:
            where["message_thread_id"] = placement.thread_id
        if placement.reply_to is not None:
            where["reply_parameters"] = ReplyParameters(
                message_id=placement.reply_to, allow_sending_without_reply=True
            )
        text = render_text(message)
        if message.media:
            media = message.media
            kind = str(media.get("type") or "document")
            source: Any = str(media["source"])
            if hooks is not None and media.get("fetch"):
                fetched = await hooks.fetch(message)
                if isinstance(fetched, str):  # cannot be fetched: the notice goes instead
                    return await self.bot.send_message(text=fetched, parse_mode=None, **where)
                source = BufferedInputFile(fetched.data, filename=fetched.filename)
            caption = media.get("caption")
            caption = str(caption)[: self.max_caption_length] if caption else None
            common: dict[str, Any] = {"caption": caption, "parse_mode": None, **where}
            if kind == "image":
                return await self.bot.send_photo(photo=source, **common)
            if kind == "audio" and media.get("voice"):
                return await self.bot.send_voice(voice=source, **common)
            if kind == "audio":
                return await self.bot.send_audio(audio=source, **common)
            if kind == "video":
                return await self.bot.send_video(video=source, **common)
            if kind == "sticker":  # a sticker takes no caption
                return await self.bot.send_sticker(sticker=source, **where)
            return await self.bot.send_document(document=source, **common)
        if not text:
            raise ChannelError(
                Failure(FailureClass.PERMANENT, PROVIDER, "empty", "nothing to send")
            )
        return await self.bot.send_message(text=text, parse_mode=None, **where)

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
