"""The dispatcher's two units of work, claim a batch and record its outcomes, per engine.

What they mean is the same on both engines: lease up to `limit` due rows, most urgent first
(priority, then next_attempt_at), skipping rows other workers hold; write each outcome only
to a row still leased to this batch's token, and the attempt rows of exactly the rows it
wrote. So a record is idempotent: run again with the same outcomes and token (a retry after
the connection was lost once the first run had committed), it finds none of its rows still
leased and writes nothing, attempt rows included.

- `SQLiteBatches`: in `Database.run` transactions. The claim is one SQLAlchemy Core
  UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING plus a read of the recipients; the
  outcomes are one executemany INSERT of the attempt rows whose notification is still held
  (INSERT ... SELECT ... WHERE EXISTS) and one executemany UPDATE, sent as plain SQL.
- `PostgresBatches`: each unit is one statement written for PostgreSQL and sent through
  asyncpg's own API (`database.engine.driver`), outside a transaction
  (`Database.run_statement`): one statement is atomic on its own, and BEGIN and COMMIT would
  triple the round trips. The
  claim also joins the recipients; the outcomes travel as one array per column, applied with
  `unnest`, and the attempt rows are inserted by the same statement, for the ids its UPDATE
  returned.

`record` is its own unit of work; `record_in` writes the same in the caller's transaction, for
outcomes whose side effects (an opt-out, a circuit, a dead-letter alert) go with them.

Why the statements bypass SQLAlchemy's statement handling: on a batch of 100, its per-row
parameter and result processing and the extra round trips cost more CPU than the database's
own work, and the dispatcher's workers share one Python thread (benchmarks/README.md,
outbox_throughput). Everything else in the application goes through SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from database.base import UTCDateTime
from database.engine import Database, driver
from database.models import (
    ChannelState,
    Notification,
    NotificationStatus,
    User,
)
from services.notifications.channels.base import Recipient


class Job(NamedTuple):
    """What a worker knows about one claimed notification.

    A NamedTuple rather than a frozen dataclass: as immutable, and several times cheaper to
    build, which counts at thousands of notifications a second.
    """

    id: int
    kind: str
    payload: dict[str, Any]
    idempotency_key: str
    chain: tuple[str, ...]
    channel_index: int
    channel_attempts: int
    parts_sent: int
    attempts: int
    allow_fallback: bool
    # Where the age budget counts from: the last restart, else the creation.
    budget_from: datetime
    recipient: Recipient
    opt_outs: frozenset[str]


# What the claim returns of a notification, in this order, and then of its recipient.
_JOB_COLUMNS = (
    "id", "kind", "payload", "idempotency_key", "channel_chain", "channel_index",
    "channel_attempts", "parts_sent", "attempts", "allow_fallback", "budget_from", "recipient_id",
    "destination",
)
# The one that is not a column: where the age budget counts from, the last restart or else
# the creation (transitions.restart).
_BUDGET_FROM = "COALESCE(restarted_at, created_at) AS budget_from"
_PERSON_COLUMNS = (
    "display_name", "language", "telegram_id", "phone", "email", "whatsapp_inbound_at",
    "opt_outs",
)


class _People:
    """One Recipient per person (or destination) per batch, however many of the batch's rows
    are theirs."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Recipient, frozenset[str]]] = {}
        self._destinations: dict[str, tuple[Recipient, frozenset[str]]] = {}

    def destination(self, destination: str) -> tuple[Recipient, frozenset[str]]:
        """A notification addressed to a destination, not a user (notifications.destinations):
        no contact data, no opt-outs."""
        known = self._destinations.get(destination)
        if known is None:
            known = self._destinations[destination] = (
                Recipient(None, destination=destination), frozenset()
            )
        return known

    def get(self, user_id: int, person: Sequence[Any]) -> tuple[Recipient, frozenset[str]]:
        known = self._seen.get(user_id)
        if known is None:
            name, language, telegram_id, phone, email, whatsapp_inbound_at, opt_outs = person
            known = self._seen[user_id] = (
                Recipient(user_id, name, language, telegram_id, phone, email,
                          whatsapp_inbound_at),
                frozenset(c for c in (opt_outs or "").split(",") if c),
            )
        return known


def _job(row: Sequence[Any], person: tuple[Recipient, frozenset[str]]) -> Job:
    (nid, kind, payload, key, chain, channel_index, channel_attempts, parts_sent, attempts,
     allow_fallback, budget_from) = row[:11]
    return Job(nid, kind, payload, key, _chain(chain), channel_index, channel_attempts,
               parts_sent, attempts, allow_fallback, budget_from, *person)


