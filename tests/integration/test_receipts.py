"""Delivery receipts on a real database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set):
timestamps set once and in any order, a failed receipt moving the notification on (or
dead-lettering it) exactly once, opt-out codes honoured; the STOP / START words; parsing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from multidict import MultiDict
from sqlalchemy import select

from bot.webhooks import MalformedWebhook, parse_whatsapp, twilio_signature
from database.engine import Database
from database.models import DeliveryAttempt, Notification, User
from services.actions import Action, ActionName
from services.alerts import ALERT_KIND, Alerts
from services.clock import FakeClock
from services.notifications import outbox, transitions
from services.notifications.classify import classify_twilio, classify_whatsapp
from services.notifications.failures import Failure
from services.notifications.receipts import (
    ReceiptOutcome,
    apply_receipt,
    keyword,
)
from tests.support import make_user

PHONE = "+33612345678"
WA_FROM = "33612345678"
ADMIN = 9000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _sent(
    db: Database,
    clock: FakeClock,
    user_id: int,
    *,
    key: str = "update:1",
    channels: tuple[str, ...] = ("whatsapp", "sms", "email"),
    allow_fallback: bool = True,
    channel: str = "whatsapp",
    message_id: str = "wamid.ONE",
    kind: str = "request.update",
) -> int:
    """A notification the dispatcher sent on `channel`, with the provider's message id."""

    async def work(session) -> int:
        queued = await outbox.enqueue(
            session, recipient_id=user_id, kind=kind, idempotency_key=key, text="Hello",
            now=clock.now(), channels=list(channels), allow_fallback=allow_fallback,
        )
        row = await session.get_one(Notification, queued.id)
        row.channel_index = row.chain.index(channel)
        row.channel = channel
        row.status = "sent"
        row.attempts = 1
        row.parts_sent = 1
        row.provider_message_id = message_id
        row.sent_at = clock.now()
        return queued.id

    return await db.run(work)


async def _row(db: Database, notification_id: int) -> Notification:
    async with db.transaction() as session:
        return await session.get_one(Notification, notification_id)


async def _user(db: Database, user_id: int) -> User:
    async with db.transaction() as session:
        return await session.get_one(User, user_id)


async def _attempts(db: Database, notification_id: int) -> list[tuple[str, str, str | None, str]]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.notification_id == notification_id)
            .order_by(DeliveryAttempt.id)
        )
        return [(a.channel, a.outcome, a.error_code, a.error_class or "") for a in rows]


def _wa_failure(code: int) -> Failure:
    return classify_whatsapp(None, {"code": code, "title": "x", "message": "failed"})


async def _receipt(
    db: Database,
    clock: FakeClock,
    status: str,
    *,
    message_id: str = "wamid.ONE",
    provider: str = "whatsapp",
    failure: Failure | None = None,
    at_offset: float = 0.0,
    reference: str | None = None,
    alerts: Alerts | None = None,
) -> ReceiptOutcome:
    return await db.run(
        lambda s: apply_receipt(
            s, provider=provider, provider_message_id=message_id, status=status,
            at=clock.now() + timedelta(seconds=at_offset), failure=failure, now=clock.now(),
            reference=reference, alerts=alerts,
        )
    )


# ----------------------------------------------------------------------- delivered and read


async def test_delivered_then_read_are_timestamps_set_once(db: Database, clock: FakeClock) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user)
    sent_at = clock.now()

    clock.advance(5)
    assert await _receipt(db, clock, "delivered", at_offset=-1) == ReceiptOutcome.DELIVERED
    delivered_at = clock.now() - timedelta(seconds=1)
    clock.advance(5)
    assert await _receipt(db, clock, "delivered") == ReceiptOutcome.IGNORED
    clock.advance(5)
    assert await _receipt(db, clock, "read") == ReceiptOutcome.READ
    read_at = clock.now()
    clock.advance(5)
    assert await _receipt(db, clock, "read") == ReceiptOutcome.IGNORED

    row = await _row(db, nid)
    assert (row.status, row.channel, row.sent_at) == ("sent", "whatsapp", sent_at)
    assert row.delivered_at == delivered_at
    assert row.read_at == read_at
    assert await _attempts(db, nid) == []  # receipts are not attempts


