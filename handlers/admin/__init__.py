"""Admin screens. The admin router's guard (middlewares/admin.py) checks the rights on the
server for every message and button under it; handlers here contain no rights checks."""

from __future__ import annotations

from aiogram import Router

from handlers.admin import dashboard, errors, notifications, recovery
from middlewares.admin import AdminGuard


def setup() -> Router:
    router = Router(name="admin")
    guard = AdminGuard()
    # Inner middlewares: they run once a handler's filters matched, so an ordinary message
    # that no admin handler takes passes by untouched. On every kind of event, so an admin
    # handler added later for another kind is guarded too; child routers inherit them.
    for name, observer in router.observers.items():
        if name != "error":
            observer.middleware(guard)
    router.include_router(notifications.setup())
    router.include_router(errors.setup())
    router.include_router(recovery.setup())
    router.include_router(dashboard.setup())
    return router
