"""Manual tasks are listed oldest first and closed once, with a note, in the audit trail."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from database.engine import Database
from database.models import ManualTask, TransactionLog
from services.clock import FakeClock
from services.notifications import manual_tasks
from tests.support import make_user


async def _task(db: Database, clock: FakeClock, text: str) -> int:
    async def work(session) -> int:
        task = ManualTask(kind="request.update", text=text, status="open",
                          created_at=clock.now())
        session.add(task)
        await session.flush()
        return task.id

    return await db.run(work)


async def test_open_tasks_are_listed_oldest_first_and_closed_with_a_note(db: Database) -> None:
    clock = FakeClock()
    admin = await make_user(db, clock, telegram_id=9000, roles="requester,admin")
    first = await _task(db, clock, "call Ann")
    clock.advance(60)
    second = await _task(db, clock, "call Bob")

    page, total = await db.run(lambda s: manual_tasks.list_open(s, limit=1))
    assert total == 2 and [t.id for t in page] == [first]

    closed = await db.run(lambda s: manual_tasks.close(
        s, first, note="Called, she confirmed 14:00 ✅", actor_id=admin, now=clock.now()))
    assert closed.status == "closed" and closed.note == "Called, she confirmed 14:00 ✅"
    page, total = await db.run(lambda s: manual_tasks.list_open(s))
    assert total == 1 and [t.id for t in page] == [second]

    again = await db.run(lambda s: manual_tasks.close(
        s, first, note="second close", actor_id=admin, now=clock.now()))
    assert again.note == "Called, she confirmed 14:00 ✅"  # closing twice changes nothing
    async with db.transaction() as session:
        entries = (await session.scalars(select(TransactionLog).where(
            TransactionLog.operation == "manual_task.close"))).all()
    assert len(entries) == 1 and entries[0].actor_id == admin


@pytest.mark.parametrize("note", ["", "   ", "x" * 2001])
async def test_an_empty_or_oversized_note_is_refused_and_changes_nothing(
    db: Database, note: str
) -> None:
    clock = FakeClock()
    task = await _task(db, clock, "call Ann")
    with pytest.raises(manual_tasks.InvalidNote):
        await db.run(lambda s: manual_tasks.close(s, task, note=note, actor_id=1,
                                                  now=clock.now()))
    _, total = await db.run(lambda s: manual_tasks.list_open(s))
    assert total == 1


async def test_closing_an_unknown_task_says_so(db: Database) -> None:
    with pytest.raises(manual_tasks.TaskNotFound):
        await db.run(lambda s: manual_tasks.close(s, 999, note="done", actor_id=1,
                                                  now=FakeClock().now()))
