"""The models and the Alembic migrations describe the same schema, on both engines."""

from __future__ import annotations

from database.engine import Database
from database.migrate import current_revision, downgrade, head_revision, schema_differences, upgrade


async def test_migrations_match_models(db: Database) -> None:
    assert await current_revision(db.engine) == head_revision()
    assert await schema_differences(db.engine) == []


async def test_migrations_go_down_and_up_again(db: Database) -> None:
    await downgrade(db.engine, "base")
    assert await current_revision(db.engine) is None
    await upgrade(db.engine)
    assert await current_revision(db.engine) == head_revision()
    assert await schema_differences(db.engine) == []
