"""aiogram routers, thin: parse the update, call a service, answer."""

from aiogram import Router

from handlers import common, errors, profile, start
from handlers.admin import notifications as admin_notifications


def get_routers() -> list[Router]:
    """The production routers, in the order they are tried. The catch-all comes last."""
    return [
        errors.router,
        start.router,
        profile.router,
        admin_notifications.router,
        common.router,
    ]
