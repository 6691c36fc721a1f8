"""/profile end to end: a person shares their phone, sets an e-mail, orders their channels and
opts in again, talking to the real bot process over the fake Bot API; we check what Telegram was
sent and what the database holds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import TransactionLog, User
from services import contacts
from services.clock import SystemClock
from tests.e2e.conftest import StartBot
from tests.fakes.telegram import FakeTelegram

ANN = 2001
BOB = 2002
STALE = "This button is no longer valid."
# Every test sends a burst of updates; the flood gate is not what is tested here.
FAST = {"THROTTLE_RATE": "1000"}


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """The bot's database, as the test sees it."""
    db = Database.from_url(db_url)
    yield db
    await db.dispose()


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


def _markup(params_or_message: dict[str, Any]) -> dict[str, Any]:
    markup = params_or_message.get("reply_markup") or {}
    return json.loads(markup) if isinstance(markup, str) else markup


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    """Inline buttons of a message: text -> callback data."""
    return {
        button["text"]: button["callback_data"]
        for row in _markup(message).get("inline_keyboard", [])
        for button in row
    }


async def _open_profile(fake: FakeTelegram, user_id: int, language: str = "en") -> dict[str, Any]:
    seen = len(fake.calls)
    fake.message(user_id, "/profile", language_code=language)
    call = await fake.wait_for_call(
        "sendMessage",
        lambda p: p["chat_id"] == user_id and "inline_keyboard" in _markup(p),
        since=seen,
    )
    return call.result


async def _press(fake: FakeTelegram, user_id: int, data: str, message_id: int) -> dict[str, Any]:
    """Press a button; returns the answerCallbackQuery parameters."""
    update_id = fake.callback(user_id, data, message_id=message_id)
    query_id = fake.callback_query_id(update_id)
    call = await fake.wait_for_call(
        "answerCallbackQuery", lambda p: p.get("callback_query_id") == query_id
    )
    return call.params


async def test_own_contact_is_saved_and_profile_shows_it_masked(
    fake_telegram: FakeTelegram, start_bot: StartBot, database: Database
) -> None:
    bot = await start_bot(**FAST)
    profile = await _open_profile(fake_telegram, ANN)
    assert "Phone: not shared yet" in profile["text"]
    buttons = _buttons(profile)
    assert buttons["Share my phone"] == "pf:phone:"

    seen = len(fake_telegram.calls)
    await _press(fake_telegram, ANN, buttons["Share my phone"], profile["message_id"])
    ask = await fake_telegram.wait_for_call(
        "sendMessage", lambda p: "keyboard" in _markup(p), since=seen
    )
    keyboard = _markup(ask.params)
    [[button]] = keyboard["keyboard"]
    assert button["request_contact"] is True and button["text"] == "Share my phone number"
    assert keyboard["one_time_keyboard"] is True

    seen = len(fake_telegram.calls)
    # Telegram's contact button sends the person's own card, often without the '+'.
    fake_telegram.message(ANN, "", contact={"phone_number": "33612345678"})
    saved = await fake_telegram.wait_for_call(
        "sendMessage", lambda p: "phone number is saved" in p["text"], since=seen
    )
    assert _markup(saved.params) == {"remove_keyboard": True}

    profile = await _open_profile(fake_telegram, ANN)
    assert "Phone: +•••••••••78" in profile["text"]
    assert "612345678" not in profile["text"]
    assert (await _stored(database, ANN)).phone == "+33612345678"
    assert await _contact_audit(database) == ["contacts.set_phone"]

    await bot.stop()
    assert "612345678" not in bot.text, "a phone number reached the logs"


async def test_someone_elses_contact_is_refused_and_nothing_is_stored(
    fake_telegram: FakeTelegram, start_bot: StartBot, database: Database
) -> None:
    await start_bot(**FAST)
    fake_telegram.message(ANN, "", contact={"phone_number": "+15551234567", "user_id": BOB})
    await fake_telegram.wait_for_text(ANN, "I can only save your own phone number")
    # A card from the address book, of someone with no Telegram account.
    seen = len(fake_telegram.calls)
    fake_telegram.message(ANN, "", contact={"phone_number": "+15551234567", "user_id": None})
    await fake_telegram.wait_for_call(
        "sendMessage", lambda p: "your own phone number" in p["text"], since=seen
    )

    assert (await _stored(database, ANN)).phone is None
    assert await _contact_audit(database) == []
    profile = await _open_profile(fake_telegram, ANN)
    assert "Phone: not shared yet" in profile["text"]


