"""Apply and check Alembic migrations programmatically, on the application's own engine.

`plan_migration` says where `migrate --to` would go and, going down, what it would drop: found
by running the downgrade for real inside the migrations' transaction and rolling it back
(PostgreSQL and SQLite both have transactional DDL), so it is what the downgrade code does,
not what someone wrote it does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import column, func, inspect, select, table
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
async def _migrating(
    engine: AsyncEngine, *, rollback: bool = False
) -> AsyncIterator[AsyncConnection]:
    """One transaction for the migrations; on SQLite with foreign keys off meanwhile.
    `rollback`: undo everything at the end (a dry run).

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
            async with connection.begin() as transaction:
                yield connection
                if rollback:
                    await transaction.rollback()
                elif sqlite:
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


# --- migrate --to ---------------------------------------------------------------------------------

BASE, HEAD = "base", "head"


class UnknownRevision(ValueError):
    """A revision this code does not have; the message (one line) lists the known ones."""


def known_revisions() -> list[str]:
    """`base`, then every revision from the first to the head."""
    script = ScriptDirectory.from_config(alembic_config())
    return [BASE, *reversed([r.revision for r in script.walk_revisions()])]


def resolve_revision(name: str) -> str:
    """`head`, `base` or a revision id, as a revision id (or `base`)."""
    known = known_revisions()
    if name == HEAD:
        return known[-1]
    if name not in known:
        raise UnknownRevision(
            f"unknown revision {name!r}; known: {', '.join(known)} (or head = {known[-1]})"
        )
    return name


@dataclass(frozen=True)
class Loss:
    """What a downgrade drops: tables with their rows, columns with their non-null values, and
    rows it deletes from tables it keeps (a downgrade may delete what the old schema cannot
    hold)."""

    tables: dict[str, int] = field(default_factory=dict)
    columns: dict[str, int] = field(default_factory=dict)  # "table.column" -> values
    deleted_rows: dict[str, int] = field(default_factory=dict)

    @property
    def loses_data(self) -> bool:
        return any(n > 0 for part in (self.tables, self.columns, self.deleted_rows)
                   for n in part.values())

    def lines(self) -> list[str]:
        return (
            [f"table {name} ({rows} rows)" for name, rows in self.tables.items()]
            + [f"column {name} ({values} values)" for name, values in self.columns.items()]
            + [f"{rows} rows deleted from {name}" for name, rows in self.deleted_rows.items()]
        )


@dataclass(frozen=True)
class Plan:
    current: str  # a revision id, or `base`
    target: str
    loss: Loss | None = None  # going down only

    @property
    def direction(self) -> str:
        known = known_revisions()
        order = known.index(self.target) - known.index(self.current)
        return "up" if order > 0 else "down" if order < 0 else "none"


def _schema(connection: Connection) -> dict[str, tuple[set[str], int]]:
    """Every application table: its columns and its row count."""
    inspector = inspect(connection)
    found = {}
    for name in inspector.get_table_names():
        if name == "alembic_version":
            continue
        columns = {c["name"] for c in inspector.get_columns(name)}
        rows = connection.execute(select(func.count()).select_from(table(name))).scalar_one()
        found[name] = (columns, rows)
    return found


async def plan_migration(engine: AsyncEngine, target: str) -> Plan:
    """Where `migrate --to target` goes; going down, what it would drop (nothing is changed).

    Raises UnknownRevision for a target this code lacks, or a database at a revision it lacks
    (migrated by newer code)."""
    target = resolve_revision(target)
    current = await current_revision(engine) or BASE
    if current not in known_revisions():
        raise UnknownRevision(
            f"the database is at revision {current!r}, which this code does not have (newer "
            "code migrated it): go down with that code's `migrate --to`"
        )
    plan = Plan(current, target)
    if plan.direction != "down":
        return plan

    def _dry_run(connection: Connection) -> tuple[dict, dict]:
        before = _schema(connection)
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, target)
        return before, _schema(connection)

    async with _migrating(engine, rollback=True) as connection:
        before, after = await connection.run_sync(_dry_run)
    lost_columns = {
        (name, c) for name, (columns, _) in before.items() if name in after
        for c in sorted(columns - after[name][0])
    }

    def _values(connection: Connection) -> dict[str, int]:
        return {
            f"{name}.{c}": connection.execute(
                select(func.count(column(c))).select_from(table(name))
            ).scalar_one()
            for name, c in sorted(lost_columns)
        }

    async with engine.connect() as connection:
        columns = await connection.run_sync(_values)
    loss = Loss(
        tables={n: rows for n, (_, rows) in sorted(before.items()) if n not in after},
        columns=columns,
        deleted_rows={
            n: rows - after[n][1] for n, (_, rows) in sorted(before.items())
            if n in after and after[n][1] < rows
        },
    )
    return Plan(current, target, loss)
