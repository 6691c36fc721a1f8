"""/profile's rule of which channels can reach a person (services/contacts.py) must say what the
channels themselves say (`can_reach` of services/notifications/channels/): otherwise /profile
offers a channel that cannot deliver, or hides one that can."""

from __future__ import annotations

import itertools

import pytest
from aiogram import Bot

from services.clock import SystemClock
from services.contacts import CHOOSABLE_CHANNELS, ContactView
from services.notifications.channels.base import Channel, ChannelName, Recipient
from services.notifications.channels.email import EmailChannel
from services.notifications.channels.sms import SmsChannel
from services.notifications.channels.telegram import TelegramChannel
from services.notifications.channels.whatsapp import WhatsAppChannel
from services.notifications.pacing import MemoryRateLimiter


def _channels() -> dict[str, Channel]:
    clock = SystemClock()
    return {
        ChannelName.TELEGRAM: TelegramChannel(Bot("1:fake"), pack_action=lambda action: ""),
        ChannelName.WHATSAPP: WhatsAppChannel(
            token="t", phone_number_ids=["100"], limiter=MemoryRateLimiter(clock), clock=clock),
        ChannelName.SMS: SmsChannel(
            account_sid="AC1", auth_token="t", from_number="+15550000000",
            limiter=MemoryRateLimiter(clock), clock=clock),
        ChannelName.EMAIL: EmailChannel("127.0.0.1", 25, "desk@example.org"),
    }


ON_FILE = list(itertools.product((None, 1001), (None, "+33612345678"), (None, "a@b.example")))


@pytest.mark.parametrize(("telegram_id", "phone", "email"), ON_FILE)
def test_profile_and_channels_agree_on_who_can_be_reached(
    telegram_id: int | None, phone: str | None, email: str | None
) -> None:
    channels = _channels()
    assert set(channels) == set(CHOOSABLE_CHANNELS)
    recipient = Recipient(user_id=1, telegram_id=telegram_id, phone=phone, email=email)
    view = ContactView(phone=phone, email=email, channel_order=CHOOSABLE_CHANNELS,
                       opt_outs=frozenset(), telegram=telegram_id is not None)
    for name, channel in channels.items():
        assert view.can_reach(name) == channel.can_reach(recipient), name
