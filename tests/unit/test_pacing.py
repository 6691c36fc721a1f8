"""The rate limiters behave as GCRA says, in memory and in Redis alike.

Every GCRA assertion runs against `MemoryRateLimiter` and, when TEST_REDIS_URL is set, against
`RedisRateLimiter` on a real server driven by the same fake clock (the Lua script takes "now"
from the clock instead of Redis TIME in tests), so the two are held to identical semantics.
Separate tests check the production path, where "now" is the Redis server's TIME. The
messaging-limit cases run against the in-memory and the Redis implementation alike.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageText,
    ForwardMessages,
    SendMediaGroup,
    SendMessage,
)
from aiogram.types import InputMediaPhoto
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.telegram_pacing import message_target
from services.clock import FakeClock
from services.notifications.channels.whatsapp_limits import MemoryMessagingLimit
from services.notifications.pacing import MemoryRateLimiter, RateLimiter
from services.notifications.pacing_redis import RedisMessagingLimit, RedisRateLimiter
from services.notifications.pacing_telegram import TelegramPacer
from tests.conftest import TEST_REDIS_URL

NO_REDIS = "TEST_REDIS_URL is not set: Redis variants skipped"
HOUR = timedelta(hours=1)


@pytest.fixture
async def redis() -> AsyncIterator[tuple[Redis, str]]:
    """A Redis client and a key prefix private to this test; its keys are deleted after."""
    if not TEST_REDIS_URL:
        pytest.skip(NO_REDIS)
    client = Redis.from_url(TEST_REDIS_URL)
    prefix = f"test-pace-{uuid.uuid4().hex[:12]}:"
    yield client, prefix
    keys = [key async for key in client.scan_iter(f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest, clock: FakeClock) -> RateLimiter:
    if request.param == "memory":
        return MemoryRateLimiter(clock)
    client, prefix = request.getfixturevalue("redis")
    return RedisRateLimiter(client, prefix=prefix, clock=clock)


# ------------------------------------------------------------------------------- GCRA


async def test_rate_spaces_events_evenly(limiter: RateLimiter, clock: FakeClock) -> None:
    assert await limiter.try_acquire("k", rate=2) == 0.0
    assert await limiter.try_acquire("k", rate=2) == pytest.approx(0.5)
    clock.advance(0.2)
    assert await limiter.try_acquire("k", rate=2) == pytest.approx(0.3)  # refusals take nothing
    clock.advance(0.3)
    assert await limiter.try_acquire("k", rate=2) == 0.0
    assert await limiter.try_acquire("k", rate=2) == pytest.approx(0.5)


async def test_rate_per_period(limiter: RateLimiter, clock: FakeClock) -> None:
    """20 per 60 s: one every 3 s."""
    assert await limiter.try_acquire("g", rate=20, per=60) == 0.0
    assert await limiter.try_acquire("g", rate=20, per=60) == pytest.approx(3.0)
    clock.advance(3.0)
    assert await limiter.try_acquire("g", rate=20, per=60) == 0.0


async def test_idle_time_is_not_saved_up(limiter: RateLimiter, clock: FakeClock) -> None:
    assert await limiter.try_acquire("k", rate=1) == 0.0
    clock.advance(100)
    assert await limiter.try_acquire("k", rate=1) == 0.0
    assert await limiter.try_acquire("k", rate=1) == pytest.approx(1.0)


async def test_burst_allows_that_many_at_once_then_the_rate(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    for _ in range(3):
        assert await limiter.try_acquire("b", rate=1, burst=3) == 0.0
    assert await limiter.try_acquire("b", rate=1, burst=3) == pytest.approx(1.0)
    clock.advance(1.0)
    assert await limiter.try_acquire("b", rate=1, burst=3) == 0.0
    assert await limiter.try_acquire("b", rate=1, burst=3) == pytest.approx(1.0)
    clock.advance(60)  # a long idle refills the burst, and no more than the burst
    for _ in range(3):
        assert await limiter.try_acquire("b", rate=1, burst=3) == 0.0
    assert await limiter.try_acquire("b", rate=1, burst=3) == pytest.approx(1.0)


async def test_fractional_burst_is_a_tolerance_in_intervals(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    """burst=1.5: a slot may be taken half an interval early; the schedule does not drift."""
    assert await limiter.try_acquire("f", rate=1, burst=1.5) == 0.0  # type: ignore[arg-type]
    assert await limiter.try_acquire("f", rate=1, burst=1.5) == pytest.approx(0.5)  # type: ignore[arg-type]
    clock.advance(0.75)  # late for its 0.5 s, early for its 1.0 s: still on schedule
    assert await limiter.try_acquire("f", rate=1, burst=1.5) == 0.0  # type: ignore[arg-type]
    assert await limiter.try_acquire("f", rate=1, burst=1.5) == pytest.approx(0.75)  # type: ignore[arg-type]


async def test_block_holds_the_key_for_that_long(limiter: RateLimiter, clock: FakeClock) -> None:
    await limiter.block("k", 5.0)
    assert await limiter.try_acquire("k", rate=10) == pytest.approx(5.0)
    clock.advance(4.0)
    assert await limiter.try_acquire("k", rate=10) == pytest.approx(1.0)
    clock.advance(1.0)
    assert await limiter.try_acquire("k", rate=10) == 0.0
    assert await limiter.try_acquire("k", rate=10) == pytest.approx(0.1)


async def test_block_never_shortens_a_wait(limiter: RateLimiter, clock: FakeClock) -> None:
    assert await limiter.try_acquire("k", rate=1, per=10) == 0.0  # next slot in 10 s
    await limiter.block("k", 2.0)
    assert await limiter.try_acquire("k", rate=1, per=10) == pytest.approx(10.0)


async def test_keys_are_independent(limiter: RateLimiter, clock: FakeClock) -> None:
    assert await limiter.try_acquire("a", rate=1) == 0.0
    await limiter.block("c", 30)
    assert await limiter.try_acquire("a", rate=1) == pytest.approx(1.0)
    assert await limiter.try_acquire("b", rate=1) == 0.0
    assert await limiter.try_acquire("c", rate=1) == pytest.approx(30.0)


# --------------------------------------------------------------- Redis server TIME


async def test_redis_uses_server_time_and_processes_agree(redis: tuple[Redis, str]) -> None:
    """Two limiters (two processes) on one key share its schedule, timed by the server."""
    client, prefix = redis
    other = Redis.from_url(TEST_REDIS_URL or "")
    try:
        first = RedisRateLimiter(client, prefix=prefix)
        second = RedisRateLimiter(other, prefix=prefix)
        assert await first.try_acquire("shared", rate=5) == 0.0
        wait = await second.try_acquire("shared", rate=5)
        assert 0.1 < wait <= 0.2
        await asyncio.sleep(wait + 0.01)
        assert await second.try_acquire("shared", rate=5) == 0.0
        assert 0.1 < await first.try_acquire("shared", rate=5) <= 0.2
    finally:
        await other.aclose()


async def test_redis_keys_expire_once_idle(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    limiter = RedisRateLimiter(client, prefix=prefix)
    await limiter.try_acquire("k", rate=10)
    ttl = await client.pttl(f"{prefix}k")
    assert 0 < ttl <= 100 + 5_000  # one interval, plus a little slack
    await limiter.block("long", 3600)
    assert 3_600_000 < await client.pttl(f"{prefix}long") <= 3_605_000
    await limiter.block("none", 0)  # nothing to remember: no key at all
    assert await client.exists(f"{prefix}none") == 0


async def test_redis_script_is_loaded_again_if_the_server_forgot_it(
    redis: tuple[Redis, str],
) -> None:
    client, prefix = redis
    limiter = RedisRateLimiter(client, prefix=prefix)
    assert await limiter.try_acquire("k", rate=1) == 0.0
    await client.script_flush()
    assert await limiter.try_acquire("k", rate=1) > 0.9


async def test_redis_unreachable_falls_back_to_memory_or_raises(clock: FakeClock) -> None:
    url = "redis://127.0.0.1:1/0"  # nothing listens there
    without = RedisRateLimiter.from_url(url)
    limiter = RedisRateLimiter.from_url(url, fallback=MemoryRateLimiter(clock))
    try:
        started = time.monotonic()
        with pytest.raises(RedisError):
            await without.try_acquire("k", rate=1)
        assert await limiter.try_acquire("k", rate=1) == 0.0
        assert await limiter.try_acquire("k", rate=1) == pytest.approx(1.0)
        await limiter.block("k", 5)
        assert await limiter.try_acquire("k", rate=1) == pytest.approx(5.0)
        assert time.monotonic() - started < 5  # fails fast; Redis is not asked at every call
    finally:
        await without.aclose()
        await limiter.aclose()


# ------------------------------------------------------------------- messaging limit


@pytest.fixture(params=["memory", "redis"])
def messaging_limit(request: pytest.FixtureRequest) -> Callable[[int | None], object]:
    """A factory: limit -> MemoryMessagingLimit or RedisMessagingLimit (same semantics)."""
    if request.param == "memory":
        return MemoryMessagingLimit
    client, prefix = request.getfixturevalue("redis")
    return lambda limit: RedisMessagingLimit(client, limit, key=f"{prefix}wa")


T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def test_messaging_limit_admits_up_to_the_tier(messaging_limit) -> None:
    limit = messaging_limit(2)
    assert await limit.admit("+33600000001", T0) == 0.0
    assert await limit.admit("+33600000002", T0 + HOUR) == 0.0
    # Full: the third waits until the first leaves the 24 h window.
    assert await limit.admit("+33600000003", T0 + 2 * HOUR) == pytest.approx(22 * 3600)
    assert await limit.admit("+33600000003", T0 + 2 * HOUR) == pytest.approx(22 * 3600)


async def test_messaging_limit_repeat_is_free_and_keeps_the_phone_counted(
    messaging_limit,
) -> None:
    limit = messaging_limit(2)
    assert await limit.admit("+1", T0) == 0.0
    assert await limit.admit("+2", T0 + HOUR) == 0.0
    assert await limit.admit("+1", T0 + 3 * HOUR) == 0.0  # already counted: free
    # "+1" now counts from T0+3h, so "+2" (T0+1h) is the oldest and frees a place first.
    assert await limit.admit("+3", T0 + 4 * HOUR) == pytest.approx(21 * 3600)


async def test_messaging_limit_window_slides(messaging_limit) -> None:
    limit = messaging_limit(2)
    assert await limit.admit("+1", T0) == 0.0
    assert await limit.admit("+2", T0 + HOUR) == 0.0
    assert await limit.admit("+3", T0 + 24 * HOUR) == 0.0  # "+1" left the window just now
    assert await limit.admit("+1", T0 + 24 * HOUR) == pytest.approx(3600)  # counts again
    assert await limit.admit("+1", T0 + 25 * HOUR) == 0.0


async def test_messaging_limit_unlimited_and_zero(messaging_limit) -> None:
    unlimited = messaging_limit(None)
    for n in range(50):
        assert await unlimited.admit(f"+{n}", T0) == 0.0
    assert await messaging_limit(0).admit("+1", T0) == pytest.approx(24 * 3600)


async def test_redis_messaging_limit_stores_no_phone_in_clear(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    limit = RedisMessagingLimit(client, 5, key=f"{prefix}wa")
    await limit.admit("+33611223344", T0)
    members = await client.zrange(f"{prefix}wa", 0, -1)
    assert len(members) == 1 and b"33611223344" not in members[0]
    with pytest.raises(ValueError, match="timezone-aware"):
        await limit.admit("+1", datetime(2026, 3, 1))  # naive on purpose


# -------------------------------------------------------------- which calls are paced


def test_only_sends_to_a_chat_are_paced() -> None:
    assert message_target(SendMessage(chat_id=5, text="hi")) == (5, 1, True)
    assert message_target(SendMessage(chat_id=-100, text="hi", allow_paid_broadcast=True)) == (
        -100, 1, False,
    )  # fmt: skip
    album = [InputMediaPhoto(media="file-id") for _ in range(3)]
    assert message_target(SendMediaGroup(chat_id=7, media=album)) == (7, 3, True)
    forward = ForwardMessages(chat_id=7, from_chat_id=8, message_ids=[1, 2])
    assert message_target(forward) == (7, 2, True)
    assert message_target(EditMessageText(chat_id=5, message_id=1, text="x")) is None
    assert message_target(AnswerCallbackQuery(callback_query_id="q")) is None


async def test_pacer_chat_limits_private_and_group(clock: FakeClock) -> None:
    limiter = MemoryRateLimiter(clock)
    pacer = TelegramPacer(limiter, clock=clock, margin=0.5, chat_margin=0.25, catch_up_seconds=0)
    assert pacer.chat_limit(1001) == (0.25, 1.0)  # 1/s at 25 %
    assert pacer.chat_limit(-1001) == (5.0, 60.0)  # 20/min at 25 %
    assert pacer.chat_limit("@channel") == (5.0, 60.0)
    assert pacer.global_rate == 15.0  # 30/s at 50 %
    assert pacer.global_burst == 1.0


async def test_a_send_answered_much_later_than_usual_moves_the_schedules_back(
    clock: FakeClock,
) -> None:
    limiter = MemoryRateLimiter(clock)
    pacer = TelegramPacer(limiter, clock=clock)  # 97 % of 30/s, 95 % of 1/s, 5 ms catch-up
    for _ in range(3):
        await pacer.sent(1, 1001, 0.010)  # usual latency: nothing held
        await pacer.sent(1, -2001, 0.012)
    assert await limiter.try_acquire(pacer.global_key(1), 1000) == 0.0
    assert await limiter.try_acquire(pacer.chat_key(1, 1002), 1000) == 0.0
    # 200 ms when the fastest was 10 ms: up to 190 ms late, beyond both slacks.
    await pacer.sent(1, 1002, 0.200)
    chat_slack = 1 / 0.95 - 1
    assert await limiter.try_acquire(pacer.chat_key(1, 1002), 1000) == pytest.approx(
        1 / 0.95 + (0.19 - chat_slack)
    )
    global_slack = 1 / 0.97 - 1 - 0.005
    assert await limiter.try_acquire(pacer.global_key(1), 1000) == pytest.approx(
        1 / 29.1 + 0.005 + (0.19 - global_slack)
    )
    # A group's slack is 60 x 5 % = 3 s: the same delay leaves it alone; a paid send
    # (broadcast=False) leaves the global budget alone.
    await pacer.sent(2, -2001, 0.200, broadcast=False)
    assert await limiter.try_acquire(pacer.chat_key(2, -2001), 1000) == 0.0
    assert await limiter.try_acquire(pacer.global_key(2), 1000) == 0.0


async def test_retry_after_blocks_the_chat_and_on_evidence_everything(clock: FakeClock) -> None:
    limiter = MemoryRateLimiter(clock)
    pacer = TelegramPacer(limiter, clock=clock)
    await pacer.retry_after(1, 1001, 7)
    assert await limiter.try_acquire(pacer.chat_key(1, 1001), 1) == pytest.approx(7)
    assert await limiter.try_acquire(pacer.chat_key(1, 1002), 1) == 0.0
    assert await limiter.try_acquire(pacer.global_key(1), 30) == 0.0  # one chat: not global
    clock.advance(0.5)
    await pacer.retry_after(1, 1003, 4)  # a second chat within a second: the global budget
    assert await limiter.try_acquire(pacer.global_key(1), 30) == pytest.approx(4)
    assert await limiter.try_acquire(pacer.global_key(2), 30) == 0.0  # another bot: untouched
