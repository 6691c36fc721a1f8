"""Who gets into the dashboard, as the browser shows it: an admin through the one-time link the
bot gives them, and nobody else; a spent link and a form without its CSRF token refused."""

from __future__ import annotations

from tests.browser import world
from tests.browser.harness import ADMIN, Browser, DashboardBot, login_links
from tests.browser.world import NON_ADMIN


async def test_an_admin_signs_in_through_the_link_the_bot_sent(
    browser: Browser, dashboard_bot: DashboardBot
) -> None:
    replies = await dashboard_bot.send(ADMIN, "/dashboard", first_name="Ada")
    [sent] = replies.of("sendMessage")
    assert sent.params["chat_id"] == ADMIN
    assert "It works once, within 10 minutes" in sent.params["text"]
    [link] = login_links(replies)

    # Opening the link (what a link preview would do too) only shows the button.
    await browser.get(link)
    await browser.wait_for_text("Sign in to the dashboard", "h1")
    await browser.screenshot("login")
    await browser.get(link)
    await browser.wait_for_element("#sign-in")

    await browser.click("#sign-in")
    await browser.wait_for_text("System status", "h1")
    assert await browser.current_url() == dashboard_bot.url("/admin/")
    assert "Signed in as Ada" in await browser.text("footer")
    assert "Overview" in await browser.text("header nav")
    await browser.screenshot("overview")


async def test_a_second_use_of_the_same_link_is_refused(
    browser: Browser, dashboard_bot: DashboardBot
) -> None:
    link = await dashboard_bot.sign_in(browser)
    await browser.call(browser.driver.delete_all_cookies)  # someone else, with the same link

    await browser.get(link)
    shown = await browser.wait_for_text("This sign-in link is not valid", "h1")
    assert "It was used already" in await browser.text("#refusal")
    assert not await browser.find_all("#sign-in")
    await browser.screenshot("link-used")

    # Nothing was granted: the dashboard still sends this browser to the sign-in explanation.
    await browser.get(dashboard_bot.url("/admin/"))
    await browser.wait_for_text("send /dashboard to the bot")
    assert (await browser.current_url()).startswith(dashboard_bot.url("/admin/signin")), shown


async def test_a_link_refused_between_opening_and_clicking_says_so(
    browser: Browser, dashboard_bot: DashboardBot
) -> None:
    """Two tabs on one link: the second click finds it spent, and gets no session."""
    link = await dashboard_bot.login_link(ADMIN)
    await browser.get(link)
    await browser.wait_for_element("#sign-in")
    # The same link signs in elsewhere first (a POST from the page, as the button sends).
    status = await browser.script(
        "return fetch(arguments[0], {method: 'POST', credentials: 'omit'}).then(r => r.status)",
        link,
    )
    assert status in (200, 303)  # signed in over there (fetch follows the redirect)

    await browser.click("#sign-in")
    await browser.wait_for_text("This sign-in link is not valid", "h1")
    assert "It was used already" in await browser.text("#refusal")
    await browser.get(dashboard_bot.url("/admin/jobs"))
    await browser.wait_for_text("Sign in to the dashboard", "h1")


async def test_a_non_admin_gets_no_link(browser: Browser, dashboard_bot: DashboardBot) -> None:
    replies = await dashboard_bot.send(NON_ADMIN, "/dashboard", first_name="Ann")
    assert replies.texts, replies.summary()
    assert all("/admin/login/" not in text for text in replies.texts)
    assert "admin" in " ".join(replies.texts).lower(), replies.texts
    assert not [call for call in dashboard_bot.fake.calls
                if "/admin/login/" in repr(call.params) + repr(call.result)]

    # Without a link, the dashboard only explains how to get one.
    await browser.get(dashboard_bot.url("/admin/"))
    await browser.wait_for_text("send /dashboard to the bot")
    assert (await browser.current_url()).startswith(dashboard_bot.url("/admin/signin"))
    await browser.screenshot("signin")


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    browser: Browser, dashboard_bot: DashboardBot
) -> None:
    """A dead letter's Retry form with its csrf field removed, then a fetch() from the page
    without one: both refused, the letter still dead. The untouched form works."""
    [dead] = await world.dead_letters(dashboard_bot, "test.greeting")
    await dashboard_bot.sign_in(browser)
    page = dashboard_bot.url(f"/admin/dead-letters/{dead}")
    await browser.get(page)
    await browser.fill("#retry-reason-text", "Ann unblocked the bot")
    await browser.script("document.querySelector('#retry-form input[name=csrf]').remove()")
    await browser.click("#retry")
    await browser.wait_for_text("Refused", "h1")
    assert "nothing was done" in await browser.text("#refusal")
    await browser.screenshot("csrf-refused")

    status = await browser.script(
        "const body = new URLSearchParams({reason_text: 'from a script'});"
        "return fetch(arguments[0], {method: 'POST', body: body, credentials: 'same-origin',"
        " redirect: 'manual'}).then(r => r.status)",
        f"/admin/dead-letters/{dead}/retry",
    )
    assert status == 403

    await browser.get(page)
    assert await browser.wait_for_text("failed", "#letter-status") == "failed"  # nothing changed
    assert await world.status(dashboard_bot, dead) == "failed"

    # The untouched form is taken: the refusals were the missing token's doing.
    await browser.fill("#retry-reason-text", "Ann unblocked the bot")
    await browser.click("#retry")
    await browser.wait_for_text("Sent again", "#notice")
    assert await browser.text("#letter-status") == "pending"
