"""Inbound WhatsApp messages on both engines: signed webhooks of every message type stored once
before the 200, redeliveries stored once, a worker with leases that loses nothing when a
process dies after the 200, STOP / START in the order the customer sent them, unknown numbers
becoming customers, and a Telegram user who shares a customer's number becoming one person with
them. Time moves with the test clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.webhooks import WHATSAPP_PATH, register_webhooks
from database.engine import Database
from database.models import InboundMessage, Notification, TransactionLog, User
from services import contacts
from services.clock import FakeClock
from services.notifications import outbox
from services.whatsapp_inbound import InboundContext, InboundWorker, WorkerConfig
from tests.fakes.whatsapp import INBOUND_TYPES, FakeWhatsApp, inbound_message, sign
from tests.support import make_user

APP_SECRET = "wa-app-secret"
CUSTOMER = "33612345678"
CUSTOMER_E164 = "+33612345678"
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC: the FakeClock's start


@dataclass
class Inbound:
    client: TestClient
    db: Database
    clock: FakeClock
    worker: InboundWorker
    fake: FakeWhatsApp  # only its payload builders: no server is started

    async def post(self, payload: dict[str, Any] | bytes) -> int:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        async with self.client.post(
            WHATSAPP_PATH, data=body,
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": sign(body, APP_SECRET)},
        ) as response:
            await response.read()
            return response.status

    def webhook(self, *messages: dict[str, Any], name: str = "Zoë") -> dict[str, Any]:
        return self.fake.make_inbound_webhook(list(messages), names={CUSTOMER: name})


@pytest.fixture
async def inbound(db: Database) -> AsyncIterator[Inbound]:
    clock = FakeClock()
    worker = InboundWorker(db, clock, owner="worker-a", config=WorkerConfig())
    app = web.Application()
    register_webhooks(
        app, db=db, clock=clock, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token="v",
        twilio_auth_token=None, public_base_url="http://127.0.0.1", on_inbound=worker.wake,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    yield Inbound(client, db, clock, worker, FakeWhatsApp())
    await client.close()


def text(body: str, at: int = T0, **kwargs: Any) -> dict[str, Any]:
    return inbound_message("text", CUSTOMER, text=body, timestamp=at, **kwargs)


async def rows(db: Database) -> list[InboundMessage]:
    async with db.transaction() as session:
        return list(await session.scalars(select(InboundMessage).order_by(InboundMessage.id)))


async def customer(db: Database, phone: str = CUSTOMER_E164) -> User | None:
    async with db.transaction() as session:
        return await session.scalar(select(User).where(User.phone == phone))


async def count_users(db: Database) -> int:
    async with db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(User)) or 0


def one_of_each_type() -> list[dict[str, Any]]:
    examples: dict[str, dict[str, Any]] = {
        "text": {"text": "Bonjour, la fuite continue"},
        "image": {"caption": "the leak", "mime_type": "image/jpeg"},
        "video": {"caption": "video"},
        "audio": {"voice": True, "mime_type": "audio/ogg"},
        "document": {"filename": "quote.pdf", "mime_type": "application/pdf"},
        "sticker": {"animated": False},
        "location": {"latitude": 48.85, "longitude": 2.35, "name": "Home"},
        "contacts": {"name": "Bob Plumber", "phone": "+33699999999"},
        "interactive": {"reply_type": "list_reply", "reply_id": "new", "title": "New request"},
        "button": {"text": "Stop promotions"},
        "reaction": {"message_id": "wamid.previous", "emoji": "👍"},
        "order": {},
        "system": {},
        "unsupported": {},
    }
    assert set(examples) == set(INBOUND_TYPES)
    return [inbound_message(kind, CUSTOMER, timestamp=T0 + i, **fields)
            for i, (kind, fields) in enumerate(examples.items())]


# ------------------------------------------------------------------------------- storing


async def test_signed_payloads_of_every_type_are_stored_once_before_the_200(
    inbound: Inbound,
) -> None:
    messages = one_of_each_type()
    payload = inbound.webhook(*messages)
    assert await inbound.post(payload) == 200
    stored = await rows(inbound.db)
    assert [(r.wamid, r.type) for r in stored] == [(m["id"], m["type"]) for m in messages]
    assert all(r.status == "pending" and r.sender == CUSTOMER for r in stored)
    assert stored[0].text == "Bonjour, la fuite continue" and stored[0].profile_name == "Zoë"
    assert stored[1].payload["image"]["caption"] == "the leak"
    assert stored[8].text == "New request"  # the title of the list row tapped
    assert stored[0].phone_number_id == inbound.fake.phone_number_ids[0]

    assert await inbound.post(payload) == 200  # Meta sends it again
    assert len(await rows(inbound.db)) == len(messages)


async def test_the_same_delivery_posted_three_times_is_stored_and_processed_once(
    inbound: Inbound,
) -> None:
    payload = inbound.webhook(text("Hello, my sink is leaking"))
    for _ in range(3):
        assert await inbound.post(payload) == 200
    assert await inbound.worker.drain() == 1
    assert await inbound.post(payload) == 200  # and once more after it was processed
    assert await inbound.worker.drain() == 0
    [row] = await rows(inbound.db)
    assert row.status == "done" and row.processed_at is not None
    async with inbound.db.transaction() as session:
        created = await session.scalar(select(func.count()).select_from(TransactionLog).where(
            TransactionLog.operation == "user.create"))
    assert created == 1


async def test_a_process_that_dies_after_the_200_loses_nothing(inbound: Inbound) -> None:
    assert await inbound.post(inbound.webhook(text("STOP"))) == 200
    # Worker A claims the message and dies before its unit of work commits.
    assert await inbound.db.run(inbound.worker._claim) == [(await rows(inbound.db))[0].id]
    other = InboundWorker(inbound.db, inbound.clock, owner="worker-b")
    assert await other.drain() == 0  # A's lease still holds it
    inbound.clock.advance(seconds=61)
    assert await other.drain() == 1
    [row] = await rows(inbound.db)
    assert (row.status, row.lease_owner, row.attempts) == ("done", None, 2)
    assert (await customer(inbound.db)).opt_outs == "whatsapp"
    # A comes back with its stale claim: nothing is processed twice.
    assert await inbound.worker._process(row.id) is False


async def test_a_failing_step_is_retried_later_and_kept_as_failed_in_the_end(
    inbound: Inbound,
) -> None:
    calls: list[int] = []

    async def broken_relay(session: Any, ctx: InboundContext) -> None:
        calls.append(ctx.message.id)
        raise RuntimeError("relay unavailable")

    inbound.worker.add_processor(broken_relay)
    assert await inbound.post(inbound.webhook(text("Hello"))) == 200
    assert await inbound.worker.drain() == 0
    [row] = await rows(inbound.db)
    assert (row.status, row.last_error, row.user_id) == ("pending", "RuntimeError", None)
    assert await customer(inbound.db) is None  # the whole message rolled back
    for _ in range(10):
        inbound.clock.advance(minutes=11)
        await inbound.worker.drain()
    [row] = await rows(inbound.db)
    assert row.status == "failed" and len(calls) == WorkerConfig().max_attempts


# ---------------------------------------------------------------------- STOP / START order


async def test_a_redelivered_old_start_never_cancels_a_newer_stop(inbound: Inbound) -> None:
    start_then = text("START", at=T0 - 120)  # Meta's first delivery of it never reached us
    stop_now = text("STOP", at=T0 - 60)
    assert await inbound.post(inbound.webhook(stop_now)) == 200
    await inbound.worker.drain()
    assert (await customer(inbound.db)).opt_outs == "whatsapp"

    inbound.clock.advance(hours=6)
    for _ in range(2):  # Meta retries the old START, twice
        assert await inbound.post(inbound.webhook(start_then)) == 200
        await inbound.worker.drain()
    assert (await customer(inbound.db)).opt_outs == "whatsapp"

    assert await inbound.post(inbound.webhook(text("start", at=T0 + 3600))) == 200
    await inbound.worker.drain()
    assert (await customer(inbound.db)).opt_outs == ""


async def test_keywords_in_one_batch_apply_in_the_order_they_were_sent(inbound: Inbound) -> None:
    # Listed out of order in the body: the timestamps decide.
    payload = inbound.webhook(text("START", at=T0 - 10), text("ARRÊT", at=T0 - 20))
    assert await inbound.post(payload) == 200
    await inbound.worker.drain()
    assert (await customer(inbound.db)).opt_outs == ""


# ------------------------------------------------------------------------------ customers


async def test_an_unknown_number_becomes_a_customer(inbound: Inbound) -> None:
    inbound.clock.advance(minutes=5)
    payload = inbound.webhook(text("Bonjour, j'ai une fuite d'eau", at=T0 + 200), name="Zoë")
    assert await inbound.post(payload) == 200
    await inbound.worker.drain()
    user = await customer(inbound.db)
    assert user is not None
    assert (user.telegram_id, user.display_name, user.language, user.roles) == (
        None, "Zoë", "fr", "requester")
    assert user.whatsapp_inbound_at == inbound.clock.now() - timedelta(seconds=100)
    [row] = await rows(inbound.db)
    assert row.user_id == user.id

    # The same person again, with the number written differently by nobody: matched, not
    # created twice; a later message moves the window on.
    inbound.clock.advance(minutes=5)
    assert await inbound.post(inbound.webhook(text("Merci", at=T0 + 550))) == 200
    await inbound.worker.drain()
    assert await count_users(inbound.db) == 1
    assert (await customer(inbound.db)).whatsapp_inbound_at == inbound.clock.now() - timedelta(
        seconds=50)


async def test_a_customer_whose_language_cannot_be_told_gets_the_default(
    inbound: Inbound,
) -> None:
    assert await inbound.post(inbound.webhook(
        inbound_message("image", CUSTOMER, timestamp=T0))) == 200
    await inbound.worker.drain()
    assert (await customer(inbound.db)).language == "en"


async def test_a_telegram_user_sharing_a_customers_number_becomes_one_person_with_them(
    inbound: Inbound,
) -> None:
    db, clock = inbound.db, inbound.clock
    assert await inbound.post(inbound.webhook(text("Hello"), text("STOP", at=T0 + 1))) == 200
    await inbound.worker.drain()
    whatsapp_only = await customer(db)
    assert whatsapp_only is not None
    queued = await db.run(lambda s: outbox.enqueue(
        s, recipient_id=whatsapp_only.id, kind="request.update", idempotency_key="u:1",
        text="Your request", now=clock.now(), channels=["sms"]))

    ann = await make_user(db, clock, telegram_id=4242)
    view = await db.run(lambda s: contacts.set_phone(
        s, user_id=ann, phone="+33 6 12 34 56 78", now=clock.now()))
    assert view.phone == CUSTOMER_E164 and view.opt_outs == frozenset({"whatsapp"})

    async with db.transaction() as session:
        assert await session.get(User, whatsapp_only.id) is None
        merged = await session.get_one(User, ann)
        assert (merged.telegram_id, merged.phone) == (4242, CUSTOMER_E164)
        assert merged.whatsapp_inbound_at is not None
        assert {r.user_id for r in await session.scalars(select(InboundMessage))} == {ann}
        assert (await session.get_one(Notification, queued.id)).recipient_id == ann
        log = list(await session.scalars(select(TransactionLog).where(
            TransactionLog.operation.in_(("contacts.merge", "user.merged_into")))))
    assert {(e.operation, e.entity_id) for e in log} == {
        ("contacts.merge", str(ann)), ("user.merged_into", str(whatsapp_only.id))}
    assert CUSTOMER_E164 not in json.dumps([e.before for e in log] + [e.after for e in log])

    # A later message from that number reaches the merged person.
    assert await inbound.post(inbound.webhook(text("START", at=T0 + 60))) == 200
    await inbound.worker.drain()
    assert await count_users(db) == 1
    async with db.transaction() as session:
        assert (await session.get_one(User, ann)).opt_outs == ""


async def test_a_number_on_another_telegram_user_is_still_taken(inbound: Inbound) -> None:
    db, clock = inbound.db, inbound.clock
    await make_user(db, clock, telegram_id=1, phone=CUSTOMER_E164)
    other = await make_user(db, clock, telegram_id=2)
    with pytest.raises(contacts.PhoneTaken):
        await db.run(lambda s: contacts.set_phone(
            s, user_id=other, phone=CUSTOMER_E164, now=clock.now()))


# ------------------------------------------------------------------------- generated input

_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                 max_size=200)
_wamids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1,
                  max_size=60).map(lambda s: "wamid." + s)
_phones = st.from_regex(r"[1-9][0-9]{7,13}", fullmatch=True)


@st.composite
def _message(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "image", "location", "interactive", "button",
                                 "reaction", "unsupported", "document"]))
    fields: dict[str, Any] = {}
    if kind == "text":
        fields["text"] = draw(_texts)
    elif kind == "image":
        fields["caption"] = draw(_texts)
    elif kind == "location":
        fields.update(latitude=draw(st.floats(-90, 90)), longitude=draw(st.floats(-180, 180)))
    elif kind == "interactive":
        fields["title"] = draw(st.text(min_size=1, max_size=20).filter(str.strip))
    elif kind == "button":
        fields["text"] = draw(_texts)
    elif kind == "reaction":
        fields["message_id"] = draw(_wamids)
    message = inbound_message(kind, draw(_phones), wamid=draw(_wamids),
                              timestamp=draw(st.integers(1, 2_000_000_000)), **fields)
    if draw(st.booleans()):
        message["extra_field_meta_may_add"] = draw(st.one_of(st.none(), _texts, st.integers()))
    return message


_junk = st.one_of(
    st.just({"id": 5, "from": "33612345678", "type": "text"}),
    st.just({"from": "33612345678", "type": "text", "text": {"body": "no id"}}),
    st.just("not an object"),
    st.just({"id": "wamid.\ud800", "from": "33612345678"}),
)


@given(valid=st.lists(_message(), min_size=1, max_size=8),
       junk=st.lists(_junk, max_size=2), resend=st.booleans())
async def test_generated_signed_payloads_never_500_and_store_each_valid_message_once(
    inbound: Inbound, valid: list[dict[str, Any]], junk: list[Any], resend: bool
) -> None:
    payload = inbound.fake.make_inbound_webhook(valid)
    payload["entry"][0]["changes"][0]["value"]["messages"] = [*valid, *junk]
    raw = json.dumps(payload).encode()
    for _ in range(2 if resend else 1):
        assert await inbound.post(raw) == 200
    wamids = {m["id"] for m in valid}
    async with inbound.db.transaction() as session:
        counts = dict((await session.execute(
            select(InboundMessage.wamid, func.count()).where(InboundMessage.wamid.in_(wamids))
            .group_by(InboundMessage.wamid))).all())
    assert counts == dict.fromkeys(wamids, 1)


async def test_an_outage_is_logged_once_by_the_worker_not_on_every_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the database is away the worker keeps trying; it says so once, no traceback."""
    unreachable = Database.from_url("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    worker = InboundWorker(unreachable, FakeClock(), owner="worker-a",
                           config=WorkerConfig(idle_seconds=0.01))
    worker.start()
    try:
        await asyncio.sleep(0.3)  # many passes at 0.01 s
    finally:
        await worker.stop()
        await unreachable.dispose()
    lines = [r for r in caplog.records if r.name == "services.whatsapp_inbound"]
    assert [(r.levelname, r.exc_info) for r in lines] == [("WARNING", None)]
    assert "the database is unreachable" in lines[0].getMessage()
