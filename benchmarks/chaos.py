"""Crashes and a database outage while two bot processes dispatch (PostgreSQL).

`python -m benchmarks.chaos [--quick] [--redis URL]` with BENCH_DATABASE_URL pointing at
PostgreSQL.

1. A database of its own, migrated; N notifications (10,000; --quick 2,000) enqueued for N
   distinct users, each text unique.
2. The fake Telegram (tests/fakes/telegram.py) runs in this event loop, every sendMessage
   answered after `--send-delay` seconds (default 1.0), so batches stay in flight long enough
   to be killed in one. The bot's TELEGRAM_* rate settings are raised: pacing is not measured.
3. A TCP proxy on 127.0.0.1 forwards to the PostgreSQL server; both bot processes reach the
   database only through it (DATABASE_URL names the proxy's port). The benchmark's own
   queries go to the server directly. The shared server is never restarted.
4. Two `python main.py run` processes (tests/e2e/harness.py's BotProcess: main.py plus the
   test-only handlers) in webhook mode, without REDIS_URL unless --redis is given.
5. Events at random points of the progress (delivered fraction between 5 % and 92 %, then a
   random 0-0.5 s): K SIGKILLs (5; --quick 2), each of the process holding more rows in
   status 'sending' at that moment (the one dispatching), restarted at once; and, at 50 %,
   the proxy cuts every connection and refuses new ones for 10 s (--quick 5 s).
6. Waits until every notification is status 'sent' and every text reached the fake (bounded
   by --timeout, default 300 s), then reports from the fake's sendMessage calls and the
   database.

RESULT keys: delivered, lost, duplicates (sends beyond the first of one text),
duplicate_bound (rows in 'sending' leased by the killed process just after each kill, summed),
outage_duplicates (duplicates among the rows in 'sending' when the outage began),
recovery_s (database back -> first sendMessage after), kill_recovery_s (longest kill -> next
sendMessage by anyone), redis, kills, outage_s, and more (see benchmarks/README.md).
Exit 0 unless the run itself broke; the targets are printed as met / NOT met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from benchmarks.common import bench_database, print_result
from database.engine import Database
from database.models import DeliveryAttempt, Notification, User
from services.notifications import outbox
from tests.e2e.harness import TOKEN, BotProcess, bot_env
from tests.fakes.telegram import FakeTelegram

PREFIX = "chaos notice "
BOT = {
    # Raised: the benchmark measures crashes and outages, not Telegram's pace.
    "TELEGRAM_RATE_PER_SECOND": "100000",
    "TELEGRAM_PER_CHAT_PER_SECOND": "100000",
    "TELEGRAM_MODE": "webhook",
    "WEBHOOK_SECRET": "chaos-benchmark",
    "LOG_LEVEL": "INFO",
}


# --- the proxy ---------------------------------------------------------------------------------


class Proxy:
    """TCP forwarder to the database server that can cut every connection and refuse new ones
    (its listening socket is closed, so a connect gets ECONNREFUSED), then accept again on the
    same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        self.writers.update((client_w, server_w))
        try:
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        finally:
            for writer in (client_w, server_w):
                self.writers.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    def cut(self) -> None:
        assert self.server is not None
        self.server.close()  # no new connections: the port refuses
        for writer in list(self.writers):
            writer.transport.abort()  # every open connection is reset
        self.writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Kill:
    at: float  # time.monotonic()
    pid: int
    in_flight: int
    progress: float


@dataclass
class Run:
    fake: FakeTelegram
    texts: set[str]
    sends: list[tuple[float, str]] = field(default_factory=list)  # (arrived, text), 200s only
    seen: int = 0  # fake.calls read so far
    delivered: set[str] = field(default_factory=set)

    def refresh(self) -> None:
        calls = self.fake.calls
        for call in calls[self.seen:]:
            if call.method == "sendMessage" and call.status == 200:
                body = call.params.get("text", "")
                if body.startswith(PREFIX):
                    self.sends.append((call.at, body))
                    self.delivered.add(body)
        self.seen = len(calls)

    def first_send_after(self, moment: float) -> float | None:
        later = [at for at, _ in self.sends if at >= moment]
        return min(later) if later else None


async def seed(db: Database, count: int) -> set[str]:
    """`count` users and one notification each, each text unique."""
    now = datetime.now(UTC)
    async with db.transaction() as session:
        for start in range(0, count, 5000):
            await session.execute(insert(User), [
                dict(telegram_id=100_000 + i, display_name=f"u{i}", language="en",
                     language_chosen=True, roles="requester", opt_outs="", created_at=now,
                     updated_at=now)
                for i in range(start, min(start + 5000, count))
            ])
    async with db.transaction() as session:
        ids = (await session.scalars(select(User.id).order_by(User.id))).all()
    texts = set()
    for start in range(0, count, 500):

        async def work(session, start=start) -> None:
            for i in range(start, min(start + 500, count)):
                body = f"{PREFIX}{i}"
                texts.add(body)
                await outbox.enqueue(session, recipient_id=ids[i], kind="chaos",
                                     idempotency_key=f"chaos:{i}", text=body, now=now)

        await db.run(work)
    return texts