@functools.lru_cache(maxsize=256)
def _chain(stored: str) -> tuple[str, ...]:
    """"telegram,whatsapp" -> ("telegram", "whatsapp"); a handful of distinct chains exist."""
    return tuple(c for c in stored.split(",") if c)


class OutcomeRow(NamedTuple):
    """A claimed row's new values, written only while its lease is still held."""

    id: int
    status: str
    channel_index: int
    channel: str
    channel_attempts: int
    parts_sent: int
    attempts: int
    next_attempt_at: datetime
    last_error_class: str | None
    last_error_code: str | None
    last_error_text: str | None
    provider_message_id: str | None
    sent_at: datetime | None
    failed_at: datetime | None


class AttemptRow(NamedTuple):
    """One try on one channel: a delivery_attempts row."""

    notification_id: int
    channel: str
    sender: str | None
    address: str | None
    outcome: str
    error_class: str | None
    error_code: str | None
    error_text: str | None
    latency_ms: int
    at: datetime


# PostgreSQL types of the arrays PostgresBatches sends, one per field, in field order.
_OUTCOME_TYPES = (
    "bigint", "text", "smallint", "text", "integer", "smallint", "integer", "timestamptz",
    "text", "text", "text", "text", "timestamptz", "timestamptz",
)
_ATTEMPT_TYPES = (
    "bigint", "text", "text", "text", "text", "text", "text", "text", "integer", "timestamptz",
)


class ChannelStatus(NamedTuple):
    """What the dispatcher needs of a channel's state while it sends a batch."""

    paused: bool
    circuit_open_until: datetime | None
    circuit_trips: int


class Claimed(NamedTuple):
    jobs: list[Job]
    # The channels' states when asked for (SQLite: only when something was claimed); or None.
    channels: dict[str, ChannelStatus] | None


class Batches(Protocol):
    async def claim(
        self, db: Database, *, now: datetime, owner: str, lease_until: datetime, limit: int,
        read_states: bool = True,
    ) -> Claimed:
        """Lease up to `limit` due rows to `owner`: their jobs, most urgent first, and, with
        `read_states`, the channels' states."""
        ...

    async def record(
        self, db: Database, *, now: datetime, owner: str,
        outcomes: Sequence[OutcomeRow], attempts: Sequence[AttemptRow],
    ) -> int:
        """Write the outcomes to the rows `owner` still holds, releasing them, and insert the
        attempt rows of those rows (no others), as one unit of work. Returns how many rows were
        still held (and so written); run again, it writes nothing and returns 0."""
        ...

    async def record_in(
        self, session: AsyncSession, *, now: datetime, owner: str,
        outcomes: Sequence[OutcomeRow], attempts: Sequence[AttemptRow],
    ) -> int:
        """`record`, in the caller's transaction."""
        ...


_STATES = select(
    ChannelState.__table__.c.channel,
    ChannelState.__table__.c.paused,
    ChannelState.__table__.c.circuit_open_until,
    ChannelState.__table__.c.circuit_trips,
)


async def _channel_states(connection: AsyncConnection) -> dict[str, ChannelStatus]:
    return {
        channel: ChannelStatus(paused, until, trips)
        for channel, paused, until, trips in await connection.execute(_STATES)
    }


def batches_for(dialect: str) -> Batches:
    return PostgresBatches() if dialect == "postgresql" else SQLiteBatches()


# --- SQLite: SQLAlchemy Core, and the record as plain SQL -----------------------------------------

