"""The relay's parts against the fakes, over real HTTP: WhatsApp media fetched and uploaded
through the Graph API (sizes as strings or numbers, limits, failures retried and then told),
the "telegram_chat" destination and the Telegram channel sending into a topic or a reply chain,
and the fake Bot API's media, file and forum methods as aiogram speaks them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import BufferedInputFile

from database.engine import Database
from services.clock import FakeClock
from services.notifications import destinations
from services.notifications.channels.base import Outgoing, Recipient
from services.notifications.channels.telegram import TelegramChannel
from services.notifications.failures import ChannelError, FailureClass
from services.relay import MediaError, Relay, RelayConfig, WhatsAppMedia
from services.relay.media import WHATSAPP_LIMITS
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram
from tests.fakes.whatsapp import DEFAULT_PHONE_NUMBER_ID, DEFAULT_TOKEN, FakeWhatsApp

GROUP = -1_009_876_543_210


@pytest.fixture
async def wa() -> AsyncIterator[FakeWhatsApp]:
    async with FakeWhatsApp() as fake:
        yield fake


@pytest.fixture
async def tg() -> AsyncIterator[tuple[FakeTelegram, Bot]]:
    async with FakeTelegram() as fake:
        bot = Bot(TEST_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(
            fake.base_url)))
        yield fake, bot
        await bot.session.close()


def media_client(wa: FakeWhatsApp, **kwargs: object) -> WhatsAppMedia:
    values: dict[str, object] = {"token": DEFAULT_TOKEN,
                                 "phone_number_ids": (DEFAULT_PHONE_NUMBER_ID,),
                                 "api_base": wa.base_url}
    return WhatsAppMedia(**{**values, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize("as_string", [True, False])
async def test_media_is_fetched_whether_meta_gives_its_size_as_a_string_or_a_number(
    wa: FakeWhatsApp, as_string: bool,
) -> None:
    wa.file_size_as_string = as_string
    media_id = wa.add_media(b"\xff\xd8 a photo", "image/jpeg")
    client = media_client(wa)
    try:
        fetched = await client.fetch(media_id, "image")
    finally:
        await client.close()
    assert (fetched.data, fetched.mime_type) == (b"\xff\xd8 a photo", "image/jpeg")
    assert wa.downloads == [media_id]


async def test_a_file_too_large_is_refused_before_it_is_downloaded(wa: FakeWhatsApp) -> None:
    media_id = wa.add_media(b"RIFF" + b"x" * WHATSAPP_LIMITS["sticker"], "image/webp")
    client = media_client(wa)
    try:
        with pytest.raises(MediaError) as refused:
            await client.fetch(media_id, "sticker")
    finally:
        await client.close()
    assert "too large" in refused.value.reason and not refused.value.transient
    assert wa.downloads == []


async def test_an_unknown_media_id_and_a_wrong_token_are_not_worth_retrying(
    wa: FakeWhatsApp,
) -> None:
    for client, media_id in ((media_client(wa), "424242"),
                             (media_client(wa, token="expired"),
                              wa.add_media(b"%PDF", "application/pdf"))):
        try:
            with pytest.raises(MediaError) as refused:
                await client.fetch(media_id, "document")
        finally:
            await client.close()
        assert refused.value.reason.startswith("HTTP 4") and not refused.value.transient


async def test_an_upload_gives_the_id_a_message_then_sends(wa: FakeWhatsApp) -> None:
    client = media_client(wa)
    try:
        media_id = await client.upload(b"\xff\xd8 mine", mime_type="image/jpeg",
                                       filename="photo.jpg")
    finally:
        await client.close()
    assert wa.media[media_id].data == b"\xff\xd8 mine"
    assert wa.media[media_id].phone_number_id == DEFAULT_PHONE_NUMBER_ID


async def test_media_that_cannot_be_reached_is_retried_then_relayed_as_a_notice(
    db: Database,
) -> None:
    clock = FakeClock()
    unreachable = WhatsAppMedia(token="t", phone_number_ids=("1",),
                                api_base="http://127.0.0.1:9", timeout=2)
    relay = Relay(db, clock, RelayConfig(chat_id=GROUP), unreachable)
    until = (clock.now() + timedelta(minutes=10)).isoformat()
    message = Outgoing(1, "relay_media", "k", media={
        "type": "image", "source": "whatsapp-media:77", "fetch": True,
        "fetch_until": until, "caption": "💬 Ann"})
    try:
        with pytest.raises(ChannelError) as transient:
            await relay.fetch(message)
        assert transient.value.failure.kind is FailureClass.TRANSIENT
        clock.advance(minutes=11)
        notice = await relay.fetch(message)
    finally:
        await relay.close()
    assert isinstance(notice, str)
    assert notice.startswith("💬 Ann\n📎 ")
    assert "could not be relayed: network error" in notice


def test_a_telegram_chat_destination_names_a_chat_and_maybe_a_topic() -> None:
    assert destinations.telegram_chat(GROUP) == f"telegram_chat:{GROUP}"
    assert destinations.parse_telegram_chat(f"telegram_chat:{GROUP}:7") == (GROUP, 7)
    assert destinations.parse_telegram_chat(f"telegram_chat:{GROUP}") == (GROUP, None)
    assert destinations.channel_for(f"telegram_chat:{GROUP}") == "telegram"
    for bad in ("telegram_chat:abc", "telegram_chat:1:x", "webhook:alerts"):
        with pytest.raises(destinations.InvalidDestination):
            destinations.parse_telegram_chat(bad)


async def test_the_telegram_channel_sends_into_a_topic_and_refuses_an_unknown_one(
    tg: tuple[FakeTelegram, Bot],
) -> None:
    fake, bot = tg
    fake.set_forum(GROUP)
    topic = await bot.create_forum_topic(GROUP, "Ann")
    channel = TelegramChannel(bot, pack_action=lambda action: "x")
    to_topic = Recipient(None, destination=destinations.telegram_chat(
        GROUP, topic.message_thread_id))
    result = await channel.send(to_topic, Outgoing(1, "k", "key", text="hello"))
    [sent] = fake.sent_messages(GROUP)
    assert sent["message_thread_id"] == topic.message_thread_id and sent["is_topic_message"]
    assert result.address == str(GROUP)
    gone = Recipient(None, destination=destinations.telegram_chat(GROUP, 999))
    with pytest.raises(ChannelError) as refused:
        await channel.send(gone, Outgoing(2, "k", "key2", text="hello"))
    assert refused.value.failure.text == "Bad Request: message thread not found"
    assert channel.can_reach(gone) and not channel.can_reach(
        Recipient(None, destination="webhook:alerts"))


async def test_the_fake_bot_api_takes_uploads_and_hands_files_back(
    tg: tuple[FakeTelegram, Bot],
) -> None:
    fake, bot = tg
    document = await bot.send_document(GROUP, BufferedInputFile(b"%PDF quote", "quote.pdf"),
                                       caption="quote")
    assert document.document is not None and document.document.file_name == "quote.pdf"
    downloaded = await bot.download(document.document.file_id)
    assert downloaded is not None and downloaded.read() == b"%PDF quote"
    voice = await bot.send_voice(GROUP, BufferedInputFile(b"OggS", "voice.ogg"))
    assert voice.voice is not None
    sticker = await bot.send_sticker(GROUP, BufferedInputFile(b"RIFFWEBP", "s.webp"))
    assert sticker.sticker is not None
    video = await bot.send_video(GROUP, BufferedInputFile(b"mp4", "v.mp4"))
    audio = await bot.send_audio(GROUP, BufferedInputFile(b"mp3", "a.mp3"))
    assert video.video is not None and audio.audio is not None
    location = await bot.send_location(GROUP, latitude=48.85, longitude=2.35,
                                       reply_parameters={"message_id": document.message_id})
    assert location.location is not None and location.location.latitude == 48.85
    assert location.reply_to_message is not None
    with pytest.raises(TelegramBadRequest, match="invalid file_id"):
        await bot.get_file("nope")
    chat = await bot.get_chat(GROUP)
    assert not chat.is_forum
    with pytest.raises(TelegramBadRequest, match="not a forum"):
        await bot.create_forum_topic(GROUP, "Ann")
