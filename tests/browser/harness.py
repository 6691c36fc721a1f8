"""The dashboard in a real browser: the bot served in the test's own event loop, Debian's
headless Chromium driving it through Selenium.

The bot is the production one, brought up by `bot.app.start` as `python main.py run` does
(the web app of bot/web.py with the dashboard, on a real TCP port of 127.0.0.1, the delivery
engine, the scheduler), on a real database, talking real HTTP to the fake Bot API. It takes no
updates by polling: a test feeds each one to the production Dispatcher (`dp.feed_update`, as in
tests/conversations/harness.py), and notifications leave when a test asks the real delivery
dispatcher for a round (`deliver`), so what the page shows follows what the test did.

The scheduler runs as in production (its interval jobs once, two seconds after start): tests
assert on what their own actions change, never on a page that a job could change meanwhile.

Selenium's calls block, so every one goes through `asyncio.to_thread` (`Browser`): the event loop
keeps serving the pages the browser asks for while a call waits. Waits poll the page for what
the admin would look for, with generous timeouts; a fixed sleep is never an assertion.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aiogram import Dispatcher
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from bot.app import Application, shutdown, start
from database.engine import Database
from tests.conversations.harness import Conversation, ExplicitSettings, Replies
from tests.e2e.entry import routers_for_tests
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_COMMAND = "apt-get install -y --no-install-recommends chromium chromium-driver"
CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--no-first-run",
)
DESKTOP = (1280, 900)
PHONE = (390, 844)
# The admin of every test: the demo's admin in tests/conversations/test_requests.py.
ADMIN = 9001
WAIT = 30.0  # seconds: generous, for a loaded 2-core machine; a pass never waits this long

T = TypeVar("T")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return None
    return (f"Debian's chromium and chromium-driver packages are needed ({', '.join(missing)} "
            f"missing): {APT_COMMAND}")


def start_chrome(profile: Path) -> WebDriver:
    """Headless Chromium with a fresh profile; the browser's console is kept for get_log."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    return webdriver.Chrome(options=options, service=service)


def output_dir() -> Path:
    """This run's screenshots: TEST_OUTPUT_DIR/browser, or test-output/browser in the checkout."""
    base = os.environ.get("TEST_OUTPUT_DIR")
    return (Path(base) if base else ROOT / "test-output") / "browser"


def fresh_output_dir() -> Path:
    """The screenshots folder, emptied of a previous run's pictures."""
    folder = output_dir()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


# ---------------------------------------------------------------------------------- the bot


class MovableClock:
    """The real time, plus however far a test moved it forward: pages, sessions and the pacing
    of sends see time pass as usual, and a test can still make a workflow 25 hours old."""

    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def monotonic(self) -> float:
        return time.monotonic() + self._offset.total_seconds()

    def advance(self, seconds: float = 0.0, **delta: float) -> None:
        self._offset += timedelta(seconds=seconds, **delta)


LINK = re.compile(r"https?://[^\s\"'<>]+/admin/login/[A-Za-z0-9_\-.~%]+")


def login_links(replies: Replies) -> list[str]:
    """Dashboard login links in what the bot sent: in a message's text, its entities or its
    buttons."""
    found: list[str] = []
    for call in replies:
        text = " ".join(str(value) for value in call.params.values())
        if isinstance(call.result, dict):
            text += " " + repr(call.result)
        found += LINK.findall(text)
    return list(dict.fromkeys(found))


class AppConversation(Conversation):
    """A conversation with the running app's Dispatcher, whose notifications leave through the
    app's own delivery dispatcher (all channels, as configured), not a test-built one."""

    delivery_dispatcher: Any = None

    async def deliver(self) -> Replies:
        seen = len(self.fake.calls)
        while await self.delivery_dispatcher.run_once():
            pass
        return Replies(self.fake.calls[seen:])


