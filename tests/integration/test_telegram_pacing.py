"""A real aiogram Bot, paced by PacingMiddleware, never trips the fake Telegram's flood limits.

The fake (`enforce_limits=True`) counts like Telegram: a sliding one-second window overall, the
time since the last message in a private chat, a sliding minute per group, and answers 429
with retry_after. Most tests raise the limits (in the fake and the pacer alike) to run fast;
`test_real_limits_*` keeps Telegram's own 30/s and 1/s per chat to prove the margins hold.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter
from redis.asyncio import Redis

from bot.telegram_pacing import PacingDeferred, PacingMiddleware
from services.clock import SystemClock
from services.notifications.pacing import MemoryRateLimiter, RateLimiter
from services.notifications.pacing_redis import RedisRateLimiter
from tests.conftest import TEST_REDIS_URL
from tests.fakes.telegram import TEST_TOKEN, FakeTelegram

FAST = {"global_rate": 200.0, "per_chat_rate": 2.0, "group_per_minute": 240}


def fast_rates() -> dict[str, float]:
    return {
        "rate_per_second": FAST["global_rate"],
        "per_chat_per_second": FAST["per_chat_rate"],
        "group_per_minute": FAST["group_per_minute"],
    }


def make_bot(fake: FakeTelegram) -> Bot:
    return Bot(TEST_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url)))


@asynccontextmanager
async def paced_bot(
    fake: FakeTelegram, limiter: RateLimiter, *, max_wait: float | None = None, **rates: float
) -> AsyncIterator[tuple[Bot, PacingMiddleware]]:
    """A Bot talking HTTP to the fake, with the pacing middleware registered as app.py does."""
    bot = make_bot(fake)
    middleware = PacingMiddleware(limiter, clock=SystemClock(), max_wait=max_wait, **rates)
    bot.session.middleware(middleware)
    try:
        yield bot, middleware
    finally:
        await bot.session.close()


async def send_to_chats(bot: Bot, chats: Iterable[int], per_chat: int, tag: str = "") -> None:
    """Every chat at once; within a chat, one message after the other."""

    async def chat_task(chat_id: int) -> None:
        for n in range(per_chat):
            await bot.send_message(chat_id, f"{tag}{chat_id} #{n}")

    await asyncio.gather(*(chat_task(chat_id) for chat_id in chats))


def assert_all_delivered_in_order(
    fake: FakeTelegram, chats: Iterable[int], per_chat: int, tags: Iterable[str] = ("",)
) -> None:
    for chat_id in chats:
        texts = [m["text"] for m in fake.sent_messages(chat_id)]
        for tag in tags:
            mine = [t for t in texts if t.startswith(f"{tag}{chat_id} #")]
            assert mine == [f"{tag}{chat_id} #{n}" for n in range(per_chat)], chat_id


async def test_600_messages_to_200_chats_at_once_get_no_429() -> None:
    chats = [*range(1001, 1181), *range(-2001, -2021, -1)]  # 180 private chats, 20 groups
    async with FakeTelegram(enforce_limits=True, **FAST) as fake:
        limiter = MemoryRateLimiter(SystemClock())
        async with paced_bot(fake, limiter, **fast_rates()) as (bot, middleware):
            await send_to_chats(bot, chats, per_chat=3)
            assert middleware.pacer.busy_chats == 0  # nothing left behind per chat
        assert fake.count_429 == 0
        assert len(fake.sent_messages()) == 600
        assert_all_delivered_in_order(fake, chats, per_chat=3)


async def test_without_the_pacer_the_fake_answers_429() -> None:
    """The control: the zero-429 results above mean something, because the fake enforces."""
    async with FakeTelegram(enforce_limits=True) as fake:
        bot = make_bot(fake)
        try:
            results = await asyncio.gather(
                *(bot.send_message(chat_id, "hi") for chat_id in range(8001, 8041)),
                bot.send_message(8001, "again"),
                return_exceptions=True,
            )
        finally:
            await bot.session.close()
        refused = [r for r in results if isinstance(r, TelegramRetryAfter)]
        assert fake.count_429 == len(refused) >= 11  # 30/s overall, 1/s in chat 8001


async def test_real_limits_90_messages_to_30_chats_get_no_429() -> None:
    """Telegram's own limits: 30/s overall, 1/s per chat. All 90 sends are asked for at once."""
    chats = range(3001, 3031)
    async with FakeTelegram(enforce_limits=True) as fake:
        async with paced_bot(fake, MemoryRateLimiter(SystemClock())) as (bot, _):
            started = time.monotonic()
            sends = [bot.send_message(c, f"{c} #{n}") for n in range(3) for c in chats]
            await asyncio.gather(*sends)
            elapsed = time.monotonic() - started
        assert fake.count_429 == 0
        assert len(fake.sent_messages()) == 90
        assert_all_delivered_in_order(fake, chats, per_chat=3)
        # 90 messages at 97 % of 30/s (95 % of 1/s per chat) take a little over 3 s: paced,
        # neither serialized nor stalled.
        assert 2.9 <= elapsed < 5.0


