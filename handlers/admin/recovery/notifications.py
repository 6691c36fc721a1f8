"""Failed notifications: dead letters filtered by kind, channel and failure class, each with
its attempts; Retry, Retry all (of the filter, with the count to confirm) and Archive, each
confirmed with a reason. Channels: each one's state and circuit, pause (confirmed) and
resume. The filter is kept in the admin's FSM data: callback data is too small for a kind."""

from __future__ import annotations

from typing import Any

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.admin.recovery import confirm
from handlers.admin.recovery.callbacks import Ask, ChannelToggle, DeadFilter, DeadLetter, Nav
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
from services.localization import N_
from services.notifications.channels.base import ChannelName
from services.notifications.dead_letters import DeadLetterFilter, FailedNotifications
from services.notifications.failures import FailureClass

CHANNELS = [c.value for c in ChannelName]
CLASSES = [c.value for c in FailureClass]
_FILTER = "recovery_dead_filter"

RETRY_REASONS = (
    N_("The channel works again"),
    N_("The contact details were fixed"),
    N_("Trying once more"),
)
ARCHIVE_REASONS = (
    N_("No longer relevant"),
    N_("Handled by other means"),
    N_("Sent by mistake"),
)
PAUSE_REASONS = (
    N_("The provider has an outage"),
    N_("Messages are going wrong"),
    N_("Maintenance"),
)


async def _filter(state: FSMContext) -> DeadLetterFilter:
    raw = (await state.get_data()).get(_FILTER) or {}
    return DeadLetterFilter(raw.get("kind"), raw.get("channel"), raw.get("failure_class"))


def _describe(filters: DeadLetterFilter) -> str:
    parts = [f"{name} {value}" for name, value in (
        (_("kind"), filters.kind), (_("channel"), filters.channel),
        (_("class"), filters.failure_class)) if value is not None]
    return ", ".join(parts) if parts else _("none")


