"""Gives a person the command menu of their roles (services.menus): when their roles or language
no longer match the menu recorded for them, their chat's menu is set (or dropped back to the
default) before the update is handled. Costs nothing when the menu is current."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, BotCommandScopeChat, TelegramObject

from services.menus import CommandMenus, MenuChange
from services.users import UserView

log = logging.getLogger(__name__)


class CommandMenuMiddleware(BaseMiddleware):
    def __init__(self, menus: CommandMenus) -> None:
        self.menus = menus

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: UserView | None = data.get("user")
        bot: Bot | None = data.get("bot")
        if user is not None and user.telegram_id is not None and bot is not None:
            change = await self.menus.change_for(user.telegram_id, user.roles, user.language)
            if change is not None:
                await self._apply(bot, change)
        return await handler(event, data)

    async def _apply(self, bot: Bot, change: MenuChange) -> None:
        scope = BotCommandScopeChat(chat_id=change.telegram_id)
        try:
            if change.key is None:
                await bot.delete_my_commands(scope=scope)
            else:
                await bot.set_my_commands(
                    [BotCommand(command=c, description=d) for c, d in change.commands],
                    scope=scope,
                )
        except TelegramAPIError as exc:
            # Not worth failing the person's update: tried again on their next one.
            log.warning("could not set a command menu: %s", type(exc).__name__)
            return
        await self.menus.record(change)