@dataclass(eq=False)
class DashboardBot:
    """The running bot: its web app on a real port, its Dispatcher fed by the test."""

    app: Application
    fake: FakeTelegram
    clock: MovableClock
    chat: AppConversation  # send / press / feed / deliver, as in the conversation tests
    base_url: str
    _closed: bool = field(default=False, repr=False)

    @property
    def db(self) -> Database:
        return self.app.db

    @property
    def dp(self) -> Dispatcher:
        return self.app.dispatcher

    def url(self, path: str) -> str:
        return self.base_url + path

    async def send(self, user_id: int, text: str, **kwargs: Any) -> Replies:
        return await self.chat.send(user_id, text, **kwargs)

    async def deliver(self) -> Replies:
        """Rounds of the bot's own delivery dispatcher (the one `python main.py run` starts)
        until nothing is due; returns the Bot API calls they made."""
        return await self.chat.deliver()

    async def login_link(self, admin_id: int, first_name: str = "Ada") -> str:
        """The one-time link the bot answers /dashboard with, read from its sendMessage."""
        replies = await self.send(admin_id, "/dashboard", first_name=first_name)
        links = login_links(replies)
        assert len(links) == 1, f"no single login link in {replies.summary()}: {links}"
        return links[0]

    async def sign_in(self, browser: Browser, admin_id: int = ADMIN) -> str:
        """The admin asks the bot for a link, opens it and clicks Sign in: the overview.
        Returns the link (spent)."""
        link = await self.login_link(admin_id)
        await browser.get(link)
        await browser.click("#sign-in")
        await browser.wait_for_text("System status", "h1")
        return link

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await shutdown(self.app, None)


async def start_dashboard_bot(
    fake: FakeTelegram, database_url: str, **options: Any
) -> DashboardBot:
    """`python main.py run` in this event loop, without polling: web server on a free port of
    127.0.0.1, the delivery dispatcher's workers off (a test runs its rounds)."""
    clock = MovableClock()
    values: dict[str, Any] = {
        "throttle_rate": 1000, "telegram_rate_per_second": 1000,
        "telegram_per_chat_per_second": 1000, "send_retry_wait_seconds": 0,
        **options,
    }
    values.update(
        bot_token=TEST_TOKEN, telegram_api_base=fake.base_url, database_url=database_url,
        web_host="127.0.0.1", web_port=0, dispatcher_enabled=False,
    )
    settings = ExplicitSettings(**values)
    app = await start(settings, clock=clock, extra_routers=routers_for_tests())
    chat = AppConversation(fake, settings, clock, app.db, app.bot, app.dispatcher)  # type: ignore[arg-type]
    chat.delivery_dispatcher = app.delivery.dispatcher  # type: ignore[union-attr]
    return DashboardBot(app, fake, clock, chat, app.public_base_url)


# ---------------------------------------------------------------------------------- the browser


