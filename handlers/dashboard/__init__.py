"""The operations dashboard under /admin/ of the bot's web app: server-rendered pages (Jinja2
through aiohttp-jinja2, autoescaped) over the same services the Telegram menus call.

How a page plugs in
-------------------
1. Its module is handlers/dashboard/pages/<name>.py, named in PAGES below. It has
   `routes = web.RouteTableDef()` with full paths (`@routes.get("/admin/tasks")`); this package
   adds them when the module exists, so a page not written yet breaks nothing.
2. A handler takes the request only: `service(request, "manual_tasks")` gives a service by
   its DI name (bot/app.py), `actor_id(request)` the signed-in admin's users.id (what the
   menus pass as actor_id), `render(request, "tasks.html", {...})` the page.
3. Its template extends base.html (`{% extends "base.html" %}`, blocks `title` and `content`);
   a form that POSTs carries `<input type="hidden" name="csrf" value="{{ csrf }}">`.
4. An action is a POST to the page's URL + /<action>; it ends with
   `raise redirect(request, "/admin/tasks", _("Task closed."))` (303, the notice shown once).
5. No rights checks in pages: security.py has checked the session, the admin right and the
   CSRF token of every request under /admin/ before a page runs.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiogram.utils.i18n import I18n
from aiohttp import web

from handlers.dashboard import security
from handlers.dashboard.common import DASHBOARD, NAV_KEY, PREFIX, Dashboard
from handlers.times import duration, when
from services.localization import N_

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
# (module, path, title) in the nav bar's order; the template translates the title.
PAGES: tuple[tuple[str, str, str], ...] = (
    ("overview", f"{PREFIX}/", N_("Overview")),
    ("delivery", f"{PREFIX}/delivery", N_("Delivery")),
    ("dead_letters", f"{PREFIX}/dead-letters", N_("Dead letters")),
    ("tasks", f"{PREFIX}/tasks", N_("Manual tasks")),
    ("stuck", f"{PREFIX}/stuck", N_("Stuck workflows")),
    ("errors", f"{PREFIX}/errors", N_("Errors")),
    ("jobs", f"{PREFIX}/jobs", N_("Background jobs")),
)


def _page(module: str) -> Any | None:
    name = f"{__name__}.pages.{module}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise  # the page exists but something it imports is missing: say so
        return None


def setup_dashboard(
    web_app: web.Application,
    services: Mapping[str, Any],
    *,
    i18n: I18n,
    timezone: str,
    public_base_url: str | None,
    session_hours: float,
) -> None:
    """Add the dashboard to `web_app` (before it starts). `services` is the bot's DI mapping
    (the Dispatcher's workflow data): at least dashboard_access, users, system_health,
    background_jobs; the pages take what they need from it by name."""
    web_app[DASHBOARD] = Dashboard(
        services=services, i18n=i18n, timezone=timezone,
        # Secure cookies only when the public address is https (behind a proxy in production);
        # a browser would drop them on plain http.
        secure_cookies=(public_base_url or "").lower().startswith("https://"),
        session_seconds=session_hours * 3600,
    )
    env = aiohttp_jinja2.setup(
        web_app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        lambda message: i18n.gettext(message),
        lambda singular, plural, n: i18n.gettext(singular, plural, n),
        newstyle=True,
    )
    env.filters["when"] = lambda at: when(at, timezone)
    env.filters["duration"] = duration
    env.filters["fromiso"] = lambda text: datetime.fromisoformat(text) if text else None
    web_app.middlewares.append(security.guard)
    web_app.router.add_routes(security.routes)
    web_app.router.add_static(f"{PREFIX}/static/", HERE / "static", name="dashboard_static")
    web_app.router.add_get(PREFIX, _to_overview)
    nav = []
    for module, path, title in PAGES:
        page = _page(module)
        if page is None:
            log.debug("dashboard page %s is not available yet", module)
            continue
        web_app.router.add_routes(page.routes)
        nav.append({"path": path, "title": title})
    web_app[NAV_KEY] = nav


async def _to_overview(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"{PREFIX}/")