def _build_claim() -> Any:
    t = Notification.__table__.c
    due = (
        select(t.id)
        .where(t.status == NotificationStatus.PENDING.value, t.next_attempt_at <= bindparam("now"))
        .order_by(t.priority, t.next_attempt_at)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return (
        update(Notification.__table__)
        .where(t.id.in_(due.scalar_subquery()))
        .values(
            status=NotificationStatus.SENDING.value,
            lease_until=bindparam("lease_until"),
            lease_owner=bindparam("owner"),
            updated_at=bindparam("now"),
        )
        .returning(
            *(
                func.coalesce(t.restarted_at, t.created_at).label(name)
                if name == "budget_from" else t[name]
                for name in _JOB_COLUMNS
            ),
            t.priority, t.next_attempt_at,
        )
    )


# Built once: the claim runs many times a second, and building it is not free.
CLAIM = _build_claim()

class SQLiteBatches:
    """SQLite has no row locks and ignores FOR UPDATE; its single writer (BEGIN IMMEDIATE)
    gives the same one-claimer-per-row semantics within one process."""

    async def claim(
        self, db: Database, *, now: datetime, owner: str, lease_until: datetime, limit: int,
        read_states: bool = True,
    ) -> Claimed:
        params = {"now": now, "owner": owner, "lease_until": lease_until, "limit": limit}

        async def work(session: AsyncSession) -> Claimed:
            connection = await session.connection()
            rows = (await connection.execute(CLAIM, params)).all()
            if not rows:
                return Claimed([], None)
            rows.sort(key=lambda r: (r.priority, r.next_attempt_at, r.id))
            u = User.__table__.c
            users = {r.recipient_id for r in rows if r.recipient_id is not None}
            people = {
                p[0]: p[1:]
                for p in await connection.execute(
                    select(u.id, *(u[name] for name in _PERSON_COLUMNS)).where(u.id.in_(users))
                )
            } if users else {}
            seen = _People()
            jobs = [
                _job(row, seen.destination(row.destination) if row.recipient_id is None
                     else seen.get(row.recipient_id, people[row.recipient_id]))
                for row in rows
            ]
            return Claimed(jobs, await _channel_states(connection) if read_states else None)

        return await db.run(work)

    async def record(
        self, db: Database, *, now: datetime, owner: str,
        outcomes: Sequence[OutcomeRow], attempts: Sequence[AttemptRow],
    ) -> int:
        return await db.run(lambda session: self.record_in(
            session, now=now, owner=owner, outcomes=outcomes, attempts=attempts
        ))

    async def record_in(
        self, session: AsyncSession, *, now: datetime, owner: str,
        outcomes: Sequence[OutcomeRow], attempts: Sequence[AttemptRow],
    ) -> int:
        connection = await session.connection()
        to_db = _datetime_writer(connection.dialect)
        # The attempt rows first, each only while its notification is still leased to `owner`:
        # so a record run a second time (a retry of a unit of work that had committed) adds
        # none. The transaction holds the write lock, so the UPDATE sees the same rows held.
        if attempts:
            await connection.exec_driver_sql(SQLITE_ATTEMPTS, [
                (*(to_db(v) if isinstance(v, datetime) else v for v in row),
                 row.notification_id, owner)
                for row in attempts
            ])
        stamp = to_db(now)
        result = await connection.exec_driver_sql(SQLITE_RECORD, [
            (*(to_db(v) if isinstance(v, datetime) else v for v in row[1:]), stamp, row.id, owner)
            for row in outcomes
        ])
        return result.rowcount


# The record as SQLite statements, sent as they are: SQLAlchemy's per-row parameter handling
# of an executemany cost several times what SQLite takes to apply it.
SQLITE_RECORD = (
    f"UPDATE notifications SET {', '.join(f'{name} = ?' for name in OutcomeRow._fields[1:])}, "
    "lease_until = NULL, lease_owner = NULL, updated_at = ? "
    "WHERE id = ? AND lease_owner = ? AND status = 'sending'"
)
SQLITE_ATTEMPTS = (
    f"INSERT INTO delivery_attempts ({', '.join(AttemptRow._fields)}) "
    f"SELECT {', '.join('?' for _ in AttemptRow._fields)} "
    "WHERE EXISTS (SELECT 1 FROM notifications "
    "WHERE id = ? AND lease_owner = ? AND status = 'sending')"
)


@functools.cache
def _datetime_writer(dialect: Dialect) -> Callable[[datetime], Any]:
    """How the models' UTCDateTime columns store a datetime on this dialect (SQLAlchemy's own
    processor, so rows written here read back, compare and sort as any other)."""
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process


# --- PostgreSQL: statements over arrays -----------------------------------------------------------

PG_CLAIM = f"""
WITH claimed AS (
    UPDATE notifications
       SET status = 'sending', lease_until = $3, lease_owner = $2, updated_at = $1
     WHERE id IN (SELECT id FROM notifications
                   WHERE status = 'pending' AND next_attempt_at <= $1
                   ORDER BY priority, next_attempt_at
                   LIMIT $4
                   FOR UPDATE SKIP LOCKED)
 RETURNING {", ".join(_BUDGET_FROM if n == "budget_from" else n for n in _JOB_COLUMNS)},
           priority, next_attempt_at
)
SELECT {", ".join(f"c.{name}" for name in _JOB_COLUMNS)},
       {", ".join(f"u.{name}" for name in _PERSON_COLUMNS)}
  FROM claimed AS c LEFT JOIN users AS u ON u.id = c.recipient_id
 ORDER BY c.priority, c.next_attempt_at, c.id
"""


def _unnest(names: Sequence[str], types: Sequence[str], first: int) -> str:
    """`unnest($first::t1[], ...) AS v(name1, ...)`."""
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(types))
    return f"unnest({arrays}) AS v({', '.join(names)})"