class Browser:
    """A Selenium driver whose blocking calls run in a thread, so the bot's web server, in this
    event loop, answers the page meanwhile. Screenshots go to `folder`."""

    def __init__(self, driver: WebDriver, folder: Path) -> None:
        self.driver = driver
        self.folder = folder
        self._shots = 0

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # navigation and reading
    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def current_url(self) -> str:
        return await self.call(lambda: self.driver.current_url)

    async def text(self, css: str = "body") -> str:
        return await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text)

    async def find(self, css: str) -> WebElement:
        return await self.call(self.driver.find_element, By.CSS_SELECTOR, css)

    async def find_all(self, css: str) -> list[WebElement]:
        return await self.call(self.driver.find_elements, By.CSS_SELECTOR, css)

    async def script(self, source: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, source, *args)

    async def status_of(self, path_or_url: str) -> int:
        """The HTTP status of a GET from the page (its cookies sent), without following
        redirects."""
        return int(await self.script(
            "return fetch(arguments[0], {redirect: 'manual', credentials: 'same-origin'})"
            ".then(r => r.type === 'opaqueredirect' ? 302 : r.status)",
            path_or_url,
        ))

    # acting
    async def click(self, css: str | None = None, *, text: str | None = None) -> None:
        """Click the element `css` matches, or the button or link showing `text`."""
        element = await self._element(css, text)
        await self.call(element.click)

    async def _element(self, css: str | None, text: str | None) -> WebElement:
        if text is None:
            assert css is not None
            return await self.wait_for_element(css)

        def find() -> WebElement | None:
            for candidate in self.driver.find_elements(
                By.CSS_SELECTOR, css or "button, a, input[type=submit]"
            ):
                shown = candidate.text or candidate.get_attribute("value") or ""
                if shown.strip() == text and candidate.is_displayed():
                    return candidate
            return None

        return await self.wait(lambda: find(), f"a button or link {text!r}")

    async def fill(self, css: str, value: str) -> None:
        element = await self.wait_for_element(css)
        await self.call(element.clear)
        await self.call(element.send_keys, value)

    async def select(self, css: str, visible_text: str) -> None:
        from selenium.webdriver.support.select import Select

        element = await self.wait_for_element(css)
        await self.call(lambda: Select(element).select_by_visible_text(visible_text))

    # waiting
    async def wait(self, condition: Callable[[], T], what: str, timeout: float = WAIT) -> T:
        """Poll `condition` (run in the driver's thread) until it returns something truthy."""

        def until() -> T:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(
                lambda _driver: condition()
            )

        try:
            return await self.call(until)
        except TimeoutException:
            body = await self.text() if await self._has_body() else ""
            raise AssertionError(
                f"waited {timeout:.0f} s for {what}; the page ({self.driver.current_url}) "
                f"shows:\n{body[:2000]}"
            ) from None

    async def _has_body(self) -> bool:
        try:
            return bool(await self.find_all("body"))
        except WebDriverException:
            return False

    async def wait_for_element(self, css: str, timeout: float = WAIT) -> WebElement:
        def visible() -> WebElement | None:
            found = [e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
            return found[0] if found else None

        return await self.wait(visible, f"an element {css!r}", timeout)

    async def wait_for_text(self, text: str, css: str = "body", timeout: float = WAIT) -> str:
        """Wait until the element `css` shows `text`; returns what it shows."""

        def shown() -> str | None:
            try:
                seen = self.driver.find_element(By.CSS_SELECTOR, css).text
            except WebDriverException:
                return None
            return seen if text in seen else None

        return await self.wait(shown, f"{text!r} in {css!r}", timeout)

    async def wait_for_change(self, css: str, before: str, timeout: float = WAIT) -> str:
        """Wait until the element `css` shows something else than `before` (no reload asked)."""

        def changed() -> str | None:
            try:
                seen = self.driver.find_element(By.CSS_SELECTOR, css).text
            except WebDriverException:
                return None
            return seen if seen != before else None

        return await self.wait(changed, f"{css!r} to change from {before!r}", timeout)

    # the browser's console and window
    async def console(self) -> list[dict[str, Any]]:
        """The browser's console entries since the last read (reading empties it)."""
        return await self.call(self.driver.get_log, "browser")

    async def console_errors(self) -> list[str]:
        return [entry["message"] for entry in await self.console()
                if entry.get("level") == "SEVERE"]

    async def resize(self, width: int, height: int) -> None:
        await self.call(self.driver.set_window_size, width, height)

    async def overflow(self) -> dict[str, int]:
        """How wide the body is against the window: scrollWidth <= innerWidth is no overflow."""
        return await self.script(
            "return {body: document.body.scrollWidth, document: "
            "document.documentElement.scrollWidth, window: window.innerWidth}"
        )

    # pictures
    async def screenshot(self, name: str) -> Path:
        """The whole page (not only the window) as a PNG under this test's folder."""
        self._shots += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
        path = self.folder / f"{self._shots:02d}-{safe}.png"
        await self.call(self._full_page_png, path)
        return path

    def _full_page_png(self, path: Path) -> None:
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        # Captured beyond the window, the page has no scrollbar: it is laid out over the whole
        # window's width, wider than the content measured beside a scrollbar.
        window = int(self.driver.execute_script("return window.innerWidth"))
        width = max(int(size["width"]), window, 1)
        height = max(int(size["height"]), 1)
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        })
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def save_failure(self, name: str) -> Path | None:
        """After a failed test (synchronously, in teardown): what the browser showed."""
        try:
            path = self.folder / f"FAILED-{name}.png"
            self._full_page_png(path)
            return path
        except WebDriverException:
            return None
