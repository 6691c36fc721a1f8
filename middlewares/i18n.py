"""Picks each update's language from the user's stored choice (loaded by UserMiddleware)."""

from __future__ import annotations

from typing import Any

from aiogram.types import TelegramObject
from aiogram.utils.i18n import I18n, I18nMiddleware


def N_(message: str) -> str:
    """Marks a string for extraction where it is translated later, with an explicit locale."""
    return message


class UserLanguageMiddleware(I18nMiddleware):
    def __init__(self, i18n: I18n, default_language: str) -> None:
        super().__init__(i18n)
        self.default_language = default_language

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        user = data.get("user")
        language = getattr(user, "language", None) or self.default_language
        return language if language in self.i18n.available_locales else self.i18n.default_locale
