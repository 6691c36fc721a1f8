"""Error records on a real database (both engines): a storm stays one group and one alert,
occurrences wait in a bounded spool while the database is away and are written when it is
back, what is stored is masked, and the statistics count by category and severity."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from database.engine import Database
from database.models import AlertRecord, ErrorGroup, ErrorOccurrence, Notification
from services.alerts import Alerts
from services.clock import FakeClock
from services.errors import DomainError, ErrorCategory, ErrorContext, ErrorRecorder

ADMIN = 9000
UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1


def _failure(message: str = "the same thing broke again") -> RuntimeError:
    """A RuntimeError raised (so it has a traceback) from one place, as a bug would be."""
    try:
        raise RuntimeError(message)
    except RuntimeError as exc:
        return exc


def _recorder(db: Database, clock: FakeClock, **kwargs: object) -> ErrorRecorder:
    alerts = Alerts(admin_telegram_ids=[ADMIN], window=timedelta(hours=1))
    return ErrorRecorder(db, clock, alerts, **kwargs)  # type: ignore[arg-type]


async def _count(db: Database, model: type, *where: object) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_a_thousand_identical_failures_are_one_group_and_one_alert(db: Database) -> None:
    clock = FakeClock()
    errors = _recorder(db, clock)
    codes = set()
    for i in range(1000):
        recorded = await errors.record(_failure(), ErrorContext(update_type="message", update_id=i))
        assert recorded.stored and recorded.classification.category is ErrorCategory.SYSTEM
        codes.add(recorded.code)
        clock.advance(0.5)

    async with db.transaction() as session:
        [group] = (await session.scalars(select(ErrorGroup))).all()
        [alert] = (await session.scalars(select(AlertRecord))).all()
        alerts = (
            await session.scalars(select(Notification).where(Notification.kind == "alert"))
        ).all()
        stored = set(await session.scalars(select(ErrorOccurrence.code)))
    assert group.count == 1000
    assert (group.category, group.severity) == ("system", "high")
    assert group.last_seen - group.first_seen == timedelta(seconds=999 * 0.5)
    assert len(codes) == 1000 and stored == codes  # every code given is findable
    assert len(alerts) == 1 and alert.suppressed == 999


async def test_occurrences_wait_in_the_spool_while_the_database_is_away(db: Database) -> None:
    clock = FakeClock()
    away = Database.from_url(UNREACHABLE)
    errors = _recorder(away, clock, spool_size=3)
    try:
        recorded = [await errors.record(_failure(f"during the outage {i}")) for i in range(5)]
    finally:
        await away.dispose()
    assert [r.stored for r in recorded] == [False] * 5
    assert (errors.spooled, errors.dropped) == (3, 2)  # the two oldest were dropped, counted
    assert await _count(db, ErrorOccurrence) == 0

    # The database is back: the next record writes itself and then the spool.
    errors.db = db
    after = await errors.record(_failure("after the outage"))
    assert after.stored and errors.spooled == 0
    for lost in recorded[:2]:
        assert await errors.find(lost.code) is None
    for kept in recorded[2:]:
        view = await errors.find(kept.code)
        assert view is not None and view.group.count == 4


async def test_find_writes_the_spool_first(db: Database) -> None:
    away = Database.from_url(UNREACHABLE)
    errors = _recorder(away, FakeClock())
    try:
        recorded = await errors.record(_failure())
    finally:
        await away.dispose()
    errors.db = db
    view = await errors.find(recorded.code.lower())
    assert view is not None and view.code == recorded.code


async def test_what_is_stored_is_masked(db: Database) -> None:
    errors = _recorder(db, FakeClock())
    secret = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    exc = _failure(f"send to +33 6 12 34 56 78 / ann.lee@example.com with {secret} failed")
    recorded = await errors.record(exc, ErrorContext(fsm_state="phone +33612345678"))
    async with db.transaction() as session:
        group = (await session.scalars(select(ErrorGroup))).one()
        occurrence = (await session.scalars(select(ErrorOccurrence))).one()
        alert = (await session.scalars(select(AlertRecord))).one()
    stored = " ".join([group.message, group.stack, str(occurrence.context), alert.text])
    for clear in ("12 34 56 78", "33612345678", "ann.lee@example.com", secret):
        assert clear not in stored
    assert "+•••••••••78" in group.message and occurrence.code == recorded.code


async def test_a_resolved_group_reopens_when_it_happens_again(db: Database) -> None:
    errors = _recorder(db, FakeClock())
    first = await errors.record(_failure())
    view = await errors.find(first.code)
    assert view is not None
    resolved = await errors.resolve(view.group.id, actor_id=1)
    assert resolved is not None and resolved.resolved and resolved.resolved_by == 1
    await errors.record(_failure())
    again = await errors.find(first.code)
    assert again is not None and not again.group.resolved and again.group.count == 2


class Closed(DomainError):
    """A business refusal: its own category and severity, no rule needed."""


async def test_statistics_count_by_category_and_severity_per_window(db: Database) -> None:
    clock = FakeClock()
    errors = _recorder(db, clock)
    await errors.record(_failure())  # system/high, 3 days ago
    clock.advance(days=3)
    await errors.record(Closed("request 12 is closed"))  # business_logic/info, 2 h ago
    await errors.record(TimeoutError("slow"))  # transient/warning, 2 h ago
    clock.advance(hours=2)
    await errors.record(TimeoutError("slow"))  # transient/warning, now
    clock.advance(minutes=1)

    stats = await errors.statistics()
    assert stats.counts["1h"] == {("transient", "warning"): 1}
    assert stats.counts["24h"] == {("transient", "warning"): 2, ("business_logic", "info"): 1}
    assert stats.by_category("7d") == {"system": 1, "transient": 2, "business_logic": 1}
    assert stats.by_severity("7d") == {"high": 1, "warning": 2, "info": 1}
    clock.advance(days=8)
    assert (await errors.statistics()).total("7d") == 0
