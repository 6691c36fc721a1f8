"""Stuck workflows: ESCALATED requests first, then those past their state's threshold, oldest
first; a request's detail with its history and the recovery actions (force to the next state,
reset to the previous one, complete, reassign), each confirmed with a reason and applied on
the version the screen showed."""

from __future__ import annotations

from typing import Any

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.admin.recovery import confirm
from handlers.admin.recovery.callbacks import Ask, Nav, Stuck
from handlers.admin.recovery.screens import (
    PAGE_SIZE,
    Screen,
    back,
    button,
    clamp,
    pager,
    show,
    when,
)
from handlers.times import duration
from services.localization import N_
from services.workflow import Action, StaleVersion, WorkflowError
from services.workflow.recovery import StuckDetail, WorkflowRecovery
from services.workflow.views import StuckView

HISTORY_SHOWN = 10

OPS = {"wf.next": Action.FORCE_NEXT, "wf.reset": Action.RESET_PREVIOUS,
       "wf.done": Action.FORCE_COMPLETE, "wf.reassign": Action.REASSIGN}
_OP_OF = {action: op for op, action in OPS.items()}

REASONS = (
    N_("The provider finished but did not record it"),
    N_("The provider cannot be reached"),
    N_("The customer asked for it"),
    N_("Fixing a mistake"),
)


def _line(item: StuckView) -> str:
    r = item.request
    return f"#{r.id} {r.state.value} · {duration(item.stuck_for_seconds)}"


async def show_list(query: CallbackQuery, callback_data: Nav,
                    workflow_recovery: WorkflowRecovery) -> None:
    result = await workflow_recovery.stuck(page=callback_data.page, size=PAGE_SIZE)
    page = clamp(callback_data.page, result.total)
    if page != callback_data.page:
        result = await workflow_recovery.stuck(page=page, size=PAGE_SIZE)
    screen = Screen(_("Stuck workflows: {count}. Escalated first, then the longest waiting.")
                    .format(count=result.total) if result.total
                    else _("No stuck workflow: every request is moving."))
    for item in result.items:
        screen.button(_line(item), Stuck(request=item.request.id, page=page))
    row = pager(page, result.total, lambda p: Nav(section="stuck", page=p))
    if row:
        screen.rows.append(row)
    screen.rows.append(back())
    return await show(query, screen)


def render_detail(found: StuckDetail, timezone: str, page: int = 0,
                  notice: str | None = None) -> Screen:
    view = found.stuck.request
    lines = [notice, ""] if notice else []
    lines += [
        _("Request #{id} ({service}, {area}), version {version}").format(
            id=view.id, service=view.service_type.name_en, area=view.area.name_en,
            version=view.version),
        _("State: {state}; acting role: {role}").format(
            state=view.state.value, role=view.acting_role.value if view.acting_role else "-"),
        _("Requester: {name}").format(name=view.requester_name),
        _("Assignee: {name}").format(name=view.assignee_name or "-"),
        _("In this state for {stuck} (threshold {threshold}), since {at}").format(
            stuck=duration(found.stuck.stuck_for_seconds),
            threshold=duration(found.threshold_seconds) if found.threshold_seconds else "-",
            at=when(view.state_entered_at, timezone)),
        "",
        _("History:"),
    ]
    transitions = found.history.transitions[-HISTORY_SHOWN:]
    for t in transitions:
        who = t.actor_name or _("the bot")
        why = f": {t.reason}" if t.reason else ""
        lines.append(f"{when(t.at, timezone)} {t.from_state.value} → {t.to_state.value} "
                     f"({t.action}, {who}){why}")
    if not transitions:
        lines.append("-")
    screen = Screen("\n".join(lines))
    labels = {
        Action.FORCE_NEXT: _("Force to the next state"),
        Action.RESET_PREVIOUS: _("Reset to the previous state"),
        Action.FORCE_COMPLETE: _("Complete"),
        Action.REASSIGN: _("Reassign"),
    }
    for action in found.stuck.recovery_actions:
        screen.button(labels[action], Ask(op=_OP_OF[action], target=view.id,
                                          version=view.version))
    screen.rows.append([button(_("Refresh"), Stuck(request=view.id, page=page))])
    screen.rows.append(back(Nav(section="stuck", page=page)))
    return screen


async def show_detail(query: CallbackQuery, callback_data: Stuck,
                      workflow_recovery: WorkflowRecovery, settings: Settings) -> None:
    try:
        found = await workflow_recovery.detail(callback_data.request)
    except WorkflowError as exc:
        await query.answer(_(exc.user_message).format(**exc.params), show_alert=True)
        return
    await show(query, render_detail(found, settings.timezone, callback_data.page))


async def _question(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    recovery: WorkflowRecovery = data["workflow_recovery"]
    found = await recovery.detail(pending.target)
    view, action = found.stuck.request, OPS[pending.op]
    if view.version != pending.version or action not in found.stuck.recovery_actions:
        return render_detail(found, data["settings"].timezone)
    if action is Action.REASSIGN:
        if pending.arg is None:
            return _("Reassign request #{id} (now: {name}) to whom?").format(
                id=view.id, name=view.assignee_name or "-")
        providers = {p.id: p for p in await recovery.providers(view.id)}
        chosen = providers.get(pending.arg)
        name = chosen.display_name if chosen else "?"
        return _("Reassign request #{id} from {old} to {new}?").format(
            id=view.id, old=view.assignee_name or "-", new=name)
    questions = {
        Action.FORCE_NEXT: N_("Force request #{id} from {state} to the next state?"),
        Action.RESET_PREVIOUS: N_("Reset request #{id} from {state} to the previous state?"),
        Action.FORCE_COMPLETE: N_("Complete request #{id} (now {state}) as confirmed?"),
    }
    return _(questions[action]).format(id=view.id, state=view.state.value)


async def _providers(pending: confirm.Pending, data: dict[str, Any]) -> list[tuple[str, int]]:
    recovery: WorkflowRecovery = data["workflow_recovery"]
    return [(f"{p.display_name} ({p.active_jobs}/{p.capacity})", p.id)
            for p in await recovery.providers(pending.target)]


async def _run(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    recovery: WorkflowRecovery = data["workflow_recovery"]
    timezone = data["settings"].timezone
    try:
        before, after = await recovery.act(
            pending.target, OPS[pending.op], data["user"], seen_version=pending.version,
            reason=reason, provider_id=pending.arg,
        )
    except StaleVersion as exc:
        notice = _(exc.user_message).format(**exc.params)
    except WorkflowError as exc:
        notice = _(exc.user_message).format(**exc.params)
    else:
        notice = _("Done: {before} → {after}. The people concerned are told.").format(
            before=before.value, after=after.value)
    return render_detail(await recovery.detail(pending.target), timezone, notice=notice)


def _back(pending: confirm.Pending) -> Stuck:
    return Stuck(request=pending.target)


def setup() -> Router:
    for op, action in OPS.items():
        confirm.register(confirm.Destructive(
            op=op, reasons=REASONS, question=_question, run=_run, back=_back,
            choices=_providers if action is Action.REASSIGN else None,
        ))
    router = Router(name="recovery-stuck")
    router.callback_query.register(show_list, Nav.filter(F.section == "stuck"))
    router.callback_query.register(show_detail, Stuck.filter())
    return router