def _build_pg_record() -> str:
    """$1 now, $2 owner, then one array per OutcomeRow field, then one per AttemptRow field.

    The attempt rows are inserted from the ids the UPDATE returned, not from the arrays alone:
    run again after it committed (`run_statement` retries a statement whose connection was
    lost, and the acknowledgement may be what was lost), the UPDATE matches nothing, since the
    rows are no longer leased to the token, and so no attempt row goes in twice. The statement
    returns how many rows it wrote."""
    outcomes = _unnest(OutcomeRow._fields, _OUTCOME_TYPES, 3)
    attempts = _unnest(AttemptRow._fields, _ATTEMPT_TYPES, 3 + len(OutcomeRow._fields))
    assignments = ",\n           ".join(f"{name} = v.{name}" for name in OutcomeRow._fields[1:])
    return f"""
WITH written AS (
    UPDATE notifications AS n
       SET {assignments},
           lease_until = NULL, lease_owner = NULL, updated_at = $1
      FROM {outcomes}
     WHERE n.id = v.id AND n.lease_owner = $2 AND n.status = 'sending'
 RETURNING n.id
), attempts AS (
    INSERT INTO delivery_attempts ({", ".join(AttemptRow._fields)})
    SELECT * FROM {attempts}
     WHERE v.notification_id IN (SELECT id FROM written)
)
SELECT count(*) FROM written
"""


PG_RECORD = _build_pg_record()


def _columns(rows: Sequence[tuple[Any, ...]], row_type: type[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows to one list per field (what `unnest` takes), in C rather than in a Python loop."""
    if not rows:
        return [[] for _ in row_type._fields]  # type: ignore[attr-defined]
    return [list(column) for column in zip(*rows, strict=True)]


PG_STATES = "SELECT channel, paused, circuit_open_until, circuit_trips FROM channel_states"


class PostgresBatches:
    """Statements go through the driver's own API (`database.engine.driver`): SQLAlchemy's
    per-statement handling costs as much CPU as decoding the batch, on the thread all
    workers share."""

    async def claim(
        self, db: Database, *, now: datetime, owner: str, lease_until: datetime, limit: int,
        read_states: bool = True,
    ) -> Claimed:
        async def work(connection: AsyncConnection) -> Claimed:
            async with driver(connection) as pg:
                # The states first: the claim commits on its own, so nothing that could fail
                # (and have this work run again, claiming a second batch) may follow it.
                states = (
                    {
                        channel: ChannelStatus(paused, until, trips)
                        for channel, paused, until, trips in await pg.fetch(PG_STATES)
                    }
                    if read_states
                    else None
                )
                rows = await pg.fetch(PG_CLAIM, now, owner, lease_until, limit)
            seen = _People()
            return Claimed([
                _job(row, seen.destination(row[12]) if row[11] is None
                     else seen.get(row[11], row[13:]))
                for row in rows
            ], states)

        return await db.run_statement(work)

    async def record(
        self, db: Database, *, now: datetime, owner: str,
        outcomes: Sequence[OutcomeRow], attempts: Sequence[AttemptRow],
    ) -> int:
        params = (now, owner, *_columns(outcomes, OutcomeRow), *_columns(attempts, AttemptRow))

        async def write(connection: AsyncConnection) -> int:
            async with driver(connection) as pg:
                return int(await pg.fetchval(PG_RECORD, *params))

        return await db.run_statement(write)

    async def record_in(
        self, session: AsyncSession, *, now: datetime, owner: str,
        outcomes: Sequence[OutcomeRow], attempts: Sequence[AttemptRow],
    ) -> int:
        # Through SQLAlchemy here: its asyncpg adapter begins the transaction with its first
        # statement, and the record must be in the caller's transaction.
        params = (now, owner, *_columns(outcomes, OutcomeRow), *_columns(attempts, AttemptRow))
        connection = await session.connection()
        result = await connection.exec_driver_sql(PG_RECORD, params)
        return int(result.scalar_one())