async def test_read_before_delivered_sets_both_and_the_late_delivered_changes_nothing(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user)
    clock.advance(10)
    assert await _receipt(db, clock, "read") == ReceiptOutcome.READ
    read_at = clock.now()
    clock.advance(10)
    assert await _receipt(db, clock, "delivered", at_offset=-15) == ReceiptOutcome.IGNORED
    row = await _row(db, nid)
    assert row.read_at == read_at and row.delivered_at == read_at


async def test_a_provider_time_in_the_future_is_clamped_to_now(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user)
    assert await _receipt(db, clock, "delivered", at_offset=3600) == ReceiptOutcome.DELIVERED
    assert (await _row(db, nid)).delivered_at == clock.now()


@pytest.mark.parametrize("status", ["sent", "queued", "accepted", "sending", "SENT", "deleted"])
async def test_hand_over_statuses_are_ignored(
    db: Database, clock: FakeClock, status: str
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user)
    before = await _row(db, nid)
    assert await _receipt(db, clock, status) == ReceiptOutcome.IGNORED
    after = await _row(db, nid)
    assert (after.status, after.delivered_at, after.read_at, after.updated_at) == (
        before.status, None, None, before.updated_at)


async def test_unknown_message_id_changes_nothing(db: Database, clock: FakeClock) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user)
    for status in ("delivered", "read", "failed"):
        outcome = await _receipt(db, clock, status, message_id="wamid.SOMEONE-ELSE",
                                 failure=_wa_failure(131026))
        assert outcome == ReceiptOutcome.UNKNOWN_MESSAGE
    row = await _row(db, nid)
    assert (row.status, row.delivered_at, row.read_at) == ("sent", None, None)
    assert await _attempts(db, nid) == []


async def test_a_receipt_is_looked_up_on_the_providers_channel_only(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user, channel="sms", message_id="SM123")
    # The same id reported by the WhatsApp webhook is not this SMS.
    assert await _receipt(db, clock, "delivered", message_id="SM123") == (
        ReceiptOutcome.UNKNOWN_MESSAGE)
    assert await _receipt(db, clock, "delivered", message_id="SM123", provider="twilio") == (
        ReceiptOutcome.DELIVERED)
    assert (await _row(db, nid)).delivered_at == clock.now()


# ------------------------------------------------------------------------------ failed receipts


async def test_failed_receipt_after_sent_moves_on_to_the_next_channel_and_wakes_the_dispatcher(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user)
    wakes: list[int] = []
    db.on_commit(transitions.WAKE_FLAG, lambda: wakes.append(1))
    clock.advance(30)

    outcome = await _receipt(db, clock, "failed", failure=_wa_failure(131026))

    assert outcome == ReceiptOutcome.FAILED_MOVED_ON
    assert wakes == [1]
    row = await _row(db, nid)
    assert (row.status, row.channel, row.channel_index) == ("pending", "sms", 1)
    assert (row.channel_attempts, row.parts_sent, row.provider_message_id) == (0, 0, None)
    assert row.next_attempt_at == clock.now()
    assert (row.last_error_class, row.last_error_code) == ("permanent", "131026")
    assert row.failed_at is None
    assert await _attempts(db, nid) == [("whatsapp", "failed", "131026", "permanent")]


async def test_a_duplicated_failed_receipt_changes_nothing(db: Database, clock: FakeClock) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user)
    assert await _receipt(db, clock, "failed", failure=_wa_failure(131026)) == (
        ReceiptOutcome.FAILED_MOVED_ON)
    before = await _row(db, nid)
    wakes: list[int] = []
    db.on_commit(transitions.WAKE_FLAG, lambda: wakes.append(1))
    clock.advance(60)

    again = await _receipt(db, clock, "failed", failure=_wa_failure(131026))

    assert again in (ReceiptOutcome.UNKNOWN_MESSAGE, ReceiptOutcome.IGNORED)
    after = await _row(db, nid)
    assert (after.status, after.channel, after.channel_index, after.updated_at) == (
        before.status, before.channel, before.channel_index, before.updated_at)
    assert len(await _attempts(db, nid)) == 1
    assert wakes == []


