"""Times and durations written the same way in the Telegram menus and on the web dashboard
(handlers/dashboard/static/dashboard.js writes the overview's refreshed figures alike)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def when(at: datetime | None, timezone: str) -> str:
    """A moment in the TIMEZONE setting's zone, to the minute; "-" when there is none."""
    if at is None:
        return "-"
    return at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    """"3d 4h", "2h 5m", "7m", "12s"; "-" when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins}m"
    return f"{mins}m"
