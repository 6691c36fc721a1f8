"""/profile: a person shares their phone, sets an e-mail, orders their channels and opts in
again; we check what Telegram was sent and what the database holds. Only the channels the
settings switch on, and that can reach the person, are offered."""

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
ANN_PHONE = "+33612345678"

# The settings that switch each channel on (bot.delivery.CHANNEL_SETTINGS); nothing is sent in
# these tests, so the values only have to be there (Twilio's API on loopback needs no public URL).
WHATSAPP_ON = {"whatsapp_token": "wa-test-token", "whatsapp_phone_number_ids": "100100",
               "whatsapp_app_secret": "wa-app-secret"}
SMS_ON = {"twilio_account_sid": "AC-test", "twilio_auth_token": "twilio-test-token",
          "twilio_from": "+15550001111", "twilio_api_base": "http://127.0.0.1:9"}
EMAIL_ON = {"smtp_host": "127.0.0.1", "smtp_from": "desk@example.com"}
PHONE_ON = {**WHATSAPP_ON, **SMS_ON}
ALL_ON = {**PHONE_ON, **EMAIL_ON}


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


async def _reachable_everywhere(chat: Conversation, user_id: int) -> None:
    """The person shares their phone and sets an e-mail (audited: two contacts.* rows)."""
    (await chat.send(user_id, "", contact={"phone_number": ANN_PHONE})).message(
        "phone number is saved"
    )
    user = await _stored(chat.db, user_id)
    await chat.db.run(
        lambda s: contacts.set_email(s, user_id=user.id, email="ann@example.com",
                                     now=chat.clock.now())
    )


async def test_own_contact_is_saved_and_profile_shows_it_masked(
    conversation: StartConversation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chat = await conversation(**PHONE_ON)
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
    # Now WhatsApp and SMS can reach her: they are offered.
    assert "in this order: Telegram, WhatsApp, SMS" in profile["text"]
    assert "Share your phone number" not in profile["text"]
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
    chat = await conversation(**PHONE_ON)
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
    chat = await conversation(**EMAIL_ON)
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
    assert "in this order: Telegram, E-mail" in saved["text"]
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
    chat = await conversation(**ALL_ON)
    profile = await _open_profile(chat, ANN, language="fr")
    assert "Vos coordonnées" in profile["text"]
    assert "Téléphone : pas encore partagé" in profile["text"]
    assert "Je vous joins sur Telegram." in profile["text"]
    assert (
        "Partagez votre numéro de téléphone pour être joint aussi sur WhatsApp ou SMS."
        in profile["text"]
    )
    assert "Définissez une adresse e-mail pour être joint aussi par e-mail." in profile["text"]
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
    chat = await conversation(**ALL_ON)
    await _reachable_everywhere(chat, ANN)
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
    assert await _contact_audit(chat.db) == [
        "contacts.set_phone", "contacts.set_email", "contacts.set_channel_order"
    ]


async def test_forged_and_stale_buttons_are_refused_and_change_nothing(
    conversation: StartConversation,
) -> None:
    chat = await conversation(**ALL_ON)
    await _reachable_everywhere(chat, ANN)
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
    assert await _contact_audit(chat.db) == [
        "contacts.set_phone", "contacts.set_email", "contacts.set_channel_order"
    ]


async def test_an_opted_out_channel_can_be_opted_in_again(
    conversation: StartConversation,
) -> None:
    chat = await conversation(**ALL_ON)
    (await chat.send(ANN, "/start")).message("choose your language")
    (await chat.send(ANN, "", contact={"phone_number": ANN_PHONE})).message("phone number is saved")
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
    assert await _contact_audit(chat.db) == [
        "contacts.set_phone", "contacts.opt_out", "contacts.opt_in"
    ]


# ------------------------------------------------------- only the channels that are switched on


async def test_with_no_channel_configured_only_telegram_is_offered_and_nothing_promised(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    replies = await chat.send(ANN, "/profile")
    profile = replies.message("Your contact details")
    assert profile["text"] == "Your contact details\nI reach you on Telegram."
    assert markup(profile) == {}  # no button: nothing to share, set or order

    # A stale "Channel order" button from an older screen shows Telegram alone, and no move.
    screen = (await chat.press(ANN, "pf:order:", message_id=profile["message_id"])).message(
        "Tap a channel to move it up"
    )
    assert "1. Telegram" in screen["text"] and "2." not in screen["text"]
    assert list(buttons(screen)) == ["Back"]


async def test_everything_configured_but_nothing_on_file_says_how_to_add_each(
    conversation: StartConversation,
) -> None:
    chat = await conversation(**ALL_ON)
    profile = await _open_profile(chat, ANN)
    assert profile["text"].splitlines() == [
        "Your contact details",
        "Phone: not shared yet",
        "E-mail: not set",
        "I reach you on Telegram.",
        "Share your phone number to be reached on WhatsApp or SMS too.",
        "Set an e-mail address to be reached by e-mail too.",
    ]
    assert list(buttons(profile)) == ["Share my phone", "Set e-mail"]


async def test_only_switched_on_channels_that_reach_the_person_are_offered(
    conversation: StartConversation,
) -> None:
    # SMS and e-mail on, WhatsApp off; Ann has a phone and an e-mail address on file.
    chat = await conversation(**SMS_ON, **EMAIL_ON)
    await _reachable_everywhere(chat, ANN)
    profile = await _open_profile(chat, ANN)
    assert "in this order: Telegram, SMS, E-mail" in profile["text"]
    assert "WhatsApp" not in profile["text"]
    assert "Share your phone number" not in profile["text"]
    assert list(buttons(profile)) == ["Share my phone", "Set e-mail", "Clear e-mail",
                                      "Channel order"]

    screen = (await chat.press(ANN, "pf:order:", message_id=profile["message_id"])).message(
        "Tap a channel to move it up"
    )
    assert "1. Telegram\n2. SMS\n3. E-mail\n" in screen["text"]
    assert buttons(screen)["Move up: E-mail"] == "pfo:email:023"
    moved = (await chat.press(ANN, "pfo:email:023", message_id=screen["message_id"])).message(
        "1. Telegram\n2. E-mail\n3. SMS"
    )
    assert "WhatsApp" not in moved["text"]
    # WhatsApp, not shown, keeps its place among the others.
    assert (await _stored(chat.db, ANN)).channel_order == "telegram,whatsapp,email,sms"

    # Switched on later, it is offered where it was.
    chat = await chat.restart(**WHATSAPP_ON)
    profile = await _open_profile(chat, ANN)
    assert "in this order: Telegram, WhatsApp, E-mail, SMS" in profile["text"]


async def test_a_channel_switched_off_is_not_offered_even_with_the_address_on_file(
    conversation: StartConversation,
) -> None:
    chat = await conversation(**ALL_ON)
    await _reachable_everywhere(chat, ANN)
    chat = await chat.restart(whatsapp_token=None, twilio_account_sid=None, smtp_host=None)
    profile = await _open_profile(chat, ANN)
    # What is on file is still shown (and the e-mail can be removed), but not offered.
    assert profile["text"].splitlines() == [
        "Your contact details",
        "Phone: +•••••••••78",
        "E-mail: ann@example.com",
        "I reach you on Telegram.",
    ]
    assert list(buttons(profile)) == ["Clear e-mail"]
