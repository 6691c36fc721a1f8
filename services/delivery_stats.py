"""The dashboard's Delivery figures: sent, failed and retried attempts per channel, per minute
over the last hour and per hour over the last seven days, and how long notifications waited
between being enqueued and being sent.

Counted from `delivery_attempts` (one row per try on one channel), through its index on `at`:
- sent: tries a provider accepted (outcome "sent");
- failed: tries that did not get through ("failed", a failed delivery receipt included, and
  "rate_limited");
- retried: tries of a notification after its first one, whatever their outcome (a failed
  delivery receipt reports on a try and is not one: it never counts as a retry).

Buckets are aligned on UTC minutes and hours and include the current, unfinished one; a bucket
without attempts is a zero, and every channel is present, so a chart's axes never jump. The
bucket is computed in SQL (an expression per dialect), so a week of attempts comes back as at
most 168 rows per channel and outcome. Whether a try is a retry is one probe of the index on
`notification_id` per attempt, the page's main cost: so `DeliveryStats` keeps the hours that
ended more than `SETTLED` ago (no attempt can still be recorded in them) and reads only the
hours after them; the first view of a process reads the whole week.

The wait is `sent_at - (restarted_at or created_at)`, as /metrics computes it (a restarted dead
letter waited since its restart), over notifications sent in the same windows; percentiles are
nearest-rank, to the millisecond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Float, and_, case, cast, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from database.engine import Database
from database.models import DeliveryAttempt, Notification
from services.clock import Clock
from services.notifications.channels.base import ChannelName
from services.notifications.receipts import RECEIPT_TEXT_PREFIX

MEASURES = ("sent", "failed", "retried")
ALL = "all"  # the waits of every channel together
QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
_FAILED = frozenset({"failed", "rate_limited"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
# An attempt row is written when its batch is recorded, a little after its `at` (a failed
# delivery receipt: when it arrives); an hour that ended this long ago gets no more rows.
SETTLED = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Series:
    """Counts per time bucket: `starts[i]` is bucket i's start (UTC, oldest first) and
    `counts[channel][measure][i]` its count."""

    step: timedelta
    starts: tuple[datetime, ...]
    counts: dict[str, dict[str, list[int]]]

    def total(self, channel: str, measure: str) -> int:
        return sum(self.counts.get(channel, {}).get(measure, ()))

    def active_channels(self) -> list[str]:
        """The channels with at least one attempt in the window, in ChannelName order."""
        return [c for c, m in self.counts.items() if any(any(v) for v in m.values())]


@dataclass(frozen=True, slots=True)
class Waits:
    """Enqueue-to-send waits, in seconds, of the notifications one channel sent in a window."""

    channel: str  # a channel's name, or ALL
    count: int
    p50: float | None
    p90: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class DeliveryStatistics:
    at: datetime
    per_minute: Series  # the last hour
    per_hour: Series  # the last seven days
    waits: dict[str, list[Waits]]  # "1h", "7d" -> ALL first, then each channel that sent


def _floor(at: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    return _EPOCH + timedelta(seconds=int((at - _EPOCH).total_seconds()) // seconds * seconds)


def _bucket(dialect: str, column: Any, step: timedelta) -> ColumnElement[Any]:
    """The start of `column`'s bucket: epoch seconds on SQLite, a UTC timestamp elsewhere."""
    seconds = int(step.total_seconds())
    if dialect == "sqlite":
        # Naive UTC text "YYYY-MM-DD HH:MM:SS.ffffff" (database.base.UTCDateTime); the fraction
        # is cut first, since strftime rounds to the millisecond (59.9999 s would be the next
        # minute's). Integers: "//" is SQLite's truncating "/".
        epoch = cast(func.strftime("%s", func.substr(column, 1, 19)), BigInteger)
        return epoch // seconds * seconds
    unit = {60: "minute", 3600: "hour"}[seconds]
    return func.date_trunc(unit, func.timezone("UTC", column))


