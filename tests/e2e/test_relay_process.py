"""The relay survives a crash: the bot process killed (SIGKILL, no shutdown at all) after it
answered 200 to a signed WhatsApp message and before the relay reached the operators' chat;
the restarted process relays it exactly once."""

from __future__ import annotations

import json
import signal

import aiohttp
from sqlalchemy import func, select

from database.engine import Database
from database.models import InboundMessage, Notification, RelayMessage
from tests.e2e.conftest import StartBot
from tests.e2e.delivery import APP_SECRET, Providers, eventually
from tests.fakes.telegram import FakeTelegram
from tests.fakes.whatsapp import inbound_message, sign

OPS = -1_001_234_567_890  # the operators' supergroup
ANN = "33612345678"
WA_PATH = "/webhooks/whatsapp"
TEXT = "Hello, the boiler is making a strange noise"


def _relays(fake: FakeTelegram) -> list[str]:
    return [m.get("text", "") for m in fake.sent_messages(OPS) if TEXT in m.get("text", "")]


async def _count(db: Database, model: type) -> int:
    async with db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def test_killed_after_the_200_and_before_the_relay_the_restart_relays_it_once(
    providers: Providers, start_bot: StartBot, fake_telegram: FakeTelegram, db: Database,
) -> None:
    env = {
        **providers.env,
        "OPERATORS_CHAT_ID": str(OPS),
        # The relay is retried, never given up, while the operators' chat fails; a dead
        # process's leases and leadership run out quickly.
        "RETRY_SCHEDULE_SECONDS": "0.5",
        "CHANNEL_MAX_ATTEMPTS": "1000",
        "DISPATCHER_LEASE_SECONDS": "2",
        "DISPATCHER_LEADER_LEASE_SECONDS": "2",
        "INBOUND_LEASE_SECONDS": "2",
    }
    # Telegram fails every send (500): the relay cannot reach the operators' chat.
    fake_telegram.failure_rate = 1.0
    bot = await start_bot(**env)
    body = json.dumps(providers.whatsapp.make_inbound_webhook(
        [inbound_message("text", ANN, text=TEXT)], names={ANN: "Ann Lee"})).encode()
    async with aiohttp.ClientSession() as session, session.post(
        f"{bot.web_url}{WA_PATH}", data=body,
        headers={"Content-Type": "application/json",
                 "X-Hub-Signature-256": sign(body, APP_SECRET)},
    ) as response:
        assert response.status == 200

    async def tried_and_failed() -> bool:
        return any(c.method.lower() == "sendmessage" and c.status == 500
                   and c.params.get("chat_id") in (OPS, str(OPS)) for c in fake_telegram.calls)

    await eventually(tried_and_failed)
    bot.signal(signal.SIGKILL)
    assert await bot.wait_exit() == -signal.SIGKILL
    assert _relays(fake_telegram) == []

    fake_telegram.failure_rate = 0.0
    await start_bot(**env)

    async def relayed_and_settled() -> bool:
        async with db.transaction() as session:
            unsent = await session.scalar(select(func.count()).select_from(Notification).where(
                Notification.kind == "relay_text", Notification.status != "sent"))
            inbound = list(await session.scalars(select(InboundMessage.status)))
        return bool(_relays(fake_telegram)) and unsent == 0 and inbound == ["done"]

    await eventually(relayed_and_settled, timeout=30)
    [relayed] = _relays(fake_telegram)
    assert "Ann Lee" in relayed and ANN not in relayed
    assert await _count(db, InboundMessage) == 1
    assert await _count(db, RelayMessage) == 1
    async with db.transaction() as session:
        relays = list(await session.scalars(
            select(Notification).where(Notification.kind == "relay_text")))
    assert [n.status for n in relays] == ["sent"]
