"""Manual tasks: what a person must do when no channel could deliver (call the customer, say).

A task stays open until an admin closes it with a note; the note and who closed it are kept,
and the close is in the audit trail. The admin menus list open tasks, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import ManualTask
from services import audit
from services.clock import Clock
from services.masking import mask_text

MAX_NOTE = 2000


class TaskNotFound(LookupError):
    pass


class InvalidNote(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TaskView:
    id: int
    kind: str
    text: str
    status: str
    created_at: datetime
    notification_id: int | None
    user_id: int | None
    note: str | None

    @classmethod
    def of(cls, task: ManualTask) -> TaskView:
        return cls(task.id, task.kind, task.text, task.status, task.created_at,
                   task.notification_id, task.user_id, task.note)


async def list_open(
    session: AsyncSession, *, limit: int = 20, offset: int = 0
) -> tuple[list[TaskView], int]:
    """One page of open tasks, oldest first, and how many are open in all."""
    open_tasks = select(ManualTask).where(ManualTask.status == "open")
    total = await session.scalar(select(func.count()).select_from(open_tasks.subquery())) or 0
    rows = await session.scalars(
        open_tasks.order_by(ManualTask.created_at, ManualTask.id).limit(limit).offset(offset)
    )
    return [TaskView.of(t) for t in rows], total


async def close(
    session: AsyncSession, task_id: int, *, note: str, actor_id: int, now: datetime
) -> TaskView:
    """Close an open task with the admin's note; closing a closed task changes nothing."""
    note = note.strip()
    if not note:
        raise InvalidNote("say what was done")
    if len(note) > MAX_NOTE:
        raise InvalidNote(f"at most {MAX_NOTE} characters")
    task = await session.get(ManualTask, task_id, with_for_update=True)
    if task is None:
        raise TaskNotFound(task_id)
    if task.status != "open":
        return TaskView.of(task)
    task.status, task.note, task.closed_by, task.closed_at = "closed", note, actor_id, now
    audit.record(
        session, operation="manual_task.close", entity_type="manual_task", entity_id=task.id,
        before={"status": "open"}, after={"status": "closed", "note": note},
        actor_id=actor_id, at=now,
    )
    return TaskView.of(task)


# --- the Manual tasks screen (/workflow_recovery) ------------------------------------------------


async def get(session: AsyncSession, task_id: int) -> TaskView | None:
    task = await session.get(ManualTask, task_id, populate_existing=True)
    return TaskView.of(task) if task is not None else None


async def reveal(session: AsyncSession, task_id: int, *, actor_id: int, now: datetime
                 ) -> TaskView:
    """The task with its contact details in the clear, for `actor_id`; the look is audited."""
    task = await session.get(ManualTask, task_id)
    if task is None:
        raise TaskNotFound(task_id)
    audit.record(
        session, operation="manual_task.reveal", entity_type="manual_task", entity_id=task.id,
        actor_id=actor_id, at=now,
    )
    return TaskView.of(task)


class ManualTasks:
    """What the Manual tasks screen calls (aiogram DI: `manual_tasks`); one unit of work each.
    Text leaves here masked (phones, e-mail addresses) unless revealed, which is audited."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def list_open(self, *, limit: int, offset: int = 0) -> tuple[list[TaskView], int]:
        tasks, total = await self.db.read(lambda s: list_open(s, limit=limit, offset=offset))
        return [_masked(t) for t in tasks], total

    async def get(self, task_id: int) -> TaskView | None:
        task = await self.db.read(lambda s: get(s, task_id))
        return _masked(task) if task is not None else None

    async def reveal(self, task_id: int, *, actor_id: int) -> TaskView:
        """Raises TaskNotFound."""
        now = self.clock.now()
        return await self.db.run(lambda s: reveal(s, task_id, actor_id=actor_id, now=now))

    async def close(self, task_id: int, *, note: str, actor_id: int) -> TaskView:
        """Raises TaskNotFound, InvalidNote."""
        now = self.clock.now()
        task = await self.db.run(
            lambda s: close(s, task_id, note=note, actor_id=actor_id, now=now))
        return _masked(task)


def _masked(task: TaskView) -> TaskView:
    return replace(task, text=mask_text(task.text, limit=len(task.text) + 100))
