"""Engine, sessions and units of work for both engines (SQLite embedded, PostgreSQL in production).

`Database.run(work)` is the unit of work of docs/architecture.md, principle 1: one transaction,
committed when `work` returns, rolled back if it raises; a transient database error (dropped
connection, deadlock, serialization failure, SQLite busy) reruns the whole unit with a fresh
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Select, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

log = logging.getLogger(__name__)

T = TypeVar("T")

# PostgreSQL SQLSTATEs worth a retry: serialization failure, deadlock, connection trouble.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "08000", "08003", "08006", "57P01", "57P02", "57P03"}
_SQLITE_TRANSIENT = ("database is locked", "database table is locked")
# Execution option marking a connection that only reads (see Database.read).
_READ_ONLY = "service_desk_read_only"


class ConnectionLost(Exception):
    """A connection used through the driver's own API (see `driver`) failed; it has been
    invalidated in the pool, and the unit of work can run again on a fresh one."""


def is_transient(exc: BaseException) -> bool:
    """True for database errors that a fresh attempt can be expected to get past."""
    if isinstance(exc, ConnectionLost):
        return True
    if isinstance(exc, sqlite3.OperationalError):  # from statements sent below SQLAlchemy
        return any(marker in str(exc) for marker in _SQLITE_TRANSIENT)
    if not isinstance(exc, DBAPIError):
        # The driver's own errors, from statements sent below SQLAlchemy.
        return getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    return any(marker in str(orig) for marker in _SQLITE_TRANSIENT)


def is_connection_failure(exc: BaseException | None) -> bool:
    """True when the database could not be reached or the connection went away (an outage), as
    opposed to a conflict between transactions (serialization failure, deadlock, lock)."""
    if exc is None:
        return False
    if isinstance(exc, ConnectionLost | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None) or ""
    return sqlstate.startswith(("08", "57P")) or isinstance(exc, OSError | TimeoutError)


# The driver's errors that leave its connection unusable (InternalClientError: seen when the
# server ended the session while the connection sat in the pool).
_BROKEN = (OSError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)


def _connection_failed(exc: BaseException, connection: Any) -> bool:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return (
        connection.is_closed()  # SQLAlchemy's own test for asyncpg
        or isinstance(exc, _BROKEN)
        # connection exception; the server shutting down or ending the session
        or sqlstate.startswith(("08", "57P"))
    )


@asynccontextmanager
async def driver(connection: AsyncConnection) -> AsyncIterator[Any]:
    """The driver's own connection under `connection` (asyncpg, autocommit: the connections
    `Database.run_statement` gives), for the few statements whose SQLAlchemy overhead matters:
    the dispatcher's, many times a second.

    A failure of the connection itself invalidates it in the pool, as SQLAlchemy does for
    its own statements, and is raised as ConnectionLost, which `run` and `run_statement`
    retry. Other errors are raised as the driver raised them.
    """
    options = connection.sync_connection.get_execution_options()  # type: ignore[union-attr]
    if options.get("isolation_level") != "AUTOCOMMIT":
        # SQLAlchemy's asyncpg adapter begins a transaction with its own first statement:
        # statements sent below it before that would silently run outside the transaction.
        raise RuntimeError("driver() needs an autocommit connection (Database.run_statement)")
    raw = await connection.get_raw_connection()
    pg = raw.driver_connection
    try:
        yield pg
    except Exception as exc:
        if not _connection_failed(exc, pg):
            raise
        await connection.invalidate(exc)
        raise ConnectionLost(f"{type(exc).__name__}: {exc}") from exc


class DriverQuery:
    """A one-row read written once with SQLAlchemy and sent straight to the driver
    (`Database.fetch_one`), compiled once per engine.

    For the read every update makes (the user behind it): SQLAlchemy's statement handling
    costs several times the query itself there. Rows come back as the driver gives them, with
    no type processing: select plain columns (SQLite gives 0/1 for booleans).
    """

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    def for_dialect(self, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
        """The driver's SQL for this engine and the order of its parameters' names."""
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            statement = self.statement.compile(dialect=dialect)
            compiled = self._compiled[dialect.name] = (
                str(statement), tuple(statement.positiontup or ())
            )
        return compiled


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the async engine; for SQLite, make the file's folder and set safe pragmas."""
    parsed = make_url(url)
    # A statement's parameters (phone numbers, texts) never appear in an error or a log line.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("pool_reset_on_return", None)  # see _on_reset below
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    engine = create_async_engine(url, **kwargs)
    _skip_closed_connections(engine)
    return engine


