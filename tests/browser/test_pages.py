"""Every dashboard page, with something on it, as a browser renders it: no console errors (a
script error, a resource missing, a Content-Security-Policy violation), and at phone width no
page wider than the screen (tables scroll inside their own box). A full-page screenshot of each
is saved (the folder is printed at the end of the run)."""

from __future__ import annotations

import re

from tests.browser import world
from tests.browser.harness import PHONE, Browser, DashboardBot

DETAIL = re.compile(r"^/admin/[a-z-]+/\d+$")


async def every_page(browser: Browser, bot: DashboardBot) -> list[str]:
    """The pages a signed-in admin reaches: the nav bar's, the first detail page each list
    links to, and Retry all's confirmation; in the order they were found."""
    await browser.get(bot.url("/admin/"))
    await browser.wait_for_element("header nav")
    found: list[str] = await browser.script(
        "return [...document.querySelectorAll('header nav a')].map(a => a.pathname)")
    assert len(found) == 7, found  # overview, delivery, dead letters, tasks, stuck, errors, jobs
    for page in list(found):
        await browser.get(bot.url(page))
        links: list[str] = await browser.script(
            "return [...document.querySelectorAll('main a[href]')]"
            ".map(a => a.pathname + a.search)")
        details = [link for link in links if DETAIL.match(link)]
        extra = details[:1] + [link for link in links if "/retry-all" in link][:1]
        found += [link for link in extra if link not in found]
    return found


async def _every_page_shown(browser: Browser, bot: DashboardBot) -> list[str]:
    """every_page, once world.populate has put something on each: details included."""
    pages = await every_page(browser, bot)
    shapes = {re.sub(r"/\d+$", "/{id}", page) for page in pages}
    for expected in ("/admin/dead-letters/{id}", "/admin/stuck/{id}", "/admin/errors/{id}"):
        assert expected in shapes, pages
    return pages


async def test_no_page_has_console_errors(browser: Browser, dashboard_bot: DashboardBot) -> None:
    errors: dict[str, list[str]] = {}

    async def visit(name: str, url: str | None = None) -> None:
        if url is not None:
            await browser.get(url)
        await browser.wait_for_element("main")
        await browser.screenshot(name)
        logged = await browser.console_errors()
        if logged:
            errors[name] = logged

    # Before signing in: the explanation, the sign-in page. (A spent link's page answers 410,
    # which the browser logs as a failed load: test_access.py covers it.)
    await world.populate(dashboard_bot)
    await visit("signin", dashboard_bot.url("/admin/"))
    link = await dashboard_bot.login_link(world.ADMIN)
    await visit("login", link)
    await browser.click("#sign-in")
    await browser.wait_for_text("System status", "h1")
    await visit("overview-first")

    pages = await _every_page_shown(browser, dashboard_bot)
    await browser.console()  # what every_page's quick pass logged is seen again below
    # (The overview's refreshes are checked by test_overview.py.)
    for page in pages:
        await visit(page, dashboard_bot.url(page))
        if page == "/admin/delivery":
            # The charts are drawn (uPlot), not only their boxes.
            await browser.wait_for_element('figure[data-chart][data-drawn="true"] canvas')
    assert errors == {}


async def test_every_page_fits_a_phone_screen(
    browser: Browser, dashboard_bot: DashboardBot
) -> None:
    await world.populate(dashboard_bot)
    await dashboard_bot.sign_in(browser)
    pages = await _every_page_shown(browser, dashboard_bot)
    await browser.resize(*PHONE)
    too_wide: dict[str, object] = {}
    for page in ["/admin/signin", *pages]:
        await browser.get(dashboard_bot.url(page))
        await browser.wait_for_element("main")
        await browser.screenshot(f"phone-{page}")
        width = await browser.overflow()
        if width["body"] > width["window"] or width["document"] > width["window"]:
            too_wide[page] = width
        # A table wider than the screen scrolls inside its own box, not the page (a chart's
        # legend, uPlot's, is not one of them).
        loose = await browser.script(
            "return [...document.querySelectorAll('main table:not(.u-legend)')].filter(t => {"
            "  for (let e = t.parentElement; e && e !== document.body; e = e.parentElement) {"
            "    const x = getComputedStyle(e).overflowX;"
            "    if ((x === 'auto' || x === 'scroll') && e.clientWidth <= window.innerWidth)"
            "      return false;"
            "  }"
            "  return true;"
            "}).map(t => t.id || t.outerHTML.slice(0, 80))")
        if loose:
            too_wide[f"{page} tables"] = loose
    assert too_wide == {}
