"""/dashboard: a one-time sign-in link to the web dashboard, answered directly (not through
the outbox) so the link preview can be turned off: Telegram's preview fetch would otherwise
open the link first. Opening the link (a GET) spends nothing anyway; the click on its page does.
The admin guard of handlers/admin refuses everyone else. Only in a private chat: the link
signs in whoever opens it, so in a group (the operators' chat, say) the bot issues none."""

from __future__ import annotations

import html

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.types import LinkPreviewOptions, Message
from aiogram.utils.i18n import gettext as _

from handlers.filters import magic
from services.dashboard_access import LOGIN_TTL, DashboardAccess
from services.users import UserView


async def dashboard_link(
    message: Message, user: UserView, dashboard_access: DashboardAccess,
    dashboard_base_url: str,
) -> None:
    token = await dashboard_access.issue_login(user.id)
    url = f"{dashboard_base_url}/admin/login/{token}"
    await message.answer(
        _("Your link to the dashboard. It works once, within {minutes} minutes; do not share "
          "it:\n{url}").format(minutes=int(LOGIN_TTL.total_seconds() // 60),
                               url=html.escape(url)),
        link_preview_options=LinkPreviewOptions(is_disabled=True),
    )


async def only_in_private(message: Message) -> None:
    await message.answer(_("Send /dashboard to me in a private chat: the link signs in whoever "
                           "opens it, so I do not post it here."))


def setup() -> Router:
    router = Router(name="admin-dashboard")
    router.message.register(
        dashboard_link, Command("dashboard"), magic(F.chat.type == ChatType.PRIVATE)
    )
    router.message.register(only_in_private, Command("dashboard"))
    return router