def _skip_closed_connections(engine: AsyncEngine) -> None:
    """Never hand out a pooled connection the server has already closed (a restart, a
    failover, an idle timeout): it is replaced by a new one at checkout.

    This is SQLAlchemy's "pessimistic disconnect handling" recipe with a check that costs
    nothing: asyncpg knows when the server closed the socket. `pool_pre_ping` would also catch
    a connection that died silently, but with asyncpg it is three round trips (BEGIN, ping,
    ROLLBACK) on every checkout; such a connection fails its first statement instead, and
    `Database.run` / `run_statement` rerun the unit of work on another one.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed this connection")


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL for concurrent readers, foreign keys on, and BEGIN IMMEDIATE so writers queue up.

    pysqlite starts transactions lazily and upgrades read locks to write locks mid-transaction,
    which deadlocks two writers ("database is locked"). Taking the write lock at BEGIN, with a
    busy timeout, makes concurrent units of work wait their turn instead. This is SQLAlchemy's
    documented recipe for serializable SQLite transactions.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, state: Any) -> None:
        # In place of the pool's rollback on return, which is a trip to aiosqlite's thread for
        # every connection handed back: with isolation_level None a connection is only in a
        # transaction after a BEGIN, so one that is not has nothing to roll back (the reads of
        # Database.fetch_one). One left in a transaction is rolled back as before.
        if (
            state.asyncio_safe
            and not state.transaction_was_reset
            and dbapi_connection.driver_connection.in_transaction
        ):
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Reads (Database.read) begin deferred: in WAL mode they read beside the writer.
        deferred = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


class Database:
    """The one way the application reaches its database."""

    def __init__(self, engine: AsyncEngine, *, attempts: int = 4) -> None:
        self.engine = engine
        # A Session class of our own, so commit hooks see only this Database's sessions.
        session_class = type("DatabaseSession", (Session,), {})
        self.sessionmaker = async_sessionmaker(
            engine, expire_on_commit=False, sync_session_class=session_class
        )
        self.attempts = attempts
        self._writer_turn = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._commit_hooks: dict[str, list[Callable[[], None]]] = {}
        # Told the SQL of each statement sent below SQLAlchemy (fetch_one), which SQLAlchemy's
        # engine events never see: how tests and benchmarks count every statement.
        self.driver_statement_listeners: list[Callable[[str], None]] = []
        event.listen(session_class, "after_commit", self._after_commit)
        event.listen(session_class, "after_rollback", self._after_rollback)

    def on_commit(self, flag: str, callback: Callable[[], None]) -> None:
        """Call `callback` after any transaction that set `session.info[flag]` commits.

        This is how committed work wakes whoever waits for it (the outbox dispatcher) without
        anything being signalled for a transaction that rolled back.
        """
        self._commit_hooks.setdefault(flag, []).append(callback)

    def _after_commit(self, session: Session) -> None:
        for flag, callbacks in self._commit_hooks.items():
            if session.info.pop(flag, False):
                for callback in callbacks:
                    callback()

    def _after_rollback(self, session: Session) -> None:
        for flag in self._commit_hooks:
            session.info.pop(flag, None)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        return cls(create_engine(url, **kwargs))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction, no retry: committed on normal exit, rolled back on an exception.

        On SQLite, transactions of this process take turns on an asyncio lock: SQLite has one
        writer, and waiting our turn here is far cheaper than SQLite's busy-wait sleeps.
        Do not open a transaction while holding another one in the same task.
        """
        async with self._turn(), self.sessionmaker() as session, session.begin():
            yield session

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` as one unit of work, retrying it whole on transient database errors."""

        async def once() -> T:
            async with self.transaction() as session:
                return await work(session)

        return await self._retried(once)

    async def read(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work`, which only reads, without taking the writer's turn; retried as `run` is.

        SQLite: a deferred transaction, which in WAL mode reads beside a writer instead of
        queueing behind it. PostgreSQL: autocommit, so a one-query read is one round trip (no
        BEGIN and COMMIT); each statement sees what was committed when it started. Nothing is
        committed: on SQLite a write would be rolled back, so `work` must not write.
        """

        async def once() -> T:
            async with self.engine.connect() as connection:
                if self._writer_turn is not None:
                    await connection.execution_options(**{_READ_ONLY: True})
                else:
                    await connection.execution_options(isolation_level="AUTOCOMMIT")
                async with self.sessionmaker(bind=connection, autoflush=False) as session:
                    return await work(session)

        return await self._retried(once)

    async def fetch_one(self, query: DriverQuery, **params: Any) -> Sequence[Any] | None:
        """The first row of a read sent straight to the driver, or None; retried as `run` is.

        Takes no writer's turn and opens no transaction: one statement, on SQLite in WAL mode
        beside any writer, on PostgreSQL in autocommit.
        """
        sql, names = query.for_dialect(self.engine.dialect)
        values = tuple(params[name] for name in names)

        async def once() -> Sequence[Any] | None:
            for listener in self.driver_statement_listeners:
                listener(sql)
            async with self.engine.connect() as connection:
                if self._writer_turn is None:
                    connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    async with driver(connection) as pg:
                        row: Sequence[Any] | None = await pg.fetchrow(sql, *values)
                        return row
                raw: Any = (await connection.get_raw_connection()).driver_connection
                # One trip to aiosqlite's thread (execute, fetch and close in one call).
                rows = await raw.execute_fetchall(sql, values)
                return rows[0] if rows else None

        return await self._retried(once)

    async def run_statement(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work`, a single statement, on a connection; retried as `run` is.

        On PostgreSQL it runs outside a transaction: one statement is atomic on its own, and
        BEGIN and COMMIT would be two more round trips for each one (the dispatcher's hot
        path uses it). On SQLite it runs in a transaction as usual: its connections are set up
        for SQLAlchemy-managed transactions (BEGIN IMMEDIATE), and switching them to
        autocommit and back would undo that.
        """

        async def once() -> T:
            if self._writer_turn is not None:
                async with self._writer_turn, self.engine.begin() as connection:
                    return await work(connection)
            async with self.engine.connect() as connection:
                connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                return await work(connection)

        return await self._retried(once)

    async def _retried(self, once: Callable[[], Awaitable[T]]) -> T:
        """`once()`, run again on transient errors, up to `attempts` times in all.

        The first try is a plain call: tenacity is set up only after a transient failure.
        On every unit of work it would cost more than a one-row read, and the reference
        cycles it leaves behind make the garbage collector run every few updates.
        """
        try:
            return await once()
        except Exception as exc:
            if self.attempts < 2 or not is_transient(exc):
                raise
            self._log_retry(1, exc)
        # Random exponential waits: up to 0.1 s before the second try, then 0.2, 0.4... (1 s
        # at most), as wait_random_exponential(0.05) counted from the first try would give.
        await asyncio.sleep(random.uniform(0, 0.1))
        async for attempt in self._retrying():
            with attempt:
                return await once()
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """SQLite's one writer, taken in turns by this process's units of work."""
        return self._writer_turn if self._writer_turn is not None else contextlib.nullcontext()

    def _retrying(self) -> AsyncRetrying:
        """The tries after the first failed one: `attempts - 1` more, waiting a little first."""
        return AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.attempts - 1),
            wait=wait_random_exponential(multiplier=0.1, max=1.0),  # its count starts at 1
            reraise=True,
            before_sleep=lambda state: self._log_retry(
                state.attempt_number + 1,
                state.outcome.exception() if state.outcome else None,
            ),
        )

    @staticmethod
    def _log_retry(failed_attempt: int, exc: BaseException | None) -> None:
        """A conflict between transactions is worth a warning; a lost connection is not, per
        unit of work: in an outage every caller would log one, so whoever waits for the
        database (the dispatcher, /health) says once that it went away and once that it is
        back."""
        log.log(
            logging.DEBUG if is_connection_failure(exc) else logging.WARNING,
            "transient database error, retrying unit of work (attempt %d): %s",
            failed_attempt,
            type(exc).__name__ if exc is not None else "?",
        )

    async def ping(self) -> bool:
        """True when the database answers a trivial query; takes no writer's turn (a flood of
        readiness probes must not queue behind, or hold up, the units of work)."""
        try:
            async with self.engine.connect() as conn:
                if self._writer_turn is not None:
                    await conn.execution_options(**{_READ_ONLY: True})
                await conn.execute(text("SELECT 1"))
        except (DBAPIError, OSError) as exc:
            log.warning("database ping failed: %s", type(exc).__name__)
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
