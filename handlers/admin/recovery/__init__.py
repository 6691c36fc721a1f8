"""/workflow_recovery: the admins' menus, one section per module.

How a section plugs in
----------------------
1. Its module is handlers/admin/recovery/<module>.py, named in registry.SECTIONS (code,
   module, title). It has `setup() -> Router`; this package includes that router when the
   module exists, and until then the top-menu entry answers "not available yet".
2. Its entry opens `Nav(section=<code>)` (callbacks.py): register a handler on
   `Nav.filter(F.section == "<code>")`; `callback_data.page` / `.item` carry list page and
   detail id. Its own CallbackData classes go in callbacks.py, in a block of its own at the
   end (prefix "r" + letters not used yet; each pack under 64 bytes with 20-digit ints).
3. A screen is a `screens.Screen(text, rows)`, shown with `await screens.show(query, screen)`
   (edits the pressed message in place); every screen ends with `screens.back(...)`; lists
   use `screens.pager(...)` and `PAGE_SIZE`.
4. A destructive action is registered with `confirm.register(confirm.Destructive(op=...,
   reasons=(N_("..."), ...), question=..., run=..., back=...))` at setup() time; its button
   is `Ask(op=..., target=id, version=v)`. `run(pending, reason, data)` gets the reason
   (never empty) and the handler data (services by name, `user`, `settings`, `state`) and
   returns the Screen to show. Re-validate on click: `question` returns a Screen (the
   target as it is now) instead of a question when the target moved on.
5. Handlers take their services by aiogram DI (bot/app.py) and contain no rights checks: the
   admin guard of handlers/admin checks every message and button of this router.
"""

from __future__ import annotations

import importlib

from aiogram import F, Router
from aiogram.filters import Command

from handlers.admin.recovery import confirm, menu
from handlers.admin.recovery.callbacks import Nav
from handlers.admin.recovery.registry import SECTIONS


def _section_router(module: str) -> Router | None:
    name = f"{__name__}.{module}"
    try:
        loaded = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # the section exists but something it imports is missing: say so
        return None
    return loaded.setup()


def setup() -> Router:
    router = Router(name="recovery")
    router.message.register(menu.command, Command("workflow_recovery"))
    router.callback_query.register(menu.open_top, Nav.filter(F.section == "top"))
    router.include_router(confirm.setup())
    for section in SECTIONS:
        section_router = _section_router(section.module)
        if section_router is not None:
            router.include_router(section_router)
        else:
            router.callback_query.register(
                menu.not_available, Nav.filter(F.section == section.code)
            )
    return router
