"""The Delivery page's figures on both engines, from known rows and a FakeClock: attempts per
minute and per hour by channel (retries counted from a notification's second attempt), empty
buckets as zeros, and enqueue-to-send wait percentiles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from database.engine import Database
from database.models import DeliveryAttempt, Notification
from services.clock import FakeClock
from services.delivery_stats import ALL, MEASURES, DeliveryStats, Waits
from services.notifications.channels.base import ChannelName
from services.notifications.receipts import RECEIPT_TEXT_PREFIX

NOW = datetime(2026, 3, 10, 12, 30, 20, tzinfo=UTC)
_keys = count()


@pytest.fixture
def stats(db: Database) -> DeliveryStats:
    return DeliveryStats(db, FakeClock(NOW))


def _notification(
    *, channel: str = "telegram", created: datetime = NOW, sent: datetime | None = None,
    restarted: datetime | None = None,
) -> Notification:
    return Notification(
        destination="webhook:stats", kind="test", payload={"text": "x"}, priority=5,
        idempotency_key=f"stats:{next(_keys)}", allow_fallback=True,
        channel_chain="telegram,whatsapp", channel_index=0, channel=channel,
        status="sent" if sent else "pending", attempts=0, channel_attempts=0, parts_sent=0,
        next_attempt_at=created, created_at=created, updated_at=created, sent_at=sent,
        restarted_at=restarted,
    )


async def _notifications(db: Database, *rows: Notification) -> list[int]:
    async def work(session) -> list[int]:
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]

    return await db.run(work)


async def _attempts(db: Database, *tries: tuple[int, str, str, datetime]) -> None:
    """(notification id, channel, outcome, at), inserted in this order (ids ascending)."""
    async def work(session) -> None:
        for notification_id, channel, outcome, at in tries:
            session.add(DeliveryAttempt(notification_id=notification_id, channel=channel,
                                        outcome=outcome, at=at))
            await session.flush()

    await db.run(work)


def _nonzero(counts: dict[str, dict[str, list[int]]]) -> dict[tuple[str, str, int], int]:
    return {(channel, measure, i): value
            for channel, measures in counts.items()
            for measure, values in measures.items()
            for i, value in enumerate(values) if value}


async def test_attempts_are_counted_per_minute_and_per_hour_by_channel(
    db: Database, stats: DeliveryStats
) -> None:
    a, b, c, d = await _notifications(db, *(_notification() for _ in range(4)))
    await _attempts(
        db,
        (a, "telegram", "sent", NOW.replace(minute=29, second=10)),
        # b: failed on Telegram, then sent on WhatsApp: the second attempt is a retry.
        (b, "telegram", "failed", NOW.replace(minute=10, second=0)),
        (b, "whatsapp", "sent", NOW.replace(minute=30, second=5)),
        # c: its first attempt is older than the hour, its retry still counts as one.
        (c, "telegram", "failed", NOW - timedelta(hours=2)),
        (c, "telegram", "rate_limited", NOW.replace(minute=0, second=0)),
        (c, "telegram", "sent", NOW.replace(minute=29, second=59, microsecond=999_999)),
        # d: a week and a day ago, then a moment before the hour's first bucket.
        (d, "sms", "failed", NOW - timedelta(days=8)),
        (d, "sms", "failed", NOW.replace(hour=11, minute=30, second=59, microsecond=999_999)),
        (d, "sms", "sent", NOW + timedelta(seconds=30)),  # after `now`: not counted yet
    )

    result = await stats.statistics()

    minute = result.per_minute
    assert len(minute.starts) == 60 and minute.step == timedelta(minutes=1)
    assert minute.starts[0] == datetime(2026, 3, 10, 11, 31, tzinfo=UTC)
    assert minute.starts[-1] == datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    at = {start: i for i, start in enumerate(minute.starts)}
    m = lambda hh, mm: at[datetime(2026, 3, 10, hh, mm, tzinfo=UTC)]  # noqa: E731
    assert _nonzero(minute.counts) == {
        ("telegram", "sent", m(12, 29)): 2,
        ("telegram", "retried", m(12, 29)): 1,
        ("telegram", "failed", m(12, 10)): 1,
        ("whatsapp", "sent", m(12, 30)): 1,
        ("whatsapp", "retried", m(12, 30)): 1,
        ("telegram", "failed", m(12, 0)): 1,
        ("telegram", "retried", m(12, 0)): 1,
    }

    hour = result.per_hour
    assert len(hour.starts) == 168 and hour.step == timedelta(hours=1)
    assert hour.starts[-1] == datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert hour.starts[0] == datetime(2026, 3, 3, 13, tzinfo=UTC)
    h = {start: i for i, start in enumerate(hour.starts)}
    twelve, eleven, ten = (h[datetime(2026, 3, 10, x, tzinfo=UTC)] for x in (12, 11, 10))
    assert _nonzero(hour.counts) == {
        ("telegram", "sent", twelve): 2,
        ("telegram", "failed", twelve): 2,
        ("telegram", "retried", twelve): 2,
        ("whatsapp", "sent", twelve): 1,
        ("whatsapp", "retried", twelve): 1,
        ("sms", "failed", eleven): 1,
        ("sms", "retried", eleven): 1,
        ("telegram", "failed", ten): 1,
    }
    assert hour.total("telegram", "failed") == 3
    assert hour.active_channels() == ["telegram", "whatsapp", "sms"]


async def test_a_failed_delivery_receipt_is_a_failure_not_a_retry(
    db: Database, stats: DeliveryStats
) -> None:
    """A receipt reports on a try (services/notifications/receipts.py stores it as an attempt
    row): sent once, reported undelivered, then sent by SMS is one retry, not two."""
    [n] = await _notifications(db, _notification())

    async def work(session) -> None:
        for channel, outcome, text, minute in (
            ("telegram", "sent", None, 10),
            ("telegram", "failed", f"{RECEIPT_TEXT_PREFIX}131026 undeliverable", 11),
            ("sms", "sent", None, 12),
        ):
            session.add(DeliveryAttempt(notification_id=n, channel=channel, outcome=outcome,
                                        error_text=text, at=NOW.replace(minute=minute)))
            await session.flush()

    await db.run(work)
    hour = (await stats.statistics()).per_hour
    assert (hour.total("telegram", "sent"), hour.total("telegram", "failed")) == (1, 1)
    assert (hour.total("telegram", "retried"), hour.total("sms", "retried")) == (0, 1)


async def test_without_attempts_every_bucket_of_every_channel_is_a_zero(
    stats: DeliveryStats,
) -> None:
    result = await stats.statistics()

    for series, size in ((result.per_minute, 60), (result.per_hour, 168)):
        assert sorted(series.counts) == sorted(c.value for c in ChannelName)
        for measures in series.counts.values():
            assert sorted(measures) == sorted(MEASURES)
            assert all(values == [0] * size for values in measures.values())
        assert series.active_channels() == []
    assert result.waits == {"1h": [Waits(ALL, 0, None, None, None)],
                            "7d": [Waits(ALL, 0, None, None, None)]}


async def test_wait_percentiles_per_window_and_channel(
    db: Database, stats: DeliveryStats
) -> None:
    sent = NOW - timedelta(minutes=5)
    rows = [_notification(created=sent - timedelta(seconds=s), sent=sent) for s in range(1, 101)]
    # A restarted dead letter waited since its restart (3 s), not since it was created.
    rows.append(_notification(channel="sms", created=sent - timedelta(days=2),
                              restarted=sent - timedelta(seconds=3), sent=sent))
    # Sent two hours ago: in the week's figures only.
    rows.append(_notification(channel="sms", created=NOW - timedelta(hours=2, seconds=600),
                              sent=NOW - timedelta(hours=2)))
    rows.append(_notification(channel="sms", created=NOW - timedelta(days=9),
                              sent=NOW - timedelta(days=8)))  # older than the week
    rows.append(_notification(created=NOW))  # not sent yet
    await _notifications(db, *rows)

    waits = (await stats.statistics()).waits

    # Nearest rank over 101 waits (1..100 and 3): p50 is the 51st, p90 the 91st, p99 the 100th.
    assert waits["1h"] == [
        Waits(ALL, 101, 50.0, 90.0, 99.0),
        Waits("sms", 1, 3.0, 3.0, 3.0),
        Waits("telegram", 100, 50.0, 90.0, 99.0),
    ]
    assert waits["7d"] == [
        Waits(ALL, 102, 50.0, 91.0, 100.0),
        Waits("sms", 2, 3.0, 600.0, 600.0),
        Waits("telegram", 100, 50.0, 90.0, 99.0),
    ]


async def test_later_views_keep_settled_hours_and_still_count_every_attempt(
    db: Database,
) -> None:
    clock = FakeClock(NOW)
    stats = DeliveryStats(db, clock)
    [a] = await _notifications(db, _notification())
    await _attempts(db, (a, "telegram", "failed", NOW - timedelta(days=3)),
                    (a, "telegram", "failed", NOW - timedelta(minutes=20)))
    first = await stats.statistics()

    clock.advance(hours=2)
    await _attempts(db, (a, "whatsapp", "sent", clock.now() - timedelta(minutes=1)))
    later = await stats.statistics()

    fresh = await DeliveryStats(db, clock).statistics()  # nothing kept: reads the whole week
    assert later.per_hour == fresh.per_hour
    assert later.per_hour.total("telegram", "failed") == first.per_hour.total(
        "telegram", "failed") == 2
    assert later.per_hour.total("telegram", "retried") == 1
    assert later.per_hour.total("whatsapp", "retried") == 1