async def test_failed_receipt_without_fallback_is_a_dead_letter(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user, channels=("whatsapp", "sms"), allow_fallback=False)
    clock.advance(30)

    assert await _receipt(db, clock, "failed", failure=_wa_failure(131047)) == (
        ReceiptOutcome.DEAD_LETTERED)

    row = await _row(db, nid)
    assert (row.status, row.channel, row.failed_at) == ("failed", "whatsapp", clock.now())
    assert (row.last_error_class, row.last_error_code) == ("permanent", "131047")
    assert row.last_error_text and "131047" in row.last_error_text
    assert await _attempts(db, nid) == [("whatsapp", "failed", "131047", "permanent")]
    # The same receipt again: the dead letter stays as it is.
    clock.advance(30)
    assert await _receipt(db, clock, "failed", failure=_wa_failure(131047)) == (
        ReceiptOutcome.IGNORED)
    assert (await _row(db, nid)).failed_at == clock.now() - timedelta(seconds=30)
    assert len(await _attempts(db, nid)) == 1


async def test_failed_receipt_on_the_last_channel_dead_letters_and_tells_the_admins_once(
    db: Database, clock: FakeClock
) -> None:
    await make_user(db, clock, telegram_id=ADMIN, roles="requester,admin")
    user = await make_user(db, clock, phone=PHONE, telegram_id=1002)
    alerts = Alerts(admin_telegram_ids=[ADMIN], window=timedelta(hours=1))
    first = await _sent(db, clock, user, key="a", channels=("whatsapp",), message_id="wamid.A")
    second = await _sent(db, clock, user, key="b", channels=("whatsapp",), message_id="wamid.B")

    for message_id in ("wamid.A", "wamid.B"):
        outcome = await _receipt(db, clock, "failed", message_id=message_id,
                                 failure=_wa_failure(131026), alerts=alerts)
        assert outcome == ReceiptOutcome.DEAD_LETTERED

    assert [(await _row(db, n)).status for n in (first, second)] == ["failed", "failed"]
    async with db.transaction() as session:
        sent_alerts = (await session.scalars(
            select(Notification).where(Notification.kind == ALERT_KIND))).all()
    assert len(sent_alerts) == 1
    assert "request.update" in sent_alerts[0].payload["text"]
    # The same alert as the dispatcher's: its button retries dead letters like the first one.
    assert sent_alerts[0].payload["buttons"] == [
        Action(ActionName.RETRY_DEAD_LETTERS_LIKE, first).as_payload("Retry failed")
    ]


async def test_twilio_undelivered_moves_an_sms_on_to_email(db: Database, clock: FakeClock) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user, channels=("sms", "email"), channel="sms",
                      message_id="SM0001")
    failure = classify_twilio(None, {"ErrorCode": "30003"}, now=clock.now())

    outcome = await _receipt(db, clock, "undelivered", provider="twilio", message_id="SM0001",
                             failure=failure)

    assert outcome == ReceiptOutcome.FAILED_MOVED_ON
    row = await _row(db, nid)
    assert (row.status, row.channel, row.channel_index) == ("pending", "email", 1)
    assert await _attempts(db, nid) == [("sms", "failed", "30003", "transient")]


async def test_a_failure_without_an_error_code_still_moves_on(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user, channels=("sms", "email"), channel="sms",
                      message_id="SM0002")
    assert await _receipt(db, clock, "failed", provider="twilio", message_id="SM0002") == (
        ReceiptOutcome.FAILED_MOVED_ON)
    assert await _attempts(db, nid) == [("sms", "failed", "failed", "unknown")]


@pytest.mark.parametrize(
    ("provider", "channel", "failure"),
    [
        ("whatsapp", "whatsapp", _wa_failure(131050)),
        ("twilio", "sms", classify_twilio(None, {"ErrorCode": "21610"})),
    ],
)
async def test_an_opt_out_code_records_the_opt_out(
    db: Database, clock: FakeClock, provider: str, channel: str, failure: Failure
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user, channel=channel, message_id="MSG1")
    assert await _receipt(db, clock, "failed", provider=provider, message_id="MSG1",
                          failure=failure) == ReceiptOutcome.FAILED_MOVED_ON
    assert channel in (await _user(db, user)).opt_outs.split(",")
    assert (await _row(db, nid)).status == "pending"


async def test_a_failed_receipt_after_delivery_is_not_sent_again(
    db: Database, clock: FakeClock
) -> None:
    # Several devices: one got it, another reported a failure later.
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user)
    await _receipt(db, clock, "delivered")
    assert await _receipt(db, clock, "failed", failure=_wa_failure(131026)) == (
        ReceiptOutcome.IGNORED)
    row = await _row(db, nid)
    assert (row.status, row.channel) == ("sent", "whatsapp")
    assert await _attempts(db, nid) == []


