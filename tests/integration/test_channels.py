"""Each channel against its fake over real HTTP/SMTP: the wire shape on success, and every failure
class arriving as a ChannelError with the right Failure.

Telegram: the real aiogram Bot against FakeTelegram. WhatsApp and SMS: FakeWhatsApp / FakeTwilio.
E-mail: a real aiosmtpd server on 127.0.0.1. Manual: the `db` fixture (SQLite, and PostgreSQL
when TEST_DATABASE_URL is set). Time that matters is a FakeClock; no test sleeps over 0.2 s.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import func, select

from database.engine import Database
from database.models import ManualTask, Notification, User
from services.actions import Action, ActionName
from services.clock import FakeClock, SystemClock
from services.notifications.channels.base import Outgoing, Recipient
from services.notifications.channels.email import EmailChannel
from services.notifications.channels.manual import ManualChannel
from services.notifications.channels.sms import SmsChannel
from services.notifications.channels.telegram import TelegramChannel
from services.notifications.channels.whatsapp import WhatsAppChannel
from services.notifications.channels.whatsapp_limits import MemoryMessagingLimit
from services.notifications.failures import ChannelError, Failure, FailureClass
from services.notifications.pacing import MemoryRateLimiter
from tests.fakes.smtp import Mailbox, free_port
from tests.fakes.smtp import smtp_server as run_smtp_server
from tests.fakes.telegram import BOT_ID, TEST_TOKEN, FakeTelegram
from tests.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, DEFAULT_FROM, FakeTwilio
from tests.fakes.whatsapp import DEFAULT_API_VERSION, DEFAULT_TOKEN, FakeWhatsApp

START = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
PHONE = "+33612345678"
PRIMARY, SECONDARY = "100100", "200200"


def outgoing(text: str | None = "Your request #12 is confirmed", **kwargs: Any) -> Outgoing:
    kwargs.setdefault("notification_id", 1)
    kwargs.setdefault("kind", "request_confirmed")
    kwargs.setdefault("idempotency_key", "request_confirmed:12:user:7")
    return Outgoing(text=text, **kwargs)


def template(*params: str) -> Outgoing:
    return outgoing(
        None, template={"name": "request_update", "language": "fr", "params": list(params)}
    )


async def failure_of(channel: Any, recipient: Recipient, message: Outgoing) -> Failure:
    with pytest.raises(ChannelError) as caught:
        await channel.send(recipient, message)
    return caught.value.failure


class TickingClock(FakeClock):
    """A FakeClock whose monotonic time also runs in real time.

    `now()` moves only when the test says, so windows and days are exact; the limiter's
    monotonic time keeps running too, so the channels' short pacing sleeps end as they do in
    production, and a test can still jump ahead with `advance`.
    """

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self._origin = time.monotonic()

    def monotonic(self) -> float:
        return super().monotonic() + (time.monotonic() - self._origin)


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock(START)


# =============================================================================== Telegram


@pytest.fixture
async def telegram() -> AsyncIterator[tuple[FakeTelegram, TelegramChannel]]:
    async with FakeTelegram() as fake:
        session = AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))
        # The application's Bot parses HTML by default; notifications must not be parsed.
        bot = Bot(
            TEST_TOKEN, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML)
        )
        channel = TelegramChannel(bot, pack_action=pack_action)
        try:
            yield fake, channel
        finally:
            await channel.close()
            await bot.session.close()


TG_USER = Recipient(user_id=7, display_name="Ann", telegram_id=1001)


def pack_action(action: Action) -> str:
    """Stands in for the handlers' packing: the channel only has to use what it is given."""
    return f"test:{action.name.value}:{action.target}"


async def test_telegram_packs_a_button_action_with_the_function_it_was_given(telegram):
    fake, channel = telegram
    retry = Action(ActionName.RETRY_DEAD_LETTERS_LIKE, 42).as_payload("Retry failed")
    await channel.send(TG_USER, outgoing("failing", extra={"buttons": [retry]}))
    [sent] = fake.sent_messages(1001)
    assert sent["reply_markup"]["inline_keyboard"] == [
        [{"text": "Retry failed", "callback_data": "test:retry_dead_letters_like:42"}]
    ]


