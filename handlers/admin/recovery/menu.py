"""/workflow_recovery: the top menu, and the placeholder of a section not built yet."""

from __future__ import annotations

from typing import Any

from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from handlers.admin.recovery.callbacks import Nav
from handlers.admin.recovery.registry import SECTIONS
from handlers.admin.recovery.screens import Screen, back, button, show


def top_menu() -> Screen:
    screen = Screen(_("Workflow recovery: what needs fixing?"))
    row: list = []
    for section in SECTIONS:
        row.append(button(_(section.title), Nav(section=section.code)))
        if len(row) == 2:
            screen.rows.append(row)
            row = []
    if row:
        screen.rows.append(row)
    return screen


async def command(message: Message, state: FSMContext) -> None:
    await state.set_state(None)  # a reason being typed is abandoned
    await show(message, top_menu())


async def open_top(query: CallbackQuery, **_data: Any) -> None:
    await show(query, top_menu())


async def not_available(query: CallbackQuery, callback_data: Nav) -> None:
    title = next((s.title for s in SECTIONS if s.code == callback_data.section), "")
    screen = Screen(_("{section}: not available yet.").format(section=_(title) if title else "?"))
    screen.rows.append(back())
    await show(query, screen)