async def test_a_receipt_for_a_message_still_being_recorded_is_stored(
    db: Database, clock: FakeClock
) -> None:
    user = await make_user(db, clock, phone=PHONE)
    nid = await _sent(db, clock, user, key="inflight:1")

    async def being_sent(session) -> None:
        row = await session.get_one(Notification, nid)
        row.status, row.provider_message_id = "sending", None

    await db.run(being_sent)
    outcome = await _receipt(db, clock, "failed", message_id="wamid.NEW",
                             failure=_wa_failure(131026), reference="inflight:1")
    # Kept until the send is recorded (tests/integration/test_early_receipts.py).
    assert outcome == ReceiptOutcome.STORED
    # Without the reference it is simply unknown; a reference to another row changes nothing.
    assert await _receipt(db, clock, "failed", message_id="wamid.NEW") == (
        ReceiptOutcome.UNKNOWN_MESSAGE)
    assert await _receipt(db, clock, "failed", message_id="wamid.NEW", reference="other") == (
        ReceiptOutcome.UNKNOWN_MESSAGE)
    assert (await _row(db, nid)).status == "sending"
    assert await _attempts(db, nid) == []


# ---------------------------------------------------------------------------------- inbound


# The inbound worker applies them (tests/integration/test_whatsapp_inbound.py); these are the
# words it recognises.
@pytest.mark.parametrize("word", ["STOP", " stop ", "Stop!", "ARRET", "arrêt", "ARRÊT",
                                  "ARRE\u0302T"])
def test_stop_words_are_recognised_in_any_case_and_normalization(word: str) -> None:
    assert keyword(word) == "stop"


@pytest.mark.parametrize("word", ["start", "START", " Start. "])
def test_start_words_are_recognised(word: str) -> None:
    assert keyword(word) == "start"


@pytest.mark.parametrize("text", ["stop please", "don't stop", "STOPP", None, ""])
def test_other_texts_are_not_keywords(text: str | None) -> None:
    assert keyword(text) is None


# ------------------------------------------------------------------- webhook parsing (pure)


def test_parse_whatsapp_reads_statuses_messages_and_the_failure() -> None:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [
            {"field": "messages", "value": {"statuses": [
                {"id": "wamid.A", "status": "failed", "timestamp": "1700000000",
                 "recipient_id": WA_FROM, "biz_opaque_callback_data": "update:1",
                 "errors": [{"code": 131026, "title": "Message undeliverable"}]},
            ]}},
            {"field": "messages", "value": {"messages": [
                {"from": WA_FROM, "id": "wamid.B", "timestamp": "1700000001", "type": "text",
                 "text": {"body": "STOP"}},
                {"from": WA_FROM, "id": "wamid.C", "timestamp": "x", "type": "image",
                 "image": {"id": "1"}},
            ]}},
            {"field": "message_template_status_update", "value": {"event": "APPROVED"}},
        ]}],
    }
    statuses, messages = parse_whatsapp(payload)
    assert [(s.wamid, s.status, s.reference) for s in statuses] == [
        ("wamid.A", "failed", "update:1")]
    assert statuses[0].failure is not None and statuses[0].failure.code == "131026"
    assert statuses[0].at is not None and statuses[0].at.year == 2023
    assert [(m.wamid, m.text, m.at is None) for m in messages] == [
        ("wamid.B", "STOP", False), ("wamid.C", None, True)]


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "text",
        {"entry": {}},
        {"entry": [1]},
        {"entry": [{"changes": [{"field": "messages", "value": []}]}]},
        {"entry": [{"changes": [{"value": {"statuses": [{"status": "read"}]}}]}]},
        {"entry": [{"changes": [{"value": {"statuses": [{"id": 5, "status": "read"}]}}]}]},
        {"entry": [{"changes": [{"value": {"messages": "x"}}]}]},
    ],
)
def test_parse_whatsapp_refuses_unexpected_shapes(payload: object) -> None:
    with pytest.raises(MalformedWebhook):
        parse_whatsapp(payload)


def test_twilio_signature_matches_twilios_documented_example() -> None:
    params = MultiDict({"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030",
                        "Digits": "1234", "From": "+12349013030", "To": "+18005551212"})
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