async def test_telegram_passes_a_stored_callback_data_button_through_and_drops_unknown_actions(
    telegram,
):
    """Rows enqueued before buttons were actions carry callback data: sent as it is. An action
    this version does not know (a newer one stored it) costs the button, not the message."""
    fake, channel = telegram
    old = {"text": "Retry failed", "callback_data": "nf:retry:request.update"}
    unknown = {"text": "Later", "action": "something_new", "target": 1}
    await channel.send(TG_USER, outgoing("failing", extra={"buttons": [old, unknown]}))
    [sent] = fake.sent_messages(1001)
    assert sent["reply_markup"]["inline_keyboard"] == [[old]]


async def test_telegram_sends_plain_text(telegram):
    fake, channel = telegram
    assert channel.enabled and channel.can_reach(TG_USER)
    assert not channel.can_reach(Recipient(user_id=8, phone=PHONE))

    result = await channel.send(TG_USER, outgoing("Price < 5 & <b>not bold</b>"))

    [sent] = fake.sent_messages(1001)
    assert sent["text"] == "Price < 5 & <b>not bold</b>"
    assert "entities" not in sent
    call = fake.calls[-1]
    assert call.method.lower() == "sendmessage" and "parse_mode" not in call.params
    assert result.provider_message_id == str(sent["message_id"])
    assert (result.sender, result.address) == (f"bot:{BOT_ID}", "1001")


async def test_telegram_renders_a_template_as_text(telegram):
    fake, channel = telegram
    await channel.send(TG_USER, template("Ann", "#12"))
    assert fake.sent_messages(1001)[0]["text"] == "request_update: Ann, #12"


async def test_telegram_media_goes_by_url_with_caption(telegram):
    fake, channel = telegram
    media = {"type": "image", "source": "https://example.org/a.jpg", "caption": "the part"}
    await channel.send(TG_USER, outgoing(None, media=media))
    call = fake.calls[-1]
    assert call.method == "sendPhoto"
    assert call.params["photo"] == "https://example.org/a.jpg"
    assert call.params["caption"] == "the part"
    assert "parse_mode" not in call.params


async def test_telegram_blocked_user_is_permanent(telegram):
    fake, channel = telegram
    fake.block_user(1001)
    failure = await failure_of(channel, TG_USER, outgoing())
    assert (failure.kind, failure.code, failure.provider) == (
        FailureClass.PERMANENT,
        "403",
        "telegram",
    )
    assert "blocked" in failure.text


async def test_telegram_chat_not_found_is_permanent(telegram):
    fake, channel = telegram
    fake.fail_next("sendMessage", status=400, description="Bad Request: chat not found")
    failure = await failure_of(channel, TG_USER, outgoing())
    assert (failure.kind, failure.code) == (FailureClass.PERMANENT, "400")


async def test_telegram_unauthorized_is_broken(telegram):
    fake, channel = telegram
    fake.set_unauthorized()
    failure = await failure_of(channel, TG_USER, outgoing())
    assert (failure.kind, failure.code) == (FailureClass.BROKEN, "401")
    assert TEST_TOKEN.split(":")[1] not in failure.text


async def test_telegram_server_error_is_transient(telegram):
    fake, channel = telegram
    fake.fail_next("sendMessage", status=500, description="Internal Server Error")
    failure = await failure_of(channel, TG_USER, outgoing())
    assert failure.kind is FailureClass.TRANSIENT


async def test_telegram_flood_control_is_rate_limited(telegram):
    fake, channel = telegram
    fake.fail_next(
        "sendMessage", status=429, description="Too Many Requests: retry after 3", retry_after=3
    )
    failure = await failure_of(channel, TG_USER, outgoing())
    assert (failure.kind, failure.retry_after) == (FailureClass.RATE_LIMITED, 3.0)
    assert failure.scope == "recipient"


