"""Several bot processes, and a killed one: every notification is delivered, once.

These run real `python main.py run` processes (the test entry point) against the fake Bot API
and count what it received.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select

from database.engine import Database
from database.models import Notification, User
from services.notifications import outbox
from tests.conftest import TEST_REDIS_URL
from tests.e2e.conftest import StartBot
from tests.fakes.telegram import FakeTelegram

FAST = {
    # Raised so the tests measure correctness, not Telegram's pace (the pacing tests do that).
    "TELEGRAM_RATE_PER_SECOND": "100000",
    "TELEGRAM_PER_CHAT_PER_SECOND": "100000",
    "DISPATCHER_IDLE_SECONDS": "0.2",
    "DISPATCHER_BATCH_SIZE": "50",
    "DISPATCHER_WORKERS": "4",
    "SEND_RETRY_WAIT_SECONDS": "0.01",
    "RETRY_SCHEDULE_SECONDS": "0.2",
}


async def seed(db: Database, users: int, per_user: int) -> list[str]:
    """Users 10000.. and `per_user` notifications each; returns the texts, all distinct."""
    now = datetime.now(UTC)
    async with db.transaction() as session:
        await session.execute(insert(User), [
            dict(telegram_id=10_000 + i, display_name=f"u{i}", language="en",
                 language_chosen=True, roles="requester", opt_outs="", created_at=now,
                 updated_at=now)
            for i in range(users)
        ])
        ids = (await session.scalars(select(User.id).order_by(User.id))).all()
    texts = []
    for user_index, user_id in enumerate(ids):

        async def work(session, user_id=user_id, user_index=user_index) -> None:
            for n in range(per_user):
                text = f"notice {user_index}-{n}"
                texts.append(text)
                await outbox.enqueue(session, recipient_id=user_id, kind="bulk",
                                     idempotency_key=f"bulk:{user_index}:{n}", text=text,
                                     now=now)

        await db.run(work)
    return texts


async def count_sent(db: Database) -> int:
    async with db.transaction() as session:
        return await session.scalar(
            select(func.count()).select_from(Notification).where(Notification.status == "sent")
        )


async def wait_all_sent(db: Database, total: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await count_sent(db) < total:
            await asyncio.sleep(0.25)


def delivered(fake: FakeTelegram) -> Counter[str]:
    return Counter(
        c.params["text"] for c in fake.calls
        if c.method == "sendMessage" and c.status == 200 and c.params["text"].startswith("notice")
    )


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set: shared limits need "
                    "Redis for two dispatching processes")
async def test_two_processes_share_5000_notifications_each_delivered_once(
    fake_telegram: FakeTelegram, start_bot: StartBot, db: Database, db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("several dispatching processes need PostgreSQL (SQLite has one writer)")
    texts = await seed(db, users=500, per_user=10)
    env = dict(FAST, REDIS_URL=TEST_REDIS_URL, TELEGRAM_MODE="webhook",
               WEBHOOK_SECRET="two-processes")
    first, second = await asyncio.gather(start_bot(**env), start_bot(**env))
    await wait_all_sent(db, len(texts), timeout=180)

    counts = delivered(fake_telegram)
    assert set(counts) == set(texts)  # none lost
    assert max(counts.values()) == 1  # none twice
    claims = [
        sum(int(n) for n in re.findall(r"claimed (\d+) notification", p.text))
        for p in (first, second)
    ]
    print(f"\nnotifications claimed per process: {claims}")
    assert all(c > 0 for c in claims), "both processes took part"


async def test_sigkill_mid_batch_then_restart_delivers_everything(
    fake_telegram: FakeTelegram, start_bot: StartBot, db: Database
) -> None:
    texts = await seed(db, users=200, per_user=10)
    fake_telegram.delay = 0.05  # keep batches in flight long enough to be killed in one
    env = dict(FAST, DISPATCHER_LEASE_SECONDS="2")
    victim = await start_bot(**env)
    async with asyncio.timeout(60):
        while len(delivered(fake_telegram)) < 300:
            await asyncio.sleep(0.05)
    victim.signal(signal.SIGKILL)
    assert await victim.wait_exit() == -signal.SIGKILL
    sent_before = len(delivered(fake_telegram))

    await start_bot(**env)
    await wait_all_sent(db, len(texts), timeout=120)
    counts = delivered(fake_telegram)
    duplicates = sum(n - 1 for n in counts.values())
    in_flight_bound = int(FAST["DISPATCHER_WORKERS"]) * int(FAST["DISPATCHER_BATCH_SIZE"])
    print(f"\nkilled after {sent_before} sends; duplicates after restart: {duplicates} "
          f"(bound: the in-flight batches, {in_flight_bound})")
    assert set(counts) == set(texts)  # none lost
    assert duplicates <= in_flight_bound
