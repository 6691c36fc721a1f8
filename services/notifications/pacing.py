"""Rate limiters that keep provider limits by construction (docs/architecture.md, principle 6).

GCRA (the generic cell rate algorithm): each key remembers the theoretical arrival time of its
next allowed event; a request before that time (less the burst tolerance) is told how long to
wait. Memory-backed here for a single process; `pacing_redis` shares the same semantics across
processes. Time is injected.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from services.clock import Clock


class RateLimiter(Protocol):
    async def try_acquire(self, key: str, rate: float, per: float = 1.0, burst: float = 1) -> float:
        """Take one slot of `rate` events per `per` seconds for `key` (up to `burst` at once).

        Returns 0.0 when the slot was taken, else the seconds until one is free (nothing taken).
        """
        ...

    async def block(self, key: str, seconds: float) -> None:
        """Take no event for `key` for `seconds` (the provider told us to wait)."""
        ...


class MemoryRateLimiter:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}

    async def try_acquire(self, key: str, rate: float, per: float = 1.0, burst: float = 1) -> float:
        now = self.clock.monotonic()
        interval = per / rate
        tat = max(self._tat.get(key, now), now)
        allow_at = tat - interval * (burst - 1)
        if now < allow_at:
            return allow_at - now
        self._tat[key] = tat + interval
        if len(self._tat) > 100_000:
            self._forget_idle(now)
        return 0.0

    async def block(self, key: str, seconds: float) -> None:
        now = self.clock.monotonic()
        self._tat[key] = max(self._tat.get(key, now), now + seconds)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]


async def acquire(
    limiter: RateLimiter,
    key: str,
    rate: float,
    per: float = 1.0,
    burst: float = 1,
    *,
    max_wait: float | None = None,
) -> float:
    """Wait (really sleeping) until a slot is taken; returns the time waited.

    With `max_wait`, gives up instead of waiting longer than that and returns the wait that
    would be needed as a negative number, so the caller can reschedule the work instead.
    """
    waited = 0.0
    while True:
        wait = await limiter.try_acquire(key, rate, per, burst)
        if wait <= 0:
            return waited
        if max_wait is not None and waited + wait > max_wait:
            return -wait
        await asyncio.sleep(wait)
        waited += wait
