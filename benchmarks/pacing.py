"""Benchmark: how close to Telegram's 30 messages/s the pacer runs without a single 429.

Why: docs/architecture.md, principle 6 says a 429 is a bug in our pacing. Pacing too cautiously is
a bug too: a broadcast to 10,000 users should take 6 minutes, not 10. This sends messages to
many chats through a real aiogram Bot, over HTTP, to the fake Telegram with its flood limits
on at Telegram's values (30/s overall as a sliding one-second count, 1/s per private chat),
with `PacingMiddleware` registered as the bot registers it, and reports the rate the fake
accepted and how many 429s it answered.

The baseline, measured in the same run, is the same workload without the pacer, handling 429
the usual way (sleep retry_after, send again): it shows the fake really enforces the limits.

    python -m benchmarks.pacing            # 20 s paced + 20 s baseline, 60 chats
    python -m benchmarks.pacing --quick    # 5 s each
    python -m benchmarks.pacing --redis redis://127.0.0.1:6379/0   # the limiter in Redis

No database is involved (BENCH_DATABASE_URL is not read). The last line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter

from bot.telegram_pacing import PacingMiddleware
from services.clock import SystemClock
from services.notifications.pacing import MemoryRateLimiter, RateLimiter
from services.notifications.pacing_redis import RedisRateLimiter
from services.notifications.pacing_telegram import DEFAULT_CHAT_MARGIN, DEFAULT_MARGIN
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram

TELEGRAM_RATE = 30.0  # messages per second overall
TELEGRAM_PER_CHAT = 1.0  # messages per second in a private chat
TARGET_FRACTION = 0.95


@dataclass
class Phase:
    name: str
    messages: int  # accepted by the fake
    too_many_requests: int  # 429 answers
    seconds: float  # the measured window: sending started .. the deadline
    achieved_rate: float  # messages accepted in the window / its length
    max_in_any_second: int  # the most accepted messages in any sliding one-second window
    min_private_gap: float | None  # shortest time between two messages to one private chat


def _log(line: str) -> None:
    print(line, flush=True)


async def _progress(name: str, fake: FakeTelegram, started: float, every: float) -> None:
    last_count, last_at = 0, started
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        count = sum(1 for c in fake.calls if c.status == 200 and c.method == "sendMessage")
        rate = (count - last_count) / (now - last_at)
        _log(
            f"[{name}] t={now - started:5.1f}s sent={count:5d} "
            f"rate={rate:5.1f}/s 429s={fake.count_429}"
        )
        last_count, last_at = count, now


async def _run_phase(
    name: str,
    limiter: RateLimiter | None,
    chats: list[int],
    seconds: float,
) -> Phase:
    async with FakeTelegram(enforce_limits=True, global_rate=TELEGRAM_RATE,
                            per_chat_rate=TELEGRAM_PER_CHAT) as fake:  # fmt: skip
        session = AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))
        bot = Bot(TEST_TOKEN, session=session)
        if limiter is not None:
            bot.session.middleware(
                PacingMiddleware(limiter, clock=SystemClock(), rate_per_second=TELEGRAM_RATE,
                                 per_chat_per_second=TELEGRAM_PER_CHAT)
            )  # fmt: skip
        started = time.monotonic()
        deadline = started + seconds

        async def chat_task(chat_id: int) -> None:
            n = 0
            while time.monotonic() < deadline:
                try:
                    await bot.send_message(chat_id, f"message {n} to {chat_id}")
                    n += 1
                except TelegramRetryAfter as exc:  # what a naive sender does: wait, resend
                    await asyncio.sleep(exc.retry_after)

        progress = asyncio.create_task(_progress(name, fake, started, every=2.0))
        try:
            await asyncio.gather(*(chat_task(chat_id) for chat_id in chats))
        finally:
            progress.cancel()
            await bot.session.close()
        return _measure(name, fake, started, seconds)


def _measure(name: str, fake: FakeTelegram, started: float, seconds: float) -> Phase:
    """Counts what the fake accepted during the window; sends already queued at the deadline
    still go out (and are checked for 429s and limits) but are not counted in the rate."""
    accepted = [c for c in fake.calls if c.status == 200 and c.method == "sendMessage"]
    times = sorted(c.at for c in accepted)
    in_window = sum(1 for at in times if at < started + seconds)
    window: deque[float] = deque()
    most = 0
    for at in times:  # the fake's own rule: messages less than 1 s apart share a window
        while window and at - window[0] >= 1.0:
            window.popleft()
        window.append(at)
        most = max(most, len(window))
    per_chat: dict[int, list[float]] = defaultdict(list)
    for call in accepted:
        per_chat[call.params["chat_id"]].append(call.at)
    gaps = [b - a for ts in per_chat.values() for a, b in zip(ts, ts[1:], strict=False)]
    return Phase(
        name=name,
        messages=len(accepted),
        too_many_requests=fake.count_429,
        seconds=seconds,
        achieved_rate=in_window / seconds,
        max_in_any_second=most,
        min_private_gap=min(gaps) if gaps else None,
    )


def _limiter(redis_url: str | None) -> RateLimiter:
    if not redis_url:
        return MemoryRateLimiter(SystemClock())
    return RedisRateLimiter.from_url(redis_url, prefix=f"bench-pace-{uuid.uuid4().hex[:8]}:")


async def _close(limiter: RateLimiter) -> None:
    if isinstance(limiter, RedisRateLimiter):
        keys = [key async for key in limiter.redis.scan_iter(f"{limiter.prefix}*")]
        if keys:
            await limiter.redis.delete(*keys)
        await limiter.aclose()


async def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pacing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s per phase instead of 20 s")
    parser.add_argument("--seconds", type=float, help="sending time per phase (overrides --quick)")
    parser.add_argument(
        "--chats", type=int, default=60, help="private chats (under 30, 1/s per chat binds first)"
    )
    parser.add_argument("--redis", metavar="URL", help="keep the limiter in Redis at this URL")
    args = parser.parse_args(argv)
    if args.chats < 1:
        parser.error("--chats must be positive")
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    chats = list(range(100_001, 100_001 + args.chats))
    limiter = _limiter(args.redis)
    kind = "redis" if args.redis else "memory"
    _log(
        f"pacing benchmark: {len(chats)} chats, {seconds:.0f} s per phase, limiter in {kind}, "
        f"fake Telegram limits {TELEGRAM_RATE:.0f}/s overall, {TELEGRAM_PER_CHAT:.0f}/s per chat"
    )
    try:
        paced = await _run_phase("paced", limiter, chats, seconds)
    finally:
        await _close(limiter)
    _log(f"[paced] done: {paced}")
    baseline = await _run_phase("baseline", None, chats, seconds)
    _log(f"[baseline] done: {baseline}")
    fraction = paced.achieved_rate / TELEGRAM_RATE
    result: dict[str, object] = {
        "benchmark": "pacing",
        "quick": args.quick,
        "limiter": kind,
        "limit_per_second": TELEGRAM_RATE,
        "margin": DEFAULT_MARGIN,
        "chat_margin": DEFAULT_CHAT_MARGIN,
        "chats": len(chats),
        "seconds": round(paced.seconds, 3),
        "messages": paced.messages,
        "achieved_rate": round(paced.achieved_rate, 3),
        "achieved_fraction": round(fraction, 4),
        "too_many_requests": paced.too_many_requests,
        "max_in_any_second": paced.max_in_any_second,
        "min_private_gap": round(paced.min_private_gap or 0.0, 4),
        "baseline_seconds": round(baseline.seconds, 3),
        "baseline_messages": baseline.messages,
        "baseline_achieved_rate": round(baseline.achieved_rate, 3),
        "baseline_too_many_requests": baseline.too_many_requests,
        "target_met": fraction >= TARGET_FRACTION and paced.too_many_requests == 0,
    }
    _log("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    outcome = asyncio.run(main())
    sys.exit(0 if outcome["target_met"] else 1)