async def test_telegram_unreachable_server_is_transient():
    session = AiohttpSession(api=TelegramAPIServer.from_base(f"http://127.0.0.1:{free_port()}"))
    bot = Bot(TEST_TOKEN, session=session)
    try:
        failure = await failure_of(TelegramChannel(bot, pack_action=pack_action), TG_USER,
                                   outgoing())
    finally:
        await bot.session.close()
    assert (failure.kind, failure.code) == (FailureClass.TRANSIENT, "network")


# =============================================================================== WhatsApp


@pytest.fixture
async def whatsapp() -> AsyncIterator[FakeWhatsApp]:
    async with FakeWhatsApp(phone_number_ids=(PRIMARY, SECONDARY)) as fake:
        yield fake


@pytest.fixture
async def wa_channels(whatsapp: FakeWhatsApp, clock: FakeClock) -> AsyncIterator[Any]:
    made: list[WhatsAppChannel] = []

    def make(**overrides: Any) -> WhatsAppChannel:
        options: dict[str, Any] = {
            "token": DEFAULT_TOKEN,
            "phone_number_ids": (PRIMARY, SECONDARY),
            "api_base": whatsapp.base_url,
            "api_version": DEFAULT_API_VERSION,
            "limiter": MemoryRateLimiter(clock),
            "clock": clock,
            "recipient_interval": 6.0,
        }
        options.update(overrides)
        channel = WhatsAppChannel(**options)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


def wa_user(clock: FakeClock, phone: str = PHONE, *, in_window: bool = True) -> Recipient:
    inbound = clock.now() - timedelta(hours=1) if in_window else None
    return Recipient(user_id=7, display_name="Ann", phone=phone, whatsapp_inbound_at=inbound)


async def test_whatsapp_sends_text_in_the_cloud_api_shape(whatsapp, wa_channels, clock):
    channel = wa_channels()
    assert channel.enabled and channel.can_reach(wa_user(clock))
    assert not wa_channels(token=None).enabled
    assert not wa_channels(phone_number_ids=()).enabled

    result = await channel.send(wa_user(clock), outgoing("Bonjour é <b>"))

    [sent] = whatsapp.sent
    assert sent.to == "33612345678"  # E.164 digits, no '+'
    assert sent.phone_number_id == PRIMARY
    assert sent.body["messaging_product"] == "whatsapp"
    assert sent.body["type"] == "text"
    assert sent.body["text"] == {"preview_url": False, "body": "Bonjour é <b>"}
    request = whatsapp.requests[-1]
    assert request.path == f"/{DEFAULT_API_VERSION}/{PRIMARY}/messages"
    assert request.headers["Authorization"] == f"Bearer {DEFAULT_TOKEN}"
    assert result.provider_message_id == sent.wamid
    assert (result.sender, result.address) == (PRIMARY, PHONE)


async def test_whatsapp_template_and_media_shapes(whatsapp, wa_channels, clock):
    channel = wa_channels(recipient_interval=0)
    await channel.send(wa_user(clock, in_window=False), template("Ann", "#12"))
    media = {"type": "document", "source": "https://example.org/q.pdf", "caption": "Quote"}
    await channel.send(wa_user(clock), outgoing(None, media=media))

    tpl, doc = whatsapp.sent
    assert tpl.type == "template"
    assert tpl.body["template"] == {
        "name": "request_update",
        "language": {"code": "fr"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "#12"}],
            }
        ],
    }
    assert doc.type == "document"
    assert doc.body["document"] == {"link": "https://example.org/q.pdf", "caption": "Quote"}


async def test_whatsapp_free_text_outside_the_window_is_refused_before_sending(
    whatsapp, wa_channels, clock
):
    failure = await failure_of(wa_channels(), wa_user(clock, in_window=False), outgoing())
    assert (failure.kind, failure.code) == (FailureClass.PERMANENT, "131047")
    assert whatsapp.requests == []


async def test_whatsapp_undeliverable_number_is_permanent(whatsapp, wa_channels, clock):
    whatsapp.set_invalid_number("33612345678")
    channel = wa_channels()
    failure = await failure_of(channel, wa_user(clock), outgoing())
    assert (failure.kind, failure.code) == (FailureClass.PERMANENT, "131026")
    assert "33612345678" not in failure.text
    assert len(whatsapp.requests) == 1  # a recipient's failure never moves to another sender


