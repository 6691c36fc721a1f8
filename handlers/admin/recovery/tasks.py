"""Manual tasks: the open ones, oldest first, with what to do; the recipient's contact is
masked until an admin reveals it (the look is audited); Close asks for a note (the reason
flow: a preset or one typed)."""

from __future__ import annotations

from typing import Any

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.admin.recovery import confirm
from handlers.admin.recovery.callbacks import Ask, Nav, Task
from handlers.admin.recovery.screens import (
    PAGE_SIZE,
    Screen,
    back,
    clamp,
    pager,
    show,
    when,
)
from services.localization import N_
from services.notifications.manual_tasks import (
    InvalidNote,
    ManualTasks,
    TaskNotFound,
    TaskView,
)

NOTES = (
    N_("Called the customer and told them"),
    N_("Could not reach the customer"),
    N_("No longer needed"),
)


async def show_list(query: CallbackQuery, callback_data: Nav, manual_tasks: ManualTasks) -> None:
    page = callback_data.page
    tasks, total = await manual_tasks.list_open(limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    if page != clamp(page, total):
        page = clamp(page, total)
        tasks, total = await manual_tasks.list_open(limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    screen = Screen(_("Open manual tasks: {count}, oldest first.").format(count=total)
                    if total else _("No open manual task."))
    for task in tasks:
        screen.button(f"#{task.id} {task.kind}", Task(task=task.id))
    row = pager(page, total, lambda p: Nav(section="tasks", page=p))
    if row:
        screen.rows.append(row)
    screen.rows.append(back())
    await show(query, screen)


def _task_screen(task: TaskView, timezone: str, *, revealed: bool,
                 notice: str | None = None) -> Screen:
    lines = [notice, ""] if notice else []
    lines += [_("Manual task #{id} ({kind}), opened {at}, {status}").format(
        id=task.id, kind=task.kind, at=when(task.created_at, timezone), status=task.status), ""]
    lines.append(task.text)
    if task.note:
        lines += ["", _("Note: {note}").format(note=task.note)]
    screen = Screen("\n".join(lines))
    if task.status == "open":
        if not revealed:
            screen.button(_("Reveal the contact"), Task(task=task.id, reveal=1))
        screen.button(_("Close with a note"), Ask(op="task.close", target=task.id))
    screen.rows.append(back(Nav(section="tasks")))
    return screen


async def show_task(query: CallbackQuery, callback_data: Task, manual_tasks: ManualTasks,
                    settings: Settings, **data: Any) -> None:
    try:
        if callback_data.reveal:
            task = await manual_tasks.reveal(callback_data.task, actor_id=data["user"].id)
        else:
            found = await manual_tasks.get(callback_data.task)
            if found is None:
                raise TaskNotFound(callback_data.task)
            task = found
    except TaskNotFound:
        await query.answer(_("This task no longer exists."), show_alert=True)
        return
    await show(query, _task_screen(task, settings.timezone, revealed=bool(callback_data.reveal)))


async def _ask_close(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    tasks: ManualTasks = data["manual_tasks"]
    task = await tasks.get(pending.target)
    if task is None or task.status != "open":
        screen = Screen(_("This task is already closed."))
        screen.rows.append(back(Nav(section="tasks")))
        return screen
    return _("Close manual task #{id}? Say what was done.").format(id=task.id)


async def _close(pending: confirm.Pending, note: str, data: dict[str, Any]) -> Screen:
    tasks: ManualTasks = data["manual_tasks"]
    try:
        task = await tasks.close(pending.target, note=note, actor_id=data["user"].id)
    except (TaskNotFound, InvalidNote):
        screen = Screen(_("This task cannot be closed."))
        screen.rows.append(back(Nav(section="tasks")))
        return screen
    return _task_screen(task, data["settings"].timezone, revealed=False, notice=_("Closed."))


def setup() -> Router:
    confirm.register(confirm.Destructive(
        "task.close", NOTES, _ask_close, _close, lambda p: Task(task=p.target)))
    router = Router(name="recovery-tasks")
    router.callback_query.register(show_list, Nav.filter(F.section == "tasks"))
    router.callback_query.register(show_task, Task.filter())
    return router
