"""The dashboard's actions as an admin clicks them, and what the page shows afterwards: a dead
letter retried and delivered, a stuck workflow forced on with a reason."""

from __future__ import annotations

from sqlalchemy import select

from database.models import TransactionLog
from tests.browser import world
from tests.browser.harness import Browser, DashboardBot
from tests.conversations.test_requests import ANN, PAUL


async def _audit(bot: DashboardBot, operation: str) -> list[tuple[int | None, str | None]]:
    async with bot.db.transaction() as session:
        rows = await session.execute(select(TransactionLog.actor_id, TransactionLog.detail)
                                     .where(TransactionLog.operation == operation))
        return [tuple(row) for row in rows]


async def test_a_dead_letter_retried_from_the_page_becomes_sent(
    browser: Browser, dashboard_bot: DashboardBot
) -> None:
    dead, other = await world.dead_letters(dashboard_bot, "test.greeting", "test.reminder")
    await dashboard_bot.sign_in(browser)
    await browser.click(text="Dead letters")
    await browser.wait_for_text("2 dead letter(s)", "#dead-count")
    await browser.screenshot("dead-letters")

    await browser.click(f'#dead-letters a[href="/admin/dead-letters/{dead}"]')
    await browser.wait_for_text(f"Notification #{dead}", "h1")
    assert await browser.text("#letter-status") == "failed"
    assert "telegram" in await browser.text("#attempts")
    await browser.screenshot("dead-letter")

    await browser.fill("#retry-reason-text", "Ann unblocked the bot")
    await browser.click("#retry")
    notice = await browser.wait_for_element("#notice")
    await browser.screenshot("dead-letter-retried")
    assert "Sent again" in await browser.call(lambda: notice.text)
    assert await browser.text("#letter-status") == "pending"

    # The bot's dispatcher sends it; Telegram (the fake) takes it this time.
    delivered = await dashboard_bot.deliver()
    assert [m["text"] for m in delivered.messages if m["chat"]["id"] == ANN] == [
        "Hello Ann, message 0"]
    await browser.get(dashboard_bot.url(f"/admin/dead-letters/{dead}"))
    assert await browser.wait_for_text("sent", "#letter-status") == "sent"
    assert "No longer a dead letter (now sent)" in await browser.text("#not-dead")
    assert not await browser.find_all("#retry")
    await browser.screenshot("dead-letter-sent")

    # The other one is still listed, alone; the retry is in the audit trail, by the admin.
    await browser.get(dashboard_bot.url("/admin/dead-letters"))
    await browser.wait_for_text("1 dead letter(s)", "#dead-count")
    assert await browser.find_all(f'#dead-letters tr[data-id="{other}"]')
    admin = await world.user_id(dashboard_bot, world.ADMIN)
    assert await _audit(dashboard_bot, "notification.retry") == [(admin, "Ann unblocked the bot")]


async def test_a_stuck_workflow_forced_on_with_a_reason_shows_its_new_state(
    browser: Browser, dashboard_bot: DashboardBot
) -> None:
    request_id = await world.stuck_request(dashboard_bot)  # assigned for 25 h
    await dashboard_bot.sign_in(browser)
    assert await browser.text("#stuck") == "1"  # the overview counts it
    await browser.click(text="Stuck workflows")
    await browser.wait_for_text("Stuck workflows: 1", "#stuck-count")
    assert "assigned" in await browser.text(f'#stuck tr[data-id="{request_id}"]')
    await browser.screenshot("stuck")

    await browser.click(f'#stuck a[href="/admin/stuck/{request_id}"]')
    await browser.wait_for_text(f"Request #{request_id}", "h1")
    assert await browser.text("#request-state") == "assigned"
    assert "Paul Provider" in await browser.text("#request-assignee")
    assert "accept" in await browser.text("#history")
    await browser.screenshot("stuck-request")

    await browser.fill("#force-reason-text", "The provider cannot be reached")
    await browser.click("#force")
    await browser.wait_for_element("#notice")
    assert await browser.wait_for_text("in_progress", "#request-state") == "in_progress"
    log = await browser.text("#recovery-log")
    assert "force_next" in log and "The provider cannot be reached" in log
    assert "The provider cannot be reached" in await browser.text("#history")
    await browser.screenshot("stuck-request-forced")
    assert await world.request_state(dashboard_bot, request_id) == world.State.IN_PROGRESS

    # Both parties are told, as when the menu forces it.
    delivered = await dashboard_bot.deliver()
    told = {m["chat"]["id"] for m in delivered.messages}
    assert {ANN, PAUL} <= told, delivered.texts

    # No longer stuck: the list says so.
    await browser.click(text="Stuck workflows")
    await browser.wait_for_text("No stuck workflow", "#stuck-count")
