"""Conversations in-process: the production Dispatcher, fed one update at a time.

`build_dispatcher` gives the same middlewares and routers as `python main.py run` (plus the
test-only /slow and /boom handlers), on a real database; the Bot is the production one
(`build_bot`) talking real HTTP to the fake Bot API served in the test's own event loop, so the
fake's wire-format checks apply to every call. An update is built by the fake exactly as
getUpdates would hand it out, then fed with `dp.feed_update`; everything the bot calls because
of it has been answered when `send`/`press` return::

    chat = await conversation()
    replies = await chat.send(ANN, "/start")
    welcome = replies.message("choose your language")
    answer = (await chat.press(ANN, "lang:fr", message_id=welcome["message_id"])).answer

A Bot API call the fake refused (400, 403...) fails the test, unless the test says it expects
one (`allow_errors=True`): a refused answer is something the user would not see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.types import Update
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from bot.app import build_bot, build_dispatcher
from bot.config import Settings
from database.engine import Database
from handlers.buttons import pack_action
from services.alerts import Alerts
from services.clock import FakeClock
from services.notifications.channels.telegram import TelegramChannel
from services.notifications.dispatcher import Dispatcher as NotificationDispatcher
from services.notifications.dispatcher import DispatcherConfig
from tests.e2e.entry import routers_for_tests
from tests.fakes.telegram import TEST_TOKEN, Call, FakeTelegram

TEXT_METHODS = ("sendmessage", "editmessagetext")


class ExplicitSettings(Settings):
    """Settings from the given values and the defaults only: no environment, no `.env`, so a
    variable set in the shell (REDIS_URL, ADMIN_IDS...) cannot change what a test runs."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def markup(params_or_message: dict[str, Any]) -> dict[str, Any]:
    """reply_markup of a call's parameters or of a message, decoded."""
    value = params_or_message.get("reply_markup") or {}
    return json.loads(value) if isinstance(value, str) else value


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Inline buttons of a message: text -> callback data, in order."""
    return {
        button["text"]: button["callback_data"]
        for row in markup(message).get("inline_keyboard", [])
        for button in row
    }


class Replies(list[Call]):
    """The Bot API calls one update caused, in order, as the fake answered them."""

    def of(self, method: str) -> list[Call]:
        return [c for c in self if c.method.lower() == method.lower()]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Messages sent or edited, as Telegram answered them (text, buttons, ids)."""
        return [
            c.result for c in self
            if c.status == 200 and c.method.lower() in TEXT_METHODS and isinstance(c.result, dict)
        ]

    @property
    def texts(self) -> list[str]:
        return [m.get("text", "") for m in self.messages]

    def message(self, substring: str) -> dict[str, Any]:
        """The one message sent or edited whose text contains substring."""
        found = [m for m in self.messages if substring in m.get("text", "")]
        assert len(found) == 1, f"{len(found)} messages contain {substring!r}: {self.texts}"
        return found[0]

    @property
    def answer(self) -> dict[str, Any]:
        """The parameters of the one answerCallbackQuery (text, show_alert)."""
        answers = self.of("answerCallbackQuery")
        assert len(answers) == 1, f"{len(answers)} callback answers in {self.summary()}"
        return answers[0].params

    def summary(self) -> list[str]:
        return [f"{c.method}->{c.status} {c.params.get('text', '')[:60]!r}" for c in self]


