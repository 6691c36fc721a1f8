"""Flood protection: a user who sends more than RATE updates in WINDOW seconds is told once, in
their language, to slow down; their extra updates are dropped, not queued. Other users are not
affected. Runs before the database so a flood costs no queries."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, TelegramObject, Update
from aiogram.types import User as TelegramUser
from aiogram.utils.i18n import I18n

from middlewares.i18n import N_
from middlewares.user import LanguageCache
from services.clock import Clock

log = logging.getLogger(__name__)

SLOW_DOWN = N_("Slow down a little, please: I will answer again in a few seconds.")


class FloodGate:
    """Sliding-window counter per user; pure logic, time injected."""

    def __init__(self, rate: int, window: float, clock: Clock) -> None:
        self.rate = rate
        self.window = window
        self.clock = clock
        self._hits: dict[int, deque[float]] = {}
        self._warned_until: dict[int, float] = {}
        self._last_prune = clock.monotonic()

    def allow(self, user_id: int) -> bool:
        now = self.clock.monotonic()
        self._prune(now)
        hits = self._hits.setdefault(user_id, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.rate:
            return False
        hits.append(now)
        return True

    def should_warn(self, user_id: int) -> bool:
        """True once per window for a throttled user, so the warning itself cannot flood."""
        now = self.clock.monotonic()
        if self._warned_until.get(user_id, 0.0) > now:
            return False
        self._warned_until[user_id] = now + self.window
        return True

    def _prune(self, now: float) -> None:
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        horizon = now - self.window
        for user_id in [u for u, h in self._hits.items() if not h or h[-1] <= horizon]:
            del self._hits[user_id]
        for user_id in [u for u, t in self._warned_until.items() if t <= now]:
            del self._warned_until[user_id]


class ThrottlingMiddleware(BaseMiddleware):
    def __init__(
        self, gate: FloodGate, i18n: I18n, languages: LanguageCache, default_language: str
    ) -> None:
        self.gate = gate
        self.i18n = i18n
        self.languages = languages
        self.default_language = default_language

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        from_user: TelegramUser | None = data.get("event_from_user")
        if from_user is None or self.gate.allow(from_user.id):
            return await handler(event, data)
        log.info("throttled an update from user %s", from_user.id)
        if self.gate.should_warn(from_user.id):
            await self._warn(data["bot"], event, from_user)
        return None

    async def _warn(self, bot: Bot, event: TelegramObject, from_user: TelegramUser) -> None:
        language = self.languages.get(from_user.id) or self.default_language
        text = self.i18n.gettext(SLOW_DOWN, locale=language)
        callback = event.callback_query if isinstance(event, Update) else None
        try:
            if isinstance(callback, CallbackQuery):
                await callback.answer(text, show_alert=False)
            else:
                await bot.send_message(from_user.id, text)
        except TelegramAPIError as exc:
            log.warning("could not tell user %s to slow down: %s", from_user.id, exc)
