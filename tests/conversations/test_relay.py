"""The relay between customers and the operators' chat, end to end on both engines: signed
WhatsApp webhooks stored, processed by the inbound worker with the relay plugged in, delivered
by the production delivery engine (build_delivery: outbox, dispatcher, paced Telegram channel)
to the fake Bot API; operators' answers fed through the production Dispatcher and delivered to
the fake Graph API. Time moves with the test clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from aiogram import Bot
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.app import build_bot
from bot.delivery import Delivery, build_delivery
from bot.webhooks import WHATSAPP_PATH, register_webhooks
from database.models import Notification, TransactionLog, User
from handlers.buttons import pack_action
from services.relay import Relay
from tests.conversations.conftest import StartConversation
from tests.conversations.harness import Conversation, Replies, buttons
from tests.fakes.telegram import BOT_ID
from tests.fakes.whatsapp import DEFAULT_PHONE_NUMBER_ID, DEFAULT_TOKEN, FakeWhatsApp
from tests.fakes.whatsapp import inbound_message as wa_message

APP_SECRET = "wa-app-secret"
OPS = -1_001_234_567_890  # the operators' supergroup
CUSTOMERS = ("33612345678", "33698765432", "447700900123")
ANN = CUSTOMERS[0]
OPERATOR = 2001
TELEGRAM_USER = 3001
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC: the FakeClock's start
JPEG = b"\xff\xd8\xff\xe0" + b"leak photo" * 100


@dataclass
class Desk:
    chat: Conversation
    wa: FakeWhatsApp
    delivery: Delivery
    sender_bot: Bot
    client: TestClient

    @property
    def relay(self) -> Relay:
        relay: Relay = self.chat.dp["relay"]
        return relay

    async def post(self, *messages: dict[str, Any], names: dict[str, str] | None = None) -> None:
        payload = self.wa.make_inbound_webhook(list(messages), names=names or {ANN: "Ann Lee"})
        body = json.dumps(payload).encode()
        async with self.client.post(
            WHATSAPP_PATH, data=body,
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": self.wa.sign(body, APP_SECRET)},
        ) as response:
            assert response.status == 200

    async def run(self) -> None:
        """Process what the webhook stored, then send what is due now."""
        await self.delivery.inbound.drain()
        while await self.delivery.dispatcher.run_once():
            pass

    async def settle(self, limit: int = 200) -> None:
        """Run until nothing is left to send, moving the test clock on by the group's pace
        (20 messages a minute) while messages wait for their slot."""
        for _ in range(limit):
            await self.run()
            async with self.chat.db.transaction() as session:
                waiting = await session.scalar(select(Notification.id).where(
                    Notification.status.in_(("pending", "sending"))).limit(1))
            if waiting is None:
                return
            self.chat.clock.advance(3.2)
        raise AssertionError("still sending after the limit")

    def relayed(self) -> list[dict[str, Any]]:
        """What the bot put in the operators' chat (topics created aside)."""
        return [m for m in self.chat.fake.sent_messages(OPS)]

    async def operator_says(self, text: str = "", *, reply_to: dict[str, Any] | None = None,
                            thread: int | None = None, photo: str | None = None,
                            user_id: int = OPERATOR) -> Replies:
        fake = self.chat.fake
        user = {"id": user_id, "is_bot": False, "first_name": "Olga Operator",
                "language_code": "en"}
        fake._users[user_id] = user
        content: dict[str, Any] = {}
        if photo is not None:
            content["photo"] = [{"file_id": photo, "file_unique_id": photo[-16:], "width": 90,
                                 "height": 90, "file_size": len(fake.file_data(photo))}]
            if text:
                content["caption"] = text
        elif text:
            content["text"] = text
        if thread is not None:
            content.update(message_thread_id=thread, is_topic_message=True)
        if reply_to is not None:
            content["reply_to_message"] = reply_to
        stored = fake._store_message(OPS, user, content)
        return await self.chat.feed(fake._register({"message": stored}))