async def test_a_number_already_on_another_account_is_refused(
    fake_telegram: FakeTelegram, start_bot: StartBot, database: Database
) -> None:
    await start_bot(**FAST)
    fake_telegram.message(BOB, "", contact={"phone_number": "+33612345678"})
    await fake_telegram.wait_for_text(BOB, "phone number is saved")
    fake_telegram.message(ANN, "", contact={"phone_number": "0033 6 12 34 56 78"})
    await fake_telegram.wait_for_text(ANN, "already on another account")
    assert (await _stored(database, ANN)).phone is None
    assert (await _stored(database, BOB)).phone == "+33612345678"


async def test_email_is_set_through_the_conversation_after_an_invalid_try(
    fake_telegram: FakeTelegram, start_bot: StartBot, database: Database
) -> None:
    await start_bot(**FAST)
    profile = await _open_profile(fake_telegram, ANN)
    assert "E-mail: not set" in profile["text"]
    await _press(fake_telegram, ANN, _buttons(profile)["Set e-mail"], profile["message_id"])
    await fake_telegram.wait_for_text(ANN, "Send me your e-mail address")

    fake_telegram.message(ANN, "ann at example dot com")
    await fake_telegram.wait_for_text(ANN, "does not look like an e-mail address")
    assert (await _stored(database, ANN)).email is None

    fake_telegram.message(ANN, "Ann@Example.COM")  # still waiting for the address
    saved = await fake_telegram.wait_for_text(ANN, "Your e-mail address is saved")
    assert "E-mail: Ann@example.com" in saved["text"]
    assert "Clear e-mail" in _buttons(saved)
    assert (await _stored(database, ANN)).email == "Ann@example.com"

    # The conversation is over: text is no longer taken for an address.
    fake_telegram.message(ANN, "hello")
    await fake_telegram.wait_for_text(ANN, "I did not understand that")
    assert (await _stored(database, ANN)).email == "Ann@example.com"

    answer = await _press(fake_telegram, ANN, "pf:clear:", saved["message_id"])
    assert answer["text"] == "E-mail address removed."
    assert (await _stored(database, ANN)).email is None
    assert await _contact_audit(database) == ["contacts.set_email", "contacts.clear_email"]


async def test_cancel_leaves_the_email_conversation_in_french(
    fake_telegram: FakeTelegram, start_bot: StartBot, database: Database
) -> None:
    await start_bot(**FAST)
    profile = await _open_profile(fake_telegram, ANN, language="fr")
    assert "Vos coordonnées" in profile["text"]
    assert "Téléphone : pas encore partagé" in profile["text"]
    await _press(fake_telegram, ANN, _buttons(profile)["Définir l'e-mail"], profile["message_id"])
    await fake_telegram.wait_for_text(ANN, "Envoyez-moi votre adresse e-mail")
    fake_telegram.message(ANN, "pas-une-adresse", language_code="fr")
    await fake_telegram.wait_for_text(ANN, "Cela ne ressemble pas à une adresse e-mail")
    fake_telegram.message(ANN, "/cancel", language_code="fr")
    await fake_telegram.wait_for_text(ANN, "Annulé : rien n'a été modifié.")
    fake_telegram.message(ANN, "ann@example.com", language_code="fr")
    await fake_telegram.wait_for_text(ANN, "Je n'ai pas compris")
    assert (await _stored(database, ANN)).email is None


