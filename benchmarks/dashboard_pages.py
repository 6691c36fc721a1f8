"""The dashboard's Delivery, Dead letters, Manual tasks, Stuck workflows and Errors pages on a
big database: each GET must answer in under a second.

`python -m benchmarks.dashboard_pages [--quick] [--rows N] [--repeat R]`

1. The web app with the dashboard is built as the bot builds it (`bot.app.build_dispatcher`'s
   services, `bot.web.build_web_app`, `handlers.dashboard.setup_dashboard`) on a fresh database
   (BENCH_DATABASE_URL, default a temporary SQLite file), served on a local port; an admin in
   ADMIN_IDS signs in through a one-time link, as /dashboard gives it.
2. Baseline: every page is fetched on the empty database (once to warm up, then R times).
3. The database gets the rows of benchmarks/admin_screens.py (N service requests,
   notifications and error occurrences), plus a delivery attempt for each sent notification
   and a failed first try for every other one, spread over the week (about 1.1 N attempts in
   all), and N/100 open manual tasks; then ANALYZE.
4. Every page is fetched again: the Delivery page's first view (which reads the whole week) is
   timed on its own, then each page once to warm up and R times.

The last line is `RESULT {json}`: engine, rows, per-page medians loaded and empty, their
ratios, the slowest page and whether every page stayed under the target.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import time
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from sqlalchemy import select, text

from benchmarks.admin_screens import ADMIN, _bulk, seed
from benchmarks.common import bench_database, print_result
from bot.app import build_dispatcher
from bot.config import Settings
from bot.i18n import build_i18n
from bot.web import build_web_app
from database.engine import Database
from database.models import DeliveryAttempt, ErrorGroup, ManualTask, Notification
from handlers.dashboard import setup_dashboard
from services.clock import SystemClock

TARGET_MS = 1000.0
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


async def more_rows(db: Database, rows: int) -> None:
    """Delivery attempts over the week and open manual tasks, on top of admin_screens.seed."""
    sent = (await db.read(lambda s: s.execute(
        select(Notification.id, Notification.channel, Notification.sent_at)
        .where(Notification.status == "sent").order_by(Notification.id)))).all()
    attempts = []
    for index, (notification_id, channel, sent_at) in enumerate(sent):
        if index % 2:  # a failed first try a minute earlier: the sent one is a retry
            attempts.append(dict(notification_id=notification_id, channel=channel,
                                 outcome="failed", error_class="transient", error_code="502",
                                 at=sent_at - timedelta(minutes=1)))
        attempts.append(dict(notification_id=notification_id, channel=channel, outcome="sent",
                             sender="bench", at=sent_at))
    await _bulk(db, DeliveryAttempt, attempts)
    now = SystemClock().now()
    await _bulk(db, ManualTask, [
        dict(kind="request.assigned", status="open", created_at=now - timedelta(minutes=i),
             text=f"Please call customer {i} on +3361234{i:04d}")
        for i in range(max(rows // 100, 10))
    ])
    async with db.engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()


async def sign_in(client: aiohttp.ClientSession, app_services: dict[str, Any]) -> None:
    user = await app_services["users"].ensure(telegram_id=ADMIN, display_name="Admin",
                                              client_language="en")
    token = await app_services["dashboard_access"].issue_login(user.id)
    async with client.get(f"/admin/login/{token}") as response:
        page = await response.text()
    form = {}
    if found := _CSRF.search(page):
        form["csrf"] = found.group(1)
    async with client.post(f"/admin/login/{token}", data=form,
                           allow_redirects=False) as response:
        if response.status != 303:
            raise AssertionError(f"sign-in refused: {response.status}")


async def fetch(client: aiohttp.ClientSession, path: str) -> float:
    """Milliseconds to GET `path` in full; the page must be a 200."""
    started = time.perf_counter()
    async with client.get(path, allow_redirects=False) as response:
        await response.read()
        if response.status != 200:
            raise AssertionError(f"{path}: HTTP {response.status}")
    return (time.perf_counter() - started) * 1000


def pages(ids: dict[str, int]) -> dict[str, str]:
    return {
        "delivery": "/admin/delivery",
        "dead letters": "/admin/dead-letters",
        "dead letters page 100": "/admin/dead-letters?page=100",
        "dead letters filtered": "/admin/dead-letters?kind=kind3&channel=telegram"
                                 "&failure_class=permanent",
        "dead letter detail": f"/admin/dead-letters/{ids['dead']}",
        "retry all (count)": "/admin/dead-letters/retry-all",
        "manual tasks": "/admin/tasks",
        "manual tasks page 5": "/admin/tasks?page=5",
        "stuck": "/admin/stuck",
        "stuck page 1000": "/admin/stuck?page=1000",
        "stuck detail": f"/admin/stuck/{ids['escalated']}",
        "errors": "/admin/errors",
        "error group": f"/admin/errors/{ids['group']}",
        "error group page 100": f"/admin/errors/{ids['group']}?page=100",
    }


async def measure(client: aiohttp.ClientSession, paths: dict[str, str], repeat: int
                  ) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    for name, path in paths.items():
        await fetch(client, path)  # warm up
        timings[name] = [await fetch(client, path) for _ in range(repeat)]
    return timings


async def run(db: Database, url: str, *, rows: int, repeat: int) -> dict[str, Any]:
    settings = Settings(
        bot_token="42:bench", database_url=url, redis_url=None, admin_ids=(ADMIN,),
        default_language="en", health_cache_seconds=0,
    )
    clock = SystemClock()
    dp, _inflight = build_dispatcher(settings, db, clock)
    web_app = build_web_app(db, clock=clock, health_cache_seconds=0)
    setup_dashboard(web_app, dp.workflow_data, i18n=build_i18n(settings.default_language),
                    timezone=settings.timezone, public_base_url=None,
                    session_hours=settings.dashboard_session_hours)
    server = TestServer(web_app)
    await server.start_server()
    client = aiohttp.ClientSession(base_url=str(server.make_url("")),
                                   cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        await sign_in(client, dp.workflow_data)
        empty_paths = {n: p for n, p in pages({"dead": 1, "escalated": 1, "group": 1}).items()
                       if "detail" not in n and "group" not in n and "retry all" not in n}
        empty = await measure(client, empty_paths, repeat)

        started = time.perf_counter()
        ids = await seed(db, rows)
        await more_rows(db, rows)
        ids["group"] = int(await db.read(lambda s: s.scalar(select(ErrorGroup.id).limit(1))))
        print(f"seeded {rows:,} requests, notifications and error occurrences in "
              f"{time.perf_counter() - started:.0f} s", flush=True)

        first_delivery = await fetch(client, "/admin/delivery")
        print(f"{'delivery (first view)':24s} {first_delivery:8.1f} ms", flush=True)
        loaded = await measure(client, pages(ids), repeat)
    finally:
        await client.close()
        await server.close()
        await dp.storage.close()
    result: dict[str, Any] = {"engine": db.dialect, "rows": rows, "pages_p50_ms": {},
                              "empty_p50_ms": {}, "ratio_to_empty": {}}
    for name, samples in loaded.items():
        p50 = statistics.median(samples)
        result["pages_p50_ms"][name] = round(p50, 1)
        line = f"{name:24s} p50 {p50:8.1f} ms   max {max(samples):8.1f} ms"
        if name in empty:
            base = statistics.median(empty[name])
            result["empty_p50_ms"][name] = round(base, 1)
            result["ratio_to_empty"][name] = round(p50 / base, 1) if base else None
            line += f"   empty {base:6.1f} ms   x{p50 / base:5.1f}"
        print(line, flush=True)
    slowest = max(loaded, key=lambda n: max(loaded[n]))
    result.update(
        delivery_first_view_ms=round(first_delivery, 1),
        slowest_page=slowest,
        slowest_ms=round(max(loaded[slowest]), 1),
        target_met=max(loaded[slowest]) < TARGET_MS,
    )
    return result


async def main(rows: int, repeat: int) -> None:
    async with bench_database() as (db, url):
        result = await run(db, url, rows=rows, repeat=repeat)
    print_result(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 2 fetches each")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(10_000 if args.quick else args.rows, 2 if args.quick else args.repeat))
