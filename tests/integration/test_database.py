"""Units of work survive what a database server does to its connections."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from database.engine import Database
from tests.conftest import _admin

TERMINATE_OTHERS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = '{name}' AND pid <> pg_backend_pid()"
)


async def test_a_unit_of_work_runs_again_on_a_fresh_connection_after_a_server_restart(
    postgres_url: str,
) -> None:
    """The pool does not ping before each use (three round trips on asyncpg); a connection
    the server has closed fails the first statement, and `run` reruns the whole unit of work
    on a new one."""
    db = Database.from_url(postgres_url)
    try:
        # Fill the pool with connections, then end them all from the server side.
        assert await db.run(lambda s: s.scalar(text("SELECT 1"))) == 1
        assert await db.run_statement(lambda c: c.scalar(text("SELECT 2"))) == 2
        name = db.engine.url.database
        await _admin(postgres_url, TERMINATE_OTHERS.format(name=name))

        assert await db.run(lambda s: s.scalar(text("SELECT 41 + 1"))) == 42
        await _admin(postgres_url, TERMINATE_OTHERS.format(name=name))
        assert await db.run_statement(lambda c: c.scalar(text("SELECT 6 * 7"))) == 42
    finally:
        await db.dispose()


async def test_run_statement_runs_outside_a_transaction_on_postgresql_only(
    db: Database,
) -> None:
    """On PostgreSQL each statement commits on its own, so a statement that succeeded stays
    when a later one fails (which is why `run_statement` is for single-statement work). On
    SQLite the work runs in one transaction, rolled back whole."""
    await db.run_statement(
        lambda c: c.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY)"))
    )

    async def insert_twice(connection) -> None:
        await connection.execute(text("INSERT INTO scratch (id) VALUES (1)"))
        await connection.execute(text("INSERT INTO scratch (id) VALUES (1)"))  # duplicate

    try:
        with pytest.raises(IntegrityError):
            await db.run_statement(insert_twice)
        count = await db.run(lambda s: s.scalar(text("SELECT count(*) FROM scratch")))
        assert count == (1 if db.dialect == "postgresql" else 0)
    finally:
        # The PostgreSQL database is shared by the session: leave its schema as found.
        await db.run_statement(lambda c: c.execute(text("DROP TABLE scratch")))