async def test_channel_order_change_persists_across_a_restart(
    fake_telegram: FakeTelegram, start_bot: StartBot, database: Database
) -> None:
    bot = await start_bot(**FAST)
    profile = await _open_profile(fake_telegram, ANN)
    assert "in this order: Telegram, WhatsApp, SMS, E-mail" in profile["text"]
    await _press(fake_telegram, ANN, _buttons(profile)["Channel order"], profile["message_id"])
    screen = await fake_telegram.wait_for_text(ANN, "Tap a channel to move it up")
    assert screen["message_id"] == profile["message_id"]  # the same message, redrawn
    assert "1. Telegram\n2. WhatsApp\n3. SMS\n4. E-mail" in screen["text"]
    buttons = _buttons(screen)
    assert buttons["Move up: WhatsApp"] == "pfo:whatsapp:0123"
    assert "Move up: Telegram" not in buttons  # already first

    await _press(fake_telegram, ANN, buttons["Move up: WhatsApp"], screen["message_id"])
    moved = await fake_telegram.wait_for_text(ANN, "1. WhatsApp\n2. Telegram")
    assert _buttons(moved)["Move up: Telegram"] == "pfo:telegram:1023"
    assert (await _stored(database, ANN)).channel_order == "whatsapp,telegram,sms,email"

    assert await bot.stop() == 0
    await start_bot(**FAST)
    profile = await _open_profile(fake_telegram, ANN)
    assert "in this order: WhatsApp, Telegram, SMS, E-mail" in profile["text"]
    assert await _contact_audit(database) == ["contacts.set_channel_order"]


async def test_forged_and_stale_buttons_are_refused_and_change_nothing(
    fake_telegram: FakeTelegram, start_bot: StartBot, database: Database
) -> None:
    await start_bot(**FAST)
    profile = await _open_profile(fake_telegram, ANN)
    await _press(fake_telegram, ANN, "pf:order:", profile["message_id"])
    screen = await fake_telegram.wait_for_text(ANN, "Tap a channel to move it up")
    move_sms = _buttons(screen)["Move up: SMS"]
    await _press(fake_telegram, ANN, move_sms, screen["message_id"])
    await fake_telegram.wait_for_text(ANN, "2. SMS\n3. WhatsApp")
    before = await _stored(database, ANN)
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
        answer = await _press(fake_telegram, ANN, data, screen["message_id"])
        assert answer.get("text") == STALE, data
        assert answer.get("show_alert") is True, data

    after = await _stored(database, ANN)
    assert (after.channel_order, after.opt_outs) == (before.channel_order, before.opt_outs)
    assert await _contact_audit(database) == ["contacts.set_channel_order"]


async def test_an_opted_out_channel_can_be_opted_in_again(
    fake_telegram: FakeTelegram, start_bot: StartBot, database: Database
) -> None:
    await start_bot(**FAST)
    fake_telegram.message(ANN, "/start")
    await fake_telegram.wait_for_text(ANN, "choose your language")
    ann = await _stored(database, ANN)
    clock = SystemClock()
    await database.run(
        lambda s: contacts.record_opt_out(
            s, user_id=ann.id, channel="whatsapp", now=clock.now(), reason="whatsapp STOP"
        )
    )

    profile = await _open_profile(fake_telegram, ANN)
    assert "You opted out of: WhatsApp" in profile["text"]
    buttons = _buttons(profile)
    assert buttons["Opt in again: WhatsApp"] == "pf:optin:whatsapp"
    assert "Opt in again: SMS" not in buttons

    seen = len(fake_telegram.calls)
    answer = await _press(fake_telegram, ANN, "pf:optin:whatsapp", profile["message_id"])
    assert answer["text"] == "I will use WhatsApp again."
    edit = await fake_telegram.wait_for_call("editMessageText", since=seen)
    redrawn = edit.result
    assert redrawn["message_id"] == profile["message_id"]
    assert "opted out" not in redrawn["text"]
    assert "Opt in again: WhatsApp" not in _buttons(redrawn)
    assert (await _stored(database, ANN)).opt_outs == ""

    # The same button, pressed again: nothing left to opt in to.
    answer = await _press(fake_telegram, ANN, "pf:optin:whatsapp", profile["message_id"])
    assert answer["text"] == STALE
    assert await _contact_audit(database) == ["contacts.opt_out", "contacts.opt_in"]
