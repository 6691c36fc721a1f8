"""A person talks to the real bot process over the fake Bot API, in English and French."""

from __future__ import annotations

import asyncio
import json

from tests.e2e.conftest import StartBot
from tests.fakes.telegram import FakeTelegram

ANN = 1001
BOB = 1002


def _buttons(message: dict) -> list[tuple[str, str]]:
    markup = message.get("reply_markup") or {}
    if isinstance(markup, str):
        markup = json.loads(markup)
    return [
        (button["text"], button["callback_data"])
        for row in markup.get("inline_keyboard", [])
        for button in row
    ]


async def test_new_user_picks_french_and_is_greeted_in_french_after_restart(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    bot = await start_bot()
    fake_telegram.message(ANN, "/start", first_name="Ann", language_code="en")
    welcome = await fake_telegram.wait_for_text(ANN, "choose your language")
    buttons = _buttons(welcome)
    assert buttons == [("English", "lang:en"), ("Français", "lang:fr")]

    fake_telegram.callback(ANN, "lang:fr", message_id=welcome["message_id"])
    await fake_telegram.wait_for_text(ANN, "Je vous parlerai en français")
    await fake_telegram.wait_for_call("answerCallbackQuery")

    assert await bot.stop() == 0
    await start_bot()
    fake_telegram.message(ANN, "/start", first_name="Ann", language_code="en")
    await fake_telegram.wait_for_text(ANN, "Bon retour, Ann")


async def test_help_in_english_and_in_french(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    await start_bot()
    fake_telegram.message(ANN, "/help", language_code="en")
    english = await fake_telegram.wait_for_text(ANN, "Here is what I can do")
    assert "/language - choose English or French" in english["text"]

    fake_telegram.message(BOB, "/help", language_code="fr")
    french = await fake_telegram.wait_for_text(BOB, "Voici ce que je sais faire")
    assert "/language - choisir l'anglais ou le français" in french["text"]


async def test_unknown_text_gets_a_short_help(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    await start_bot()
    fake_telegram.message(ANN, "what is this? 🤔" * 300, language_code="en")
    await fake_telegram.wait_for_text(ANN, "I did not understand that")


async def test_forged_language_button_changes_nothing(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    await start_bot()
    fake_telegram.message(ANN, "/start", language_code="en")
    welcome = await fake_telegram.wait_for_text(ANN, "choose your language")
    fake_telegram.callback(ANN, "lang:de", message_id=welcome["message_id"])
    answer = await fake_telegram.wait_for_call("answerCallbackQuery")
    assert answer.params["text"] == "This button is no longer valid."
    fake_telegram.callback(ANN, "garbage:::", message_id=welcome["message_id"])
    await fake_telegram.wait_for_call(
        "answerCallbackQuery", lambda p: p.get("callback_query_id") != answer.params.get(
            "callback_query_id")
    )
    # Still no language chosen: /start offers the keyboard again.
    seen = len(fake_telegram.calls)
    fake_telegram.message(ANN, "/start", language_code="en")
    await fake_telegram.wait_for_call(
        "sendMessage", lambda p: "choose your language" in p["text"], since=seen
    )


async def test_flood_from_one_user_is_throttled_and_others_are_served(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    await start_bot(THROTTLE_RATE="3", THROTTLE_WINDOW_SECONDS="30")
    for i in range(12):
        fake_telegram.message(ANN, f"spam {i}", language_code="en")
    await fake_telegram.wait_for_text(ANN, "Slow down a little")
    fake_telegram.message(BOB, "/help", language_code="en")
    await fake_telegram.wait_for_text(BOB, "Here is what I can do")
    # Answers to one chat are paced at 1/s: wait for all four, then a little longer for any
    # answer that should not come.
    async with asyncio.timeout(15):
        while len(fake_telegram.sent_messages(ANN)) < 4:
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)

    to_ann = [m["text"] for m in fake_telegram.sent_messages(ANN)]
    assert to_ann.count("I did not understand that. Send /help to see what I can do.") == 3
    assert sum("Slow down" in t for t in to_ann) == 1
    assert len(to_ann) == 4


async def test_unhandled_error_gives_the_user_a_support_code(
    fake_telegram: FakeTelegram, start_bot: StartBot
) -> None:
    bot = await start_bot()
    fake_telegram.message(ANN, "/boom", language_code="fr")
    message = await fake_telegram.wait_for_text(ANN, "Code d'assistance")
    code = message["text"].rsplit(" ", 1)[-1]
    assert len(code) == 8
    await bot.wait_for_line(f"support code {code}")
