"""`migrate --to`: every migration goes down and up again on both engines, and a downgrade says
truthfully what it would drop (found by running it and rolling back), changing nothing.

Each test has a database of its own (a file; on PostgreSQL a database created for it), since
going down would pull the schema from under the other tests sharing the session's one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url

from database.engine import Database
from database.migrate import (
    BASE,
    UnknownRevision,
    current_revision,
    downgrade,
    known_revisions,
    plan_migration,
    schema_differences,
    upgrade,
)
from database.models import Notification, SystemHealthSnapshot, User
from services.notifications import outbox
from tests.conftest import NO_POSTGRES, TEST_DATABASE_URL, _admin


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Database]:
    """An empty database (no schema) of this test's own."""
    if request.param == "sqlite":
        database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
        yield database
        await database.dispose()
        return
    if not TEST_DATABASE_URL:
        pytest.skip(NO_POSTGRES)
    name = f"test_migrate_{uuid.uuid4().hex[:10]}"
    await _admin(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
    url = make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    database = Database.from_url(url)
    try:
        yield database
    finally:
        await database.dispose()
        await _admin(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        names = await connection.run_sync(lambda c: inspect(c).get_table_names())
    return set(names) - {"alembic_version"}


async def _count(db: Database, model) -> int:
    return await db.read(lambda s: s.scalar(select(func.count()).select_from(model)))


async def _some_rows(db: Database) -> None:
    """A person, an alert addressed to a destination (no recipient), a health snapshot."""
    now = datetime.now(UTC)

    async def work(session) -> None:
        session.add(User(telegram_id=1001, display_name="Ann", language="en",
                         roles="requester", created_at=now, updated_at=now))
        session.add(SystemHealthSnapshot(status="ok", reasons=[], components={}, at=now))
        await outbox.enqueue(session, destination="webhook:alerts", kind="alert",
                             idempotency_key="alert-1", text="disk full", now=now)

    await db.run(work)


async def test_every_migration_goes_down_one_step_at_a_time_and_up_again(fresh: Database):
    known = known_revisions()
    await upgrade(fresh.engine)
    assert await current_revision(fresh.engine) == known[-1]
    for previous in reversed(known[:-1]):
        await downgrade(fresh.engine, previous)
        assert (await current_revision(fresh.engine) or BASE) == previous
    assert await _tables(fresh) == set()
    await upgrade(fresh.engine)
    assert await schema_differences(fresh.engine) == []


async def test_going_down_says_what_it_drops_and_changes_nothing(fresh: Database):
    await upgrade(fresh.engine)
    await _some_rows(fresh)
    tables = await _tables(fresh)

    plan = await plan_migration(fresh.engine, "0005")
    assert (plan.current, plan.target, plan.direction) == (known_revisions()[-1], "0005", "down")
    assert plan.loss is not None and plan.loss.loses_data
    # 0013 made the snapshots table; 0006 the destination column, and its downgrade deletes
    # the notifications that have no recipient (the old schema cannot hold them).
    assert plan.loss.tables["system_health_snapshots"] == 1
    assert plan.loss.tables["service_requests"] == 0
    assert plan.loss.columns["notifications.destination"] == 1
    assert plan.loss.deleted_rows == {"notifications": 1}
    assert "users" not in plan.loss.tables
    assert "table system_health_snapshots (1 rows)" in plan.loss.lines()
    assert "1 rows deleted from notifications" in plan.loss.lines()

    # Nothing changed: the revision, the schema and the rows are as they were.
    assert await current_revision(fresh.engine) == known_revisions()[-1]
    assert await _tables(fresh) == tables
    assert await schema_differences(fresh.engine) == []
    assert [await _count(fresh, m) for m in (User, Notification, SystemHealthSnapshot)] == [
        1, 1, 1]


async def test_down_with_data_then_up_again(fresh: Database):
    await upgrade(fresh.engine)
    await _some_rows(fresh)
    await downgrade(fresh.engine, "0012")
    assert await current_revision(fresh.engine) == "0012"
    assert "system_health_snapshots" not in await _tables(fresh)
    assert await _count(fresh, User) == 1  # users is kept, its rows with it
    async with fresh.engine.connect() as connection:
        kept = await connection.execute(text("SELECT count(*) FROM notifications"))
        assert kept.scalar_one() == 1

    plan = await plan_migration(fresh.engine, "head")
    assert (plan.direction, plan.loss) == ("up", None)
    await upgrade(fresh.engine, plan.target)
    assert await current_revision(fresh.engine) == known_revisions()[-1]
    assert await schema_differences(fresh.engine) == []
    assert await _count(fresh, SystemHealthSnapshot) == 0


async def test_going_down_over_empty_tables_loses_nothing(fresh: Database):
    await upgrade(fresh.engine)
    plan = await plan_migration(fresh.engine, "0012")
    assert plan.loss is not None and not plan.loss.loses_data
    assert plan.loss.tables["system_health_snapshots"] == 0
    assert (await plan_migration(fresh.engine, "head")).direction == "none"


async def test_unknown_revisions_are_refused_with_the_known_ones(fresh: Database):
    await upgrade(fresh.engine)
    with pytest.raises(UnknownRevision) as refused:
        await plan_migration(fresh.engine, "0999")
    message = str(refused.value)
    assert "\n" not in message and "'0999'" in message
    assert "known: base, 0001, 0002" in message and known_revisions()[-1] in message

    async with fresh.engine.begin() as connection:  # migrated by newer code
        await connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    with pytest.raises(UnknownRevision, match="which this code does not have"):
        await plan_migration(fresh.engine, "0012")
