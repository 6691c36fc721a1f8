"""Callback data and keyboards shared by handlers."""

from __future__ import annotations

from collections.abc import Iterable

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

# Each language's name in itself: never translated.
LANGUAGE_NAMES = {"en": "English", "fr": "Français"}


class LanguageChoice(CallbackData, prefix="lang"):
    code: str


def one_per_row(buttons: Iterable[tuple[str, CallbackData]]) -> InlineKeyboardMarkup:
    """Inline buttons, one per row, from (text, callback data).

    Built directly: aiogram's InlineKeyboardBuilder deep-copies every button when it exports
    the markup, which cost about a millisecond per screen (benchmarks/updates.py).
    """
    return InlineKeyboardMarkup(inline_keyboard=[[_button(t, d)] for t, d in buttons])


def language_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(name, LanguageChoice(code=code)) for code, name in LANGUAGE_NAMES.items()]
        ]
    )


def _button(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())
