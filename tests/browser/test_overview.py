"""The overview keeps itself current: notifications dispatched while an admin watches show up
within its 10-second refresh, without the page being reloaded."""

from __future__ import annotations

from tests.browser import world
from tests.browser.harness import Browser, DashboardBot

MARK = "window.__same_page"


async def test_the_overview_changes_by_itself_after_notifications_are_dispatched(
    browser: Browser, dashboard_bot: DashboardBot
) -> None:
    await dashboard_bot.sign_in(browser)
    await browser.console()  # the loads so far: test_pages.py checks them
    assert await browser.text("#dead-letters-24h") == "0"
    assert "live, every 10 s" in await browser.text("#live")
    due = await browser.text("#outbox-due")
    await browser.screenshot("overview-before")
    await browser.script(f"{MARK} = true")  # gone if the page were reloaded

    # Two notifications Telegram refuses, dispatched by the bot: two dead letters; and one
    # nobody dispatched yet, waiting in the outbox.
    await world.dead_letters(dashboard_bot, "test.greeting", "test.reminder")
    await world.queued(dashboard_bot, "test.later")

    assert await browser.wait_for_text("2", "#dead-letters-24h", timeout=60) == "2"
    assert int(await browser.wait_for_change("#outbox-due", due, timeout=60)) == int(due) + 1
    assert await browser.script(f"return {MARK} === true"), "the page was reloaded"
    assert "live, every 10 s" in await browser.text("#live")
    await browser.screenshot("overview-after")

    # Its refreshes raised nothing in the browser (the first load's log was read above).
    assert await browser.console_errors() == []
