"""Every /workflow_recovery screen on a big database: each must answer in under a second.

`python -m benchmarks.admin_screens [--quick] [--rows N] [--repeat R]`

1. A database (BENCH_DATABASE_URL, default a temporary SQLite file) gets N service requests
   (in every state, most of them long past their state's threshold, so the stuck list is
   N-sized), N notifications (sent, pending, and dead letters with an attempt each), N error
   occurrences over a few groups across the last week, and N/10 transaction-log rows; bulk
   inserted, then ANALYZE.
2. The screens are driven through the production Dispatcher (`bot.app.build_dispatcher`: every
   middleware, the admin guard, the real handlers and services), as an admin in ADMIN_IDS
   pressing the buttons: the top menu, every section's entry, the second and a deep page of
   the stuck list, a stuck request's detail, a dead letter's detail, the health history. The
   Bot API is the recording session of benchmarks/updates.py (no network).
3. Each screen is pressed once to warm up, then R times, timed from feed_update to its return
   (the answer edited in place). /health's cache is off (HEALTH_CACHE_SECONDS=0), so every
   System health press computes its parts.

A screen whose section is not built yet ("not available yet") is listed and left out. The last
line is `RESULT {json}`: engine, rows, slowest_screen, slowest_ms, p50_ms, per-screen medians.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiogram.filters.callback_data import CallbackData
from aiogram.methods import EditMessageText, SendMessage
from aiogram.types import CallbackQuery, Chat, Message, MessageEntity, Update
from aiogram.types import User as TelegramUser
from sqlalchemy import insert, select, text

from benchmarks.common import bench_database, print_result
from benchmarks.updates import BOT_ID, TOKEN, RecordingSession, build_bot
from bot.app import build_dispatcher
from bot.config import Settings
from database.engine import Database
from database.models import (
    DeliveryAttempt,
    ErrorGroup,
    ErrorOccurrence,
    Notification,
    ServiceRequest,
    TransactionLog,
    User,
)
from handlers.admin.recovery.callbacks import DeadLetter, Nav, Stuck
from handlers.admin.recovery.registry import SECTIONS
from services.clock import SystemClock
from services.users import ensure_telegram_user
from services.workflow.catalogue import ensure_area, ensure_service_type

ADMIN = 777_000_001
TARGET_MS = 1000.0
CHUNK = 5000
STATES = ("new", "matching", "offered", "assigned", "in_progress", "completed", "disputed",
          "escalated", "confirmed", "cancelled")


async def _bulk(db: Database, model: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start:start + CHUNK]
        await db.run(lambda s, chunk=chunk: s.execute(insert(model), chunk))


async def seed(db: Database, rows: int) -> dict[str, int]:
    """The big database; returns ids the detail screens open."""
    now = datetime.now(UTC)

    async def catalogue(session: Any) -> tuple[int, int, int]:
        admin = await ensure_telegram_user(session, telegram_id=ADMIN, display_name="Admin",
                                           client_language="en", default_language="en",
                                           admin=True, now=now)
        service, _ = await ensure_service_type(session, code="plumbing", name_en="Plumbing",
                                               name_fr="Plomberie")
        area, _ = await ensure_area(session, code="north", name_en="North", name_fr="Nord")
        return admin.id, service.id, area.id

    admin_id, service_id, area_id = await db.run(catalogue)
    people = max(rows // 100, 10)
    await _bulk(db, User, [
        dict(telegram_id=10_000_000 + i, display_name=f"Customer {i}", language="en",
             language_chosen=True, roles="requester", opt_outs="", created_at=now,
             updated_at=now)
        for i in range(people)
    ])
    user_ids = list(await db.read(lambda s: s.scalars(
        select(User.id).where(User.telegram_id >= 10_000_000).order_by(User.id))))
    await _bulk(db, ServiceRequest, [
        dict(requester_id=user_ids[i % people], service_type_id=service_id, area_id=area_id,
             address=f"{i} rue des Lilas", time_window="", description="leak", photos=[],
             urgent=False, state=STATES[i % len(STATES)], acting_role=None, match_round=0,
             version=1, state_entered_at=now - timedelta(days=10, minutes=i % 5000),
             created_at=now - timedelta(days=10), updated_at=now)
        for i in range(rows)
    ])
    statuses = ("sent", "sent", "sent", "pending", "failed")
    await _bulk(db, Notification, [
        dict(recipient_id=user_ids[i % people], kind=f"kind{i % 7}",
             payload={"text": f"notice {i}"}, priority=5, idempotency_key=f"bench:{i}",
             allow_fallback=True, channel_chain="telegram,whatsapp", channel_index=0,
             channel="telegram" if i % 3 else "whatsapp", status=statuses[i % 5], attempts=1,
             channel_attempts=1, parts_sent=0, next_attempt_at=now - timedelta(minutes=i % 600),
             created_at=now - timedelta(minutes=i % 6000), updated_at=now,
             sent_at=now - timedelta(minutes=i % 6000) if statuses[i % 5] == "sent" else None,
             failed_at=now - timedelta(minutes=i % 6000) if statuses[i % 5] == "failed" else None,
             last_error_class="permanent" if statuses[i % 5] == "failed" else None,
             last_error_code="403" if statuses[i % 5] == "failed" else None)
        for i in range(rows)
    ])
    dead_ids = list(await db.read(lambda s: s.scalars(
        select(Notification.id).where(Notification.status == "failed").order_by(Notification.id))))
    await _bulk(db, DeliveryAttempt, [
        dict(notification_id=n, channel="telegram", outcome="failed", error_class="permanent",
             error_code="403", error_text="bot was blocked", at=now - timedelta(minutes=5))
        for n in dead_ids
    ])
    groups = []
    for g in range(20):
        severity = ("low", "medium", "high", "critical")[g % 4]
        groups.append(dict(fingerprint=f"bench{g:02d}", exception_type="RuntimeError",
                           place=f"handlers.x:f{g}", category=("database", "network",
                                                               "internal")[g % 3],
                           severity=severity, count=rows // 20, first_seen=now - timedelta(days=7),
                           last_seen=now, message="boom", stack="", resolved=False))
    await _bulk(db, ErrorGroup, groups)
    group_ids = list(await db.read(lambda s: s.scalars(select(ErrorGroup.id))))
    await _bulk(db, ErrorOccurrence, [
        dict(code=f"B{i:09d}", group_id=group_ids[i % len(group_ids)], context={},
             at=now - timedelta(seconds=(i * 6) % (7 * 86400)))
        for i in range(rows)
    ])
    await _bulk(db, TransactionLog, [
        dict(operation="bench", entity_type="service_request", entity_id=str(i % rows + 1),
             actor_id=admin_id, outcome="ok", at=now - timedelta(minutes=i))
        for i in range(rows // 10)
    ])
    async with db.engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()
    escalated = await db.read(lambda s: s.scalar(
        select(ServiceRequest.id).where(ServiceRequest.state == "escalated").limit(1)))
    return {"escalated": int(escalated or 1), "dead": dead_ids[len(dead_ids) // 2]}


class Session(RecordingSession):
    """benchmarks.updates' recording session; other calls (the admin's command menu,
    setMyCommands) are answered True, as Telegram does."""

    def _result(self, method: Any) -> object:
        try:
            return super()._result(method)
        except RuntimeError:
            return True


def _admin() -> TelegramUser:
    return TelegramUser(id=ADMIN, is_bot=False, first_name="Admin", language_code="en")


def command(update_id: int) -> Update:
    return Update(update_id=update_id, message=Message(
        message_id=update_id, date=datetime.now(UTC), chat=Chat(id=ADMIN, type="private"),
        from_user=_admin(), text="/workflow_recovery",
        entities=[MessageEntity(type="bot_command", offset=0, length=18)],
    ))


def press(update_id: int, data: str) -> Update:
    return Update(update_id=update_id, callback_query=CallbackQuery(
        id=str(update_id), from_user=_admin(), chat_instance=str(ADMIN), data=data,
        message=Message(message_id=1, date=datetime.now(UTC), chat=Chat(id=ADMIN, type="private"),
                        from_user=TelegramUser(id=BOT_ID, is_bot=True, first_name="Bench"),
                        text="Workflow recovery"),
    ))


def screens(ids: dict[str, int]) -> dict[str, CallbackData]:
    found: dict[str, CallbackData] = {"top": Nav(section="top")}
    for section in SECTIONS:
        found[section.code] = Nav(section=section.code)
    found["stuck page 2"] = Nav(section="stuck", page=1)
    found["stuck page 1000"] = Nav(section="stuck", page=999)
    found["stuck detail"] = Stuck(request=ids["escalated"])
    found["dead page 2"] = Nav(section="dead", page=1)
    found["dead letter detail"] = DeadLetter(notification=ids["dead"])
    found["health history"] = Nav(section="health", item=1)
    return found


async def run(db: Database, *, rows: int, repeat: int) -> dict[str, Any]:
    started = time.perf_counter()
    ids = await seed(db, rows)
    print(f"seeded {rows:,} requests, notifications and error occurrences in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    settings = Settings(
        bot_token=TOKEN, database_url=db.engine.url.render_as_string(hide_password=False),
        redis_url=None, admin_ids=(ADMIN,), default_language="en", throttle_rate=10**9,
        health_cache_seconds=0,
    )
    session = Session()
    bot = build_bot(session)
    dp, _inflight = build_dispatcher(settings, db, SystemClock())
    await dp.feed_update(bot, command(1))
    if not any(isinstance(c, SendMessage) for c in session.calls):
        raise AssertionError("/workflow_recovery did not answer the admin")
    update_id = 10
    timings: dict[str, list[float]] = {}
    missing, failing = [], []
    for name, data in screens(ids).items():
        samples = []
        for attempt in range(repeat + 1):
            session.calls.clear()
            update_id += 1
            t0 = time.perf_counter()
            await dp.feed_update(bot, press(update_id, data.pack()))
            elapsed = (time.perf_counter() - t0) * 1000
            edits = [c for c in session.calls if isinstance(c, EditMessageText)]
            if not edits:
                failing.append(name)
                break
            if "not available yet" in edits[-1].text:
                missing.append(name)
                break
            if attempt:  # the first press warms up
                samples.append(elapsed)
        if samples:
            timings[name] = samples
            print(f"{name:22s} p50 {statistics.median(samples):8.1f} ms   "
                  f"max {max(samples):8.1f} ms", flush=True)
    await bot.session.close()
    if missing:
        print(f"not built yet (left out): {', '.join(missing)}")
    if failing:
        print(f"no screen drawn (an error?): {', '.join(failing)}")
    if not timings:
        raise AssertionError("no screen answered")
    slowest = max(timings, key=lambda n: max(timings[n]))
    every = [v for samples in timings.values() for v in samples]
    return {
        "engine": db.dialect,
        "rows": rows,
        "slowest_screen": slowest,
        "slowest_ms": round(max(timings[slowest]), 1),
        "p50_ms": round(statistics.median(every), 1),
        "screens_p50_ms": {n: round(statistics.median(v), 1) for n, v in timings.items()},
        "not_built": missing,
        "no_answer": failing,
        "target_met": max(timings[slowest]) < TARGET_MS and not failing,
    }


async def main(rows: int, repeat: int) -> None:
    async with bench_database() as (db, _url):
        result = await run(db, rows=rows, repeat=repeat)
    print_result(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 2 presses each")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(10_000 if args.quick else args.rows, 2 if args.quick else args.repeat))