async def test_whatsapp_opt_out_is_flagged(whatsapp, wa_channels, clock):
    whatsapp.fail_next(code=131050)
    failure = await failure_of(wa_channels(), wa_user(clock), outgoing())
    assert (failure.kind, failure.code, failure.opt_out) == (FailureClass.PERMANENT, "131050", True)


async def test_whatsapp_bad_token_is_broken_and_not_failed_over(whatsapp, wa_channels, clock):
    failure = await failure_of(wa_channels(token="tok-Secret-4711"), wa_user(clock), outgoing())
    assert (failure.kind, failure.code) == (FailureClass.BROKEN, "190")
    assert "Secret-4711" not in failure.text
    assert len(whatsapp.requests) == 1


async def test_whatsapp_server_errors_are_transient(whatsapp, wa_channels, clock):
    channel = wa_channels(recipient_interval=0)
    whatsapp.fail_next(code=131000)  # HTTP 500
    failure = await failure_of(channel, wa_user(clock), outgoing())
    assert (failure.kind, failure.code) == (FailureClass.TRANSIENT, "131000")
    whatsapp.fail_next(code=2)  # HTTP 503
    assert (await failure_of(channel, wa_user(clock), outgoing())).kind is FailureClass.TRANSIENT


async def test_whatsapp_code_decides_not_the_status(whatsapp, wa_channels, clock):
    channel = wa_channels(recipient_interval=0)
    whatsapp.fail_next(code=131026, http_status=500)
    failure = await failure_of(channel, wa_user(clock), outgoing())
    assert failure.kind is FailureClass.PERMANENT


async def test_whatsapp_timeout_and_unreachable_api_are_transient(whatsapp, wa_channels, clock):
    whatsapp.delay = 0.2
    slow = wa_channels(timeout=0.05)
    failure = await failure_of(slow, wa_user(clock), outgoing())
    assert (failure.kind, failure.code) == (FailureClass.TRANSIENT, "timeout")

    down = wa_channels(api_base=f"http://127.0.0.1:{free_port()}")
    failure = await failure_of(down, wa_user(clock), outgoing())
    assert (failure.kind, failure.code) == (FailureClass.TRANSIENT, "network")


async def test_whatsapp_fails_over_when_the_primary_is_rate_limited(whatsapp, wa_channels, clock):
    channel = wa_channels()
    whatsapp.fail_next(code=130429, phone_number_id=PRIMARY)

    result = await channel.send(wa_user(clock), outgoing())

    assert result.sender == SECONDARY
    assert [r.path.split("/")[2] for r in whatsapp.requests] == [PRIMARY, SECONDARY]
    assert [m.phone_number_id for m in whatsapp.sent] == [SECONDARY]


async def test_whatsapp_all_senders_rate_limited_is_rate_limited(whatsapp, wa_channels, clock):
    channel = wa_channels()
    whatsapp.fail_next(code=80007, count=2)
    failure = await failure_of(channel, wa_user(clock), outgoing())
    assert (failure.kind, failure.scope) == (FailureClass.RATE_LIMITED, "channel")
    assert failure.retry_after and failure.retry_after > 0
    assert len(whatsapp.requests) == 2


async def test_whatsapp_pair_rate_limit_from_meta_blocks_the_recipient(
    whatsapp, wa_channels, clock
):
    channel = wa_channels(recipient_interval=6.0)
    whatsapp.fail_next(code=131056)  # HTTP 400 in this fake
    failure = await failure_of(channel, wa_user(clock), outgoing())
    assert (failure.kind, failure.scope, failure.retry_after) == (
        FailureClass.RATE_LIMITED,
        "recipient",
        6.0,
    )
    assert len(whatsapp.requests) == 1  # not failed over: the pair limit is the recipient's


