"""Provider limits shared by every bot process, kept in Redis (docs/architecture.md, principle 6).

Why Redis: Telegram and WhatsApp count what *the bot* sends, not what one process sends. With
several processes (PostgreSQL lets them share the outbox), an in-memory limiter per process
would let N processes send N times the limit. These classes keep the same semantics as their
in-memory twins, but the state lives in Redis and every decision is one Lua script, so two
processes can never both take the last slot.

- `RedisRateLimiter` is `pacing.MemoryRateLimiter` (GCRA, the `RateLimiter` protocol) with the
  theoretical arrival time of each key stored in Redis. "Now" is the Redis server's `TIME`, read
  inside the script, so processes whose clocks disagree still agree on the schedule. A key
  expires once it is idle (its arrival time is in the past, where it means the same as no key).
- `RedisMessagingLimit` is WhatsApp's messaging limit (unique customers messaged in a moving
  24 h window) as a sorted set of phone digests scored by when each was last admitted.

Scripts run with EVALSHA and are loaded again if the server lost them (redis-py's
`register_script` does exactly that: EVALSHA, and on NOSCRIPT a SCRIPT LOAD and a retry).

If Redis is unreachable, a `RedisRateLimiter` given a `fallback` (a `MemoryRateLimiter`) paces
with it, per process, and says so in the log: N processes may then send up to N times the
limit and meet a few 429s, which beats every send failing while Redis is down. After a failure
it asks Redis again only every `retry_redis_seconds`, and `from_url` builds a client that fails
fast (1 s timeouts, one immediate retry) instead of redis-py's default of three retries with
backoff of up to 10 s, so a Redis outage costs sends a second, not a minute.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.clock import Clock
from services.notifications.pacing import RateLimiter

log = logging.getLogger(__name__)

# Kept beyond the moment a key stops mattering, so a key never vanishes while it still holds a
# future arrival time (and tests driven by a fake clock, whose time does not follow Redis's,
# keep their state). Idle keys carry no information, so the slack changes no decision.
_EXPIRY_SLACK_MS = 5_000

# One script for both operations, so both read "now" the same way.
# KEYS[1]: the key. ARGV: op ("acquire" | "block"), now ("" = Redis TIME), expiry slack (ms),
#   then for acquire: interval (seconds per event), burst -> "0" when taken, else seconds to wait
#            block:   seconds                             -> "0"
# Numbers travel as strings formatted with %.17g, so a double survives the round trip exactly
# (Lua numbers returned to Redis would be truncated to integers).
_GCRA_LUA = """
local key = KEYS[1]
local op = ARGV[1]
local slack_ms = tonumber(ARGV[3])
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[2])
end
local stored = redis.call('GET', key)
local tat = now
if stored then tat = tonumber(stored) end
if op == 'acquire' then
  local interval = tonumber(ARGV[4])
  local burst = tonumber(ARGV[5])
  if tat < now then tat = now end
  local allow_at = tat - interval * (burst - 1)
  if now < allow_at then
    return string.format('%.17g', allow_at - now)
  end
  tat = tat + interval
else
  local until_at = now + tonumber(ARGV[4])
  if until_at > tat then tat = until_at end
end
if tat > now then
  local ttl = math.ceil((tat - now) * 1000) + slack_ms
  redis.call('SET', key, string.format('%.17g', tat), 'PX', ttl)
end
return '0'
"""

# KEYS[1]: the sorted set. ARGV: now, cutoff (now - window, epoch seconds, computed by the caller
# from exact datetimes), window (seconds), limit, member, expiry ms.
# Members last admitted at or before now - window have left the window and are dropped first;
# a member still inside is admitted again for free and its time moves to now.
_MESSAGING_LIMIT_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local member = ARGV[5]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
if redis.call('ZSCORE', key, member) or redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, ARGV[1], member)
  redis.call('PEXPIRE', key, tonumber(ARGV[6]))
  return '0'
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if not oldest[2] then
  return string.format('%.17g', window)
end
return string.format('%.17g', tonumber(oldest[2]) + window - now)
"""

MESSAGING_WINDOW = timedelta(hours=24)


