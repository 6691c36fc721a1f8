"""With REDIS_URL set, the bot keeps its FSM state in Redis: it still serves users, and a
conversation half-way through survives a restart (with the in-memory storage it would not)."""

from __future__ import annotations

import random

import pytest
from aiogram.fsm.storage.redis import RedisStorage

from tests.conftest import TEST_REDIS_URL
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import buttons
from tests.conversations.test_profile import EMAIL_ON

pytestmark = pytest.mark.skipif(
    not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set: Redis variant skipped"
)


def _someone() -> int:
    """A user id of this run only: the Redis database may be shared with other test runs."""
    return random.randrange(10**9, 2 * 10**9)


async def test_bot_runs_with_redis_storage(conversation: StartConversation) -> None:
    chat = await conversation(redis_url=TEST_REDIS_URL)
    assert isinstance(chat.dp.storage, RedisStorage)  # the start-up log: test_startup_log.py
    replies = await chat.send(_someone(), "/help", language_code="fr")
    replies.message("Voici ce que je sais faire")


async def test_email_conversation_survives_a_restart_with_redis(
    conversation: StartConversation,
) -> None:
    ann = _someone()
    chat = await conversation(redis_url=TEST_REDIS_URL, **EMAIL_ON)
    profile = (await chat.send(ann, "/profile")).messages[-1]
    set_email = buttons(profile)["Set e-mail"]
    replies = await chat.press(ann, set_email, message_id=profile["message_id"])
    replies.message("Send me your e-mail address")

    chat = await chat.restart()
    # The new process still knows Ann was asked for her address.
    saved = (await chat.send(ann, "ann@example.com")).message("Your e-mail address is saved")
    assert "E-mail: ann@example.com" in saved["text"]
    # And the conversation is over there too.
    (await chat.send(ann, "hello")).message("I did not understand that")
