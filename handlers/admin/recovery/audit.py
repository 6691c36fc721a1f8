"""Audit: the latest transaction_log entries, newest first, paginated, filtered by a person
(what they did, or had done to them) or by a request. Read-only."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.admin.recovery.callbacks import Nav
from handlers.admin.recovery.screens import Screen, back, button, show, when
from services.people import AuditEntry, People

SECTION = "audit"
AUDIT_PAGE = 10


class AuditPage(CallbackData, prefix="rpl"):
    """Page `page` of the audit: everything (`by` ""), or of person (`by` "p") or request
    (`by` "r") number `ref`."""

    page: int
    by: str = ""
    ref: int = 0

    @classmethod
    def of(cls, page: int, person: int = 0, request: int = 0) -> AuditPage:
        if person:
            return cls(page=page, by="p", ref=person)
        if request:
            return cls(page=page, by="r", ref=request)
        return cls(page=page)


class AuditFilter(CallbackData, prefix="rpf"):
    """Ask for a person ("person") or a request number ("request") to filter by."""

    field: str


class AuditInput(StatesGroup):
    person = State()
    request = State()


def _entry(e: AuditEntry, timezone: str) -> str:
    actor = _("by #{id}").format(id=e.actor_id) if e.actor_id is not None else _("by the system")
    outcome = "" if e.outcome == "ok" else f" [{e.outcome}]"
    detail = f" — {e.detail[:80]}" if e.detail else ""
    return (f"{when(e.at, timezone)} {e.operation} {e.entity_type}#{e.entity_id} "
            f"{actor}{outcome}{detail}")


async def audit_screen(people: People, settings: Settings, page: int, person: int,
                       request: int) -> Screen:
    page = max(page, 0)
    rows = await people.audit_entries(person_id=person or None, request_id=request or None,
                                      limit=AUDIT_PAGE + 1, offset=page * AUDIT_PAGE)
    more, rows = len(rows) > AUDIT_PAGE, rows[:AUDIT_PAGE]
    if person:
        title = _("Audit of person #{id}").format(id=person)
    elif request:
        title = _("Audit of request #{id}").format(id=request)
    else:
        title = _("Audit: the latest changes")
    shown = _("page {n}").format(n=page + 1)
    lines = [f"{title} ({shown})", ""]
    lines += [_entry(e, settings.timezone) for e in rows] or [_("Nothing recorded.")]
    screen = Screen("\n".join(lines))
    nav = []
    if page > 0:
        nav.append(button("‹", AuditPage.of(page - 1, person, request)))
    if more:
        nav.append(button("›", AuditPage.of(page + 1, person, request)))
    if nav:
        screen.rows.append(nav)
    screen.rows.append([button(_("By person…"), AuditFilter(field="person")),
                        button(_("By request…"), AuditFilter(field="request"))])
    if person or request:
        screen.button(_("All entries"), AuditPage(page=0))
    if person:
        screen.rows.append(back(Nav(section="people", item=person)))
    else:
        screen.rows.append(back())
    return screen


async def open_audit(query: CallbackQuery, state: FSMContext, people: People,
                     settings: Settings) -> None:
    await state.set_state(None)
    await show(query, await audit_screen(people, settings, 0, 0, 0))


async def open_page(query: CallbackQuery, callback_data: AuditPage, people: People,
                    settings: Settings) -> None:
    ref = callback_data.ref
    await show(query, await audit_screen(
        people, settings, callback_data.page, ref if callback_data.by == "p" else 0,
        ref if callback_data.by == "r" else 0))


async def ask_filter(query: CallbackQuery, callback_data: AuditFilter,
                     state: FSMContext) -> None:
    if callback_data.field == "person":
        await state.set_state(AuditInput.person)
        text = _("Send a name, an @username, a Telegram id or the last digits of a phone "
                 "number.")
    else:
        await state.set_state(AuditInput.request)
        text = _("Send the request's number.")
    screen = Screen(text)
    screen.rows.append(back(Nav(section=SECTION)))
    await show(query, screen)


async def typed_person(message: Message, state: FSMContext, people: People,
                       settings: Settings) -> None:
    await state.set_state(None)
    found = await people.find(message.text or "")
    if len(found) == 1:
        await show(message, await audit_screen(people, settings, 0, found[0].id, 0))
        return
    screen = Screen(_("Found {count}:").format(count=len(found)) if found else
                    _("Nobody matches {query}.").format(query=(message.text or "")[:64]))
    for p in found:
        screen.button(p.label, AuditPage.of(0, person=p.id))
    screen.rows.append(back(Nav(section=SECTION)))
    await show(message, screen)


async def typed_request(message: Message, state: FSMContext, people: People,
                        settings: Settings) -> None:
    await state.set_state(None)
    text = (message.text or "").strip().lstrip("#")
    if not text.isdigit() or len(text) > 18:
        screen = Screen(_("This value is not valid."))
        screen.rows.append(back(Nav(section=SECTION)))
        await show(message, screen)
        return
    await show(message, await audit_screen(people, settings, 0, 0, int(text)))


def setup() -> Router:
    router = Router(name="recovery-audit")
    router.callback_query.register(open_audit, Nav.filter(F.section == SECTION))
    router.callback_query.register(open_page, AuditPage.filter())
    router.callback_query.register(ask_filter, AuditFilter.filter())
    router.message.register(typed_person, StateFilter(AuditInput.person), F.text,
                            ~F.text.startswith("/"))
    router.message.register(typed_request, StateFilter(AuditInput.request), F.text,
                            ~F.text.startswith("/"))
    return router
