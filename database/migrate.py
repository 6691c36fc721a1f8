"""Apply and check Alembic migrations programmatically, on the application's own engine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from database import models  # noqa: F401  (registers the tables)
from database.base import Base

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _sqlite_pragma(connection: Connection, statement: str) -> list[tuple[object, ...]]:
    """Run a PRAGMA on the DBAPI connection itself: SQLAlchemy would begin a transaction
    first, and `foreign_keys` cannot change inside one."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
        return list(cursor.fetchall())
    finally:
        cursor.close()


@contextlib.asynccontextmanager
async def _migrating(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction for the migrations; on SQLite with foreign keys off meanwhile.

    Alembic changes a SQLite table by copying it into a new one and dropping the old
    (render_as_batch). With foreign keys on, dropping a parent table deletes every child row
    that cascades from it. SQLite's documented procedure for such changes
    (https://www.sqlite.org/lang_altertable.html, "other kinds of table schema changes"):
    foreign keys off, change, `PRAGMA foreign_key_check`, commit, foreign keys on again.
    """
    async with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await connection.run_sync(_sqlite_pragma, "PRAGMA foreign_keys=OFF")
        try:
            async with connection.begin():
                yield connection
                if sqlite:
                    broken = await connection.run_sync(_sqlite_pragma,
                                                       "PRAGMA foreign_key_check")
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                await connection.run_sync(_sqlite_pragma, "PRAGMA foreign_keys=ON")


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` (head by default)."""

    def _upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with _migrating(engine) as connection:
        await connection.run_sync(_upgrade)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    def _downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with _migrating(engine) as connection:
        await connection.run_sync(_downgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def schema_differences(engine: AsyncEngine) -> list[object]:
    """What autogenerate would change: empty when the models and the migrations agree."""

    def _compare(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(_compare)
