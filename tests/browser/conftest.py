"""Browser tests: the dashboard as an admin sees it, in Debian's headless Chromium (harness.py).

Every test here is marked `browser` and `process` (it starts Chromium and chromedriver), so
`pytest -m "not process"` keeps the fast tier and `pytest -m browser` runs this tier alone.
Without /usr/bin/chromium or /usr/bin/chromedriver they skip, saying which package to install.

One browser serves the whole session (starting one costs about a second); each test gets it
back with no cookies, the desktop window size and an empty console, and a bot of its own on a
fresh database and port. Every page a test visits is saved as a full-page PNG under
test-output/browser/ (TEST_OUTPUT_DIR/browser when set), one folder per test; the folder is
printed at the end of the run.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser.harness import (
    ADMIN,
    DESKTOP,
    Browser,
    DashboardBot,
    fresh_output_dir,
    missing_browser,
    output_dir,
    start_chrome,
    start_dashboard_bot,
)
from tests.fakes.telegram import FakeTelegram

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.process)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, so the browser fixture knows a test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


_screenshots: dict[str, Path] = {}


@pytest.fixture(scope="session")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the session, on a fresh profile."""
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    _screenshots["folder"] = fresh_output_dir()
    driver = start_chrome(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chrome: WebDriver, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """The session's browser as a new visitor: no cookies, desktop size, console read empty."""
    name = re.sub(r"[^A-Za-z0-9_.\[\]-]+", "-", request.node.name)
    folder = output_dir() / name
    chrome.delete_all_cookies()
    chrome.set_window_size(*DESKTOP)
    chrome.get("about:blank")
    chrome.get_log("browser")
    browser = Browser(chrome, folder)
    yield browser
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        browser.save_failure("at-the-end")
    chrome.get("about:blank")  # nothing of this test's pages keeps running into the next


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def dashboard_bot(fake_telegram: FakeTelegram, db_url: str) -> AsyncIterator[DashboardBot]:
    """`python main.py run` in this test's event loop, on its database (each engine), with
    ADMIN an admin; its web app on a free port of 127.0.0.1."""
    bot = await start_dashboard_bot(fake_telegram, db_url, admin_ids=[ADMIN])
    try:
        yield bot
    finally:
        await bot.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    folder = _screenshots.get("folder")
    if folder is not None and any(folder.rglob("*.png")):
        terminalreporter.write_line(f"browser screenshots: {folder}")