async def test_whatsapp_daily_cap_moves_to_the_next_sender_then_waits_for_midnight(
    whatsapp, wa_channels, clock
):
    channel = wa_channels(daily_cap_per_sender=1)
    first = await channel.send(wa_user(clock, "+33611111111"), outgoing())
    second = await channel.send(wa_user(clock, "+33622222222"), outgoing())
    assert (first.sender, second.sender) == (PRIMARY, SECONDARY)

    failure = await failure_of(channel, wa_user(clock, "+33633333333"), outgoing())
    assert (failure.kind, failure.code, failure.scope) == (
        FailureClass.RATE_LIMITED,
        "daily_cap",
        "channel",
    )
    assert failure.retry_after == 12 * 3600  # 12:00 UTC -> midnight
    assert len(whatsapp.requests) == 2

    clock.advance(hours=12)
    third = await channel.send(wa_user(clock, "+33633333333"), outgoing())
    assert third.sender == PRIMARY


async def test_whatsapp_recipient_interval_refuses_without_a_request(whatsapp, wa_channels, clock):
    channel = wa_channels(recipient_interval=6.0)
    await channel.send(wa_user(clock), outgoing())
    clock.advance(2)

    failure = await failure_of(channel, wa_user(clock), outgoing())

    assert (failure.kind, failure.scope) == (FailureClass.RATE_LIMITED, "recipient")
    assert failure.retry_after == pytest.approx(4.0, abs=0.2)
    assert len(whatsapp.requests) == 1
    # another recipient is not held back
    await channel.send(wa_user(clock, "+33699999999"), outgoing())
    clock.advance(4)
    await channel.send(wa_user(clock), outgoing())
    assert len(whatsapp.sent) == 3


async def test_whatsapp_messaging_limit_counts_unique_users_outside_the_window(
    whatsapp, wa_channels, clock
):
    limit = MemoryMessagingLimit(2)
    channel = wa_channels(messaging_limit=limit, recipient_interval=0)
    a = wa_user(clock, "+33611111111", in_window=False)
    b = wa_user(clock, "+33622222222", in_window=False)
    c = wa_user(clock, "+33633333333", in_window=False)
    await channel.send(a, template("x"))
    clock.advance(hours=1)
    await channel.send(b, template("x"))

    failure = await failure_of(channel, c, template("x"))
    assert (failure.kind, failure.code, failure.scope) == (
        FailureClass.RATE_LIMITED,
        "messaging_limit",
        "channel",
    )
    assert failure.retry_after == pytest.approx(23 * 3600)  # when a's slot frees
    assert len(whatsapp.requests) == 2

    await channel.send(a, template("again"))  # already counted in this 24 h: free
    await channel.send(wa_user(clock, "+33644444444"), outgoing())  # inside its window: free
    assert len(whatsapp.sent) == 4

    clock.advance(hours=23)  # b was counted at 13:00; a again at 13:00
    assert (await failure_of(channel, c, template("x"))).code == "messaging_limit"
    clock.advance(hours=1)
    await channel.send(c, template("x"))
    assert len(whatsapp.sent) == 5


async def test_whatsapp_paces_each_sender_by_sleeping_briefly(whatsapp, wa_channels):
    """Over the sender's rate the channel waits its turn (no failure, no other sender).

    Asserted on the slots the limiter granted, not on arrival times at the fake, which the
    machine's scheduling can bunch together."""
    real = SystemClock()
    granted: list[float] = []

    class RecordingLimiter(MemoryRateLimiter):
        async def try_acquire(self, key: str, rate: float, per: float = 1.0,
                              burst: float = 1) -> float:
            asked_at = real.monotonic()
            wait = await super().try_acquire(key, rate, per, burst)
            if wait <= 0:
                granted.append(asked_at)
            return wait

    channel = wa_channels(
        limiter=RecordingLimiter(real),
        clock=real,
        rate_per_second=20.0,
        phone_number_ids=(PRIMARY,),
        recipient_interval=0,
    )
    user = Recipient(user_id=7, phone=PHONE, whatsapp_inbound_at=datetime.now(UTC))
    for _ in range(4):
        await channel.send(user, outgoing())
    assert [m.phone_number_id for m in whatsapp.sent] == [PRIMARY] * 4
    # One slot per 50 ms (1 ms of slack for reading the clock just before the limiter does).
    assert len(granted) == 4
    assert all(b - a >= 0.049 for a, b in zip(granted, granted[1:], strict=False))


