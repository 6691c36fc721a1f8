"""WhatsApp's messaging limit, kept by construction (docs/architecture.md, principle 6).

Meta limits how many *unique* users a business may message outside their 24 h customer-service
window in a moving 24 h; since Oct 2025 the limit belongs to the business portfolio and is shared
by all its sender numbers. Tiers: 250, 2,000, 10,000, 100,000, unlimited
(https://developers.facebook.com/documentation/business-messaging/whatsapp/messaging-limits).
Going over is not answered with a clean error code, so the channel asks this limit before every
business-initiated send.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Protocol

WINDOW = timedelta(hours=24)
TIERS: dict[str, int | None] = {
    "250": 250,
    "2000": 2_000,
    "10000": 10_000,
    "100000": 100_000,
    "unlimited": None,
}


def tier_limit(setting: str | int | None) -> int | None:
    """The WHATSAPP_MESSAGING_LIMIT setting ("250" ... "unlimited") -> a count, None = unlimited."""
    if setting is None:
        return None
    if isinstance(setting, int):
        return setting
    key = setting.strip().lower()
    if key in TIERS:
        return TIERS[key]
    if key.isdigit():
        return int(key)
    raise ValueError(f"unknown WhatsApp messaging limit tier {setting!r}")


class MessagingLimit(Protocol):
    async def admit(self, phone: str, now: datetime) -> float:
        """Count `phone` as messaged outside its window at `now`, if the limit allows.

        Returns 0.0 when admitted (and recorded); a phone already admitted in the last 24 h
        costs nothing. Otherwise the seconds until a slot frees; nothing is recorded.
        """
        ...


class MemoryMessagingLimit:
    """One process's view of the limit: phone -> when it was last messaged outside its window."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0 or None")
        self.limit = limit
        self._last: OrderedDict[str, datetime] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._last)

    async def admit(self, phone: str, now: datetime) -> float:
        if self.limit is None:
            return 0.0
        self._forget_before(now - WINDOW)
        if phone in self._last:
            # Meta counts a user once per moving 24 h: the slot now lasts until 24 h from now.
            self._last[phone] = now
            self._last.move_to_end(phone)
            return 0.0
        if len(self._last) < self.limit:
            self._last[phone] = now
            return 0.0
        if not self._last:  # a limit of 0
            return WINDOW.total_seconds()
        oldest = next(iter(self._last.values()))
        return max((oldest + WINDOW - now).total_seconds(), 0.001)

    def _forget_before(self, cutoff: datetime) -> None:
        while self._last:
            phone, at = next(iter(self._last.items()))
            if at > cutoff:
                break
            del self._last[phone]
