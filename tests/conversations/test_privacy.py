"""/mydata and /forget as a person sees them: the file they get, the confirmation and its
buttons (forged, someone else's or stale presses refused), what an erasure leaves, and that
nothing still waiting in the outbox reaches them afterwards."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from database.engine import Database
from database.models import User
from services import contacts
from services.notifications import outbox
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, buttons

ANN = 2101
BOB = 2102
STALE = "This button is no longer valid."
PROMPT = "Erase your data?"
NAMES = {ANN: "Annabelle", BOB: "Roberto"}


async def _user(db: Database, user_id: int) -> User:
    return await db.read(lambda s: s.get_one(User, user_id))


async def _by_telegram_id(db: Database, telegram_id: int) -> User | None:
    return await db.read(lambda s: s.scalar(select(User).where(User.telegram_id == telegram_id)))


async def _registered(chat: Conversation, telegram_id: int, name: str) -> int:
    await chat.send(telegram_id, "/start", first_name=name)
    user = await _by_telegram_id(chat.db, telegram_id)
    assert user is not None
    return user.id


async def _prompt(chat: Conversation, telegram_id: int, **options: Any) -> dict[str, Any]:
    options.setdefault("first_name", NAMES[telegram_id])
    return (await chat.send(telegram_id, "/forget", **options)).message(PROMPT)


async def test_mydata_sends_what_is_stored_about_the_person_as_a_json_file(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    ann = await _registered(chat, ANN, "Annabelle")
    await _registered(chat, BOB, "Roberto")
    await chat.db.run(lambda s: contacts.set_email(
        s, user_id=ann, email="annabelle@example.org", now=chat.clock.now()))

    replies = await chat.send(ANN, "/mydata", first_name="Annabelle")
    [sent] = replies.of("sendDocument")
    assert sent.params["caption"] == (
        "Here is everything this desk stores about you (a JSON file).")
    document_file = sent.result["document"]
    assert document_file["file_name"] == "my-data.json"
    raw = chat.fake.file_data(document_file["file_id"])
    document = json.loads(raw.decode("utf-8"))
    assert document["user"]["name"] == "Annabelle"
    assert document["user"]["telegram_id"] == ANN
    assert document["contacts"]["email"] == "annabelle@example.org"
    assert document["requests"] == [] and "truncated" not in document
    assert "Roberto" not in raw.decode("utf-8")


async def test_forget_asks_first_and_no_keeps_everything(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    ann = await _registered(chat, ANN, "Annabelle")
    prompt = await _prompt(chat, ANN)
    keep = buttons(prompt)["No, keep my data"]
    replies = await chat.press(ANN, keep, message_id=prompt["message_id"])
    replies.message("Nothing was erased.")
    assert (await _user(chat.db, ann)).erased_at is None


async def test_forged_foreign_and_stale_confirmations_are_refused(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    ann = await _registered(chat, ANN, "Annabelle")
    bob = await _registered(chat, BOB, "Roberto")
    prompt = await _prompt(chat, ANN)
    erase = buttons(prompt)["Yes, erase my data"]
    assert erase.startswith(f"fgt:y:{ann}:")

    # Bob presses Ann's button (a forwarded message), or forges one for Ann's id: refused.
    refused = (await chat.press(BOB, erase, message_id=prompt["message_id"])).answer
    assert (refused["text"], refused["show_alert"]) == (STALE, True)
    # Data we never issued (not a number where one belongs) never reaches the handler.
    forged = (await chat.press(ANN, "fgt:y:x:1", message_id=prompt["message_id"])).answer
    assert forged["text"] == STALE
    # Ann herself, eleven minutes later: the confirmation went stale.
    chat.clock.advance(minutes=11)
    stale = await chat.press(ANN, erase, message_id=prompt["message_id"])
    assert stale.answer["text"] == STALE and not stale.messages
    for user_id, name in ((ann, "Annabelle"), (bob, "Roberto")):
        user = await _user(chat.db, user_id)
        assert (user.erased_at, user.display_name) == (None, name)


async def test_forget_erases_and_nothing_waiting_reaches_the_person_afterwards(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    ann = await _registered(chat, ANN, "Annabelle")
    bob = await _registered(chat, BOB, "Roberto")
    await chat.send(ANN, "", contact={"phone_number": "+33612345678"}, first_name="Annabelle")
    now = chat.clock.now()

    async def waiting(session: Any) -> None:
        for user_id, who in ((ann, "ann"), (bob, "bob")):
            await outbox.enqueue(session, recipient_id=user_id, kind="test",
                                 idempotency_key=f"test:waiting:{who}", now=now,
                                 text=f"Still waiting for {who}")

    await chat.db.run(waiting)
    prompt = await _prompt(chat, ANN, first_name="Annabelle")
    replies = await chat.press(ANN, buttons(prompt)["Yes, erase my data"],
                               message_id=prompt["message_id"])
    replies.message("Your data has been erased.")

    user = await _user(chat.db, ann)
    assert user.display_name == f"erased user #{ann}"
    assert (user.telegram_id, user.phone) == (None, None)
    delivered = await chat.deliver()
    texts = {c.params.get("chat_id"): c.params.get("text") for c in delivered.of("sendMessage")}
    assert {int(chat_id): text for chat_id, text in texts.items()} == {
        BOB: "Still waiting for bob"}

    # Pressing the button again changes nothing: she is someone new to the bot now.
    again = await chat.press(ANN, buttons(prompt)["Yes, erase my data"],
                             message_id=prompt["message_id"])
    assert again.answer["text"] == STALE
    # And she can start afresh: a new user, asked for her language again.
    welcome = await chat.send(ANN, "/start", first_name="Annabelle")
    welcome.message("Please choose your language")
    fresh = await _by_telegram_id(chat.db, ANN)
    assert fresh is not None and fresh.id != ann and fresh.phone is None


async def test_owners_and_people_with_work_under_way_are_told_why_not(
    conversation: StartConversation,
) -> None:
    chat = await conversation(admin_ids=[ANN])
    await _registered(chat, ANN, "Annabelle")
    replies = await chat.send(ANN, "/forget")
    replies.message("You are an owner of this bot (ADMIN_IDS)")
    assert not [m for m in replies.messages if PROMPT in m.get("text", "")]


async def test_a_french_speaker_is_asked_in_french(conversation: StartConversation) -> None:
    chat = await conversation()
    await chat.send(ANN, "/start", language_code="fr")
    prompt = (await chat.send(ANN, "/forget", language_code="fr")).message(
        "Effacer vos données ?")
    assert list(buttons(prompt)) == ["Oui, effacer mes données", "Non, garder mes données"]
    replies = await chat.send(ANN, "/mydata", language_code="fr")
    [sent] = replies.of("sendDocument")
    assert sent.params["caption"].startswith("Voici tout ce que")
