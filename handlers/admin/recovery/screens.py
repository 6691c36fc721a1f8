"""What every recovery screen is made of: a text and rows of buttons, shown by editing the
message the admin pressed on (or a new one for the command), with Back and a pager."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _

from handlers.admin.recovery.callbacks import Nav
from handlers.times import when as when  # the sections import it from here

PAGE_SIZE = 8
MAX_TEXT = 4096


@dataclass
class Screen:
    text: str
    rows: list[list[InlineKeyboardButton]] = field(default_factory=list)

    def button(self, text: str, data: CallbackData | str) -> Screen:
        """Add a button on a row of its own."""
        self.rows.append([button(text, data)])
        return self

    def markup(self) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup(inline_keyboard=self.rows)


def button(text: str, data: CallbackData | str) -> InlineKeyboardButton:
    packed = data if isinstance(data, str) else data.pack()
    return InlineKeyboardButton(text=text[:64], callback_data=packed)


def back(data: CallbackData | None = None) -> list[InlineKeyboardButton]:
    """The Back row: to `data`, or the top menu."""
    return [button(_("« Back"), data or Nav(section="top"))]


def pages(total: int, size: int = PAGE_SIZE) -> int:
    return max(1, math.ceil(total / size))


def pager(
    page: int, total: int, to: Callable[[int], CallbackData], size: int = PAGE_SIZE
) -> list[InlineKeyboardButton]:
    """Previous / "page n of m" / Next, for a list of `total` items; empty on a single page."""
    count = pages(total, size)
    if count <= 1:
        return []
    row = []
    if page > 0:
        row.append(button("‹", to(page - 1)))
    row.append(button(f"{page + 1}/{count}", to(page)))
    if page + 1 < count:
        row.append(button("›", to(page + 1)))
    return row


def clamp(page: int, total: int, size: int = PAGE_SIZE) -> int:
    return min(max(page, 0), pages(total, size) - 1)


async def show(event: CallbackQuery | Message, screen: Screen, *, notice: str | None = None
               ) -> None:
    """Edit the pressed message in place (a command gets a new one); `notice` is said in the
    button's answer. An edit that would change nothing is not an error."""
    text = screen.text[:MAX_TEXT]
    if isinstance(event, Message):
        await event.answer(text, reply_markup=screen.markup(), parse_mode=None)
        return
    if notice is not None:
        await event.answer(notice[:200], show_alert=True)
    else:
        await event.answer()
    message = event.message
    if isinstance(message, Message):
        await _edit(message.bot, message.chat.id, message.message_id, screen)


async def show_at(bot: Bot, chat_id: int, message_id: int, screen: Screen) -> None:
    """Edit a screen the admin is not pressing on (after they typed a reason)."""
    await _edit(bot, chat_id, message_id, screen)


async def _edit(bot: Bot | None, chat_id: int, message_id: int, screen: Screen) -> None:
    if bot is None:
        return
    try:
        await bot.edit_message_text(
            text=screen.text[:MAX_TEXT], chat_id=chat_id, message_id=message_id,
            reply_markup=screen.markup(), parse_mode=None,
        )
    except TelegramBadRequest as exc:
        if "message is not modified" not in exc.message:
            raise
