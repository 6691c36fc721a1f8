"""Loads the user behind every update, creating them on first contact (`services.users.Users`):
for a returning user one read, and a write only when their name or admin right changed."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject
from aiogram.types import User as TelegramUser

from services.users import Users


class LanguageCache:
    """The last known language of recent users, so middlewares that run before the database
    (throttling) can still speak the user's language. Bounded: old entries fall out."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._data: OrderedDict[int, str] = OrderedDict()

    def get(self, telegram_id: int) -> str | None:
        return self._data.get(telegram_id)

    def put(self, telegram_id: int, language: str) -> None:
        self._data[telegram_id] = language
        self._data.move_to_end(telegram_id)
        while len(self._data) > self._size:
            self._data.popitem(last=False)


class UserMiddleware(BaseMiddleware):
    def __init__(self, users: Users, languages: LanguageCache) -> None:
        self.users = users
        self.languages = languages

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        from_user: TelegramUser | None = data.get("event_from_user")
        if from_user is None or from_user.is_bot:
            return await handler(event, data)
        user = await self.users.ensure(
            telegram_id=from_user.id,
            display_name=from_user.full_name,
            client_language=from_user.language_code,
            username=from_user.username or "",
        )
        self.languages.put(from_user.id, user.language)
        data["user"] = user
        return await handler(event, data)