@pytest.fixture
async def desk(conversation: StartConversation) -> AsyncIterator[Desk]:
    async with FakeWhatsApp() as wa:
        chat = await conversation(
            operators_chat_id=OPS, admin_ids=[9001],
            whatsapp_token=DEFAULT_TOKEN, whatsapp_phone_number_ids=(DEFAULT_PHONE_NUMBER_ID,),
            whatsapp_app_secret=APP_SECRET, whatsapp_verify_token="verify",
            whatsapp_api_base=wa.base_url, whatsapp_recipient_interval_seconds=0,
            dispatcher_lease_seconds=1, send_retry_wait_seconds=0,
        )
        # The delivery engine as `python main.py run` builds it, on a Bot of its own (its
        # pacing middleware then paces only deliveries; the conversation's Bot stays quick).
        sender_bot = build_bot(chat.settings)
        delivery = build_delivery(chat.settings, chat.db, sender_bot, chat.clock,
                                  public_base_url="http://127.0.0.1", pack_action=pack_action,
                                  relay=chat.dp["relay"])
        app = web.Application()
        register_webhooks(app, db=chat.db, clock=chat.clock, whatsapp_app_secret=APP_SECRET,
                          whatsapp_verify_token="verify", twilio_auth_token=None,
                          public_base_url="http://127.0.0.1", on_inbound=delivery.inbound.wake)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            yield Desk(chat, wa, delivery, sender_bot, client)
        finally:
            await client.close()
            await delivery.stop(0)
            await chat.dp["relay"].close()
            await sender_bot.session.close()


def one_of_each(wa: FakeWhatsApp) -> list[dict[str, Any]]:
    """A message of every type a customer sends, with real media behind the media ids."""
    media = {
        "image": (JPEG, "image/jpeg", {"caption": "the leak"}),
        "document": (b"%PDF-1.4 quote", "application/pdf", {"filename": "quote.pdf"}),
        "audio": (b"OggS voice", "audio/ogg", {"voice": True}),
        "video": (b"\x00\x00\x00\x18ftypmp42", "video/mp4", {"caption": "video"}),
        "sticker": (b"RIFF....WEBP", "image/webp", {}),
    }
    fields: dict[str, dict[str, Any]] = {
        "text": {"text": "Hello, the kitchen tap leaks"},
        "location": {"latitude": 48.85, "longitude": 2.35, "name": "Home"},
        "contacts": {"name": "Bob Plumber", "phone": "+33699999999"},
        "interactive": {"reply_type": "list_reply", "reply_id": "new", "title": "New request"},
        "button": {"text": "Call me back"},
        "reaction": {"message_id": "wamid.previous", "emoji": "👍"},
    }
    for kind, (data, mime, extra) in media.items():
        fields[kind] = {"media_id": wa.add_media(data, mime), "mime_type": mime, **extra}
    return [wa_message(kind, ANN, timestamp=T0 + i, **f) for i, (kind, f) in
            enumerate(fields.items())]


def _text(message: dict[str, Any]) -> str:
    return str(message.get("text") or message.get("caption") or "")


async def _notifications(desk: Desk, kind: str) -> list[Notification]:
    async with desk.chat.db.transaction() as session:
        return list(await session.scalars(select(Notification).where(Notification.kind == kind)))


# ---------------------------------------------------------------------- relaying in


