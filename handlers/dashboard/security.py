"""Who gets in: the one-time sign-in link, the session cookie, the admin check and the CSRF
check of every dashboard request, and the security headers of every dashboard response.

- /admin/login/{token}: GET shows one button and never spends the token (Telegram's link
  preview, a mail scanner); POST spends it and opens a session.
- Everything else under /admin/ (but /admin/signin and /admin/static/) needs a live session
  whose user is, now, an admin (UserView.is_admin, read through the Users service on each
  request, the menus' rule): no session -> 302 to /admin/signin; no longer an admin -> 403 and
  the session ended. A POST without this session's CSRF token -> 403, nothing done.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from handlers.dashboard.common import (
    ADMIN_KEY,
    COOKIE_PATH,
    NOTICE_COOKIE,
    NOTICE_KEY,
    PREFIX,
    SESSION_COOKIE,
    SESSION_KEY,
    dashboard,
    read_notice,
    render,
    service,
)
from services.dashboard_access import LOGIN_TTL, DashboardAccess, Refusal
from services.users import Users

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Sent with every dashboard response. No inline script or style can run (CSP), no other site
# can frame a page, the sign-in link never leaves in a Referer, nothing is cached.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        "object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PUBLIC = (f"{PREFIX}/login/", f"{PREFIX}/signin", f"{PREFIX}/static/")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_dashboard(path: str) -> bool:
    return path == PREFIX or path.startswith(f"{PREFIX}/")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_dashboard(request.path):
        return await handler(request)
    i18n = dashboard(request).i18n
    try:
        with i18n.context():
            response = await _checked(request, handler)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PUBLIC):
        return await handler(request)
    access: DashboardAccess = service(request, "dashboard_access")
    session = await access.session(request.cookies.get(SESSION_COOKIE, ""))
    if session is None:
        if request.path.endswith(".json"):
            return web.json_response({"error": "signed out"}, status=401)
        raise web.HTTPFound(f"{PREFIX}/signin")
    users: Users = service(request, "users")
    user = await users.get(session.user_id)
    if user is None or not user.is_admin:
        await access.end_session(session.id, why="its user is no longer an admin")
        log.warning("dashboard: refused %s %s from user %s: not an admin", request.method,
                    request.path, session.user_id)
        response = _refused(request, "not_admin", status=403)
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response
    request[ADMIN_KEY] = user
    request[SESSION_KEY] = session
    if request.method not in SAFE_METHODS:
        given = (await request.post()).get("csrf")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), session.csrf_token.encode()
        ):
            log.warning("dashboard: refused %s %s from user %s: %s CSRF token", request.method,
                        request.path, user.id, "no" if given is None else "a wrong")
            return _refused(request, "csrf", status=403)
    notice = read_notice(request)
    if notice is not None:
        request[NOTICE_KEY] = notice
    with dashboard(request).i18n.use_locale(user.language):
        response = await handler(request)
    if request.cookies.get(NOTICE_COOKIE) and request.method == "GET" and response.status < 300:
        response.del_cookie(NOTICE_COOKIE, path=COOKIE_PATH)
    return response


def _refused(request: web.Request, why: str, *, status: int) -> web.Response:
    return render(request, "refused.html", {"why": why}, status=status)


# --- the pages that let someone in ------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get(f"{PREFIX}/signin")
async def signin(request: web.Request) -> web.Response:
    """Where a request without a session lands: how to get a sign-in link."""
    return render(request, "signin.html", {"signed_out": "out" in request.query})


def _refusal_page(request: web.Request, refusal: Refusal) -> web.Response:
    # 410 Gone: this link will never work again; get a new one from the bot.
    return render(request, "login_refused.html", {"refusal": refusal.value}, status=410)


@routes.get(f"{PREFIX}/login/{{token}}")
async def login_page(request: web.Request) -> web.Response:
    """One button; the token is checked (read only) so a dead link says so at once."""
    access: DashboardAccess = service(request, "dashboard_access")
    checked = await access.check_login(request.match_info["token"])
    if checked.refusal is not None:
        return _refusal_page(request, checked.refusal)
    return render(request, "login.html", {"minutes": int(LOGIN_TTL.total_seconds() // 60)})


@routes.post(f"{PREFIX}/login/{{token}}")
async def login(request: web.Request) -> web.StreamResponse:
    access: DashboardAccess = service(request, "dashboard_access")
    spent = await access.redeem(request.match_info["token"])
    if spent.refusal is not None or spent.user_id is None:
        return _refusal_page(request, spent.refusal or Refusal.UNKNOWN)
    users: Users = service(request, "users")
    user = await users.get(spent.user_id)
    if user is None or not user.is_admin:
        log.warning("dashboard sign-in refused: user %s is no longer an admin", spent.user_id)
        return _refused(request, "not_admin", status=403)
    opened = await access.open_session(user.id)
    response = web.HTTPSeeOther(f"{PREFIX}/")
    settings = dashboard(request)
    response.set_cookie(
        SESSION_COOKIE, opened.secret, path=COOKIE_PATH, httponly=True, samesite="Strict",
        secure=settings.secure_cookies, max_age=int(settings.session_seconds),
    )
    raise response


@routes.post(f"{PREFIX}/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    """Ends the session (behind the guard: a live session and its CSRF token)."""
    access: DashboardAccess = service(request, "dashboard_access")
    await access.end_session(request[SESSION_KEY].id)
    response = web.HTTPSeeOther(f"{PREFIX}/signin?out=1")
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    raise response
