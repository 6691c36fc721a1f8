"""Recording a batch is idempotent, on both engines: a record run again with the same outcomes
and token (what `Database.run_statement` does after the connection was lost once the first run
had committed) writes no second set of delivery_attempts rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from database.engine import ConnectionLost, Database, driver
from database.models import DeliveryAttempt, Notification
from services.clock import FakeClock
from services.notifications import batches as batches_module
from services.notifications import outbox
from services.notifications.batches import AttemptRow, OutcomeRow, batches_for
from tests.support import make_user

TOKEN = "worker-1:batch-7"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _claimed_batch(db: Database, clock: FakeClock, count: int = 3) -> list[int]:
    user = await make_user(db, clock, telegram_id=4242)
    for i in range(count):
        await db.run(lambda s, i=i: outbox.enqueue(
            s, recipient_id=user, kind="request.accepted", idempotency_key=f"k{i}",
            text="Your request was accepted.", now=clock.now(),
        ))
    claimed = await batches_for(db.dialect).claim(
        db, now=clock.now(), owner=TOKEN, lease_until=clock.now() + timedelta(minutes=1),
        limit=count, read_states=False,
    )
    return [job.id for job in claimed.jobs]


def _outcomes(ids: list[int], clock: FakeClock) -> tuple[list[OutcomeRow], list[AttemptRow]]:
    now = clock.now()
    outcomes = [
        OutcomeRow(i, "sent", 0, "telegram", 1, 1, 1, now, None, None, None, f"m{i}", now, None)
        for i in ids
    ]
    attempts = [
        AttemptRow(i, "telegram", None, "4242", "sent", None, None, None, 12, now) for i in ids
    ]
    return outcomes, attempts


async def _attempt_count(db: Database) -> int:
    async with db.transaction() as session:
        return await session.scalar(select(func.count()).select_from(DeliveryAttempt))


async def test_a_record_run_again_adds_no_second_set_of_attempts(db: Database, clock) -> None:
    ids = await _claimed_batch(db, clock)
    outcomes, attempts = _outcomes(ids, clock)
    batches = batches_for(db.dialect)
    clock.advance(seconds=1)

    first = await batches.record(db, now=clock.now(), owner=TOKEN, outcomes=outcomes,
                                 attempts=attempts)
    again = await batches.record(db, now=clock.now(), owner=TOKEN, outcomes=outcomes,
                                 attempts=attempts)

    assert (first, again) == (3, 0)
    assert await _attempt_count(db) == 3
    async with db.transaction() as session:
        statuses = set(await session.scalars(select(Notification.status)))
    assert statuses == {"sent"}


async def test_a_record_with_side_effects_run_again_adds_no_second_set_of_attempts(
    db: Database, clock
) -> None:
    # The path taken when outcomes carry side effects: the record in the caller's transaction.
    ids = await _claimed_batch(db, clock)
    outcomes, attempts = _outcomes(ids, clock)
    batches = batches_for(db.dialect)

    async def record_in(session) -> int:
        return await batches.record_in(session, now=clock.now(), owner=TOKEN,
                                       outcomes=outcomes, attempts=attempts)

    assert await db.run(record_in) == 3
    assert await db.run(record_in) == 0
    assert await _attempt_count(db) == 3


async def test_attempts_of_rows_no_longer_held_are_not_written(db: Database, clock) -> None:
    # One row of the batch was taken over (its lease ended and another worker claimed it): its
    # outcome and its attempts belong to the new holder's record, not to this one.
    ids = await _claimed_batch(db, clock)
    outcomes, attempts = _outcomes(ids, clock)

    async def take_over(session) -> None:
        row = await session.get_one(Notification, ids[0])
        row.lease_owner = "worker-2:batch-1"

    await db.run(take_over)
    written = await batches_for(db.dialect).record(
        db, now=clock.now(), owner=TOKEN, outcomes=outcomes, attempts=attempts
    )

    assert written == 2
    async with db.transaction() as session:
        recorded = set(await session.scalars(select(DeliveryAttempt.notification_id)))
    assert recorded == set(ids[1:])


async def test_a_lost_acknowledgement_retried_by_run_statement_adds_no_attempts(
    db: Database, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL's record is one autocommitted statement: here it commits, then the connection
    # fails before the answer arrives, and `run_statement` sends the statement again.
    if db.dialect != "postgresql":
        pytest.skip("SQLite's record is a local transaction: no acknowledgement to lose")
    ids = await _claimed_batch(db, clock)
    outcomes, attempts = _outcomes(ids, clock)
    tries = 0

    @asynccontextmanager
    async def acknowledgement_lost_once(connection) -> AsyncIterator[Any]:
        nonlocal tries
        async with driver(connection) as pg:
            yield pg
        tries += 1
        if tries == 1:
            await connection.invalidate()
            raise ConnectionLost("ConnectionResetError: the answer never came")

    monkeypatch.setattr(batches_module, "driver", acknowledgement_lost_once)
    written = await batches_for(db.dialect).record(
        db, now=clock.now(), owner=TOKEN, outcomes=outcomes, attempts=attempts
    )

    assert tries == 2 and written == 0  # the retry found nothing left to write...
    assert await _attempt_count(db) == 3  # ...and added no attempt rows