class RedisRateLimiter:
    """The `RateLimiter` protocol (GCRA) with its state in Redis, shared by all processes.

    `burst` may be fractional: the tolerance is (burst - 1) intervals, as in memory.

    `fallback`: a limiter used while Redis cannot be reached (see the module docstring); without
    one, Redis errors propagate.

    `clock` is for tests only: it replaces Redis's `TIME` by `clock.monotonic()`, so the same
    assertions run against a fake clock. In production leave it out: processes' monotonic clocks
    have unrelated origins, and only the server's time is common to them.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str = "pace:",
        *,
        fallback: RateLimiter | None = None,
        retry_redis_seconds: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.fallback = fallback
        self.retry_redis_seconds = retry_redis_seconds
        self.clock = clock
        self._script = redis.register_script(_GCRA_LUA)
        self._owns_client = False
        self._down_until = 0.0  # time.monotonic() before which Redis is not asked

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "pace:", *, fallback: RateLimiter | None = None
    ) -> RedisRateLimiter:
        """A limiter with a client of its own that fails fast; close it with `aclose()`."""
        client = Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=1.0, retry=Retry(NoBackoff(), 1)
        )
        limiter = cls(client, prefix, fallback=fallback)
        limiter._owns_client = True
        return limiter

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()

    async def try_acquire(self, key: str, rate: float, per: float = 1.0, burst: int = 1) -> float:
        if rate <= 0 or per <= 0 or burst < 1:
            raise ValueError(f"need rate > 0, per > 0 and burst >= 1, got {rate}, {per}, {burst}")
        if self.fallback is not None and time.monotonic() < self._down_until:
            return await self.fallback.try_acquire(key, rate, per, burst)
        try:
            wait = await self._script(
                keys=[self.prefix + key],
                args=["acquire", self._now(), _EXPIRY_SLACK_MS, repr(per / rate), repr(burst)],
            )
        except (RedisError, OSError) as exc:
            if self.fallback is None:
                raise
            self._went_down(exc)
            return await self.fallback.try_acquire(key, rate, per, burst)
        return max(float(wait), 0.0)

    async def block(self, key: str, seconds: float) -> None:
        if self.fallback is not None:
            # Remembered locally too, so a block survives Redis going down right after it.
            await self.fallback.block(key, seconds)
            if time.monotonic() < self._down_until:
                return
        try:
            await self._script(
                keys=[self.prefix + key],
                args=["block", self._now(), _EXPIRY_SLACK_MS, repr(float(seconds))],
            )
        except (RedisError, OSError) as exc:
            if self.fallback is None:
                raise
            self._went_down(exc)

    def _went_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now >= self._down_until:
            log.warning(
                "rate limiter: Redis unreachable (%s: %s); pacing in this process only, "
                "asking Redis again in %.0f s", type(exc).__name__, exc, self.retry_redis_seconds,
            )  # fmt: skip
        self._down_until = now + self.retry_redis_seconds

    def _now(self) -> str:
        return "" if self.clock is None else repr(self.clock.monotonic())


class RedisMessagingLimit:
    """WhatsApp's messaging limit: at most `limit` unique customers in a moving 24 h window.

    Same semantics as `channels.whatsapp_limits.MemoryMessagingLimit`, shared by all processes.
    `admit(phone, now)` returns 0.0 when the phone may be messaged (and records it at `now`),
    else the seconds until the oldest recorded phone leaves the window and frees a place
    (nothing recorded). A phone messaged in the last 24 h is free, and its time moves to `now`:
    Meta counts a customer once per moving 24 h, so it stays counted until 24 h after the last
    message. `limit=None` is the "unlimited" tier: everything is admitted, nothing is stored;
    `limit=0` admits nothing.

    Phones are stored as SHA-256 digests, so Redis holds no phone numbers in clear.
    """

    def __init__(
        self, redis: Redis, limit: int | None, *, key: str = "wa:messaging-limit"
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None (unlimited), got {limit}")
        self.redis = redis
        self.limit = limit
        self.key = key
        self._script = redis.register_script(_MESSAGING_LIMIT_LUA)

    async def admit(self, phone: str, now: datetime) -> float:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        if self.limit is None:
            return 0.0
        member = hashlib.sha256(phone.encode()).hexdigest()
        answer = await self._script(
            keys=[self.key],
            args=[
                repr(now.timestamp()),
                repr((now - MESSAGING_WINDOW).timestamp()),
                repr(MESSAGING_WINDOW.total_seconds()),
                self.limit,
                member,
                int(MESSAGING_WINDOW.total_seconds() * 1000) + _EXPIRY_SLACK_MS,
            ],
        )
        wait = float(answer)
        return 0.0 if wait == 0 else max(wait, 0.001)
