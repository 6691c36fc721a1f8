"""Shared by the end-to-end delivery tests: the fake providers the bot is pointed at, and small
helpers that write to and read from the test's database while the bot process runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from database.engine import Database
from database.models import DeliveryAttempt, Notification, User
from services.notifications import outbox
from tests.fakes.smtp import Mailbox, smtp_server
from tests.fakes.twilio import FakeTwilio
from tests.fakes.whatsapp import FakeWhatsApp

ADMIN = 9000
APP_SECRET = "wa-app-secret-for-e2e"
VERIFY_TOKEN = "wa-verify-token-e2e"


@dataclass
class Providers:
    whatsapp: FakeWhatsApp
    twilio: FakeTwilio
    mailbox: Mailbox
    env: dict[str, str]  # what the bot process needs to reach them


@asynccontextmanager
async def running_providers() -> AsyncIterator[Providers]:
    async with FakeWhatsApp() as whatsapp, FakeTwilio() as twilio, smtp_server() as (box, port):
        env = {
            "WHATSAPP_TOKEN": whatsapp.token,
            "WHATSAPP_PHONE_NUMBER_IDS": "100100",
            "WHATSAPP_API_BASE": whatsapp.base_url,
            "WHATSAPP_API_VERSION": "v23.0",
            "WHATSAPP_RECIPIENT_INTERVAL_SECONDS": "0",
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_FROM": "+15005550006",
            "TWILIO_API_BASE": twilio.base_url,
            "TWILIO_RATE_PER_SECOND": "50",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
            "SMTP_FROM": "desk@example.com",
            "SMTP_STARTTLS": "false",
            "ADMIN_IDS": str(ADMIN),
            "DISPATCHER_IDLE_SECONDS": "0.2",
            "SEND_RETRY_WAIT_SECONDS": "0.01",
            "RETRY_SCHEDULE_SECONDS": "0.2",
        }
        yield Providers(whatsapp, twilio, box, env)


async def add_user(
    db: Database,
    telegram_id: int,
    *,
    phone: str | None = None,
    email: str | None = None,
    roles: str = "requester",
    wrote_on_whatsapp: bool = True,
) -> int:
    """A user as registration leaves one; `wrote_on_whatsapp` opens their 24 h window."""
    now = datetime.now(UTC)

    async def work(session) -> int:
        user = User(telegram_id=telegram_id, phone=phone, email=email, language="en",
                    display_name=f"User {telegram_id}", roles=roles, created_at=now,
                    updated_at=now, whatsapp_inbound_at=now if wrote_on_whatsapp else None)
        session.add(user)
        await session.flush()
        return user.id

    return await db.run(work)


async def enqueue(db: Database, user_id: int, key: str, text: str, **kw) -> int:
    result = await db.run(lambda s: outbox.enqueue(
        s, recipient_id=user_id, kind=kw.pop("kind", "request.update"), idempotency_key=key,
        text=text, now=datetime.now(UTC), **kw))
    return result.id


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Wait until `check()` is true: the bot process works at its own pace."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def row(db: Database, notification_id: int) -> Notification:
    async with db.transaction() as session:
        return await session.get_one(Notification, notification_id)


async def status_of(db: Database, notification_id: int) -> tuple[str, str]:
    current = await row(db, notification_id)
    return current.status, current.channel


async def attempts(db: Database, notification_id: int) -> list[tuple[str, str, str | None]]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.notification_id == notification_id)
            .order_by(DeliveryAttempt.id))
        return [(a.channel, a.outcome, a.error_code) for a in rows]