async def test_whatsapp_busy_sender_fails_over_instead_of_waiting_long(
    whatsapp, wa_channels, clock
):
    channel = wa_channels(rate_per_second=1.0, max_pacing_wait=0.05, recipient_interval=0)
    started = clock.monotonic()
    first = await channel.send(wa_user(clock), outgoing())
    second = await channel.send(wa_user(clock), outgoing())
    assert (first.sender, second.sender) == (PRIMARY, SECONDARY)
    failure = await failure_of(channel, wa_user(clock), outgoing())
    elapsed = clock.monotonic() - started
    assert (failure.kind, failure.code) == (FailureClass.RATE_LIMITED, "throughput")
    # The primary's next slot, one second after its first send: whatever time the sends took
    # (a busy machine), the wait lies between "one second less what has passed" and a second.
    assert 1.0 - elapsed - 0.001 <= failure.retry_after <= 1.0 + 0.001


async def test_whatsapp_close_closes_the_session(whatsapp, wa_channels, clock):
    channel = wa_channels()
    await channel.send(wa_user(clock), outgoing())
    session = channel._session
    assert session is not None
    await channel.close()
    assert session.closed and channel._session is None
    await channel.close()  # twice is fine


# ===================================================================================== SMS


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        yield fake


@pytest.fixture
async def sms_channels(twilio: FakeTwilio, clock: FakeClock) -> AsyncIterator[Any]:
    made: list[SmsChannel] = []

    def make(**overrides: Any) -> SmsChannel:
        options: dict[str, Any] = {
            "account_sid": DEFAULT_ACCOUNT_SID,
            "auth_token": DEFAULT_AUTH_TOKEN,
            "from_number": DEFAULT_FROM,
            "api_base": twilio.base_url,
            "limiter": MemoryRateLimiter(SystemClock()),
            "clock": clock,
            "rate_per_second": 100.0,
            "status_callback_url": "https://bot.example.org/webhooks/twilio/status",
        }
        options.update(overrides)
        channel = SmsChannel(**options)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


SMS_USER = Recipient(user_id=7, phone="+15558675310")


async def test_sms_sends_a_form_with_basic_auth(twilio, sms_channels):
    channel = sms_channels()
    assert channel.enabled and channel.can_reach(SMS_USER)
    assert not sms_channels(auth_token=None).enabled

    result = await channel.send(SMS_USER, outgoing("Votre demande est confirmée"))

    [sms] = twilio.sent
    request = twilio.requests[-1]
    assert request.path == f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
    scheme, encoded = request.headers["Authorization"].split(" ", 1)
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"{DEFAULT_ACCOUNT_SID}:{DEFAULT_AUTH_TOKEN}"
    assert request.form == {
        "To": "+15558675310",
        "From": DEFAULT_FROM,
        "Body": "Votre demande est confirmée",
        # The notification's id rides along, so an early receipt finds its notification.
        "StatusCallback": "https://bot.example.org/webhooks/twilio/status?ref=1",
    }
    assert (result.provider_message_id, result.sender, result.address) == (
        sms.sid,
        DEFAULT_FROM,
        "+15558675310",
    )


async def test_sms_unsubscribed_is_permanent_and_opt_out(twilio, sms_channels):
    twilio.set_opted_out("+15558675310")
    failure = await failure_of(sms_channels(), SMS_USER, outgoing())
    assert (failure.kind, failure.code, failure.opt_out) == (FailureClass.PERMANENT, "21610", True)


async def test_sms_bad_credentials_are_broken(twilio, sms_channels):
    failure = await failure_of(sms_channels(auth_token="wrong-token"), SMS_USER, outgoing())
    assert (failure.kind, failure.code) == (FailureClass.BROKEN, "20003")
    assert "wrong-token" not in failure.text


async def test_sms_server_error_is_transient(twilio, sms_channels):
    twilio.fail_next(code=20500)
    failure = await failure_of(sms_channels(), SMS_USER, outgoing())
    assert (failure.kind, failure.code) == (FailureClass.TRANSIENT, "20500")


