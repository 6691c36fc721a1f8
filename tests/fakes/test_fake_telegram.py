"""The fake Telegram Bot API answers the real aiogram Bot the way Telegram does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from aiohttp import web

from tests.fakes.telegram import (
    BOT_ID,
    TEST_TOKEN,
    FakeTelegram,
    chat_line,
    describe_call,
    parse_html,
)

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def make_bot(fake: FakeTelegram, token: str = TEST_TOKEN) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))
    bot = Bot(token, session=session)
    try:
        yield bot
    finally:
        await bot.session.close()


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest_asyncio.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(fake) as client:
        yield client


async def raw_post(fake: FakeTelegram, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake.base_url}{path}", **kwargs) as response,
    ):
        return response.status, await response.json()


async def raw_get(fake: FakeTelegram, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{fake.base_url}{path}") as response:
        return response.status, await response.json()


def dump(obj: Any) -> Any:
    """aiogram objects compare with their bot context; compare their wire form."""
    if isinstance(obj, list):
        return [dump(item) for item in obj]
    return obj.model_dump(exclude_none=True)


def yes_no_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text="Yes", callback_data="answer:yes"),
                InlineKeyboardButton(text="No", callback_data="answer:no"),
            ]
        ]
    )


async def test_get_me_returns_the_desk_bot(bot: Bot) -> None:
    me = await bot.get_me()

    assert (me.id, me.is_bot, me.username, me.first_name) == (
        BOT_ID,
        True,
        "desk_test_bot",
        "Desk Bot",
    )
    assert me.can_join_groups is True


async def test_inline_keyboard_round_trips_and_is_decoded(fake: FakeTelegram, bot: Bot) -> None:
    first = await bot.send_message(1001, "<b>Pick</b> one", parse_mode="HTML")
    second = await bot.send_message(1001, "Really?", reply_markup=yes_no_keyboard())

    assert first.text == "Pick one"
    assert first.entities is not None and first.entities[0].type == "bold"
    assert (first.message_id, second.message_id) == (1, 2)
    assert second.chat.type == "private" and second.from_user.id == BOT_ID
    assert dump(second.reply_markup) == dump(yes_no_keyboard())
    call = await fake.wait_for_call("sendMessage", lambda p: p["text"] == "Really?")
    assert call.params["chat_id"] == 1001
    assert call.params["reply_markup"]["inline_keyboard"][0][1] == {
        "text": "No",
        "callback_data": "answer:no",
    }
    assert [m["text"] for m in fake.sent_messages(1001)] == ["Pick one", "Really?"]


async def test_long_poll_returns_queued_update_and_offset_confirms_it(
    fake: FakeTelegram, bot: Bot
) -> None:
    poll = asyncio.create_task(bot.get_updates(offset=0, timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()  # long poll is waiting
    started = time.monotonic()
    fake.message(1001, "/start hello", first_name="Ann", language_code="fr")

    updates = await poll
    assert time.monotonic() - started < 1.0
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None and message.text == "/start hello"
    assert message.from_user.language_code == "fr" and message.chat.type == "private"
    assert message.entities[0].type == "bot_command" and message.entities[0].length == 6

    assert len(await bot.get_updates(offset=0, timeout=0)) == 1  # not yet confirmed
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == []
    assert fake.pending_updates == []


async def test_long_poll_times_out_with_empty_list(fake: FakeTelegram) -> None:
    started = time.monotonic()
    status, body = await raw_post(fake, f"/bot{TEST_TOKEN}/getUpdates", data={"timeout": "0.3"})

    assert (status, body) == (200, {"ok": True, "result": []})
    assert 0.25 < time.monotonic() - started < 1.5


async def test_message_over_4096_utf16_units_is_too_long(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1001, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1001, "😀" * 2049)  # 2049 chars, 4098 UTF-16 units

    sent = await bot.send_message(1001, "😀" * 2048)
    assert sent.text == "😀" * 2048


async def test_callback_data_over_64_bytes_is_rejected(bot: Bot) -> None:
    button = InlineKeyboardButton(text="Too long", callback_data="a" * 65)

    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(
            1001, "menu", reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]])
        )


async def test_scripted_403_raises_forbidden_then_recovers(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("sendMessage", status=403, description="Forbidden: bot was blocked by the user")

    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(1001, "hello")
    assert (await bot.send_message(1001, "hello")).message_id == 1
    assert [c.status for c in fake.calls] == [403, 200]


async def test_blocked_user_gets_403_until_unblocked(fake: FakeTelegram, bot: Bot) -> None:
    fake.block_user(1001)
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(1001, "hello")
    await bot.send_message(1002, "others still get messages")

    fake.unblock_user(1001)
    await bot.send_message(1001, "hello again")


async def test_two_messages_to_one_chat_back_to_back_get_429() -> None:
    async with FakeTelegram(enforce_limits=True) as fake, make_bot(fake) as bot:
        await bot.send_message(1001, "one")
        with pytest.raises(TelegramRetryAfter) as raised:
            await bot.send_message(1001, "two")
        await bot.send_message(1002, "another chat is fine")

    assert raised.value.retry_after >= 1
    assert fake.count_429 == 1
    assert [c.status for c in fake.calls] == [200, 429, 200]


async def test_global_and_group_limits() -> None:
    async with (
        FakeTelegram(enforce_limits=True, global_rate=3, group_per_minute=2) as fake,
        make_bot(fake) as bot,
    ):
        await bot.send_message(-100123, "g1")
        await bot.send_message(-100123, "g2")
        with pytest.raises(TelegramRetryAfter) as group_limit:
            await bot.send_message(-100123, "g3")
        await bot.send_message(1001, "third send in this second")
        with pytest.raises(TelegramRetryAfter) as global_limit:
            await bot.send_message(1002, "fourth send in this second")

    assert 55 <= group_limit.value.retry_after <= 60
    assert global_limit.value.retry_after == 1
    assert fake.count_429 == 2


async def test_failure_rate_one_gives_server_error_but_spares_get_me() -> None:
    async with FakeTelegram(failure_rate=1.0) as fake, make_bot(fake) as bot:
        with pytest.raises(TelegramServerError):
            await bot.send_message(1001, "hello")
        assert (await bot.get_me()).id == BOT_ID


async def test_unknown_method_is_404_json(fake: FakeTelegram) -> None:
    status, body = await raw_post(fake, f"/bot{TEST_TOKEN}/sendTelepathy", data={"x": "1"})

    assert (status, body) == (404, {"ok": False, "error_code": 404, "description": "Not Found"})


async def test_wrong_token_is_unauthorized() -> None:
    async with FakeTelegram(token=TEST_TOKEN) as fake, make_bot(fake, "42000:other") as bot:
        with pytest.raises(TelegramUnauthorizedError):
            await bot.get_me()


async def test_unauthorized_switch_fails_every_call(fake: FakeTelegram, bot: Bot) -> None:
    fake.set_unauthorized(True)
    with pytest.raises(TelegramUnauthorizedError):
        await bot.get_me()
    fake.set_unauthorized(False)
    await bot.get_me()


async def test_webhook_makes_get_updates_conflict(fake: FakeTelegram, bot: Bot) -> None:
    assert await bot.set_webhook("https://example.invalid/webhooks/telegram")
    assert (await bot.get_webhook_info()).url == "https://example.invalid/webhooks/telegram"
    with pytest.raises(TelegramConflictError, match="webhook is active"):
        await bot.get_updates(timeout=0)

    assert await bot.delete_webhook(drop_pending_updates=True)
    assert await bot.get_updates(timeout=0) == []


async def test_webhook_receives_updates_with_secret(fake: FakeTelegram, bot: Bot) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.json_response({"method": "sendMessage", "chat_id": 1001, "text": "got it"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s3cret")
        fake.message(1001, "hi")
        await fake.wait_for_text(1001, "got it", timeout=2)
    finally:
        await bot.delete_webhook()
        await runner.cleanup()

    assert received[0][0] == "s3cret" and received[0][1]["message"]["text"] == "hi"
    assert (await bot.get_webhook_info()).pending_update_count == 0


async def test_edit_not_modified_and_not_found(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(1001, "Status: open", reply_markup=yes_no_keyboard())
    edited = await bot.edit_message_text(
        "Status: done", chat_id=1001, message_id=sent.message_id, reply_markup=yes_no_keyboard()
    )
    assert edited.text == "Status: done" and edited.edit_date is not None

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "Status: done", chat_id=1001, message_id=sent.message_id, reply_markup=yes_no_keyboard()
        )
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=1001, message_id=999)

    await bot.edit_message_reply_markup(chat_id=1001, message_id=sent.message_id)
    [current] = fake.chat_messages(1001)
    assert current["text"] == "Status: done" and "reply_markup" not in current
    assert fake.sent_messages(1001)[0]["text"] == "Status: open"
    assert (await fake.wait_for_text(1001, "done"))["message_id"] == sent.message_id

    assert await bot.delete_message(1001, sent.message_id)
    assert fake.chat_messages(1001) == []
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(1001, sent.message_id)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("<div>x</div>", 'Unsupported start tag "div" at byte offset 0'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("é <b", "Unclosed start tag at byte offset 3"),
        ('<span class="x">s</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
async def test_bad_html_cannot_be_parsed(bot: Bot, text: str, reason: str) -> None:
    with pytest.raises(TelegramBadRequest) as raised:
        await bot.send_message(1001, text, parse_mode="HTML")

    assert raised.value.message == f"Bad Request: can't parse entities: {reason}"


async def test_supported_html_gives_plain_text_and_entities() -> None:
    text, entities = parse_html(
        '<a href="https://x.org">l</a> &lt;ok&gt; &amp; &quot; <tg-spoiler>s</tg-spoiler> '
        '<pre><code class="language-python">p</code></pre> <blockquote>q</blockquote>'
    )

    assert text == 'l <ok> & " s p q'
    assert [e["type"] for e in entities] == ["text_link", "spoiler", "pre", "blockquote"]
    assert entities[0]["url"] == "https://x.org" and entities[2]["language"] == "python"


async def test_validation_errors_match_telegram(fake: FakeTelegram) -> None:
    url = f"/bot{TEST_TOKEN}/sendMessage"
    cases = [
        ({"text": "hi"}, "Bad Request: chat_id is empty"),
        ({"chat_id": "1001"}, "Bad Request: message text is empty"),
        ({"chat_id": "1001", "text": "hi", "reply_markup": "{bad"}, None),
        ({"chat_id": "@nobody", "text": "hi"}, "Bad Request: chat not found"),
    ]
    for data, description in cases:
        status, body = await raw_post(fake, url, data=data)
        assert status == 400 and body["ok"] is False and body["error_code"] == 400
        expected = description or "Bad Request: can't parse reply keyboard markup JSON object"
        assert body["description"] == expected

    status, body = await raw_post(fake, url, json={"chat_id": 1001, "text": "json", "foo": 1})
    assert status == 200 and body["result"]["text"] == "json"
    status, body = await raw_post(fake, f"{url}?chat_id=1001&text=query")
    assert status == 200 and body["result"]["message_id"] == 2


async def test_callback_carries_the_sent_message_and_can_be_answered(
    fake: FakeTelegram, bot: Bot
) -> None:
    sent = await bot.send_message(1001, "Choose", reply_markup=yes_no_keyboard())
    update_id = fake.callback(1001, "answer:yes", message_id=sent.message_id)

    [update] = await bot.get_updates(offset=0, timeout=0)
    query = update.callback_query
    assert query is not None and query.data == "answer:yes"
    assert query.id == fake.callback_query_id(update_id)
    assert query.message.text == "Choose"
    assert dump(query.message.reply_markup) == dump(yes_no_keyboard())
    assert await bot.answer_callback_query(query.id, text="Saved")
    with pytest.raises(TelegramBadRequest, match="query ID is invalid"):
        await bot.answer_callback_query("")


async def test_http_control_interface(fake: FakeTelegram, bot: Bot) -> None:
    status, body = await raw_post(fake, "/_control/message", json={"user_id": 7, "text": "hi"})
    assert status == 200 and body["update_id"] == 1
    sent = await bot.send_message(7, "Hello", reply_markup=yes_no_keyboard())
    status, body = await raw_post(
        fake, "/_control/callback", json={"user_id": 7, "data": "answer:no", "message_id": 2}
    )
    assert status == 200 and body["update_id"] == 2
    status, body = await raw_post(fake, "/_control/update", json={"chat_member": {}})
    assert status == 200 and body["update_id"] == 3

    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == [1, 2]  # chat_member is not polled by default
    assert updates[1].callback_query.message.message_id == sent.message_id == 2

    status, calls = await raw_get(fake, "/_control/calls?method=sendMessage")
    assert status == 200 and [c["params"]["text"] for c in calls] == ["Hello"]
    status, messages = await raw_get(fake, "/_control/messages?chat_id=7")
    assert status == 200 and [m["text"] for m in messages] == ["Hello"]
    status, _ = await raw_post(fake, "/_control/message", json={"text": "no user"})
    assert status == 400


async def test_commands_are_stored_per_scope(bot: Bot) -> None:
    commands = [BotCommand(command="start", description="Start")]
    assert await bot.set_my_commands(commands)
    assert dump(await bot.get_my_commands()) == dump(commands)
    assert await bot.get_my_commands(language_code="fr") == []
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])
    assert await bot.delete_my_commands()
    assert await bot.get_my_commands() == []


async def test_waiting_helpers_fail_with_a_helpful_message(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(1001, "something else")

    with pytest.raises(AssertionError, match="no message containing 'Welcome'.*something else"):
        await fake.wait_for_text(1001, "Welcome", timeout=0.1)
    with pytest.raises(AssertionError, match="no successful editMessageText.*sendMessage->200"):
        await fake.wait_for_call("editMessageText", timeout=0.1)


async def test_delay_holds_send_calls(fake: FakeTelegram, bot: Bot) -> None:
    fake.delay = 0.2
    started = time.monotonic()
    await bot.send_message(1001, "slow")

    assert time.monotonic() - started >= 0.2


# ------------------------------------------------------------------ chat mode (--chat USER_ID)


def _shown(fake: FakeTelegram, user_id: int, since: int = 0) -> list[str]:
    """What chat mode prints for the calls made since `since`."""
    return [line for call in fake.calls[since:] for line in describe_call(call, user_id)]


async def test_chat_mode_shows_reply_keyboards_and_their_removal(
    fake: FakeTelegram, bot: Bot
) -> None:
    await bot.send_message(1001, "Share it?", reply_markup=ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text="Share my phone number", request_contact=True)],
                  [KeyboardButton(text="Not now")]],
        resize_keyboard=True, one_time_keyboard=True,
    ))
    await bot.send_message(1001, "Thanks", reply_markup=ReplyKeyboardRemove())
    await bot.send_message(1001, "Pick", reply_markup=InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text="Yes", callback_data="pick:yes")]
    ]))
    assert _shown(fake, 1001) == [
        "[bot #1] Share it?",
        "    [Share my phone number] (keyboard) -> !contact <your phone number>, "
        "e.g. !contact +33612345678",
        "    [Not now] (keyboard) -> type: Not now",
        "[bot #2] Thanks",
        "    (keyboard removed)",
        "[bot #3] Pick",
        "    [Yes] -> !press pick:yes 3",
    ]
    assert _shown(fake, 1002) == []  # another person's chat


async def test_chat_mode_contact_shares_the_users_own_phone(fake: FakeTelegram) -> None:
    assert chat_line(fake, 1001, "!contact +33612345678") == []
    [update] = fake.pending_updates
    message = update["message"]
    assert message["from"]["id"] == 1001 and message["chat"]["id"] == 1001
    assert message["contact"]["phone_number"] == "+33612345678"
    assert message["contact"]["user_id"] == 1001  # one's own contact, as Telegram sends it
    assert "text" not in message

    for wrong in ("!contact", "!contact call me", "!contact +33"):
        assert chat_line(fake, 1001, wrong) == [
            "usage: !contact <phone number>, e.g. !contact +33612345678"
        ]
    assert len(fake.pending_updates) == 1


async def test_chat_mode_press_message_help_and_unknown_commands(fake: FakeTelegram) -> None:
    assert chat_line(fake, 1001, "/start") == []
    assert chat_line(fake, 1001, "!press pick:yes 3") == []
    assert chat_line(fake, 1001, "!press pick:yes") == [
        "usage: !press <callback_data> <message_id>"
    ]
    assert chat_line(fake, 1001, "   ") == []
    message, press = fake.pending_updates
    assert message["message"]["text"] == "/start"
    assert press["callback_query"]["data"] == "pick:yes"
    assert press["callback_query"]["message"]["message_id"] == 3

    help_text = "\n".join(chat_line(fake, 1001, "!help"))
    for command in ("!press <callback_data> <message_id>", "!contact <phone number>", "!help"):
        assert command in help_text
    assert chat_line(fake, 1001, "!shout hi") == ["unknown command !shout; !help lists them"]
    assert len(fake.pending_updates) == 2
