"""Provider webhooks on the real bot process: Meta's verification and signed deliveries, Twilio's
signed status callbacks, against the fake providers and a real SMTP server. What a person would
see: a message the provider could not deliver reaches them on the next channel; forged, broken or
oversized requests change nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import aiohttp

from database.engine import Database
from database.models import User
from tests.e2e.conftest import StartBot
from tests.e2e.delivery import (
    APP_SECRET,
    VERIFY_TOKEN,
    Providers,
    add_user,
    attempts,
    enqueue,
    eventually,
    row,
)
from tests.e2e.harness import BotProcess
from tests.fakes.twilio import twilio_signature
from tests.fakes.whatsapp import sign, webhook_error

ANN = 1001
ANN_PHONE = "+33612345678"
ANN_WA = "33612345678"
WA_PATH = "/webhooks/whatsapp"
TWILIO_PATH = "/webhooks/twilio/status"


async def add_ann(db: Database, *, wrote_on_whatsapp: bool = True) -> int:
    return await add_user(db, ANN, phone=ANN_PHONE, email="ann@example.com",
                          wrote_on_whatsapp=wrote_on_whatsapp)


async def stored_user(db: Database, user_id: int) -> User:
    async with db.transaction() as session:
        return await session.get_one(User, user_id)


async def sent_on(db: Database, notification_id: int, channel: str) -> None:
    async def check() -> bool:
        current = await row(db, notification_id)
        return (current.status, current.channel) == ("sent", channel)

    await eventually(check)


async def post(url: str, body: bytes | Callable[[], AsyncIterator[bytes]],
               headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        data = body if isinstance(body, bytes) else body()
        async with session.post(url, data=data, headers=headers) as response:
            return response.status, await response.text()


def signed_headers(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP_SECRET)}


async def start(start_bot: StartBot, providers: Providers) -> BotProcess:
    bot = await start_bot(**providers.env)
    assert bot.web_url is not None
    return bot


# ------------------------------------------------------------------------------ verification


async def test_meta_verification_answers_the_challenge_only_with_the_right_token(
    providers: Providers, start_bot: StartBot
) -> None:
    bot = await start(start_bot, providers)
    url = f"{bot.web_url}{WA_PATH}"
    assert await providers.whatsapp.verify_webhook(url, verify_token=VERIFY_TOKEN,
                                                   challenge="1158201444") == (200, "1158201444")
    status, _ = await providers.whatsapp.verify_webhook(url, verify_token="guessed")
    assert status == 403
    async with aiohttp.ClientSession() as session:
        params = {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN,
                  "hub.challenge": "1"}
        async with session.get(url, params=params) as response:
            assert response.status == 403
    assert VERIFY_TOKEN not in bot.text


async def test_without_a_verify_token_verification_is_refused(
    providers: Providers, start_bot: StartBot
) -> None:
    env = {k: v for k, v in providers.env.items() if k != "WHATSAPP_VERIFY_TOKEN"}
    bot = await start_bot(**env)
    url = f"{bot.web_url}{WA_PATH}"
    for _ in range(2):
        status, _ = await providers.whatsapp.verify_webhook(url, verify_token="")
        assert status == 403
    assert bot.text.count("WHATSAPP_VERIFY_TOKEN is not set") == 1


# ----------------------------------------------------------------------- WhatsApp statuses


async def test_signed_statuses_set_delivered_then_read_on_the_sent_row(
    providers: Providers, start_bot: StartBot, db: Database
) -> None:
    user = await add_ann(db)
    nid = await enqueue(db, user, "update:1", "Your technician arrives at 14:00.",
                        channels=["whatsapp", "sms"])
    bot = await start(start_bot, providers)
    await sent_on(db, nid, "whatsapp")
    wamid = providers.whatsapp.sent[0].wamid
    assert (await row(db, nid)).provider_message_id == wamid
    url = f"{bot.web_url}{WA_PATH}"

    for status in ("sent", "delivered"):
        payload = providers.whatsapp.make_status_webhook(wamid, status, ANN_WA)
        assert (await providers.whatsapp.deliver(url, payload, app_secret=APP_SECRET))[0] == 200
    delivered = await row(db, nid)
    assert delivered.delivered_at is not None and delivered.read_at is None

    read = providers.whatsapp.make_status_webhook(wamid, "read", ANN_WA)
    for _ in range(2):  # Meta retries; the second delivery changes nothing
        assert (await providers.whatsapp.deliver(url, read, app_secret=APP_SECRET))[0] == 200
    after = await row(db, nid)
    assert after.read_at is not None and after.delivered_at == delivered.delivered_at
    assert (after.status, after.channel) == ("sent", "whatsapp")
    assert providers.twilio.sent == []
    assert ANN_PHONE not in bot.text and ANN_WA not in bot.text


async def test_forged_broken_and_oversized_deliveries_change_nothing(
    providers: Providers, start_bot: StartBot, db: Database
) -> None:
    user = await add_ann(db)
    nid = await enqueue(db, user, "update:1", "Hello", channels=["whatsapp", "sms"])
    bot = await start(start_bot, providers)
    await sent_on(db, nid, "whatsapp")
    wamid = providers.whatsapp.sent[0].wamid
    url = f"{bot.web_url}{WA_PATH}"
    failed = providers.whatsapp.make_status_webhook(wamid, "failed", ANN_WA)
    body = json.dumps(failed).encode()

    assert (await providers.whatsapp.deliver(url, failed, app_secret=APP_SECRET,
                                             signature=""))[0] == 401
    assert (await providers.whatsapp.deliver(url, failed, app_secret="not-the-secret"))[0] == 403
    # Signed, but the body changed on the way.
    tampered = body.replace(b'"failed"', b'"read"')
    assert (await post(url, tampered, signed_headers(body)))[0] == 403

    # Signed, yet not what Meta sends: 400 with a short JSON error, never a 500.
    bad_bodies = [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"entry": [{"changes": [{"value": {"statuses": [{"status": "read"}]}}]}]})
        .encode(),
        json.dumps({"entry": "nope"}).encode(),
    ]
    for bad in bad_bodies:
        status, text = await post(url, bad, signed_headers(bad))
        assert status == 400, text
        assert "error" in json.loads(text)

    # Too large: refused before it is read, whether its length is announced or not.
    huge = b'{"entry": [], "pad": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    assert (await post(url, huge, signed_headers(huge)))[0] == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * 65536

    assert (await post(url, chunks, {"X-Hub-Signature-256": "sha256=00"}))[0] == 413

    after = await row(db, nid)
    assert (after.status, after.channel, after.delivered_at, after.read_at) == (
        "sent", "whatsapp", None, None)
    assert await attempts(db, nid) == [("whatsapp", "sent", None)]
    assert providers.twilio.sent == []
    assert "Traceback" not in bot.text


async def test_inbound_messages_open_the_window_and_stop_start_are_honoured(
    providers: Providers, start_bot: StartBot, db: Database
) -> None:
    user = await add_ann(db, wrote_on_whatsapp=False)
    bot = await start(start_bot, providers)
    url = f"{bot.web_url}{WA_PATH}"
    unicode_heavy = "Bonjour 👋🏽 — مرحبا — 你好 — Ünïcödé ✓ \u200d\u202e ﷽ " * 20
    payload = providers.whatsapp.make_message_webhook(ANN_WA, unicode_heavy, name="Zoë 🌸")
    assert (await providers.whatsapp.deliver(url, payload, app_secret=APP_SECRET))[0] == 200

    # Stored before the 200, processed by the inbound worker moments later.
    async def window_opened() -> bool:
        return (await stored_user(db, user)).whatsapp_inbound_at is not None

    async def opted_out(expected: str) -> bool:
        return (await stored_user(db, user)).opt_outs == expected

    await eventually(window_opened)

    stop = providers.whatsapp.make_message_webhook(ANN_WA, "ARRÊT")
    for _ in range(2):
        assert (await providers.whatsapp.deliver(url, stop, app_secret=APP_SECRET))[0] == 200
    await eventually(lambda: opted_out("whatsapp"))

    # While opted out, a notification skips WhatsApp.
    nid = await enqueue(db, user, "update:2", "Opted out of WhatsApp", channels=["whatsapp", "sms"])
    await sent_on(db, nid, "sms")
    assert providers.whatsapp.sent == []

    start_again = providers.whatsapp.make_message_webhook(ANN_WA, "start")
    assert (await providers.whatsapp.deliver(url, start_again, app_secret=APP_SECRET))[0] == 200
    await eventually(lambda: opted_out(""))
    assert ANN_WA not in bot.text and "مرحبا" not in bot.text


async def test_a_failed_whatsapp_status_moves_the_notification_on_to_sms(
    providers: Providers, start_bot: StartBot, db: Database
) -> None:
    user = await add_ann(db)
    nid = await enqueue(db, user, "update:1", "Your technician arrives at 14:00.",
                        channels=["whatsapp", "sms"])
    bot = await start(start_bot, providers)
    await sent_on(db, nid, "whatsapp")
    wamid = providers.whatsapp.sent[0].wamid
    failed = providers.whatsapp.make_status_webhook(
        wamid, "failed", ANN_WA, errors=[webhook_error(131026)])
    url = f"{bot.web_url}{WA_PATH}"

    assert (await providers.whatsapp.deliver(url, failed, app_secret=APP_SECRET))[0] == 200
    sms = await providers.twilio.wait_for_sent(timeout=20)
    assert sms[0].to == ANN_PHONE and "Your technician arrives at 14:00." in sms[0].body
    await sent_on(db, nid, "sms")

    # Meta delivers the same webhook again: nothing is sent twice.
    assert (await providers.whatsapp.deliver(url, failed, app_secret=APP_SECRET))[0] == 200
    await asyncio.sleep(1.0)
    assert len(providers.twilio.sent) == 1
    assert await attempts(db, nid) == [
        ("whatsapp", "sent", None),
        ("whatsapp", "failed", "131026"),
        ("sms", "sent", None),
    ]


# ------------------------------------------------------------------------- Twilio callbacks


async def test_an_undelivered_sms_moves_on_to_email_and_forged_callbacks_are_refused(
    providers: Providers, start_bot: StartBot, db: Database
) -> None:
    user = await add_ann(db)
    nid = await enqueue(db, user, "update:1", "Your invoice is ready.", channels=["sms", "email"])
    other = await enqueue(db, user, "update:2", "Second message.", channels=["sms", "email"])
    bot = await start(start_bot, providers)
    await sent_on(db, nid, "sms")
    await sent_on(db, other, "sms")
    by_body = {m.body: m for m in providers.twilio.sent}
    first, second = by_body["Your invoice is ready."], by_body["Second message."]
    # The notification's id rides along, signed by Twilio with the URL (early receipts).
    callback_url = f"{bot.web_url}{TWILIO_PATH}?ref={nid}"
    assert first.status_callback == callback_url
    assert second.status_callback == f"{bot.web_url}{TWILIO_PATH}?ref={other}"

    # Forged: signed with another token, or not signed at all.
    params = {"MessageSid": first.sid, "MessageStatus": "undelivered", "ErrorCode": "30003",
              "AccountSid": providers.twilio.account_sid}
    forged = twilio_signature("not-the-token", callback_url, params)
    async with aiohttp.ClientSession() as session:
        async with session.post(callback_url, data=params,
                                headers={"X-Twilio-Signature": forged}) as response:
            assert response.status == 403
        async with session.post(callback_url, data=params) as response:
            assert response.status == 401
        # Signed for another URL (a replay from elsewhere).
        elsewhere = twilio_signature(providers.twilio.auth_token, "https://evil.example/x", params)
        async with session.post(callback_url, data=params,
                                headers={"X-Twilio-Signature": elsewhere}) as response:
            assert response.status == 403
    assert (await row(db, nid)).status == "sent"
    assert providers.mailbox.messages == []

    status, text = await providers.twilio.send_status_callback(second.sid, "delivered")
    assert status == 200 and "<Response>" in text
    assert (await row(db, other)).delivered_at is not None

    status, _ = await providers.twilio.send_status_callback(first.sid, "undelivered", 30003)
    assert status == 200
    await sent_on(db, nid, "email")
    mails = providers.mailbox.to("ann@example.com")
    assert len(mails) == 1 and "Your invoice is ready." in mails[0].get_content()
    assert await attempts(db, nid) == [
        ("sms", "sent", None),
        ("sms", "failed", "30003"),
        ("email", "sent", None),
    ]
    # The same callback again changes nothing.
    assert (await providers.twilio.send_status_callback(first.sid, "undelivered", 30003))[0] == (
        200)
    await asyncio.sleep(0.5)
    assert len(providers.mailbox.to("ann@example.com")) == 1
    assert (await row(db, other)).status == "sent"
    assert providers.twilio.auth_token not in bot.text