def _as_start(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return _EPOCH + timedelta(seconds=int(value))


def _seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return cast(func.extract("epoch", later - earlier), Float)


Counts = dict[tuple[str, str], int]  # (channel, measure) -> attempts


async def attempt_counts(
    session: AsyncSession, *, since: datetime, until: datetime, step: timedelta
) -> dict[datetime, Counts]:
    """Attempts from `since` (a bucket start) to `until`, per bucket start, channel and
    measure; buckets without attempts are left out."""
    dialect = session.bind.dialect.name
    a = DeliveryAttempt
    earlier = aliased(DeliveryAttempt)
    retry = and_(
        select(literal(1)).where(
            earlier.notification_id == a.notification_id, earlier.id < a.id
        ).exists(),
        or_(a.error_text.is_(None), ~a.error_text.startswith(RECEIPT_TEXT_PREFIX)),
    )
    # Grouped outside: PostgreSQL cannot match a GROUP BY expression holding parameters.
    tries = (
        select(_bucket(dialect, a.at, step).label("bucket"), a.channel, a.outcome,
               case((retry, 1), else_=0).label("retry"))
        .where(a.at >= since, a.at <= until)
        .subquery()
    )
    rows = await session.execute(
        select(tries.c.bucket, tries.c.channel, tries.c.outcome, func.count(),
               func.sum(tries.c.retry))
        .group_by(tries.c.bucket, tries.c.channel, tries.c.outcome)
    )
    found: dict[datetime, Counts] = {}
    for bucket, channel, outcome, count, retried in rows:
        counts = found.setdefault(_as_start(bucket), {})
        measure = "sent" if outcome == "sent" else "failed" if outcome in _FAILED else None
        if measure is not None:
            counts[(channel, measure)] = counts.get((channel, measure), 0) + int(count)
        if retried:
            counts[(channel, "retried")] = counts.get((channel, "retried"), 0) + int(retried)
    return found


def series(step: timedelta, starts: list[datetime], found: dict[datetime, Counts]) -> Series:
    """The buckets `starts` of `found` as a Series: zeros where nothing was found, and every
    channel present."""
    seen = {channel for counts in found.values() for channel, _ in counts}
    known = [c.value for c in ChannelName]
    channels = known + sorted(seen - set(known))
    values = {c: {m: [0] * len(starts) for m in MEASURES} for c in channels}
    for index, start in enumerate(starts):
        for (channel, measure), count in found.get(start, {}).items():
            values[channel][measure][index] = count
    return Series(step, tuple(starts), values)


def bucket_starts(now: datetime, step: timedelta, buckets: int) -> list[datetime]:
    """The last `buckets` bucket starts up to `now`'s own, oldest first."""
    last = _floor(now, step)
    return [last - step * (buckets - 1 - i) for i in range(buckets)]


async def attempt_series(
    session: AsyncSession, now: datetime, *, step: timedelta, buckets: int
) -> Series:
    """The last `buckets` buckets of `step` up to `now`, the current one included."""
    starts = bucket_starts(now, step, buckets)
    return series(step, starts, await attempt_counts(
        session, since=starts[0], until=now, step=step))


def _nearest_rank(histogram: list[tuple[float, int]], total: int, q: float) -> float | None:
    """The nearest-rank percentile (the smallest value with at least q of the values at or
    under it) of a sorted (value, count) histogram of `total` values."""
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for value, count in histogram:
        seen += count
        if seen >= rank:
            return value
    return histogram[-1][0]


async def wait_percentiles(
    session: AsyncSession, now: datetime, windows: dict[str, datetime]
) -> dict[str, list[Waits]]:
    """Wait percentiles of the notifications sent since each window's start, overall and per
    channel. The database counts the waits per channel and millisecond (one pass over the
    widest window), so what comes back is a histogram, exact to the millisecond."""
    dialect = session.bind.dialect.name
    n = Notification
    wait_ms = cast(func.round(_seconds_between(
        dialect, n.sent_at, func.coalesce(n.restarted_at, n.created_at)) * 1000), BigInteger)
    sent = (
        select(n.channel, wait_ms.label("wait_ms"), *(
            case((n.sent_at >= start, 1), else_=0).label(f"in_{i}")
            for i, start in enumerate(windows.values())))
        .where(n.sent_at >= min(windows.values()), n.sent_at <= now)
        .subquery()
    )
    columns = list(sent.c)
    rows = (await session.execute(
        select(*columns, func.count()).group_by(*columns)
    )).tuples().all()
    result: dict[str, list[Waits]] = {}
    for position, name in enumerate(windows):
        histograms: dict[str, dict[float, int]] = {ALL: {}}
        for channel, milliseconds, *rest in rows:
            if rest[position]:
                value, count = max(int(milliseconds), 0) / 1000, int(rest[-1])
                for key in (ALL, channel):
                    histogram = histograms.setdefault(key, {})
                    histogram[value] = histogram.get(value, 0) + count
        waits = []
        for channel in sorted(histograms, key=lambda c: (c != ALL, c)):
            histogram = sorted(histograms[channel].items())
            total = sum(count for _, count in histogram)
            waits.append(Waits(channel, total, *(
                _nearest_rank(histogram, total, q) for q in QUANTILES.values())))
        result[name] = waits
    return result


async def statistics(session: AsyncSession, now: datetime) -> DeliveryStatistics:
    """Everything the Delivery page shows, read afresh (`DeliveryStats` keeps settled hours)."""
    per_minute = await attempt_series(session, now, step=MINUTE, buckets=60)
    per_hour = await attempt_series(session, now, step=HOUR, buckets=24 * 7)
    waits = await wait_percentiles(
        session, now, {"1h": per_minute.starts[0], "7d": per_hour.starts[0]})
    return DeliveryStatistics(now, per_minute, per_hour, waits)


class DeliveryStats:
    """What the dashboard's Delivery page shows (DI: `delivery_stats`); one read each, of the
    last hour's attempts, the hours not settled yet, and the week's waits."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._settled: dict[datetime, Counts] = {}  # hour start -> its counts, final

    async def statistics(self) -> DeliveryStatistics:
        now = self.clock.now()
        hours = bucket_starts(now, HOUR, 24 * 7)
        settled = [h for h in hours if h + HOUR <= now - SETTLED]
        missing = [h for h in hours if h not in self._settled or h not in settled]

        async def read(session: AsyncSession) -> DeliveryStatistics:
            per_minute = await attempt_series(session, now, step=MINUTE, buckets=60)
            fresh = await attempt_counts(session, since=missing[0], until=now, step=HOUR)
            waits = await wait_percentiles(
                session, now, {"1h": per_minute.starts[0], "7d": hours[0]})
            found = {h: self._settled.get(h, {}) for h in hours} | fresh
            return DeliveryStatistics(now, per_minute, series(HOUR, hours, found), waits)

        result = await self.db.read(read)
        counts = result.per_hour.counts
        for index, hour in enumerate(hours):
            if hour in settled and hour not in self._settled:
                self._settled[hour] = {
                    (channel, measure): values[index]
                    for channel, measures in counts.items()
                    for measure, values in measures.items() if values[index]
                }
        for hour in [h for h in self._settled if h < hours[0]]:
            del self._settled[hour]
        return result