async def in_flight(db: Database, pid: int | None = None) -> list[str]:
    """Texts of the rows in status 'sending' (leased by process `pid`, if given)."""
    query = select(Notification.payload).where(Notification.status == "sending")
    if pid is not None:  # lease_owner is "host:pid:xxxxxx:batch"
        query = query.where(Notification.lease_owner.like(f"%:{pid}:%"))
    async with db.transaction() as session:
        return [payload.get("text", "") for payload in await session.scalars(query)]


async def count_sent(db: Database) -> int:
    async with db.transaction() as session:
        return await session.scalar(
            select(func.count()).select_from(Notification).where(Notification.status == "sent"))


async def main(args: argparse.Namespace) -> int:
    base = os.environ.get("BENCH_DATABASE_URL")
    if not base or make_url(base).get_backend_name() != "postgresql":
        print("chaos needs PostgreSQL: set BENCH_DATABASE_URL=postgresql+asyncpg://...",
              file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    count = args.count or (2_000 if args.quick else 10_000)
    kills_wanted = args.kills if args.kills is not None else (2 if args.quick else 5)
    outage_s = args.outage if args.outage is not None else (5.0 if args.quick else 10.0)

    async with bench_database() as (db, url), FakeTelegram(delay=args.send_delay) as fake:
        print(f"count={count} kills={kills_wanted} outage={outage_s:g}s "
              f"redis={bool(args.redis)} send_delay={args.send_delay:g}s: enqueueing",
              flush=True)
        texts = await seed(db, count)
        async with db.engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
                text("ANALYZE notifications"))
        target = make_url(url)
        proxy = Proxy(target.host or "127.0.0.1", target.port or 5432)
        await proxy.start()
        bot_url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)
        env = dict(BOT, **({"REDIS_URL": args.redis} if args.redis else {}))
        run = Run(fake, texts)
        processes: list[BotProcess] = []  # every one started, killed ones included
        live: list[BotProcess] = []

        async def start_bot() -> BotProcess:
            process = BotProcess(bot_env(fake.base_url, bot_url, **env))
            processes.append(process)
            await process.start()
            await process.wait_ready()
            return process

        kills: list[Kill] = []
        outage: dict[str, float] = {}
        outage_texts: list[str] = []
        dead_texts: list[str] = []  # rows a killed process still held when the outage began
        broke: BaseException | None = None
        started = time.monotonic()
        try:
            live.extend(await asyncio.gather(start_bot(), start_bot()))
            print(f"two bots ready (proxy on port {proxy.port}); dispatching", flush=True)
            events = sorted(
                [(rng.uniform(0.05, 0.92), "kill") for _ in range(kills_wanted)]
                + [(0.5, "outage")]
            )

            async def progress_reached(fraction: float) -> None:
                while True:
                    run.refresh()
                    if len(run.delivered) >= fraction * count:
                        return
                    await asyncio.sleep(0.02)

            for fraction, kind in events:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress_reached(fraction), args.timeout)
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                run.refresh()
                progress = len(run.delivered) / count
                if kind == "outage":
                    # The live processes' batches only: a killed process's rows stay in
                    # 'sending' until their lease ends, and count towards its kill's bound.
                    outage_texts = [t for p in live for t in await in_flight(db, p.process.pid)]
                    dead_texts = sorted(set(await in_flight(db)) - set(outage_texts))
                    outage["began"] = time.monotonic()
                    proxy.cut()
                    print(f"outage: database cut at {progress:.0%} "
                          f"({len(outage_texts)} rows in flight, {len(dead_texts)} more held by a "
                          f"killed process) for {outage_s:g} s", flush=True)
                    await asyncio.sleep(outage_s)
                    await proxy.restore()
                    outage["ended"] = time.monotonic()
                    print("outage: database back", flush=True)
                    continue
                holding = [(len(await in_flight(db, p.process.pid)), rng.random(), p)
                           for p in live]
                victim = max(holding, key=lambda h: h[:2])[2]
                pid = victim.process.pid
                victim.signal(signal.SIGKILL)
                moment = time.monotonic()
                await victim.wait_exit()
                leased = len(await in_flight(db, pid))  # exact: a dead process's rows keep
                kills.append(Kill(moment, pid, leased, progress))  # their lease until it ends
                print(f"kill {len(kills)}: SIGKILL pid {pid} at {progress:.0%}, "
                      f"{leased} rows in flight; restarting", flush=True)
                live.remove(victim)
                live.append(await start_bot())

            print("waiting for every notification", flush=True)
            deadline = started + args.timeout
            while time.monotonic() < deadline:
                run.refresh()
                if len(run.delivered) == count and await count_sent(db) == count:
                    break
                await asyncio.sleep(0.25)
            finished = time.monotonic()
        except Exception as exc:  # noqa: BLE001 -- report what we have, then exit 1
            broke = exc
            finished = time.monotonic()
        finally:
            for process in live:
                with contextlib.suppress(Exception):
                    await process.stop()
            for process in processes:
                if process.process is not None and process.process.returncode is None:
                    process.signal(signal.SIGKILL)
                    with contextlib.suppress(Exception):
                        await process.wait_exit()
            await proxy.stop()
        run.refresh()

        async with db.transaction() as session:
            statuses = dict((await session.execute(
                select(Notification.status, func.count()).group_by(Notification.status))).all())
            attempt_rows = await session.scalar(
                select(func.count()).select_from(DeliveryAttempt)
                .where(DeliveryAttempt.outcome == "sent"))

    if broke is not None:
        print(f"the run broke: {broke!r}", file=sys.stderr)
        for number, process in enumerate(processes):
            print(f"--- process {number} (last 30 lines) ---\n" + "\n".join(process.output[-30:]),
                  file=sys.stderr)
        return 1

    counts = Counter(body for _, body in run.sends)
    lost = sorted(texts - set(counts), key=lambda t: int(t.removeprefix(PREFIX)))
    duplicates = sum(n - 1 for n in counts.values())
    outage_duplicates = sum(counts[t] - 1 for t in set(outage_texts) if counts[t] > 1)
    recovery = None
    if "ended" in outage:
        first = run.first_send_after(outage["ended"])
        recovery = None if first is None else first - outage["ended"]
    kill_gaps = []
    for kill in kills:
        first = run.first_send_after(kill.at)
        kill_gaps.append(None if first is None else first - kill.at)
    known_gaps = [g for g in kill_gaps if g is not None]
    kill_recovery = (max(known_gaps) if len(known_gaps) == len(kill_gaps) else None) \
        if kill_gaps else 0.0
    outputs = [line for process in processes for line in process.output]
    if any(TOKEN in line or TOKEN.split(":")[1] in line for line in outputs):
        print("WARNING: the bot token appeared in a process's output", file=sys.stderr)
    result = {
        "engine": "postgresql",
        "count": count,
        "redis": bool(args.redis),
        "kills": len(kills),
        "outage_s": outage_s,
        "send_delay_s": args.send_delay,
        "seed": args.seed,
        "delivered": len(counts),
        "lost": len(lost),
        "lost_sample": lost[:10],
        "duplicates": duplicates,
        "duplicate_bound": sum(k.in_flight for k in kills),
        "kill_in_flight": [k.in_flight for k in kills],
        "kill_progress": [round(k.progress, 3) for k in kills],
        "outage_in_flight": len(outage_texts),
        "outage_duplicates": outage_duplicates,
        "outage_dead_in_flight": len(dead_texts),
        "outage_dead_duplicates": sum(counts[t] - 1 for t in dead_texts if counts[t] > 1),
        "recovery_s": None if recovery is None else round(recovery, 3),
        "kill_recovery_s": None if kill_recovery is None else round(kill_recovery, 3),
        "kill_gaps_s": [None if g is None else round(g, 3) for g in kill_gaps],
        "sends": len(run.sends),
        "db_statuses": statuses,
        "attempt_rows_sent": attempt_rows,
        "unrecorded_sends": len(run.sends) - attempt_rows,
        "elapsed_s": round(finished - started, 1),
        "timed_out": len(counts) < count or statuses.get("sent", 0) < count,
        "error_lines": sum(" ERROR " in line or "Traceback" in line for line in outputs),
        "proxy_connections": proxy.connections,
    }
    targets = [
        ("lost == 0", result["lost"] == 0),
        (f"duplicates ({duplicates}) <= duplicate_bound ({result['duplicate_bound']})",
         duplicates <= result["duplicate_bound"]),
        (f"outage_duplicates ({outage_duplicates}) == 0", outage_duplicates == 0),
        (f"recovery_s ({result['recovery_s']}) < 10", recovery is not None and recovery < 10),
        (f"kill_recovery_s ({result['kill_recovery_s']}) < 10",
         kill_recovery is not None and kill_recovery < 10),
    ]
    errors = [line for line in outputs if " ERROR " in line or "Traceback" in line]
    for line in errors[:10]:  # what the bots said was wrong, to read before the figures
        print(f"bot error line: {line[:300]}")
    for name, met in targets:
        print(f"target {name}: {'met' if met else 'NOT met'}")
    result["targets_met"] = all(met for _, met in targets)
    print_result(result)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2,000 notifications, 2 kills, a 5 s outage")
    parser.add_argument("--redis", default=None, help="REDIS_URL for both bot processes")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--outage", type=float, default=None, help="seconds the database is cut")
    parser.add_argument("--send-delay", type=float, default=1.0,
                        help="seconds the fake Telegram takes to answer each sendMessage")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="give up this many seconds after the bots started")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    arguments = parser.parse_args()
    if arguments.seed is None:
        arguments.seed = random.randrange(1_000_000)
    sys.exit(asyncio.run(main(arguments)))