async def test_sms_invalid_number_is_permanent_and_masked(twilio, sms_channels):
    twilio.fail_next(code=21211)
    failure = await failure_of(sms_channels(), SMS_USER, outgoing())
    assert (failure.kind, failure.code) == (FailureClass.PERMANENT, "21211")
    assert "+15558675310" not in failure.text


async def test_sms_daily_limit_waits_until_utc_midnight(twilio, sms_channels, clock):
    twilio.fail_next(code=63038)  # HTTP 400 in this fake: the code decides
    failure = await failure_of(sms_channels(), SMS_USER, outgoing())
    assert (failure.kind, failure.retry_after) == (FailureClass.RATE_LIMITED, 12 * 3600)


async def test_sms_unreachable_api_is_transient(sms_channels):
    channel = sms_channels(api_base=f"http://127.0.0.1:{free_port()}")
    failure = await failure_of(channel, SMS_USER, outgoing())
    assert (failure.kind, failure.code) == (FailureClass.TRANSIENT, "network")


async def test_sms_paces_the_sender(twilio, sms_channels):
    channel = sms_channels(rate_per_second=20.0)
    started = time.monotonic()
    for _ in range(3):
        await channel.send(SMS_USER, outgoing())
    assert time.monotonic() - started >= 0.09
    assert len(twilio.sent) == 3


# ================================================================================== E-mail


def refuse_everyone(server, session, envelope, mechanism, auth_data) -> AuthResult:
    return AuthResult(success=False, handled=False)


@pytest.fixture
async def smtp_server() -> AsyncIterator[tuple[Mailbox, int]]:
    async with run_smtp_server() as (mailbox, port):
        yield mailbox, port


MAIL_USER = Recipient(user_id=7, display_name="Ann", email="ann@example.org")


async def test_email_sends_plain_utf8_with_a_stable_message_id(smtp_server):
    mailbox, port = smtp_server
    channel = EmailChannel("127.0.0.1", port, "desk@bot.example.org", starttls=False, timeout=5)
    assert channel.enabled and channel.can_reach(MAIL_USER)
    assert not channel.can_reach(Recipient(user_id=8, phone=PHONE))
    assert not EmailChannel(None, 25, "desk@bot.example.org").enabled

    message = outgoing("Votre demande n°12 est confirmée — merci", subject="Demande n°12")
    first = await channel.send(MAIL_USER, message)
    again = await channel.send(MAIL_USER, message)

    mail = mailbox.messages[0]
    assert mail["From"] == "desk@bot.example.org"
    assert mail["To"] == "ann@example.org"
    assert mail["Subject"] == "Demande n°12"
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content_charset() == "utf-8"
    assert mail.get_content().strip() == "Votre demande n°12 est confirmée — merci"
    assert mail["Message-ID"] == first.provider_message_id
    assert mail["Message-ID"].endswith("@bot.example.org>")
    assert again.provider_message_id == first.provider_message_id  # the same key, the same id
    assert mailbox.messages[1]["Message-ID"] == mail["Message-ID"]
    assert (first.sender, first.address) == ("desk@bot.example.org", "ann@example.org")

    other = await channel.send(MAIL_USER, outgoing("x", idempotency_key="other"))
    assert other.provider_message_id != first.provider_message_id
    await channel.send(MAIL_USER, outgoing("y"))
    assert mailbox.messages[-1]["Subject"] == "Notification"


async def test_email_refused_recipient_is_permanent(smtp_server):
    mailbox, port = smtp_server
    mailbox.refuse["ann@example.org"] = "550 5.1.1 No such user"
    channel = EmailChannel("127.0.0.1", port, "desk@bot.example.org", starttls=False, timeout=5)
    failure = await failure_of(channel, MAIL_USER, outgoing())
    assert (failure.kind, failure.code, failure.provider) == (FailureClass.PERMANENT, "550", "smtp")


async def test_email_busy_mailbox_is_transient(smtp_server):
    mailbox, port = smtp_server
    mailbox.refuse["ann@example.org"] = "450 4.2.1 Mailbox busy, try later"
    channel = EmailChannel("127.0.0.1", port, "desk@bot.example.org", starttls=False, timeout=5)
    failure = await failure_of(channel, MAIL_USER, outgoing())
    assert (failure.kind, failure.code) == (FailureClass.TRANSIENT, "450")