@dataclass(eq=False)
class Conversation:
    """One running bot (a Dispatcher and its Bot) on a database, and the fake Telegram."""

    fake: FakeTelegram
    settings: Settings
    clock: FakeClock
    db: Database
    bot: Bot
    dp: Dispatcher
    options: dict[str, Any] = field(default_factory=dict)  # what start_conversation was given
    running: list[Conversation] = field(default_factory=list, repr=False)  # closed at teardown
    _closed: bool = field(default=False, repr=False)

    async def restart(self, **changes: Any) -> Conversation:
        """Stop this bot and start another on the same database, as a restarted process would:
        the in-memory FSM state and caches are gone, the database stays."""
        await self.close()
        return await start_conversation(
            self.fake, self.settings.database_url, clock=self.clock,
            running=self.running, **{**self.options, **changes},
        )

    async def send(
        self,
        user_id: int,
        text: str = "",
        *,
        language_code: str = "en",
        first_name: str = "User",
        contact: dict[str, Any] | None = None,
        chat_id: int | None = None,
        allow_errors: bool = False,
    ) -> Replies:
        """The user writes `text` (or shares `contact`); returns what the bot did about it."""
        update = self.fake.message_update(
            user_id, text, chat_id=chat_id, first_name=first_name,
            language_code=language_code, contact=contact,
        )
        return await self.feed(update, allow_errors=allow_errors)

    def known_user(self, user_id: int, first_name: str, language_code: str = "en") -> None:
        """Tell the fake who `user_id` is, so a button they press before writing anything
        carries their name and language (as Telegram's would)."""
        self.fake._users[user_id] = {"id": user_id, "is_bot": False, "first_name": first_name,
                                     "language_code": language_code}

    async def send_photo(
        self,
        user_id: int,
        file_id: str,
        *,
        caption: str = "",
        language_code: str = "en",
        first_name: str = "User",
    ) -> Replies:
        """The user sends a photo (by the file id Telegram gave it), with an optional caption."""
        user = {"id": user_id, "is_bot": False, "first_name": first_name,
                "language_code": language_code}
        self.fake._users[user_id] = user
        content: dict[str, Any] = {
            "photo": [{"file_id": file_id, "file_unique_id": file_id[-16:], "width": 90,
                       "height": 90}],
        }
        if caption:
            content["caption"] = caption
        stored = self.fake._store_message(user_id, user, content)
        return await self.feed(self.fake._register({"message": stored}))

    async def deliver(self) -> Replies:
        """Send what the services enqueued (the outbox), as the running bot's dispatcher would,
        through the Telegram channel to the fake; returns the Bot API calls it made."""
        seen = len(self.fake.calls)
        dispatcher = NotificationDispatcher(
            self.db, {"telegram": TelegramChannel(self.bot, pack_action=pack_action)},
            self.clock, Alerts(admin_telegram_ids=self.settings.admin_ids,
                               window=timedelta(hours=1)),
            DispatcherConfig(send_retry_wait=0, workers=1, batch_size=100),
            owner="conversation-test",
        )
        while await dispatcher.run_once():
            pass
        return Replies(self.fake.calls[seen:])

    async def press(
        self,
        user_id: int,
        data: str,
        *,
        message_id: int,
        chat_id: int | None = None,
        language_code: str | None = None,
        allow_errors: bool = False,
    ) -> Replies:
        """The user presses a button carrying `data` on message `message_id` (drawn by the bot,
        or not: callback data can be forged and buttons forwarded)."""
        update = self.fake.callback_update(
            user_id, data, message_id=message_id, chat_id=chat_id, language_code=language_code
        )
        return await self.feed(update, allow_errors=allow_errors)

    async def feed(self, update: dict[str, Any], *, allow_errors: bool = False) -> Replies:
        """Feed a raw update (the getUpdates JSON shape) through the Dispatcher."""
        seen = len(self.fake.calls)
        await self.dp.feed_update(
            self.bot, Update.model_validate(update, context={"bot": self.bot})
        )
        replies = Replies(self.fake.calls[seen:])
        refused = [c for c in replies if c.status != 200]
        if refused and not allow_errors:
            raise AssertionError(
                "the fake Bot API refused "
                + "; ".join(f"{c.method}: {c.status} {c.description}" for c in refused)
            )
        return replies

    async def close(self) -> None:
        """Stop this bot as a process would: FSM storage, Telegram session, database."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.dp.storage.close()
        finally:
            try:
                await _close_session(self.bot)
            finally:
                await self.db.dispose()


async def _close_session(bot: Bot) -> None:
    """Close the Bot's HTTP session. `AiohttpSession.close()` then sleeps 250 ms so that SSL
    connections can close gracefully; there are none to the fake (plain HTTP on loopback), and
    that sleep would be most of a test's time, so the aiohttp session is closed directly."""
    session = bot.session
    client = getattr(session, "_session", None)
    if isinstance(session, AiohttpSession) and client is not None:
        await client.close()
    else:
        await session.close()


async def start_conversation(
    fake: FakeTelegram,
    database_url: str,
    *,
    clock: FakeClock | None = None,
    running: list[Conversation] | None = None,
    **options: Any,
) -> Conversation:
    """A bot on `database_url` talking to `fake`; `options` are Settings values (admin_ids,
    throttle_rate, redis_url...). The flood gate is opened wide unless a test sets
    `throttle_rate`: only the throttling tests are about it."""
    values: dict[str, Any] = {"throttle_rate": 1000, **options}
    values.update(
        bot_token=TEST_TOKEN, telegram_api_base=fake.base_url, database_url=database_url
    )
    config = ExplicitSettings(**values)
    clock = clock or FakeClock()
    db = Database.from_url(database_url)
    bot = build_bot(config)
    try:
        dp, _ = build_dispatcher(config, db, clock, extra_routers=routers_for_tests())
    except BaseException:
        await _close_session(bot)
        await db.dispose()
        raise
    running = [] if running is None else running
    chat = Conversation(fake, config, clock, db, bot, dp, options, running)
    running.append(chat)
    return chat
