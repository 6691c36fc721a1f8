"""What the dashboard has to show, made the way production makes it: people talking to the bot
over the fake Telegram, notifications that Telegram refuses, a request left stuck."""

from __future__ import annotations

from sqlalchemy import select

from database.models import Notification, User
from services.demo import Demo
from services.notifications import outbox
from services.workflow import State
from tests.browser.harness import ADMIN, DashboardBot
from tests.conversations.test_requests import ANN, PEOPLE, _assigned, _requests

NON_ADMIN = ANN


async def user_id(bot: DashboardBot, telegram_id: int) -> int:
    async with bot.db.transaction() as session:
        return int(await session.scalar(select(User.id).where(User.telegram_id == telegram_id)))


async def dead_letters(bot: DashboardBot, *kinds: str, text: str = "Hello Ann") -> list[int]:
    """Notifications to Ann that Telegram refuses (she blocked the bot) and that may not fall
    back: the bot's dispatcher makes each a dead letter. Ann unblocks the bot afterwards."""
    await bot.send(ANN, "/start", first_name="Ann")
    ann = await user_id(bot, ANN)
    bot.fake.block_user(ANN)
    ids = []
    for index, kind in enumerate(kinds):
        async with bot.db.transaction() as session:
            queued = await outbox.enqueue(
                session, recipient_id=ann, kind=kind,
                idempotency_key=f"browser:{kind}:{index}:{bot.clock.now().timestamp()}",
                now=bot.clock.now(), text=f"{text}, message {index}",
                channels=["telegram"], allow_fallback=False, manual=False,
            )
            ids.append(queued.id)
    await bot.deliver()
    bot.fake.unblock_user(ANN)
    statuses = [await status(bot, notification) for notification in ids]
    assert statuses == ["failed"] * len(ids), statuses
    return ids


async def status(bot: DashboardBot, notification_id: int) -> str:
    async with bot.db.transaction() as session:
        return str(await session.scalar(
            select(Notification.status).where(Notification.id == notification_id)))


async def seed_people(bot: DashboardBot) -> None:
    """The demo catalogue, providers and people (services/demo.py), ADMIN an admin."""
    await Demo(bot.db, bot.clock).seed(admin_ids=[ADMIN], default_language="en")
    for person, (name, language) in PEOPLE.items():
        bot.chat.known_user(person, name, language)


async def stuck_request(bot: DashboardBot) -> int:
    """A request of Ann's that Paul accepted a day and an hour ago and never started: stuck
    (ASSIGNED counts as stuck after 24 h). Returns its id."""
    await seed_people(bot)
    request_id, _job = await _assigned(bot.chat)
    await bot.deliver()
    bot.clock.advance(hours=25)
    return request_id


async def request_state(bot: DashboardBot, request_id: int) -> State:
    return (await _requests(bot.chat).get(request_id)).state


async def manual_task(bot: DashboardBot, text: str = "Call Ann about her boiler") -> None:
    """A notification only a person can deliver: the bot's manual channel opens a task."""
    await bot.send(ANN, "/start", first_name="Ann")
    ann = await user_id(bot, ANN)
    async with bot.db.transaction() as session:
        await outbox.enqueue(
            session, recipient_id=ann, kind="test.call_back",
            idempotency_key=f"browser:manual:{bot.clock.now().timestamp()}",
            now=bot.clock.now(), text=text, channels=["manual"],
        )
    await bot.deliver()


async def error(bot: DashboardBot) -> str:
    """Ann's message fails in a handler (the test-only /fail); returns the support code the bot
    gave her."""
    replies = await bot.send(ANN, "/fail system", first_name="Ann")
    [text] = replies.texts
    return text


async def populate(bot: DashboardBot) -> dict[str, int]:
    """Something on every page: a stuck request, two dead letters, a manual task, an error.
    Returns the ids a detail page is opened with."""
    request_id = await stuck_request(bot)
    dead, _other = await dead_letters(bot, "test.greeting", "test.reminder")
    await manual_task(bot)
    await error(bot)
    return {"request": request_id, "dead_letter": dead}


async def queued(bot: DashboardBot, kind: str) -> int:
    """A notification to Ann, waiting in the outbox (nobody dispatched it yet)."""
    await bot.send(ANN, "/start", first_name="Ann")
    ann = await user_id(bot, ANN)
    async with bot.db.transaction() as session:
        queued = await outbox.enqueue(
            session, recipient_id=ann, kind=kind,
            idempotency_key=f"browser:{kind}:{bot.clock.now().timestamp()}",
            now=bot.clock.now(), text="See you tomorrow", channels=["telegram"],
        )
    return queued.id
