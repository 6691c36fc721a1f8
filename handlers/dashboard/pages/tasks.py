"""Manual tasks: the open ones, oldest first, with what to do, masked as the Manual tasks menu
shows them; Reveal shows one task's contact details in the clear (audited, as in the menu) and
Close closes it with a note (one of the menu's presets or typed). Through ManualTasks, the
menu's service. A task closed meanwhile is said, and nothing is done."""

from __future__ import annotations

from aiogram.utils.i18n import gettext as _
from aiohttp import web

from handlers.admin.recovery.tasks import NOTES
from handlers.dashboard.common import actor_id, form, redirect, render, service
from handlers.dashboard.pages.reasons import PAGE_SIZE, Pager, choices, page_of, reason_of
from services.notifications.manual_tasks import InvalidNote, ManualTasks, TaskNotFound

routes = web.RouteTableDef()

PAGE = "/admin/tasks"


def _service(request: web.Request) -> ManualTasks:
    tasks: ManualTasks = service(request, "manual_tasks")
    return tasks


@routes.get(PAGE)
async def tasks(request: web.Request) -> web.Response:
    manual_tasks = _service(request)
    page = page_of(request.query)
    items, total = await manual_tasks.list_open(limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    pager = Pager(page, total)
    if page and not items and total:
        pager = Pager(pager.pages - 1, total)
        items, total = await manual_tasks.list_open(limit=pager.size, offset=pager.offset)
    return render(request, "tasks.html", {
        "tasks": items, "total": total, "pager": pager, "notes": choices(NOTES),
        "page_url": lambda n: f"{PAGE}?page={n}" if n else PAGE, "revealed": None,
    })


@routes.post(PAGE + r"/{id:\d+}/reveal")
async def reveal(request: web.Request) -> web.Response:
    """The task in the clear, on a page of its own (answered directly: the look is the
    action, and it is audited; reloading looks again)."""
    task_id = int(request.match_info["id"])
    current = await _service(request).get(task_id)
    if current is None or current.status != "open":
        raise redirect(request, PAGE, _("This task is already closed."), kind="error")
    try:
        task = await _service(request).reveal(task_id, actor_id=actor_id(request))
    except TaskNotFound:
        raise redirect(request, PAGE, _("This task no longer exists."), kind="error") from None
    return render(request, "tasks.html", {
        "tasks": [task], "total": 1, "pager": Pager(0, 1), "notes": choices(NOTES),
        "page_url": lambda n: PAGE, "revealed": task.id,
    })


@routes.post(PAGE + r"/{id:\d+}/close")
async def close(request: web.Request) -> web.Response:
    task_id = int(request.match_info["id"])
    manual_tasks = _service(request)
    current = await manual_tasks.get(task_id)
    if current is None:
        raise redirect(request, PAGE, _("This task no longer exists."), kind="error")
    if current.status != "open":
        raise redirect(request, PAGE, _("This task is already closed."), kind="error")
    note = reason_of(await form(request), NOTES)
    if note is None:
        raise redirect(request, PAGE, _("Say what was done: pick a note or type one."),
                       kind="error")
    try:
        await manual_tasks.close(task_id, note=note, actor_id=actor_id(request))
    except (TaskNotFound, InvalidNote):
        raise redirect(request, PAGE, _("This task cannot be closed."), kind="error") from None
    raise redirect(request, PAGE, _("Manual task #{id} closed.").format(id=task_id))
