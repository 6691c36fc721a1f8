"""The web app with the provider webhooks, served in the test's own event loop on a real
database, and the bodies the providers send: shared by the webhook-edge and early-receipt
tests. The `edge` fixture (tests/integration/conftest.py) starts one per test."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from aiogram import Bot, Dispatcher, Router
from aiogram.types import Message
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict

from bot.web import build_web_app
from bot.webhooks import (
    TELEGRAM_PATH,
    WHATSAPP_PATH,
    register_telegram_webhook,
    register_webhooks,
    twilio_signature,
    whatsapp_signature,
)
from database.engine import Database
from database.models import Notification
from services.clock import FakeClock
from services.notifications import outbox
from tests.support import make_user

APP_SECRET = "wa-app-secret"
AUTH_TOKEN = "twilio-auth-token"
TG_SECRET = "tg-secret_123"
TG_TOKEN = "42:TEST-token-for-webhook-edges"
TWILIO_PATH = "/webhooks/twilio/status"
PHONE = "+33612345678"


@dataclass
class Edge:
    """The web app with all three webhooks, served in this test's event loop."""

    client: TestClient
    db: Database
    dispatcher: Dispatcher
    handled: list[int]  # update ids the Telegram handler saw
    running: list[int]  # [handlers running now, most ever running at once]

    def base_url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def whatsapp(self, body: bytes, *, headers: dict[str, str] | None = None) -> int:
        sent = {"Content-Type": "application/json",
                "X-Hub-Signature-256": whatsapp_signature(APP_SECRET, body)}
        async with self.client.post(WHATSAPP_PATH, data=body,
                                    headers=sent | (headers or {})) as response:
            await response.read()
            return response.status

    async def twilio(self, body: bytes) -> int:
        try:
            form = MultiDict(_parse_form(body))
        except UnicodeDecodeError:
            form = MultiDict()
        signature = twilio_signature(AUTH_TOKEN, self.base_url() + TWILIO_PATH, form)
        async with self.client.post(
            TWILIO_PATH, data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "X-Twilio-Signature": signature},
        ) as response:
            await response.read()
            return response.status

    async def telegram(self, body: bytes, *, secret: str | bytes = TG_SECRET) -> int:
        async with self.client.post(
            TELEGRAM_PATH, data=body,
            headers={"Content-Type": "application/json",
                     "X-Telegram-Bot-Api-Secret-Token": secret},  # type: ignore[dict-item]
        ) as response:
            await response.read()
            return response.status


def _parse_form(body: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body.decode("utf-8"), keep_blank_values=True)


async def start_edge(db_url: str, *, max_concurrent_updates: int = 100,
                     read_timeout: float = 10.0, handler_gate: asyncio.Event | None = None,
                     ) -> tuple[Edge, Bot]:
    db = Database.from_url(db_url)
    app = build_web_app(db)
    clock = FakeClock()
    handled: list[int] = []
    running = [0, 0]
    router = Router()

    @router.message()
    async def record(message: Message) -> None:
        running[0] += 1
        running[1] = max(running)
        try:
            if handler_gate is not None:
                await handler_gate.wait()
            handled.append(message.message_id)
        finally:
            running[0] -= 1

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    bot = Bot(TG_TOKEN)
    holder: dict[str, TestClient] = {}
    register_webhooks(
        app, db=db, clock=clock, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token="verify",
        twilio_auth_token=AUTH_TOKEN,
        public_base_url=lambda: str(holder["client"].make_url("")).rstrip("/"),
        read_timeout=read_timeout,
    )
    register_telegram_webhook(
        app, dispatcher, bot, secret=TG_SECRET, max_concurrent_updates=max_concurrent_updates,
        read_timeout=read_timeout,
    )
    client = TestClient(TestServer(app))
    holder["client"] = client
    await client.start_server()
    return Edge(client, db, dispatcher, handled, running), bot


async def sent_whatsapp(db: Database, clock: FakeClock, wamid: str, key: str) -> int:
    user = await make_user(db, clock, phone=PHONE) if key == "update:1" else None
    if user is None:
        async with db.transaction() as session:
            from sqlalchemy import select

            from database.models import User

            user = (await session.scalars(select(User.id))).first()

    async def work(session) -> int:
        queued = await outbox.enqueue(
            session, recipient_id=user, kind="request.update", idempotency_key=key,
            text="Hello", now=clock.now(), channels=["whatsapp", "sms"],
        )
        row = await session.get_one(Notification, queued.id)
        row.channel, row.status, row.attempts, row.parts_sent = "whatsapp", "sent", 1, 1
        row.provider_message_id = wamid
        row.sent_at = clock.now()
        return queued.id

    return await db.run(work)


async def notification(db: Database, notification_id: int) -> Notification:
    async with db.transaction() as session:
        return await session.get_one(Notification, notification_id)


def status_entry(wamid: str, status: str, timestamp: object = "1700000000") -> dict[str, object]:
    return {"id": wamid, "status": status, "timestamp": timestamp, "recipient_id": "33612345678"}


def whatsapp_body(statuses: list[object] = (), messages: list[object] = ()) -> bytes:  # type: ignore[assignment]
    value: dict[str, object] = {"messaging_product": "whatsapp"}
    if statuses:
        value["statuses"] = list(statuses)
    if messages:
        value["messages"] = list(messages)
    payload = {"object": "whatsapp_business_account",
               "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}
    return json.dumps(payload).encode()


def telegram_update(update_id: int, text: str = "hi") -> bytes:
    return json.dumps({"update_id": update_id, "message": {
        "message_id": update_id, "date": 1700000000, "text": text,
        "chat": {"id": 5, "type": "private"}, "from": {"id": 5, "is_bot": False,
                                                        "first_name": "Ann"}}}).encode()
