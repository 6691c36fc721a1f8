"""A person talks to the bot in English and French: /start, the language keyboard, /help, the
flood gate and the support code of an unexpected error, through the production Dispatcher."""

from __future__ import annotations

import logging

import pytest

from services.clock import FakeClock
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import buttons

ANN = 1001
BOB = 1002
NOT_UNDERSTOOD = "I did not understand that. Send /help to see what I can do."


async def test_new_user_picks_french_and_is_greeted_in_french_after_a_restart(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    replies = await chat.send(ANN, "/start", first_name="Ann", language_code="en")
    welcome = replies.message("choose your language")
    assert list(buttons(welcome).items()) == [("English", "lang:en"), ("Français", "lang:fr")]

    replies = await chat.press(ANN, "lang:fr", message_id=welcome["message_id"])
    assert [c.method for c in replies] == ["answerCallbackQuery", "editMessageText"]
    edited = replies.message("Je vous parlerai en français")
    assert edited["message_id"] == welcome["message_id"]

    # A new process on the same database: the choice was stored, not kept in memory.
    chat = await chat.restart()
    replies = await chat.send(ANN, "/start", first_name="Ann", language_code="en")
    assert len(replies.texts) == 1
    assert "Bon retour, Ann" in replies.texts[0]


async def test_help_in_english_and_in_french(conversation: StartConversation) -> None:
    chat = await conversation()
    english = (await chat.send(ANN, "/help", language_code="en")).message("Here is what I can do")
    assert "/language - choose English or French" in english["text"]

    french = (await chat.send(BOB, "/help", language_code="fr")).message(
        "Voici ce que je sais faire"
    )
    assert "/language - choisir l'anglais ou le français" in french["text"]


async def test_unknown_text_gets_a_short_help(conversation: StartConversation) -> None:
    chat = await conversation()
    replies = await chat.send(ANN, "what is this? 🤔" * 300, language_code="en")
    assert replies.texts == [NOT_UNDERSTOOD]


async def test_forged_language_button_changes_nothing(conversation: StartConversation) -> None:
    chat = await conversation()
    welcome = (await chat.send(ANN, "/start", language_code="en")).message("choose your language")

    replies = await chat.press(ANN, "lang:de", message_id=welcome["message_id"])
    assert replies.answer["text"] == "This button is no longer valid."
    assert replies.answer["show_alert"] is True
    assert replies.messages == []  # the welcome is not redrawn
    replies = await chat.press(ANN, "garbage:::", message_id=welcome["message_id"])
    assert replies.answer["text"] == "This button is no longer valid."

    # Still no language chosen: /start offers the keyboard again.
    replies = await chat.send(ANN, "/start", language_code="en")
    assert "English" in buttons(replies.message("choose your language"))


async def test_flood_from_one_user_is_throttled_and_others_are_served(
    conversation: StartConversation, clock: FakeClock
) -> None:
    chat = await conversation(throttle_rate=3, throttle_window_seconds=30)
    to_ann: list[str] = []
    for i in range(12):
        to_ann += (await chat.send(ANN, f"spam {i}", language_code="en")).texts
    assert to_ann.count(NOT_UNDERSTOOD) == 3
    assert sum("Slow down" in t for t in to_ann) == 1  # told once, not once per message
    assert len(to_ann) == 4

    replies = await chat.send(BOB, "/help", language_code="en")
    assert "Here is what I can do" in replies.texts[0]

    # Once the window has passed, Ann is answered again.
    clock.advance(30)
    assert (await chat.send(ANN, "hello", language_code="en")).texts == [NOT_UNDERSTOOD]


async def test_unhandled_error_gives_the_user_a_support_code(
    conversation: StartConversation, caplog: pytest.LogCaptureFixture
) -> None:
    chat = await conversation()
    caplog.set_level(logging.ERROR, logger="handlers.errors")
    [text] = (await chat.send(ANN, "/boom", language_code="fr")).texts
    assert "Code d'assistance" in text
    code = text.rsplit(" ", 1)[-1]
    assert len(code) == 8
    # The same code is in the log, with what went wrong, for whoever the user quotes it to.
    [record] = [r for r in caplog.records if f"support code {code}" in r.getMessage()]
    assert record.exc_info is not None and "failed on purpose" in str(record.exc_info[1])
