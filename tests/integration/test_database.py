"""Units of work survive what a database server does to its connections."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Integer, text
from sqlalchemy.exc import IntegrityError

from database.engine import ConnectionLost, Database
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


async def test_a_read_does_not_wait_for_a_writer_in_progress(db: Database) -> None:
    """On SQLite a unit of work holds the writer's turn until it commits; a read goes past it
    (WAL) and sees the last committed state, not the writer's uncommitted change."""
    await db.run(lambda s: s.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY)")))
    writing, release = asyncio.Event(), asyncio.Event()

    async def slow_writer(session) -> None:
        await session.execute(text("INSERT INTO scratch (id) VALUES (1)"))
        writing.set()
        await release.wait()

    writer = asyncio.create_task(db.run(slow_writer))
    try:
        await asyncio.wait_for(writing.wait(), 10)
        seen = await asyncio.wait_for(
            db.read(lambda s: s.scalar(text("SELECT count(*) FROM scratch"))), 10
        )
        assert seen == 0
        release.set()
        await writer
        assert await db.read(lambda s: s.scalar(text("SELECT count(*) FROM scratch"))) == 1
    finally:
        release.set()
        await asyncio.gather(writer, return_exceptions=True)
        await db.run_statement(lambda c: c.execute(text("DROP TABLE scratch")))


async def test_a_lost_connection_is_retried_without_a_warning_per_unit_of_work(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """In an outage every unit of work would log its retry: whoever waits for the database
    reports the outage once, so the engine keeps a lost connection's retry at DEBUG."""
    calls = 0

    async def work(session) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # what `driver` raises when the server dropped the connection
            raise ConnectionLost("connection was closed in the middle of operation")
        return await session.scalar(text("SELECT 6 * 7"))

    with caplog.at_level("DEBUG", logger="database.engine"):
        assert await db.run(work) == 42
    retries = [r for r in caplog.records if "retrying unit of work" in r.getMessage()]
    assert [r.levelname for r in retries] == ["DEBUG"]


async def test_a_conflict_between_transactions_is_retried_with_a_warning(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database.from_url(postgres_url)
    calls = 0

    async def conflicting(session) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # a serialization failure, raised by the server itself
            await session.execute(text(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"))
        return calls

    try:
        assert await db.run(conflicting) == 2
        retries = [r for r in caplog.records if "retrying unit of work" in r.getMessage()]
        assert [r.levelname for r in retries] == ["WARNING"]
    finally:
        await db.dispose()


async def test_a_read_is_retried_like_a_unit_of_work(postgres_url: str) -> None:
    """A read on a connection the server closed runs again on a fresh one."""
    db = Database.from_url(postgres_url)
    try:
        assert await db.read(lambda s: s.scalar(text("SELECT 1"))) == 1
        await _admin(postgres_url, TERMINATE_OTHERS.format(name=db.engine.url.database))
        assert await db.read(lambda s: s.scalar(text("SELECT 6 * 7"))) == 42
    finally:
        await db.dispose()


async def test_a_permanent_error_is_not_retried(db: Database) -> None:
    calls = 0

    async def broken(session) -> None:
        nonlocal calls
        calls += 1
        await session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(Exception, match="no_such_table"):
        await db.run(broken)
    assert calls == 1


async def test_fetch_one_reads_a_row_straight_from_the_driver_and_survives_a_restart(
    postgres_url: str,
) -> None:
    from sqlalchemy import bindparam, literal_column, select

    from database.engine import DriverQuery

    query = DriverQuery(select(literal_column("41") + bindparam("n", type_=Integer)))
    db = Database.from_url(postgres_url)
    try:
        assert tuple(await db.fetch_one(query, n=1)) == (42,)
        await _admin(postgres_url, TERMINATE_OTHERS.format(name=db.engine.url.database))
        assert tuple(await db.fetch_one(query, n=2)) == (43,)
    finally:
        await db.dispose()


async def test_fetch_one_on_both_engines_returns_none_when_nothing_matches(db: Database) -> None:
    from sqlalchemy import bindparam, select

    from database.engine import DriverQuery
    from database.models import User

    query = DriverQuery(select(User.id).where(User.telegram_id == bindparam("telegram_id")))
    heard: list[str] = []
    db.driver_statement_listeners.append(heard.append)
    assert await db.fetch_one(query, telegram_id=123) is None
    assert len(heard) == 1 and heard[0].startswith("SELECT users.id")


def test_sqlite_busy_from_the_driver_counts_as_transient() -> None:
    import sqlite3

    from database.engine import is_transient

    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert not is_transient(sqlite3.OperationalError("no such table: users"))


async def test_a_sqlite_connection_returned_mid_transaction_is_rolled_back(tmp_path) -> None:
    """The pool rolls back on return only a connection that is in a transaction (the reset
    listener in database/engine.py); one left mid-transaction must still come back clean."""
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'reset.db'}", pool_size=1)
    try:
        await db.run(lambda s: s.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY)")))
        async with db.engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            await raw.execute("BEGIN")
            await raw.execute("INSERT INTO scratch (id) VALUES (1)")
            assert raw.in_transaction
        async with db.engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert not raw.in_transaction
        assert await db.read(lambda s: s.scalar(text("SELECT count(*) FROM scratch"))) == 0
    finally:
        await db.dispose()


async def test_ping_answers_while_a_writer_holds_its_turn(db: Database) -> None:
    """The readiness probe does not queue behind a unit of work (on SQLite it used to take
    the writer's lock with BEGIN IMMEDIATE)."""
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_writer(session) -> None:
        await session.execute(text("SELECT 1"))
        holding.set()
        await release.wait()

    writer = asyncio.create_task(db.run(slow_writer))
    try:
        await asyncio.wait_for(holding.wait(), 10)
        assert await asyncio.wait_for(db.ping(), 5) is True
    finally:
        release.set()
        await writer
