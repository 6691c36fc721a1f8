"""The models and the Alembic migrations describe the same schema, on both engines."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import func, select

from database.engine import Database
from database.migrate import (
    _migrating,
    current_revision,
    downgrade,
    head_revision,
    schema_differences,
    upgrade,
)
from database.models import Notification
from services.clock import FakeClock
from services.notifications import outbox
from tests.support import make_user


async def test_migrations_match_models(db: Database) -> None:
    assert await current_revision(db.engine) == head_revision()
    assert await schema_differences(db.engine) == []


async def test_migrations_go_down_and_up_again(db: Database) -> None:
    await downgrade(db.engine, "base")
    assert await current_revision(db.engine) is None
    await upgrade(db.engine)
    assert await current_revision(db.engine) == head_revision()
    assert await schema_differences(db.engine) == []


async def test_a_sqlite_table_rebuilt_by_a_migration_keeps_the_rows_that_point_at_it(
    tmp_path,
) -> None:
    """Alembic rebuilds a SQLite table to change it; with foreign keys on, dropping the old
    `users` would delete every notification of every user (ON DELETE CASCADE)."""
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path}/rebuild.db")
    try:
        await upgrade(db.engine)
        clock = FakeClock()
        user_id = await make_user(db, clock)
        await db.run(lambda s: outbox.enqueue(s, recipient_id=user_id, kind="k",
                                              idempotency_key="k1", text="hi", now=clock.now()))

        def rebuild(connection) -> None:
            operations = Operations(MigrationContext.configure(connection))
            with operations.batch_alter_table("users", recreate="always") as batch:
                batch.add_column(sa.Column("scratch", sa.Integer(), nullable=True))

        async with _migrating(db.engine) as connection:
            await connection.run_sync(rebuild)
        count = await db.read(lambda s: s.scalar(select(func.count()).select_from(Notification)))
        assert count == 1
        # and foreign keys are on again for the application's own units of work
        assert await db.read(lambda s: s.scalar(sa.text("PRAGMA foreign_keys"))) == 1
    finally:
        await db.dispose()