async def test_every_message_type_is_relayed_once_in_the_customers_forum_topic(
    desk: Desk,
) -> None:
    desk.chat.fake.set_forum(OPS)
    messages = one_of_each(desk.wa)
    await desk.post(*messages)
    await desk.post(*messages)  # Meta delivers it again: nothing more is relayed
    await desk.settle()

    topics = desk.chat.fake.topics(OPS)
    assert list(topics.values()) == ["Ann Lee · +•••••••••78"]
    topic = next(iter(topics))
    relayed = desk.relayed()
    # The texts waited for the group's pace together: one message; each media one of its own.
    assert len(relayed) == 6
    assert all(m.get("message_thread_id") == topic for m in relayed)
    texts = "\n".join(_text(m) for m in relayed)
    for expected in ("Hello, the kitchen tap leaks", "📍 Location: Home",
                     "https://maps.google.com/?q=48.85,2.35", "👤 Contact: Bob Plumber",
                     "+33699999999", "Chose: New request", "Tapped: Call me back",
                     "Reacted 👍 to a message", "the leak"):
        assert texts.count(expected) == 1, (expected, texts)
    # Named with a masked number, never the full one.
    assert "Ann Lee · +•••••••••78 (WhatsApp)" in _text(relayed[0])
    assert "33612345678" not in texts
    # Media sent as the matching Telegram media, the customer's own bytes.
    kinds = {kind: [m for m in relayed if kind in m] for kind in
             ("photo", "document", "voice", "video", "sticker")}
    assert all(len(found) == 1 for found in kinds.values()), kinds
    photo_id = kinds["photo"][0]["photo"][0]["file_id"]
    assert desk.chat.fake.file_data(photo_id) == JPEG
    assert kinds["document"][0]["document"]["file_name"] == "quote.pdf"
    # Each relayed message carries the "show number" button.
    assert all("Show number" in buttons(m) for m in relayed)


async def test_without_a_forum_the_messages_reply_to_the_customers_first_relay(
    desk: Desk,
) -> None:
    await desk.post(wa_message("text", ANN, text="first", timestamp=T0))
    await desk.settle()
    await desk.post(wa_message("text", ANN, text="second", timestamp=T0 + 1),
                    wa_message("location", ANN, latitude=1.5, longitude=2.5,
                               timestamp=T0 + 2))
    await desk.settle()
    first, *rest = desk.relayed()
    assert "first" in first["text"] and "reply_to_message" not in first
    assert rest and all(m["reply_to_message"]["message_id"] == first["message_id"]
                        for m in rest)
    assert "second" in _text(rest[0])
    assert desk.chat.fake.topics(OPS) == {}


async def test_media_that_cannot_be_fetched_is_relayed_as_a_notice_with_the_reason(
    desk: Desk,
) -> None:
    big = desk.wa.add_media(b"\xff\xd8" + b"x" * (5 * 1024 * 1024 + 10), "image/jpeg")
    await desk.post(wa_message("image", ANN, media_id=big, mime_type="image/jpeg",
                               timestamp=T0),
                    wa_message("document", ANN, media_id="999", mime_type="application/pdf",
                               timestamp=T0 + 1))
    await desk.settle()
    texts = [_text(m) for m in desk.relayed()]
    assert len(texts) == 2
    assert "could not be relayed: too large" in texts[0]
    assert "could not be relayed: HTTP" in texts[1]
    assert all("Ann Lee" in t for t in texts)


async def test_a_burst_of_60_messages_stays_under_the_group_limit_and_loses_no_text(
    desk: Desk,
) -> None:
    """Three customers write a message a second each for 20 s: 60 messages in 20 s, three
    times what the group takes in a minute."""
    names = {phone: f"Customer {i}" for i, phone in enumerate(CUSTOMERS)}
    burst = [wa_message("text", phone, text=f"message {phone[-2:]}-{n:02d}",
                        timestamp=T0 + n)
             for n in range(20) for phone in CUSTOMERS]
    sent_at: list[float] = []  # test-clock seconds at which each relay left
    for second in range(400):  # a step a second of test time
        if second < 20:
            await desk.post(*burst[3 * second: 3 * second + 3], names=names)
        before = len(desk.relayed())
        await desk.run()
        sent_at += [desk.chat.clock.monotonic()] * (len(desk.relayed()) - before)
        desk.chat.clock.advance(1)
    relayed = "\n".join(_text(m) for m in desk.relayed())
    for message in burst:
        assert relayed.count(message["text"]["body"]) == 1, message["text"]["body"]
    assert len(sent_at) < 30, len(sent_at)  # combined, not one relay each
    for i, start in enumerate(sent_at):
        in_a_minute = [t for t in sent_at[i:] if t < start + 60]
        assert len(in_a_minute) <= 20, (start, len(in_a_minute))


