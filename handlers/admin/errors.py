"""/error CODE: the occurrence behind a support code and its group, with a Resolve button; the
button on an error alert opens the same screen. /error alone: counts of the last hour, day and
week. Admin rights are checked by the admin router's guard on every command and press."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.buttons import OpenError, ResolveError
from services.errors import ErrorRecorder, ErrorStatistics, OccurrenceView
from services.users import UserView

_STACK_SHOWN = 1500  # the end of the stack: a screen stays under Telegram's 4096 characters


async def show_error(
    message: Message, command: CommandObject, error_recorder: ErrorRecorder, settings: Settings
) -> None:
    code = (command.args or "").strip()
    if not code:
        stats = await error_recorder.statistics()
        await message.answer(render_statistics(stats), parse_mode=None)
        return
    view = await error_recorder.find(code)
    if view is None:
        await message.answer(_("No error has the support code {code}.").format(code=code[:16]),
                             parse_mode=None)
        return
    await message.answer(render(view, settings.timezone), reply_markup=_keyboard(view),
                         parse_mode=None)


async def open_error(
    query: CallbackQuery, callback_data: OpenError, error_recorder: ErrorRecorder,
    settings: Settings,
) -> None:
    view = await error_recorder.occurrence(callback_data.occurrence)
    if view is None:
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    await query.answer()
    if query.message is not None:
        await query.message.answer(render(view, settings.timezone), reply_markup=_keyboard(view),
                                   parse_mode=None)


async def resolve_error(
    query: CallbackQuery, callback_data: ResolveError, error_recorder: ErrorRecorder,
    user: UserView,
) -> None:
    group = await error_recorder.resolve(callback_data.group, actor_id=user.id)
    if group is None:
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    await query.answer(_("Marked resolved: {count} occurrence(s) of {type}.").format(
        count=group.count, type=group.exception_type), show_alert=True)
    if query.message is not None and hasattr(query.message, "edit_reply_markup"):
        await query.message.edit_reply_markup(reply_markup=None)


def render(view: OccurrenceView, timezone: str) -> str:
    group, context = view.group, view.context
    zone = ZoneInfo(timezone)

    def when(at: datetime | None) -> str:
        return at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z") if at else "-"

    if group.resolved:
        status = _("resolved by user {user} at {at}").format(
            user=group.resolved_by, at=when(group.resolved_at))
    else:
        status = _("open")
    details = ", ".join(f"{name}={value}" for name, value in context.as_dict().items()) or "-"
    stack = group.stack if len(group.stack) <= _STACK_SHOWN else "…" + group.stack[-_STACK_SHOWN:]
    return "\n".join([  # Telegram takes 4096 characters at most
        _("Support code {code}, {at}").format(code=view.code, at=when(view.at)),
        _("Category: {category}; severity: {severity}; status: {status}").format(
            category=group.category, severity=group.severity, status=status),
        _("Seen {count} time(s), first {first}, last {last}").format(
            count=group.count, first=when(group.first_seen), last=when(group.last_seen)),
        _("Where: {place}").format(place=group.place),
        _("Context: {context}").format(context=details),
        "",
        group.message,
        "",
        _("Latest stack:"),
        stack,
    ])[:4096]


def render_statistics(stats: ErrorStatistics) -> str:
    lines = [_("Errors in the last hour, day and week (use /error CODE to open one):")]
    for window, label in (("1h", _("1 hour")), ("24h", _("24 hours")), ("7d", _("7 days"))):
        by_category = ", ".join(
            f"{category} {count}" for category, count in sorted(stats.by_category(window).items())
        )
        suffix = f" ({by_category})" if by_category else ""
        lines.append(f"{label}: {stats.total(window)}{suffix}")
    if stats.spooled or stats.dropped:
        lines.append(_("Waiting for the database: {spooled}; dropped: {dropped}").format(
            spooled=stats.spooled, dropped=stats.dropped))
    return "\n".join(lines)


def _keyboard(view: OccurrenceView) -> InlineKeyboardMarkup | None:
    if view.group.resolved:
        return None
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(
        text=_("Resolve"), callback_data=ResolveError(group=view.group.id).pack())]])


def setup() -> Router:
    router = Router(name="admin-errors")
    router.message.register(show_error, Command("error"))
    router.callback_query.register(open_error, OpenError.filter())
    router.callback_query.register(resolve_error, ResolveError.filter())
    return router
