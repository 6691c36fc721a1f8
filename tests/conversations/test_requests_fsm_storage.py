"""Without REDIS_URL the FSM state lives in the database: a form half-way through survives a
restart (the in-memory storage lost it, and the next input got "I did not understand")."""

from __future__ import annotations

import asyncio

from aiogram.fsm.storage.base import StorageKey
from sqlalchemy import select

from bot.fsm_storage import DatabaseStorage
from database.engine import Database
from database.models import FsmState
from services.clock import FakeClock
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, buttons
from tests.conversations.test_profile import EMAIL_ON

ANN = 2101


async def _rows(chat: Conversation) -> list[tuple[str, str | None]]:
    async with chat.db.transaction() as session:
        rows = await session.execute(select(FsmState.key, FsmState.state))
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_email_step_survives_a_restart_without_redis(
    conversation: StartConversation,
) -> None:
    chat = await conversation(**EMAIL_ON)
    assert isinstance(chat.dp.storage, DatabaseStorage)
    profile = (await chat.send(ANN, "/profile")).messages[-1]
    set_email = buttons(profile)["Set e-mail"]
    replies = await chat.press(ANN, set_email, message_id=profile["message_id"])
    replies.message("Send me your e-mail address")
    [(_, state)] = await _rows(chat)
    assert state == "ProfileStates:email"

    chat = await chat.restart()
    saved = (await chat.send(ANN, "ann@example.com")).message("Your e-mail address is saved")
    assert "E-mail: ann@example.com" in saved["text"]
    # The form is over, in the database too: after another restart text is not an address.
    assert await _rows(chat) == []
    chat = await chat.restart()
    (await chat.send(ANN, "hello")).message("I did not understand that")


async def test_cancel_clears_the_stored_state(conversation: StartConversation) -> None:
    chat = await conversation(**EMAIL_ON)
    profile = (await chat.send(ANN, "/profile")).messages[-1]
    await chat.press(ANN, buttons(profile)["Set e-mail"], message_id=profile["message_id"])
    (await chat.send(ANN, "/cancel")).message("Cancelled: nothing was changed.")
    assert await _rows(chat) == []
    chat = await chat.restart()
    (await chat.send(ANN, "ann@example.com")).message("I did not understand that")


async def test_the_last_change_wins_in_the_database_too(db: Database) -> None:
    """Writes of one conversation are applied in order, whatever the interleaving: a new
    process (a new storage on the same database) reads what the old one held last."""
    key = StorageKey(bot_id=1, chat_id=ANN, user_id=ANN)
    storage = DatabaseStorage(db, FakeClock())
    await asyncio.gather(*(storage.update_data(key, {f"k{i}": i}) for i in range(5)),
                         storage.set_state(key, "Form:step"))
    held = await storage.get_data(key), await storage.get_state(key)

    again = DatabaseStorage(db, FakeClock())
    assert (await again.get_data(key), await again.get_state(key)) == held
    assert held[1] == "Form:step"

    await again.set_state(key, None)
    await again.set_data(key, {})
    third = DatabaseStorage(db, FakeClock())
    assert await third.get_state(key) is None and await third.get_data(key) == {}