async def test_ordinary_chatter_in_the_operators_chat_gets_no_answer(desk: Desk) -> None:
    replies = await desk.operator_says("coffee anyone?")
    assert replies == []
    replies = await desk.chat.send(OPERATOR, "what is this", chat_id=OPS)
    assert replies == []


# ------------------------------------------------------------------ operators answer


async def _ann_relayed(desk: Desk, text: str = "Is anyone there?") -> dict[str, Any]:
    await desk.post(wa_message("text", ANN, text=text, timestamp=T0))
    await desk.settle()
    return desk.relayed()[-1]


async def test_an_operators_reply_reaches_the_customer_on_whatsapp(desk: Desk) -> None:
    relayed = await _ann_relayed(desk)
    replies = await desk.operator_says("We are on our way", reply_to=relayed)
    assert replies == []  # nothing to say to the operator: it went
    await desk.settle()
    [sent] = desk.wa.sent
    assert sent.phone_number_id == DEFAULT_PHONE_NUMBER_ID
    assert sent.to == ANN
    assert sent.body["type"] == "text"
    assert sent.body["text"]["body"] == "We are on our way"
    async with desk.chat.db.transaction() as session:
        entry = await session.scalar(
            select(TransactionLog).where(TransactionLog.operation == "relay.reply"))
        operator = await session.scalar(select(User).where(User.telegram_id == OPERATOR))
    assert entry is not None and operator is not None and entry.actor_id == operator.id


async def test_an_operator_writing_in_the_customers_topic_answers_them(desk: Desk) -> None:
    desk.chat.fake.set_forum(OPS)
    await _ann_relayed(desk)
    [topic] = desk.chat.fake.topics(OPS)
    await desk.operator_says("Noted, thanks", thread=topic)
    await desk.settle()
    assert [s.body["text"]["body"] for s in desk.wa.sent] == ["Noted, thanks"]


async def test_outside_the_window_without_a_template_the_operator_is_told_and_nothing_goes(
    desk: Desk,
) -> None:
    relayed = await _ann_relayed(desk)
    desk.chat.clock.advance(hours=25)
    replies = await desk.operator_says("Still there?", reply_to=relayed)
    assert "more than 24 hours ago" in replies.texts[0]
    await desk.settle()
    assert desk.wa.sent == []
    assert await _notifications(desk, "relay_reply") == []


async def test_outside_the_window_the_reply_template_is_sent(desk: Desk) -> None:
    relayed = await _ann_relayed(desk)
    desk.relay.config = replace(desk.relay.config, reply_template="operator_reply")
    desk.chat.clock.advance(hours=25)
    replies = await desk.operator_says("Still there?", reply_to=relayed)
    assert "template operator_reply" in replies.texts[0]
    await desk.settle()
    [sent] = desk.wa.sent
    assert sent.body["type"] == "template"
    assert sent.body["template"]["name"] == "operator_reply"
    assert sent.body["template"]["components"][0]["parameters"] == [
        {"type": "text", "text": "Still there?"}]
    [notification] = await _notifications(desk, "relay_reply")
    assert notification.channel_chain == "whatsapp"  # never SMS or e-mail


async def test_a_photo_goes_both_ways(desk: Desk) -> None:
    await desk.post(wa_message("image", ANN, media_id=desk.wa.add_media(JPEG, "image/jpeg"),
                               mime_type="image/jpeg", caption="the leak", timestamp=T0))
    await desk.settle()
    [relayed] = desk.relayed()
    assert desk.chat.fake.file_data(relayed["photo"][0]["file_id"]) == JPEG
    mine = b"\xff\xd8\xff\xe0" + b"operator photo" * 50
    photo = desk.chat.fake.add_file(mine, "image/jpeg")
    replies = await desk.operator_says("Is it this part?", reply_to=relayed, photo=photo)
    assert replies.texts == []
    await desk.settle()
    [sent] = desk.wa.sent
    assert sent.body["type"] == "image"
    assert sent.body["image"]["caption"] == "Is it this part?"
    assert desk.wa.media[sent.body["image"]["id"]].data == mine