async def test_email_server_down_is_transient():
    channel = EmailChannel(
        "127.0.0.1", free_port(), "desk@bot.example.org", starttls=False, timeout=2
    )
    failure = await failure_of(channel, MAIL_USER, outgoing())
    assert failure.kind is FailureClass.TRANSIENT


async def test_email_failed_login_is_broken():
    port = free_port()
    controller = Controller(
        Mailbox(),
        hostname="127.0.0.1",
        port=port,
        authenticator=refuse_everyone,
        auth_require_tls=False,
    )
    await asyncio.to_thread(controller.start)
    try:
        channel = EmailChannel(
            "127.0.0.1",
            port,
            "desk@bot.example.org",
            username="desk",
            password="wrong-password",
            starttls=False,
            timeout=5,
        )
        failure = await failure_of(channel, MAIL_USER, outgoing())
    finally:
        await asyncio.to_thread(controller.stop)
    assert (failure.kind, failure.code) == (FailureClass.BROKEN, "535")
    assert "wrong-password" not in failure.text


# ================================================================================== Manual


async def add_user_and_notification(db: Database, now: datetime) -> tuple[int, int]:
    async def work(session) -> tuple[int, int]:
        user = User(
            display_name="Ann Martin",
            phone=PHONE,
            email="ann@example.org",
            telegram_id=1001,
            created_at=now,
            updated_at=now,
        )
        session.add(user)
        await session.flush()
        notification = Notification(
            recipient_id=user.id,
            kind="request_confirmed",
            payload={"text": "Your request #12 is confirmed"},
            idempotency_key=f"request_confirmed:12:user:{user.id}",
            channel_chain="telegram,manual",
            channel="manual",
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(notification)
        await session.flush()
        return user.id, notification.id

    return await db.run(work)


async def test_manual_opens_exactly_one_task(db: Database, clock: FakeClock):
    user_id, notification_id = await add_user_and_notification(db, clock.now())
    channel = ManualChannel(db, clock)
    recipient = Recipient(
        user_id=user_id, display_name="Ann Martin", phone=PHONE, email="ann@example.org"
    )
    message = outgoing(notification_id=notification_id)
    assert channel.enabled and channel.can_reach(Recipient(user_id=user_id))

    first = await channel.send(recipient, message)
    second = await channel.send(recipient, message)
    concurrent = await asyncio.gather(*(channel.send(recipient, message) for _ in range(3)))

    assert first.provider_message_id and first.provider_message_id.startswith("task:")
    assert {r.provider_message_id for r in [second, *concurrent]} == {first.provider_message_id}
    assert first.sender == "manual"
    async with db.transaction() as session:
        tasks = (await session.execute(select(ManualTask))).scalars().all()
        assert len(tasks) == 1
        [task] = tasks
        assert task.id == int(first.provider_message_id.removeprefix("task:"))
        assert (task.notification_id, task.user_id, task.kind, task.status) == (
            notification_id,
            user_id,
            "request_confirmed",
            "open",
        )
        assert "Ann Martin" in task.text and PHONE in task.text and "ann@example.org" in task.text
        assert "Your request #12 is confirmed" in task.text
        assert task.created_at == clock.now()


async def test_manual_later_part_joins_the_same_task(db: Database, clock: FakeClock):
    user_id, notification_id = await add_user_and_notification(db, clock.now())
    channel = ManualChannel(db, clock)
    recipient = Recipient(user_id=user_id)
    await channel.send(recipient, outgoing("first half", notification_id=notification_id))
    await channel.send(recipient, outgoing("second half", notification_id=notification_id, part=1))
    await channel.send(recipient, outgoing("second half", notification_id=notification_id, part=1))
    async with db.transaction() as session:
        assert (await session.execute(select(func.count(ManualTask.id)))).scalar_one() == 1
        text = (await session.execute(select(ManualTask.text))).scalar_one()
    assert text.count("first half") == 1 and text.count("second half") == 1
