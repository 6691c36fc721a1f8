"""The aiogram session request middleware that applies Telegram's pacing to every send.

docs/architecture.md, principle 6: the limiter sits in the one place every Bot API call passes
through (`bot.session.middleware(...)`), so handler replies and outbox deliveries share one
budget. The policy (limits, the fair per-chat queue, margins, 429 evidence) is
services/notifications/pacing_telegram.py; this module only tells which calls are messages to
a chat and how many (`message_target`), waits for their slot, reports how long each took and
any 429 to the pacer.

Edits, answerCallbackQuery, getUpdates and the like are not messages sent to a chat and pass
untouched. A send with `allow_paid_broadcast` skips the global limit but keeps the chat limit.
An album (`sendMediaGroup`) or a multi-message forward/copy counts once per message. A 429 is
re-raised after the pacer heard of it: the caller (outbox dispatcher, handler) decides whether
and when to retry.

`max_wait` bounds how long a send may wait for its slot. A send that would wait longer raises
`PacingDeferred` at once: a `TelegramRetryAfter` (so callers that already handle 429 handle
it: rate limited, try again in `retry_after`) that never reached Telegram. It keeps an outbox
worker from sleeping past its lease (say, a chat blocked for 300 s by a 429, or fifty messages
queued for one group at 20 per minute), after which the row would be claimed and sent twice.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods.base import TelegramType

from services.clock import Clock
from services.notifications.pacing import RateLimiter
from services.notifications.pacing_telegram import SlotUnavailable, TelegramPacer

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods import Response, TelegramMethod

    from bot.config import Settings


# Bot API methods that put messages in a chat, i.e. count toward Telegram's sending limits.
SEND_METHODS = frozenset((
    "sendMessage", "sendPhoto", "sendDocument", "sendAudio", "sendVideo", "sendAnimation",
    "sendVoice", "sendVideoNote", "sendSticker", "sendMediaGroup", "sendLocation", "sendVenue",
    "sendContact", "sendPoll", "sendDice", "sendPaidMedia", "sendInvoice", "sendGame",
    "sendChecklist", "sendLivePhoto", "sendRichMessage",
    "copyMessage", "copyMessages", "forwardMessage", "forwardMessages",
))  # fmt: skip


class PacingDeferred(TelegramRetryAfter):
    """Raised instead of sending when the slot is further away than max_wait.

    Nothing was sent: Telegram never saw the call. A subclass of TelegramRetryAfter, so code
    that waits `retry_after` and tries again after a 429 does the right thing with it.
    """


def message_target(method: TelegramMethod[Any]) -> tuple[int | str, int, bool] | None:
    """(chat_id, number of messages, counts toward the global limit) for a send, else None."""
    if getattr(method, "__api_method__", None) not in SEND_METHODS:
        return None
    chat_id = getattr(method, "chat_id", None)
    if chat_id is None or getattr(method, "business_connection_id", None):
        return None  # sent on behalf of a business account: not the bot's budget
    many = getattr(method, "media", None) or getattr(method, "message_ids", None)
    messages = len(many) if isinstance(many, list) else 1
    broadcast = not getattr(method, "allow_paid_broadcast", None)
    return chat_id, messages, broadcast


class PacingMiddleware(BaseRequestMiddleware):
    """Session request middleware: every send waits for its slot; a 429 blocks the chat.

    Register with `bot.session.middleware(PacingMiddleware(limiter, clock=..., ...))`.
    `max_wait` (seconds, None = no bound): a send whose slot is further away raises
    `PacingDeferred` instead of waiting.
    """

    def __init__(
        self,
        limiter: RateLimiter | None = None,
        *,
        clock: Clock | None = None,
        pacer: TelegramPacer | None = None,
        max_wait: float | None = None,
        **rates: float,
    ) -> None:
        if pacer is None:
            if limiter is None or clock is None:
                raise TypeError("PacingMiddleware needs a pacer, or a limiter and a clock")
            pacer = TelegramPacer(limiter, clock=clock, **rates)
        self.pacer = pacer
        self.max_wait = max_wait

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        limiter: RateLimiter,
        clock: Clock,
        *,
        max_wait: float | None = None,
    ) -> PacingMiddleware:
        pacer = TelegramPacer(
            limiter,
            clock=clock,
            rate_per_second=settings.telegram_rate_per_second,
            per_chat_per_second=settings.telegram_per_chat_per_second,
            group_per_minute=settings.telegram_group_per_minute,
        )
        return cls(pacer=pacer, max_wait=max_wait)

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        target = message_target(method)
        if target is None:
            return await make_request(bot, method)
        chat_id, messages, broadcast = target
        clock = self.pacer.clock
        try:
            async with self.pacer.slot(
                bot.id, chat_id, messages=messages, broadcast=broadcast, max_wait=self.max_wait
            ):
                started = clock.monotonic()
                try:
                    result = await make_request(bot, method)
                except Exception as exc:  # the request may still have reached Telegram
                    if isinstance(exc, TelegramRetryAfter):
                        await self.pacer.retry_after(bot.id, chat_id, exc.retry_after)
                    took = clock.monotonic() - started
                    await self.pacer.sent(bot.id, chat_id, took, broadcast=broadcast)
                    raise
                took = clock.monotonic() - started
                await self.pacer.sent(bot.id, chat_id, took, broadcast=broadcast)
                return result
        except SlotUnavailable as exc:  # raised before anything was sent
            raise PacingDeferred(
                method,
                f"not sent: the next slot for this chat is {exc.retry_after:.1f} s away, more "
                f"than max_wait={self.max_wait} s (paced locally, not a Telegram answer)",
                max(1, math.ceil(exc.retry_after)),
            ) from None