async def _list_screen(page: int, failed: FailedNotifications, state: FSMContext) -> Screen:
    filters = await _filter(state)
    items, total = await failed.list_dead(filters, limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    if page != clamp(page, total):
        page = clamp(page, total)
        items, total = await failed.list_dead(filters, limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    screen = Screen(_("Failed notifications: {count} (filter: {filter}).").format(
        count=total, filter=_describe(filters)))
    for item in items:
        screen.button(f"#{item.id} {item.kind} · {item.channel} · {item.failure_class or '-'}",
                      DeadLetter(notification=item.id, page=page))
    row = pager(page, total, lambda p: Nav(section="dead", page=p))
    if row:
        screen.rows.append(row)
    screen.rows.append([button(_("Kind…"), Nav(section="deadk")),
                        button(_("Channel…"), Nav(section="deadc")),
                        button(_("Class…"), Nav(section="deadf"))])
    if filters != DeadLetterFilter():
        screen.button(_("Clear the filter"), DeadFilter(field="clear", ref=0))
    if total:
        screen.button(_("Retry all {count}").format(count=total),
                      Ask(op="dl.retry_all", target=0, version=total))
    screen.button(_("Channels"), Nav(section="chan"))
    screen.rows.append(back())
    return screen


async def show_list(query: CallbackQuery, callback_data: Nav,
                    failed_notifications: FailedNotifications, state: FSMContext) -> None:
    await show(query, await _list_screen(callback_data.page, failed_notifications, state))


async def show_facet(query: CallbackQuery, callback_data: Nav,
                     failed_notifications: FailedNotifications) -> None:
    facets = await failed_notifications.facets()
    screen = Screen(_("Show failed notifications of which {what}?").format(
        what={"deadk": _("kind"), "deadc": _("channel"), "deadf": _("class")}[
            callback_data.section]))
    field = {"deadk": "kind", "deadc": "chan", "deadf": "cls"}[callback_data.section]
    if field == "kind":
        for kind, count, sample in facets.kinds:
            screen.button(f"{kind} ({count})", DeadFilter(field="kind", ref=sample))
    elif field == "chan":
        for channel, count in facets.channels:
            if channel in CHANNELS:
                screen.button(f"{channel} ({count})",
                              DeadFilter(field="chan", ref=CHANNELS.index(channel)))
    else:
        for failure_class, count in facets.failure_classes:
            if failure_class in CLASSES:
                screen.button(f"{failure_class} ({count})",
                              DeadFilter(field="cls", ref=CLASSES.index(failure_class)))
    screen.button(_("Any"), DeadFilter(field=field, ref=-1))
    screen.rows.append(back(Nav(section="dead")))
    await show(query, screen)


async def set_filter(query: CallbackQuery, callback_data: DeadFilter,
                     failed_notifications: FailedNotifications, state: FSMContext) -> None:
    current = await _filter(state)
    values = {"kind": current.kind, "channel": current.channel,
              "failure_class": current.failure_class}
    ref, field = callback_data.ref, callback_data.field
    if field == "clear":
        values = {}
    elif field == "kind":
        values["kind"] = None if ref < 0 else await failed_notifications.kind_of(ref)
    elif field == "chan":
        values["channel"] = CHANNELS[ref] if 0 <= ref < len(CHANNELS) else None
    elif field == "cls":
        values["failure_class"] = CLASSES[ref] if 0 <= ref < len(CLASSES) else None
    await state.update_data({_FILTER: values})
    await show(query, await _list_screen(0, failed_notifications, state))


async def _detail_screen(notification_id: int, failed: FailedNotifications, timezone: str,
                         page: int = 0, notice: str | None = None) -> Screen:
    found = await failed.detail(notification_id)
    if found is None:
        screen = Screen(_("This notification no longer exists."))
        screen.rows.append(back(Nav(section="dead", page=page)))
        return screen
    view, attempts = found
    lines = [notice, ""] if notice else []
    to = view.destination or _("user #{id}").format(id=view.recipient_id)
    lines += [
        _("Notification #{id}: {kind}, to {to}").format(id=view.id, kind=view.kind, to=to),
        _("Channels: {chain}; last tried: {channel}; attempts: {attempts}").format(
            chain=view.chain, channel=view.channel, attempts=view.attempts),
        _("Failed at {at}: {failure} {code}").format(
            at=when(view.failed_at, timezone), failure=view.failure_class or "-",
            code=view.error_code or ""),
    ]
    if view.error_text:
        lines.append(view.error_text)
    lines += ["", _("Attempts:")]
    for a in attempts:
        detail = " ".join(x for x in (a.error_class, a.error_code, a.error_text) if x)
        lines.append(f"{when(a.at, timezone)} {a.channel} {a.outcome} {detail}".rstrip())
    if not attempts:
        lines.append("-")
    screen = Screen("\n".join(lines))
    if view.dead:
        screen.rows.append([button(_("Retry"), Ask(op="dl.retry", target=view.id)),
                            button(_("Archive"), Ask(op="dl.archive", target=view.id))])
    else:
        screen.text += "\n\n" + _("No longer a dead letter (now {status}).").format(
            status=view.status)
    screen.rows.append(back(Nav(section="dead", page=page)))
    return screen


async def show_detail(query: CallbackQuery, callback_data: DeadLetter,
                      failed_notifications: FailedNotifications, settings: Settings) -> None:
    await show(query, await _detail_screen(callback_data.notification, failed_notifications,
                                           settings.timezone, callback_data.page))


# --- confirmed actions ------------------------------------------------------------------------


def _failed(data: dict[str, Any]) -> FailedNotifications:
    service: FailedNotifications = data["failed_notifications"]
    return service


async def _ask_one(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    found = await _failed(data).detail(pending.target)
    if found is None or not found[0].dead:
        return await _detail_screen(pending.target, _failed(data), data["settings"].timezone)
    view = found[0]
    question = (N_("Send notification #{id} ({kind}) again, from its first channel?")
                if pending.op == "dl.retry" else
                N_("Archive notification #{id} ({kind})? It is kept, not sent."))
    return _(question).format(id=view.id, kind=view.kind)


async def _retry_one(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    done = await _failed(data).retry_one(pending.target, actor_id=data["user"].id, reason=reason)
    notice = (_("Sent again: it is back in the queue with a fresh budget.") if done
              else _("Nothing done: it is no longer a dead letter."))
    return await _detail_screen(pending.target, _failed(data), data["settings"].timezone,
                                notice=notice)


async def _archive_one(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    done = await _failed(data).archive_one(pending.target, actor_id=data["user"].id,
                                           reason=reason)
    notice = _("Archived.") if done else _("Nothing done: it is no longer a dead letter.")
    return await _detail_screen(pending.target, _failed(data), data["settings"].timezone,
                                notice=notice)


async def _ask_all(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    filters = await _filter(data["state"])
    count = await _failed(data).count(filters)
    if count == 0:
        return await _list_screen(0, _failed(data), data["state"])
    return _("Send all {count} failed notification(s) again (filter: {filter})?").format(
        count=count, filter=_describe(filters))


async def _retry_all(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    filters = await _filter(data["state"])
    count = await _failed(data).retry_matching(filters, actor_id=data["user"].id, reason=reason)
    screen = await _list_screen(0, _failed(data), data["state"])
    screen.text = _("Sent {count} notification(s) again.").format(count=count) + "\n\n" + \
        screen.text
    return screen


# --- channels ---------------------------------------------------------------------------------


async def _channels_screen(failed: FailedNotifications, clock_now: Any,
                           notice: str | None = None) -> Screen:
    lines = [notice, ""] if notice else []
    lines.append(_("Channels:"))
    screen = Screen("")
    for view in await failed.channels():
        state = _("paused") if view.paused else _("running")
        circuit = (_("circuit open until {at}").format(at=view.circuit_open_until.strftime(
            "%H:%M")) if view.circuit(clock_now) == "open" and view.circuit_open_until
            else _("circuit closed"))
        lines.append(f"{view.name}: {state}, {circuit}")
        index = CHANNELS.index(view.name)
        if view.paused:
            screen.button(_("Resume {channel}").format(channel=view.name),
                          ChannelToggle(channel=index, pause=0))
        else:
            screen.button(_("Pause {channel}").format(channel=view.name),
                          Ask(op="ch.pause", target=index))
    screen.text = "\n".join(lines)
    screen.rows.append(back(Nav(section="dead")))
    return screen


async def show_channels(query: CallbackQuery, failed_notifications: FailedNotifications,
                        **data: Any) -> None:
    await show(query, await _channels_screen(failed_notifications, data["clock"].now()))


async def resume(query: CallbackQuery, callback_data: ChannelToggle,
                 failed_notifications: FailedNotifications, **data: Any) -> None:
    if not 0 <= callback_data.channel < len(CHANNELS) or callback_data.pause:
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    channel = CHANNELS[callback_data.channel]
    await failed_notifications.set_paused(channel, paused=False, actor_id=data["user"].id)
    await show(query, await _channels_screen(
        failed_notifications, data["clock"].now(),
        _("{channel} resumed.").format(channel=channel)))


async def _ask_pause(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    if not 0 <= pending.target < len(CHANNELS):
        return await _channels_screen(_failed(data), data["clock"].now())
    return _("Pause {channel}? Its messages wait until it is resumed.").format(
        channel=CHANNELS[pending.target])


async def _pause(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    channel = CHANNELS[pending.target]
    await _failed(data).set_paused(channel, paused=True, actor_id=data["user"].id)
    return await _channels_screen(_failed(data), data["clock"].now(),
                                  _("{channel} paused.").format(channel=channel))


def setup() -> Router:
    confirm.register(confirm.Destructive(
        "dl.retry", RETRY_REASONS, _ask_one, _retry_one,
        lambda p: DeadLetter(notification=p.target)))
    confirm.register(confirm.Destructive(
        "dl.archive", ARCHIVE_REASONS, _ask_one, _archive_one,
        lambda p: DeadLetter(notification=p.target)))
    confirm.register(confirm.Destructive(
        "dl.retry_all", RETRY_REASONS, _ask_all, _retry_all, lambda p: Nav(section="dead")))
    confirm.register(confirm.Destructive(
        "ch.pause", PAUSE_REASONS, _ask_pause, _pause, lambda p: Nav(section="chan")))
    router = Router(name="recovery-notifications")
    router.callback_query.register(show_list, Nav.filter(F.section == "dead"))
    router.callback_query.register(show_facet, Nav.filter(F.section.in_({"deadk", "deadc",
                                                                          "deadf"})))
    router.callback_query.register(set_filter, DeadFilter.filter())
    router.callback_query.register(show_detail, DeadLetter.filter())
    router.callback_query.register(show_channels, Nav.filter(F.section == "chan"))
    router.callback_query.register(resume, ChannelToggle.filter())
    return router
