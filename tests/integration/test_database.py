"""Units of work survive what a database server does to its connections."""

from __future__ import annotations

import asyncio

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


async def test_connections_the_server_closed_are_replaced_at_checkout(postgres_url: str) -> None:
    """After a restart every pooled connection is dead. Each is replaced when it is checked
    out (asyncpg knows the socket closed), so even a unit of work allowed a single attempt
    succeeds, however many dead connections the pool holds."""
    db = Database.from_url(postgres_url)
    db.attempts = 1
    try:
        async def hold(connection) -> None:
            await connection.execute(text("SELECT pg_sleep(0.1)"))

        await asyncio.gather(*(db.run_statement(hold) for _ in range(6)))
        assert db.engine.pool.checkedin() == 6
        await _admin(postgres_url, TERMINATE_OTHERS.format(name=db.engine.url.database))
        await asyncio.sleep(0.3)  # the closed sockets reach the event loop
        for _ in range(6):
            assert await db.run_statement(lambda c: c.scalar(text("SELECT 1"))) == 1
            assert await db.run(lambda s: s.scalar(text("SELECT 2"))) == 2
    finally:
        await db.dispose()