async def test_group_messages_are_spaced_by_the_group_limit() -> None:
    """60 per minute in a group: one a second (at 95 %), while private chats are not held up."""
    async with FakeTelegram(enforce_limits=True, global_rate=200, group_per_minute=60) as fake:
        limiter = MemoryRateLimiter(SystemClock())
        async with paced_bot(fake, limiter, rate_per_second=200, group_per_minute=60) as (bot, _):
            await asyncio.gather(
                *(bot.send_message(-5001, f"group #{n}") for n in range(3)),
                *(bot.send_message(chat_id, "hello") for chat_id in range(6001, 6011)),
            )
        sent = [c for c in fake.calls if c.method == "sendMessage" and c.status == 200]
        group_times = [c.at for c in sent if c.params["chat_id"] == -5001]
        assert len(group_times) == 3 and fake.count_429 == 0
        assert all(b - a >= 1.0 for a, b in zip(group_times, group_times[1:], strict=False))
        private_done = max(c.at for c in sent if c.params["chat_id"] > 0)
        assert private_done - group_times[0] < 0.5


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set: Redis variant skipped")
async def test_two_processes_sharing_redis_get_no_429() -> None:
    """Two Bots (as two processes would: own sessions, own Redis clients, own pacers) send 3
    messages each to the same 100 chats at once; the budget they share in Redis holds."""
    prefix = f"test-pace-{uuid.uuid4().hex[:12]}:"
    chats = range(7001, 7101)
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeTelegram(enforce_limits=True, **FAST))
        clients = [Redis.from_url(TEST_REDIS_URL or "") for _ in range(2)]
        for client in clients:
            stack.push_async_callback(client.aclose)
        bots = [
            (await stack.enter_async_context(
                paced_bot(fake, RedisRateLimiter(client, prefix=prefix), **fast_rates())
            ))[0]
            for client in clients
        ]  # fmt: skip
        try:
            await asyncio.gather(
                send_to_chats(bots[0], chats, per_chat=3, tag="a:"),
                send_to_chats(bots[1], chats, per_chat=3, tag="b:"),
            )
        finally:
            keys = [key async for key in clients[0].scan_iter(f"{prefix}*")]
            if keys:
                await clients[0].delete(*keys)
        assert fake.count_429 == 0
        assert len(fake.sent_messages()) == 600
        assert_all_delivered_in_order(fake, chats, per_chat=3, tags=("a:", "b:"))


async def test_a_429_blocks_that_chat_for_retry_after_and_is_re_raised() -> None:
    async with FakeTelegram(enforce_limits=True, **FAST) as fake:
        limiter = MemoryRateLimiter(SystemClock())
        async with paced_bot(fake, limiter, **fast_rates()) as (bot, middleware):
            pacer = middleware.pacer
            fake.fail_next(
                "sendMessage", status=429, description="Too Many Requests: retry after 1",
                retry_after=1,
            )  # fmt: skip
            started = time.monotonic()
            with pytest.raises(TelegramRetryAfter) as caught:
                await bot.send_message(1001, "first")
            assert caught.value.retry_after == 1
            # The chat's key is blocked for about retry_after; nothing else is.
            blocked = await limiter.try_acquire(pacer.chat_key(bot.id, 1001), 1000)
            assert 0.8 < blocked <= 1.0
            assert await limiter.try_acquire(pacer.global_key(bot.id), pacer.global_rate) < 0.1

            await bot.send_message(1002, "another chat goes at once")
            assert time.monotonic() - started < 0.5
            await bot.send_message(1001, "the same chat waits")
            assert time.monotonic() - started >= 1.0
        assert [m["text"] for m in fake.sent_messages(1001)] == ["the same chat waits"]
        assert fake.count_429 == 1  # the scripted one only


async def test_max_wait_defers_a_send_instead_of_sleeping_through_a_block() -> None:
    """An outbox worker must not sleep past its lease: past max_wait the send is deferred."""
    async with FakeTelegram(enforce_limits=True, **FAST) as fake:
        limiter = MemoryRateLimiter(SystemClock())
        async with paced_bot(fake, limiter, max_wait=1.0, **fast_rates()) as (bot, _):
            fake.fail_next(
                "sendMessage", status=429, description="Too Many Requests: retry after 30",
                retry_after=30,
            )  # fmt: skip
            with pytest.raises(TelegramRetryAfter):
                await bot.send_message(1001, "refused by Telegram")
            started = time.monotonic()
            with pytest.raises(PacingDeferred) as caught:
                await bot.send_message(1001, "would wait 30 s")
            assert time.monotonic() - started < 0.5  # told at once, not after max_wait
            assert caught.value.retry_after == 30
            assert isinstance(caught.value, TelegramRetryAfter)  # handled like a 429
            await bot.send_message(1002, "other chats are fine")
        assert len(fake.calls) == 2  # the deferred send never reached Telegram


async def test_max_wait_defers_sends_queued_too_long_for_one_group() -> None:
    """Four messages at once to a group allowing one a second: two fit in 1.5 s."""
    async with FakeTelegram(enforce_limits=True, global_rate=200, group_per_minute=60) as fake:
        limiter = MemoryRateLimiter(SystemClock())
        rates = {"rate_per_second": 200.0, "group_per_minute": 60.0}
        async with paced_bot(fake, limiter, max_wait=1.5, **rates) as (bot, _):
            results = await asyncio.gather(
                *(bot.send_message(-5001, f"group #{n}") for n in range(4)),
                return_exceptions=True,
            )
        deferred = [r for r in results if isinstance(r, PacingDeferred)]
        assert [m["text"] for m in fake.sent_messages(-5001)] == ["group #0", "group #1"]
        assert len(deferred) == 2 and all(d.retry_after >= 1 for d in deferred)
        assert fake.count_429 == 0


async def test_calls_that_send_nothing_are_not_paced() -> None:
    async with FakeTelegram(enforce_limits=True) as fake:
        async with paced_bot(fake, MemoryRateLimiter(SystemClock())) as (bot, _):
            sent = await bot.send_message(1001, "one")
            started = time.monotonic()
            await bot.edit_message_text("edited", chat_id=1001, message_id=sent.message_id)
            await bot.get_me()
            assert time.monotonic() - started < 0.5  # no wait for the chat's next slot
