"""What every dashboard page uses: its services, the signed-in admin, the CSRF token, rendering
and the flash notice of Post/Redirect/Get. Pages import from here (never from the package's
__init__, which imports the pages)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
from aiogram.utils.i18n import I18n
from aiohttp import web

from services.dashboard_access import SessionView
from services.users import UserView

SESSION_COOKIE = "dashboard_session"
NOTICE_COOKIE = "dashboard_notice"
COOKIE_PATH = "/admin"
PREFIX = "/admin"


@dataclass
class Dashboard:
    """The dashboard's part of the web app. `services` is the bot's dependency-injection
    mapping (bot/app.py: the same objects the Telegram menus get, by the same names), read at
    each request so a service swapped after start (alerts) is the one used."""

    services: Mapping[str, Any]
    i18n: I18n
    timezone: str
    secure_cookies: bool
    session_seconds: float


DASHBOARD = web.AppKey("dashboard", Dashboard)
# Set by security.py on every signed-in request.
ADMIN_KEY = web.RequestKey("dashboard_admin", UserView)
SESSION_KEY = web.RequestKey("dashboard_session", SessionView)
NOTICE_KEY = web.RequestKey("dashboard_notice", dict)
# The nav bar: the pages this process serves, in order ({"path", "title"}).
NAV_KEY = web.AppKey("dashboard_nav", list)


def dashboard(request: web.Request) -> Dashboard:
    return request.app[DASHBOARD]


def service(request: web.Request, name: str) -> Any:
    """A service by its DI name: "failed_notifications", "manual_tasks", "workflow_recovery",
    "error_recorder", "background_jobs", "system_health", "users", "dashboard_access"..."""
    return dashboard(request).services[name]


def admin(request: web.Request) -> UserView:
    """The signed-in admin (checked by security.py for this very request)."""
    return request[ADMIN_KEY]


def actor_id(request: web.Request) -> int:
    """What actions pass as `actor_id`: the admin's users.id, as the menus do."""
    return admin(request).id


def csrf_token(request: web.Request) -> str:
    return request[SESSION_KEY].csrf_token


def base_context(request: web.Request) -> dict[str, Any]:
    """What every template sees besides its own context."""
    signed_in = SESSION_KEY in request
    return {
        "admin": request.get(ADMIN_KEY),
        "csrf": csrf_token(request) if signed_in else "",
        "notice": request.get(NOTICE_KEY),
        "nav": request.app[NAV_KEY] if signed_in else [],
        "path": request.path,
        "timezone": dashboard(request).timezone,
    }


def render(request: web.Request, template: str, context: Mapping[str, Any] | None = None,
           *, status: int = 200) -> web.Response:
    """The page `template` (it extends base.html) with `context`, plus admin, csrf, notice,
    nav, path and timezone."""
    return aiohttp_jinja2.render_template(
        template, request, {**base_context(request), **(context or {})}, status=status
    )


# --- flash notices (Post/Redirect/Get) ---------------------------------------------------------


def _sign(payload: str, key: str) -> str:
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]


def redirect(request: web.Request, location: str, notice: str | None = None, *,
             kind: str = "ok") -> web.HTTPSeeOther:
    """A 303 back to `location` that shows `notice` once there ("ok" or "error" styling).
    Raise it (aiohttp deprecates returning one): `raise redirect(request, url, notice)`."""
    response = web.HTTPSeeOther(location)
    if notice:
        payload = base64.urlsafe_b64encode(
            json.dumps({"text": notice, "kind": kind}).encode()).decode()
        response.set_cookie(
            NOTICE_COOKIE, f"{payload}.{_sign(payload, csrf_token(request))}", path=COOKIE_PATH,
            httponly=True, samesite="Strict", secure=dashboard(request).secure_cookies,
            max_age=60,
        )
    return response


def read_notice(request: web.Request) -> dict[str, str] | None:
    """The notice a redirect left for this page, if its signature is this session's."""
    value = request.cookies.get(NOTICE_COOKIE)
    session = request.get(SESSION_KEY)
    if not value or session is None or "." not in value:
        return None
    payload, signature = value.rsplit(".", 1)
    if not hmac.compare_digest(signature, _sign(payload, session.csrf_token)):
        return None
    try:
        notice = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    if not isinstance(notice, dict) or not isinstance(notice.get("text"), str):
        return None
    return {"text": notice["text"], "kind": str(notice.get("kind", "ok"))}


async def form(request: web.Request) -> Mapping[str, str]:
    """The POSTed form's text fields (security.py has read it already to check the CSRF
    token; aiohttp keeps it)."""
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}
