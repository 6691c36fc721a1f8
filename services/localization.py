"""The bot's own words in a recipient's language, for text a service enqueues.

Handlers translate with aiogram's i18n context (the language of the update being handled); a
notification is rendered when it is enqueued, for someone else, so its language is the
recipient's, not the actor's. Services may not import `bot/` (import contracts), so this module
reads the same compiled catalogues (bot/locales) directly. Strings are marked with `N_` where
they are written and extracted by `./dev i18n` like every other string.
"""

from __future__ import annotations

import gettext
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

LOCALES = Path(__file__).resolve().parent.parent / "bot" / "locales"
DOMAIN = "messages"
DEFAULT_LANGUAGE = "en"


def N_(message: str) -> str:
    """Marks a string for extraction; it is translated later, in the recipient's language."""
    return message


@cache
def _catalogue(language: str) -> gettext.NullTranslations:
    return gettext.translation(DOMAIN, localedir=LOCALES, languages=[language], fallback=True)


@lru_cache(maxsize=1)
def available_languages() -> frozenset[str]:
    return frozenset(p.parent.parent.name for p in LOCALES.glob(f"*/LC_MESSAGES/{DOMAIN}.mo"))


def render(language: str | None, message: str, /, **params: Any) -> str:
    """`message` (an `N_`-marked msgid) in `language`, then `str.format(**params)`.

    An unknown or missing language falls back to English; an untranslated string stays as
    written. Parameters are formatted after translation, so translators keep the placeholders.
    """
    code = language if language in available_languages() else DEFAULT_LANGUAGE
    translated = _catalogue(code).gettext(message)
    return translated.format(**params) if params else translated


@dataclass(frozen=True, slots=True)
class Localized:
    """A text to be rendered later in its reader's language (an alert to each admin in theirs):
    an `N_`-marked msgid and its parameters, turned into words by `render`."""

    message: str
    params: dict[str, Any] = field(default_factory=dict)

    def render(self, language: str | None) -> str:
        return render(language, self.message, **self.params)
