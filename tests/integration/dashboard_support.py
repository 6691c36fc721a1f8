"""The dashboard over real HTTP, for integration tests: the bot's web app (bot/web.py) with the
dashboard added as bot/app.py adds it, over the services of the production Dispatcher
(`build_dispatcher`: the same objects, by the same names, the Telegram menus get), on the test's
database, served in the test's event loop.

    async with dashboard_world(db_url) as world:
        admin = await world.sign_in()              # a signed-in aiohttp client of an admin
        page = await admin.get("/admin/tasks")     # -> Page(status, text, headers)
        done = await admin.post("/admin/tasks/close", {"task": "3", "note": "called"})
        assert done.status == 303 and (await admin.get(done.location)).notice == "..."

`world.services["manual_tasks"]` etc. are the services the pages call; `world.clock` the
FakeClock they all read.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiogram import Dispatcher
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from bot.app import build_dispatcher
from bot.config import Settings
from bot.i18n import build_i18n
from bot.web import build_web_app
from database.engine import Database
from handlers.dashboard import setup_dashboard
from handlers.dashboard.common import SESSION_COOKIE
from services.clock import FakeClock
from services.users import UserView
from tests.conversations.harness import ExplicitSettings

ADMIN = 9000  # Telegram id of the world's admin (in ADMIN_IDS)

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
_NOTICE = re.compile(r'<p class="notice notice-(\w+)" role="status" id="notice">(.*?)</p>', re.S)


@dataclass(frozen=True)
class Page:
    """An answer as a browser would get it (redirects not followed)."""

    status: int
    text: str
    headers: CIMultiDictProxy[str]

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    @property
    def csrf(self) -> str | None:
        found = _CSRF.search(self.text)
        return html.unescape(found.group(1)) if found else None

    @property
    def notice(self) -> str | None:
        """The flash notice shown on the page, unescaped."""
        found = _NOTICE.search(self.text)
        return html.unescape(found.group(2)).strip() if found else None


@dataclass
class Browser:
    """An HTTP client with its own cookie jar: one per person (or per tab of a session)."""

    session: aiohttp.ClientSession
    csrf: str = ""

    async def get(self, path: str) -> Page:
        async with self.session.get(path, allow_redirects=False) as response:
            page = Page(response.status, await response.text(), response.headers)
        if page.csrf:
            self.csrf = page.csrf
        return page

    async def post(self, path: str, data: Mapping[str, str] | None = None, *,
                   csrf: str | None = None) -> Page:
        """POST a form; the page's CSRF token is added unless `csrf` says otherwise ("" to
        leave it out)."""
        form = dict(data or {})
        token = self.csrf if csrf is None else csrf
        if token:
            form["csrf"] = token
        async with self.session.post(path, data=form, allow_redirects=False) as response:
            return Page(response.status, await response.text(), response.headers)

    async def json(self, path: str) -> tuple[int, Any]:
        async with self.session.get(path, allow_redirects=False) as response:
            body = await response.json() if response.content_type == "application/json" \
                else await response.text()
            return response.status, body

    def cookie(self, name: str = SESSION_COOKIE) -> Any:
        """The cookie as the jar holds it (a Morsel: flags in its keys), or None."""
        for morsel in self.session.cookie_jar:
            if morsel.key == name:
                return morsel
        return None


@dataclass
class DashboardWorld:
    settings: Settings
    db: Database
    clock: FakeClock
    dp: Dispatcher
    server: TestServer
    browsers: list[Browser] = field(default_factory=list)

    @property
    def services(self) -> dict[str, Any]:
        return self.dp.workflow_data

    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def browser(self) -> Browser:
        session = aiohttp.ClientSession(
            base_url=self.base_url(), cookie_jar=aiohttp.CookieJar(unsafe=True)
        )
        browser = Browser(session)
        self.browsers.append(browser)
        return browser

    async def user(self, telegram_id: int = ADMIN, name: str = "Ada") -> UserView:
        """The person behind `telegram_id` as the bot knows them after a first message (an
        admin when in ADMIN_IDS)."""
        return await self.services["users"].ensure(
            telegram_id=telegram_id, display_name=name, client_language="en"
        )

    async def login_link(self, telegram_id: int = ADMIN) -> str:
        """The path of a fresh sign-in link, as /dashboard gives it."""
        user = await self.user(telegram_id)
        token = await self.services["dashboard_access"].issue_login(user.id)
        return f"/admin/login/{token}"

    async def sign_in(self, telegram_id: int = ADMIN) -> Browser:
        """A browser signed in as that admin: link opened, button pressed, cookie kept."""
        browser = self.browser()
        link = await self.login_link(telegram_id)
        assert (await browser.get(link)).status == 200
        signed = await browser.post(link)
        assert signed.status == 303, (signed.status, signed.text[:500])
        overview = await browser.get("/admin/")
        assert overview.status == 200, (overview.status, overview.text[:500])
        return browser


@contextlib.asynccontextmanager
async def dashboard_world(db_url: str, **options: Any) -> AsyncIterator[DashboardWorld]:
    """The web app with the dashboard on `db_url`; `options` are Settings values."""
    values: dict[str, Any] = {"admin_ids": [ADMIN], "health_cache_seconds": 0, **options}
    values.update(bot_token="42:dashboard-test", database_url=db_url)
    settings = ExplicitSettings(**values)
    clock = FakeClock()
    db = Database.from_url(db_url)
    dp, _ = build_dispatcher(settings, db, clock)
    web_app = build_web_app(db, clock=clock)
    setup_dashboard(
        web_app, dp.workflow_data, i18n=build_i18n(settings.default_language),
        timezone=settings.timezone, public_base_url=settings.public_base_url,
        session_hours=settings.dashboard_session_hours,
    )
    server = TestServer(web_app)
    await server.start_server()
    world = DashboardWorld(settings, db, clock, dp, server)
    try:
        yield world
    finally:
        for browser in world.browsers:
            await browser.session.close()
        await server.close()
        await dp.storage.close()
        await db.dispose()
