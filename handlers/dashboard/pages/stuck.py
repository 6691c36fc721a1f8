"""Stuck workflows: ESCALATED requests first, then those past their state's threshold, oldest
first, a page at a time; a request's detail with its history and its recovery log; Force to
the next state, Reset to the previous one, Complete and Reassign (to a provider who can take
it), each with a reason (the menu's presets or typed), through WorkflowRecovery.act with the
version the page showed, as the Stuck workflows menu does: a request that moved meanwhile is
refused (StaleVersion) and the page shows it as it is now."""

from __future__ import annotations

from aiogram.utils.i18n import gettext as _
from aiohttp import web

from handlers.admin.recovery.stuck import HISTORY_SHOWN, REASONS
from handlers.dashboard.common import admin, form, redirect, render, service
from handlers.dashboard.pages.reasons import PAGE_SIZE, Pager, choices, page_of, reason_of
from services.workflow import Action, WorkflowError
from services.workflow.recovery import WorkflowRecovery

routes = web.RouteTableDef()

PAGE = "/admin/stuck"
# The URL's action -> the recovery action (the menu's ops wf.next, wf.reset, wf.done,
# wf.reassign).
ACTIONS = {"force": Action.FORCE_NEXT, "reset": Action.RESET_PREVIOUS,
           "complete": Action.FORCE_COMPLETE, "reassign": Action.REASSIGN}
_NAME_OF = {action: name for name, action in ACTIONS.items()}


def _service(request: web.Request) -> WorkflowRecovery:
    recovery: WorkflowRecovery = service(request, "workflow_recovery")
    return recovery


def _labels() -> dict[Action, str]:
    return {
        Action.FORCE_NEXT: _("Force to the next state"),
        Action.RESET_PREVIOUS: _("Reset to the previous state"),
        Action.FORCE_COMPLETE: _("Complete"),
        Action.REASSIGN: _("Reassign"),
    }


@routes.get(PAGE)
async def stuck(request: web.Request) -> web.Response:
    recovery = _service(request)
    page = page_of(request.query)
    result = await recovery.stuck(page=page, size=PAGE_SIZE)
    pager = Pager(page, result.total)
    if page and not result.items and result.total:
        pager = Pager(pager.pages - 1, result.total)
        result = await recovery.stuck(page=pager.page, size=PAGE_SIZE)
    return render(request, "stuck.html", {
        "items": result.items, "total": result.total, "pager": pager,
        "page_url": lambda n: f"{PAGE}?page={n}" if n else PAGE,
    })


def _detail_url(request_id: int) -> str:
    return f"{PAGE}/{request_id}"


@routes.get(PAGE + r"/{id:\d+}")
async def detail(request: web.Request) -> web.Response:
    request_id = int(request.match_info["id"])
    recovery = _service(request)
    try:
        found = await recovery.detail(request_id)
    except WorkflowError as exc:
        raise redirect(request, PAGE, _(exc.user_message).format(**exc.params),
                       kind="error") from None
    labels = _labels()
    actions = [{"name": _NAME_OF[a], "label": labels[a]} for a in found.stuck.recovery_actions]
    providers = (await recovery.providers(request_id)
                 if Action.REASSIGN in found.stuck.recovery_actions else [])
    return render(request, "stuck_detail.html", {
        "found": found, "view": found.stuck.request, "actions": actions,
        "providers": providers, "reasons": choices(REASONS),
        "transitions": found.history.transitions[-HISTORY_SHOWN * 5:],
        "log": await recovery.log(request_id),
    })


@routes.post(PAGE + r"/{id:\d+}/{action:force|reset|complete|reassign}")
async def act(request: web.Request) -> web.Response:
    request_id = int(request.match_info["id"])
    action = ACTIONS[request.match_info["action"]]
    data = await form(request)
    back = _detail_url(request_id)
    version = data.get("version", "")
    if not version.isdigit():
        raise redirect(request, back, _("This page is out of date; here it is now."),
                       kind="error")
    reason = reason_of(data, REASONS)
    if reason is None:
        raise redirect(request, back, _("Say why: pick a reason or type one."), kind="error")
    provider_id = None
    if action is Action.REASSIGN:
        provider = data.get("provider", "")
        if not provider.isdigit():
            raise redirect(request, back, _("Pick the provider to reassign it to."),
                           kind="error")
        provider_id = int(provider)
    try:
        before, after = await _service(request).act(
            request_id, action, admin(request), seen_version=int(version), reason=reason,
            provider_id=provider_id,
        )
    except WorkflowError as exc:  # StaleVersion, InvalidTransition, ...: nothing changed
        raise redirect(request, back, _(exc.user_message).format(**exc.params),
                       kind="error") from None
    raise redirect(request, back, _("Done: {before} → {after}. The people concerned are told.")
                   .format(before=before.value, after=after.value))
