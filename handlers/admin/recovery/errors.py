"""Errors: occurrences by category and severity over the last hour, day and week, and the
latest open high and critical groups with their support codes; a group's screen resolves it."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.admin.recovery.callbacks import ErrorGroupResolve, ErrorGroupScreen, Nav
from handlers.admin.recovery.screens import Screen, back, show, when
from services.errors import ErrorRecorder
from services.users import UserView

LATEST = 8


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "-"


async def show_errors(query: CallbackQuery, error_recorder: ErrorRecorder) -> None:
    await show(query, await _errors_screen(error_recorder))


async def _errors_screen(error_recorder: ErrorRecorder) -> Screen:
    stats = await error_recorder.statistics()
    lines = [_("Errors by severity and by category:")]
    for window, label in (("1h", _("1 hour")), ("24h", _("24 hours")), ("7d", _("7 days"))):
        lines.append(_("{window}: {total}; severity: {severities}; category: {categories}")
                     .format(window=label, total=stats.total(window),
                             severities=_counts(stats.by_severity(window)),
                             categories=_counts(stats.by_category(window))))
    latest = await error_recorder.latest_serious(limit=LATEST)
    lines += ["", _("Latest open high and critical errors:") if latest
              else _("No open high or critical error.")]
    screen = Screen("\n".join(lines))
    for group, code in latest:
        screen.button(f"{code or '-'} {group.severity} {group.category} {group.exception_type}",
                      ErrorGroupScreen(group=group.id))
    screen.rows.append(back())
    return screen


async def _group_screen(error_recorder: ErrorRecorder, group_id: int, timezone: str,
                        notice: str | None = None) -> Screen | None:
    found = {g.id: (g, c) for g, c in await error_recorder.latest_serious(limit=200)}
    if group_id not in found:
        return None
    group, code = found[group_id]
    lines = [notice, ""] if notice else []
    lines += [
        _("Support code {code}: {type} at {place}").format(
            code=code or "-", type=group.exception_type, place=group.place),
        _("Category: {category}; severity: {severity}").format(
            category=group.category, severity=group.severity),
        _("Seen {count} time(s), first {first}, last {last}").format(
            count=group.count, first=when(group.first_seen, timezone),
            last=when(group.last_seen, timezone)),
        "", group.message[:1500],
    ]
    screen = Screen("\n".join(lines))
    screen.button(_("Resolve"), ErrorGroupResolve(group=group.id))
    screen.rows.append(back(Nav(section="err")))
    return screen


async def show_group(query: CallbackQuery, callback_data: ErrorGroupScreen,
                     error_recorder: ErrorRecorder, settings: Settings) -> None:
    screen = await _group_screen(error_recorder, callback_data.group, settings.timezone)
    if screen is None:  # resolved meanwhile, or gone: the list as it is now
        await show_errors(query, error_recorder)
        return
    await show(query, screen)


async def resolve(query: CallbackQuery, callback_data: ErrorGroupResolve,
                  error_recorder: ErrorRecorder, user: UserView) -> None:
    group = await error_recorder.resolve(callback_data.group, actor_id=user.id)
    if group is None:
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    notice = _("Marked resolved: {count} occurrence(s) of {type}.").format(
        count=group.count, type=group.exception_type)
    await show(query, await _errors_screen(error_recorder), notice=notice)


def setup() -> Router:
    router = Router(name="recovery-errors")
    router.callback_query.register(show_errors, Nav.filter(F.section == "err"))
    router.callback_query.register(show_group, ErrorGroupScreen.filter())
    router.callback_query.register(resolve, ErrorGroupResolve.filter())
    return router
