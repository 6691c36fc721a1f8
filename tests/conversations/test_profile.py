"""/profile: a person shares their phone, sets an e-mail, orders their channels and opts in
again; we check what Telegram was sent and what the database holds."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select

from bot.logs import RedactingFormatter, Redactor
from database.engine import Database
from database.models import TransactionLog, User
from services import contacts
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, buttons, markup

ANN = 2001
BOB = 2002
STALE = "This button is no longer valid."


async def _stored(db: Database, telegram_id: int) -> User:
    async with db.transaction() as session:
        result = await session.scalars(select(User).where(User.telegram_id == telegram_id))
        return result.one()


async def _contact_audit(db: Database) -> list[str]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(TransactionLog.operation)
            .where(TransactionLog.operation.like("contacts.%"))
            .order_by(TransactionLog.id)
        )
        return list(rows.all())


async def _open_profile(chat: Conversation, user_id: int, language: str = "en") -> dict[str, Any]:
    replies = await chat.send(user_id, "/profile", language_code=language)
    [profile] = [m for m in replies.messages if "inline_keyboard" in markup(m)]
    return profile


async def _press(chat: Conversation, user_id: int, data: str, message_id: int) -> dict[str, Any]:
    """Press a button; returns the answerCallbackQuery parameters."""
    return (await chat.press(user_id, data, message_id=message_id)).answer


async def test_own_contact_is_saved_and_profile_shows_it_masked(
    conversation: StartConversation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chat = await conversation()
    profile = await _open_profile(chat, ANN)
    assert "Phone: not shared yet" in profile["text"]
    assert buttons(profile)["Share my phone"] == "pf:phone:"

    replies = await chat.press(ANN, "pf:phone:", message_id=profile["message_id"])
    [ask] = [c for c in replies.of("sendMessage") if "keyboard" in markup(c.params)]
    keyboard = markup(ask.params)
    [[button]] = keyboard["keyboard"]
    assert button["request_contact"] is True and button["text"] == "Share my phone number"
    assert keyboard["one_time_keyboard"] is True

    # Telegram's contact button sends the person's own card, often without the '+'.
    replies = await chat.send(ANN, "", contact={"phone_number": "33612345678"})
    [saved] = [c for c in replies.of("sendMessage") if "phone number is saved" in c.params["text"]]
    assert markup(saved.params) == {"remove_keyboard": True}

    profile = await _open_profile(chat, ANN)
    assert "Phone: +•••••••••78" in profile["text"]
    assert "612345678" not in profile["text"]
    assert (await _stored(chat.db, ANN)).phone == "+33612345678"
    assert await _contact_audit(chat.db) == ["contacts.set_phone"]

    # What the process would print, at DEBUG, through the production log formatter.
    printed = RedactingFormatter(Redactor([chat.settings.bot_token]))
    assert caplog.records
    assert not any("612345678" in printed.format(r) for r in caplog.records), (
        "a phone number reached the logs"
    )


async def test_someone_elses_contact_is_refused_and_nothing_is_stored(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    replies = await chat.send(ANN, "", contact={"phone_number": "+15551234567", "user_id": BOB})
    replies.message("I can only save your own phone number")
    # A card from the address book, of someone with no Telegram account.
    replies = await chat.send(ANN, "", contact={"phone_number": "+15551234567", "user_id": None})
    replies.message("your own phone number")

    assert (await _stored(chat.db, ANN)).phone is None
    assert await _contact_audit(chat.db) == []
    profile = await _open_profile(chat, ANN)
    assert "Phone: not shared yet" in profile["text"]


async def test_a_number_already_on_another_account_is_refused(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    (await chat.send(BOB, "", contact={"phone_number": "+33612345678"})).message(
        "phone number is saved"
    )
    (await chat.send(ANN, "", contact={"phone_number": "0033 6 12 34 56 78"})).message(
        "already on another account"
    )
    assert (await _stored(chat.db, ANN)).phone is None
    assert (await _stored(chat.db, BOB)).phone == "+33612345678"


async def test_email_is_set_through_the_conversation_after_an_invalid_try(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    profile = await _open_profile(chat, ANN)
    assert "E-mail: not set" in profile["text"]
    replies = await chat.press(
        ANN, buttons(profile)["Set e-mail"], message_id=profile["message_id"]
    )
    replies.message("Send me your e-mail address")

    (await chat.send(ANN, "ann at example dot com")).message(
        "does not look like an e-mail address"
    )
    assert (await _stored(chat.db, ANN)).email is None

    saved = (await chat.send(ANN, "Ann@Example.COM")).message(  # still waiting for the address
        "Your e-mail address is saved"
    )
    assert "E-mail: Ann@example.com" in saved["text"]
    assert "Clear e-mail" in buttons(saved)
    assert (await _stored(chat.db, ANN)).email == "Ann@example.com"

    # The conversation is over: text is no longer taken for an address.
    (await chat.send(ANN, "hello")).message("I did not understand that")
    assert (await _stored(chat.db, ANN)).email == "Ann@example.com"

    answer = await _press(chat, ANN, "pf:clear:", saved["message_id"])
    assert answer["text"] == "E-mail address removed."
    assert (await _stored(chat.db, ANN)).email is None
    assert await _contact_audit(chat.db) == ["contacts.set_email", "contacts.clear_email"]


async def test_cancel_leaves_the_email_conversation_in_french(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    profile = await _open_profile(chat, ANN, language="fr")
    assert "Vos coordonnées" in profile["text"]
    assert "Téléphone : pas encore partagé" in profile["text"]
    replies = await chat.press(
        ANN, buttons(profile)["Définir l'e-mail"], message_id=profile["message_id"]
    )
    replies.message("Envoyez-moi votre adresse e-mail")
    (await chat.send(ANN, "pas-une-adresse", language_code="fr")).message(
        "Cela ne ressemble pas à une adresse e-mail"
    )
    (await chat.send(ANN, "/cancel", language_code="fr")).message(
        "Annulé : rien n'a été modifié."
    )
    (await chat.send(ANN, "ann@example.com", language_code="fr")).message("Je n'ai pas compris")
    assert (await _stored(chat.db, ANN)).email is None


async def test_channel_order_change_persists_across_a_restart(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    profile = await _open_profile(chat, ANN)
    assert "in this order: Telegram, WhatsApp, SMS, E-mail" in profile["text"]
    replies = await chat.press(
        ANN, buttons(profile)["Channel order"], message_id=profile["message_id"]
    )
    screen = replies.message("Tap a channel to move it up")
    assert screen["message_id"] == profile["message_id"]  # the same message, redrawn
    assert "1. Telegram\n2. WhatsApp\n3. SMS\n4. E-mail" in screen["text"]
    screen_buttons = buttons(screen)
    assert screen_buttons["Move up: WhatsApp"] == "pfo:whatsapp:0123"
    assert "Move up: Telegram" not in screen_buttons  # already first

    replies = await chat.press(
        ANN, screen_buttons["Move up: WhatsApp"], message_id=screen["message_id"]
    )
    moved = replies.message("1. WhatsApp\n2. Telegram")
    assert buttons(moved)["Move up: Telegram"] == "pfo:telegram:1023"
    assert (await _stored(chat.db, ANN)).channel_order == "whatsapp,telegram,sms,email"

    chat = await chat.restart()
    profile = await _open_profile(chat, ANN)
    assert "in this order: WhatsApp, Telegram, SMS, E-mail" in profile["text"]
    assert await _contact_audit(chat.db) == ["contacts.set_channel_order"]


async def test_forged_and_stale_buttons_are_refused_and_change_nothing(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    profile = await _open_profile(chat, ANN)
    screen = (await chat.press(ANN, "pf:order:", message_id=profile["message_id"])).message(
        "Tap a channel to move it up"
    )
    move_sms = buttons(screen)["Move up: SMS"]
    (await chat.press(ANN, move_sms, message_id=screen["message_id"])).message(
        "2. SMS\n3. WhatsApp"
    )
    before = await _stored(chat.db, ANN)
    assert before.channel_order == "telegram,sms,whatsapp,email"

    for data in (
        move_sms,  # pressed again on the old screen: the order it showed has changed
        "pfo:sms:9999",  # an order that cannot exist
        "pfo:fax:0213",  # a channel we do not have
        "pfo:telegram:0213",  # already first
        "pf:optin:whatsapp",  # not opted out of it
        "pf:optin:manual",
        "pf:format:",  # an action we never drew
        "pf:order",  # a malformed packing
        "pfo:sms:0213:extra",
    ):
        replies = await chat.press(ANN, data, message_id=screen["message_id"])
        assert replies.answer.get("text") == STALE, data
        assert replies.answer.get("show_alert") is True, data
        assert replies.messages == [], data  # nothing redrawn

    after = await _stored(chat.db, ANN)
    assert (after.channel_order, after.opt_outs) == (before.channel_order, before.opt_outs)
    assert await _contact_audit(chat.db) == ["contacts.set_channel_order"]


async def test_an_opted_out_channel_can_be_opted_in_again(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    (await chat.send(ANN, "/start")).message("choose your language")
    ann = await _stored(chat.db, ANN)
    await chat.db.run(
        lambda s: contacts.record_opt_out(
            s, user_id=ann.id, channel="whatsapp", now=chat.clock.now(), reason="whatsapp STOP"
        )
    )

    profile = await _open_profile(chat, ANN)
    assert "You opted out of: WhatsApp" in profile["text"]
    profile_buttons = buttons(profile)
    assert profile_buttons["Opt in again: WhatsApp"] == "pf:optin:whatsapp"
    assert "Opt in again: SMS" not in profile_buttons

    replies = await chat.press(ANN, "pf:optin:whatsapp", message_id=profile["message_id"])
    assert replies.answer["text"] == "I will use WhatsApp again."
    [edit] = replies.of("editMessageText")
    redrawn = edit.result
    assert redrawn["message_id"] == profile["message_id"]
    assert "opted out" not in redrawn["text"]
    assert "Opt in again: WhatsApp" not in buttons(redrawn)
    assert (await _stored(chat.db, ANN)).opt_outs == ""

    # The same button, pressed again: nothing left to opt in to.
    answer = await _press(chat, ANN, "pf:optin:whatsapp", profile["message_id"])
    assert answer["text"] == STALE
    assert await _contact_audit(chat.db) == ["contacts.opt_out", "contacts.opt_in"]
