"""Service requests in chat: the requester's form and lists, the provider's offers and jobs,
the warehouse's stock, and what both parties do on a request (handlers/requests/shared.py).
Private chats only: addresses and messages are never shown in a group. Thin: every rule lives
in services.workflow and services.inventory."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType

from handlers.filters import magic
from handlers.requests import provider, requester, shared, warehouse


def setup() -> Router:
    router = Router(name="requests")
    router.message.filter(magic(F.chat.type == ChatType.PRIVATE))
    router.include_routers(requester.setup(), shared.setup(), provider.setup(), warehouse.setup())
    return router
