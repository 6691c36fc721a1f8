"""The gettext catalogues (English and French) shipped with the bot."""

from __future__ import annotations

from pathlib import Path

from aiogram.utils.i18n import I18n

LOCALES = Path(__file__).parent / "locales"
DOMAIN = "messages"


def build_i18n(default_language: str) -> I18n:
    return I18n(path=LOCALES, default_locale=default_language, domain=DOMAIN)