async def test_the_full_number_is_shown_to_operators_only_and_audited(desk: Desk) -> None:
    relayed = await _ann_relayed(desk)
    data = buttons(relayed)["Show number"]
    refused = await desk.chat.press(OPERATOR, data, message_id=relayed["message_id"],
                                    chat_id=OPS)
    assert "Only operators and admins" in refused.answer["text"]
    async with desk.chat.db.transaction() as session:
        operator = await session.scalar(select(User).where(User.telegram_id == OPERATOR))
        assert operator is not None
        operator.roles = "requester,operator"
    shown = await desk.chat.press(OPERATOR, data, message_id=relayed["message_id"],
                                  chat_id=OPS)
    assert shown.answer["text"] == "+33612345678"
    async with desk.chat.db.transaction() as session:
        entries = list(await session.scalars(select(TransactionLog).where(
            TransactionLog.operation == "relay.reveal_number")))
    assert [e.actor_id for e in entries] == [operator.id]


# ------------------------------------------------------------------------- /support


async def test_support_round_trip_for_a_telegram_user(desk: Desk) -> None:
    chat = desk.chat
    opened = await chat.send(TELEGRAM_USER, "/support", first_name="Tom")
    assert "writing to our operators" in opened.texts[-1]
    await chat.send(TELEGRAM_USER, "My invoice is wrong", first_name="Tom")
    await desk.settle()
    [relayed] = desk.relayed()
    assert relayed["text"] == "💬 Tom (Telegram)\nMy invoice is wrong"
    await desk.operator_says("Let me check", reply_to=relayed)
    await desk.settle()
    answer = await chat.fake.wait_for_text(TELEGRAM_USER, "Let me check", timeout=1)
    assert answer["text"] == "An operator answers:\nLet me check"
    assert answer["from"]["id"] == BOT_ID
    done = await chat.send(TELEGRAM_USER, "/done", first_name="Tom")
    assert "Conversation closed" in done.texts[-1]
    after = await chat.send(TELEGRAM_USER, "hello again", first_name="Tom")
    await desk.settle()
    assert len(desk.relayed()) == 1 and after.texts  # no longer relayed


async def test_relay_waits_for_the_next_slot_when_sending_is_not_possible_now(
    desk: Desk,
) -> None:
    await desk.post(wa_message("text", ANN, text="one", timestamp=T0))
    await desk.run()
    # The next relay of the same customer waits for its group slot: messages combine.
    await desk.post(wa_message("text", ANN, text="two", timestamp=T0 + 1),
                    wa_message("text", ANN, text="three", timestamp=T0 + 2))
    await desk.run()
    desk.chat.clock.advance(timedelta(seconds=5).total_seconds())
    await desk.run()
    texts = [_text(m) for m in desk.relayed()]
    assert texts[0].endswith("one")
    assert texts[1].endswith("two\nthree")


async def test_a_deleted_topic_is_opened_again_and_refused_topics_fall_back_to_a_chain(
    desk: Desk,
) -> None:
    fake = desk.chat.fake
    fake.set_forum(OPS)
    await _ann_relayed(desk, "first")
    [topic] = fake.topics(OPS)
    del fake._topics[OPS][topic]  # an operator deleted the customer's topic
    await desk.post(wa_message("text", ANN, text="second", timestamp=T0 + 1))
    await desk.settle()
    [reopened] = fake.topics(OPS)
    assert desk.relayed()[-1]["message_thread_id"] == reopened != topic
    assert "second" in desk.relayed()[-1]["text"]
    # A chat where the bot may not open topics: the customer's messages form a reply chain.
    fake.fail_next("createForumTopic", status=400,
                   description="Bad Request: not enough rights to create a topic")
    bob = CUSTOMERS[1]
    await desk.post(wa_message("text", bob, text="hi", timestamp=T0 + 2),
                    names={bob: "Bob"})
    await desk.settle()
    await desk.post(wa_message("text", bob, text="again", timestamp=T0 + 3),
                    names={bob: "Bob"})
    await desk.settle()
    first, again = desk.relayed()[-2:]
    assert "message_thread_id" not in first and "hi" in first["text"]
    assert again["reply_to_message"]["message_id"] == first["message_id"]
