"""People and catalogue (services.people): find a person, grant or revoke a role (with a
confirmation and a reason), set a provider's services, areas, capacity and availability; keep
the service types, areas (and neighbours) and stock items. `Nav(section="people")` asks for a
search; `item=<user id>` is a person's screen. An owner's admin right (ADMIN_IDS) has no
Revoke button, and a forged one is refused by the service."""

from __future__ import annotations

from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from handlers.admin.recovery import confirm
from handlers.admin.recovery.audit import AuditPage
from handlers.admin.recovery.callbacks import Ask, Nav
from handlers.admin.recovery.screens import PAGE_SIZE, Screen, back, button, clamp, pager, show
from services.errors import DomainError
from services.localization import N_
from services.people import GRANTABLE, Entry, People, PeopleError, PersonView, Role
from services.users import UserView
from services.workflow import Catalogue

SECTION = "people"
KINDS = ("service", "area", "item")
_KIND_TITLES = (N_("Service types"), N_("Areas"), N_("Stock items"))
_ROLE_NAMES = {
    Role.REQUESTER: N_("requester"), Role.PROVIDER: N_("provider"),
    Role.OPERATOR: N_("operator"), Role.WAREHOUSE: N_("warehouse"), Role.ADMIN: N_("admin"),
}
REASONS_GRANT = (N_("New staff member"), N_("Covering for a colleague"))
REASONS_REVOKE = (N_("Left the team"), N_("No longer needed"), N_("Granted by mistake"))
REASONS_RETIRE = (N_("No longer offered"), N_("Created by mistake"))


class PersonAct(CallbackData, prefix="rp"):
    """On person `user`: "svc" / "area" (their pickers), "tsvc" / "tarea" (toggle `value`),
    "cap" (capacity := value), "avail" (1 available, 0 away)."""

    action: str
    user: int
    value: int = 0


class Cat(CallbackData, prefix="rpc"):
    """Catalogue kind KINDS[kind]: "list" (page `entry`), "show" / "ren" / "on" / "nb" of entry
    `entry`, "add" a new one."""

    action: str
    kind: int
    entry: int = 0


class Neighbour(CallbackData, prefix="rpn"):
    """Toggle areas `area` and `other` as neighbours."""

    area: int
    other: int


class PeopleInput(StatesGroup):
    query = State()
    add = State()
    rename = State()


def _role(role: Role) -> str:
    return _(_ROLE_NAMES[role])


# --- people -----------------------------------------------------------------------------------


def search_screen() -> Screen:
    screen = Screen(_("People: send a name, an @username, a Telegram id or the last digits of a "
                      "phone number (4 or more)."))
    row = [button(_(title), Cat(action="list", kind=i)) for i, title in enumerate(_KIND_TITLES)]
    screen.rows.append(row)
    screen.rows.append(back())
    return screen


def person_screen(p: PersonView, names: dict[str, dict[int, str]], notice: str = "") -> Screen:
    roles = []
    for role in sorted(p.roles, key=list(Role).index):
        label = _role(role)
        if role is Role.ADMIN and p.owner:
            label += " " + _("(owner: ADMIN_IDS)")
        elif role in p.menu_grants:
            label += " " + _("(granted here)")
        roles.append(label)
    lines = [notice, ""] if notice else []
    lines += [
        p.label,
        _("Telegram id: {id}; phone: {phone}; language: {language}").format(
            id=p.telegram_id or "-", phone=p.phone_masked or "-", language=p.language),
        _("Roles: {roles}").format(roles=", ".join(roles) or "-"),
    ]
    if p.provider is not None:
        pv = p.provider
        lines.append(_("Provider: capacity {capacity}, {state}; services: {services}; areas: "
                       "{areas}").format(
            capacity=pv.capacity,
            state=(_("available") if pv.available else _("away")) if pv.active
            else _("inactive"),
            services=", ".join(names["service"].get(i, "?") for i in pv.service_type_ids) or "-",
            areas=", ".join(names["area"].get(i, "?") for i in pv.area_ids) or "-"))
    screen = Screen("\n".join(lines))
    row: list = []
    for index, role in enumerate(GRANTABLE):
        if role in p.roles:
            if role is Role.ADMIN and p.owner:
                continue
            label, op = _("Revoke {role}").format(role=_role(role)), "role_revoke"
        else:
            label, op = _("Grant {role}").format(role=_role(role)), "role_grant"
        row.append(button(label, Ask(op=op, target=p.id, version=index)))
        if len(row) == 2:
            screen.rows.append(row)
            row = []
    if row:
        screen.rows.append(row)
    if Role.PROVIDER in p.roles or p.provider is not None:
        capacity = p.provider.capacity if p.provider else 1
        available = p.provider.available if p.provider else True
        screen.rows.append([button(_("Services"), PersonAct(action="svc", user=p.id)),
                            button(_("Areas"), PersonAct(action="area", user=p.id))])
        screen.rows.append([
            button(_("Capacity −"), PersonAct(action="cap", user=p.id, value=max(1, capacity - 1))),
            button(_("Capacity +"), PersonAct(action="cap", user=p.id, value=capacity + 1)),
            button(_("Set away") if available else _("Set available"),
                   PersonAct(action="avail", user=p.id, value=0 if available else 1)),
        ])
    screen.button(_("Audit of this person"), _audit_of(p.id))
    screen.rows.append(back(Nav(section=SECTION)))
    return screen


def _audit_of(user_id: int) -> CallbackData:
    return AuditPage.of(0, person=user_id)


async def _names(catalogue: Catalogue, language: str) -> dict[str, dict[int, str]]:
    return {
        "service": {e.id: e.name(language) for e in await catalogue.service_types()},
        "area": {e.id: e.name(language) for e in await catalogue.areas()},
    }


async def _person(people: People, catalogue: Catalogue, user: UserView, user_id: int,
                  notice: str = "") -> Screen:
    try:
        person = await people.get(user_id)
    except PeopleError as exc:
        screen = search_screen()
        screen.text = _(exc.user_message) + "\n\n" + screen.text
        return screen
    return person_screen(person, await _names(catalogue, user.language), notice)


async def open_people(query: CallbackQuery, callback_data: Nav, state: FSMContext,
                      people: People, catalogue: Catalogue, user: UserView) -> None:
    if callback_data.item:
        await state.set_state(None)
        await show(query, await _person(people, catalogue, user, callback_data.item))
        return
    await state.set_state(PeopleInput.query)
    await show(query, search_screen())


async def search(message: Message, state: FSMContext, people: People) -> None:
    await state.set_state(None)
    found = await people.find(message.text or "")
    if not found:
        screen = Screen(_("Nobody matches {query}.").format(query=(message.text or "")[:64]))
    else:
        screen = Screen(_("Found {count}:").format(count=len(found)))
        for p in found:
            screen.button(p.label, Nav(section=SECTION, item=p.id))
    screen.button(_("Search again"), Nav(section=SECTION))
    screen.rows.append(back())
    await show(message, screen)


async def person_action(query: CallbackQuery, callback_data: PersonAct, people: People,
                        catalogue: Catalogue, user: UserView) -> None:
    action, target, value = callback_data.action, callback_data.user, callback_data.value
    try:
        if action in ("svc", "area"):
            await show(query, await _picker(people, catalogue, user, target, action))
            return
        if action == "tsvc":
            await people.toggle_provider_service(user.id, target, value)
            await show(query, await _picker(people, catalogue, user, target, "svc"))
            return
        if action == "tarea":
            await people.toggle_provider_area(user.id, target, value)
            await show(query, await _picker(people, catalogue, user, target, "area"))
            return
        if action == "cap":
            await people.set_capacity(user.id, target, value)
        elif action == "avail":
            await people.set_available(user.id, target, bool(value))
        else:
            await query.answer(_("This button is no longer valid."), show_alert=True)
            return
    except DomainError as exc:
        await query.answer(_(exc.user_message), show_alert=True)
        return
    await show(query, await _person(people, catalogue, user, target))


async def _picker(people: People, catalogue: Catalogue, user: UserView, user_id: int,
                  what: str) -> Screen:
    person = await people.get(user_id)
    profile = person.provider
    if what == "svc":
        entries = await catalogue.service_types()
        chosen = set(profile.service_type_ids) if profile else set()
        title, action = _("Services of {name}: tap to switch.").format(name=person.label), "tsvc"
    else:
        entries = await catalogue.areas()
        chosen = set(profile.area_ids) if profile else set()
        title, action = _("Areas of {name}: tap to switch.").format(name=person.label), "tarea"
    screen = Screen(title)
    for e in entries:
        mark = "✅" if e.id in chosen else "▫️"
        screen.button(f"{mark} {e.name(user.language)}",
                      PersonAct(action=action, user=user_id, value=e.id))
    screen.rows.append(back(Nav(section=SECTION, item=user_id)))
    return screen


def _people(data: dict[str, Any]) -> People:
    people: People = data["people"]
    return people


def _role_of(pending: confirm.Pending) -> Role | None:
    return GRANTABLE[pending.version] if 0 <= pending.version < len(GRANTABLE) else None


async def _person_now(pending: confirm.Pending, data: dict[str, Any], notice: str = "") -> Screen:
    return await _person(_people(data), data["catalogue"], data["user"], pending.target, notice)


def _role_question(grant: bool) -> Any:
    async def question(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
        role = _role_of(pending)
        try:
            person = await _people(data).get(pending.target)
        except PeopleError:
            return search_screen()
        if role is None or (role in person.roles) == grant or (
                not grant and role is Role.ADMIN and person.owner):
            return await _person_now(pending, data)
        text = _("Grant {role} to {name}?") if grant else _("Revoke {role} from {name}?")
        return text.format(role=_role(role), name=person.label)

    return question


def _role_run(grant: bool) -> Any:
    async def run(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
        role = _role_of(pending)
        if role is None:
            return await _person_now(pending, data)
        people, actor = _people(data), data["user"].id
        try:
            if grant:
                await people.grant(actor, pending.target, role, reason=reason)
                notice = _("Granted {role}.").format(role=_role(role))
            else:
                await people.revoke(actor, pending.target, role, reason=reason)
                notice = _("Revoked {role}.").format(role=_role(role))
        except PeopleError as exc:
            notice = _(exc.user_message)
        return await _person_now(pending, data, notice)

    return run


def _back_to_person(pending: confirm.Pending) -> Nav:
    return Nav(section=SECTION, item=pending.target)


# --- catalogue --------------------------------------------------------------------------------


def _kind(index: int) -> str | None:
    return KINDS[index] if 0 <= index < len(KINDS) else None


def catalogue_screen(kind: int, entries: list[Entry], page: int, language: str) -> Screen:
    page = clamp(page, len(entries))
    shown = entries[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
    screen = Screen(_("{title}: {count}. Tap one to rename or retire it.").format(
        title=_(_KIND_TITLES[kind]), count=len(entries)))
    for e in shown:
        mark = "" if e.active else " " + _("(retired)")
        screen.button(f"{e.code} — {e.name(language)}{mark}",
                      Cat(action="show", kind=kind, entry=e.id))
    screen.button(_("Add"), Cat(action="add", kind=kind))
    if row := pager(page, len(entries), lambda p: Cat(action="list", kind=kind, entry=p)):
        screen.rows.append(row)
    screen.rows.append(back(Nav(section=SECTION)))
    return screen


def entry_screen(kind: int, e: Entry, notice: str = "") -> Screen:
    lines = [notice, ""] if notice else []
    lines += [f"{e.code}", _("English: {name}").format(name=e.name_en)]
    if KINDS[kind] != "item":
        lines.append(_("French: {name}").format(name=e.name_fr))
    lines.append(_("Active") if e.active else _("Retired"))
    screen = Screen("\n".join(lines))
    screen.button(_("Rename"), Cat(action="ren", kind=kind, entry=e.id))
    if e.active:
        screen.button(_("Retire"), Ask(op="cat_retire", target=e.id, version=kind))
    else:
        screen.button(_("Reactivate"), Cat(action="on", kind=kind, entry=e.id))
    if KINDS[kind] == "area":
        screen.button(_("Neighbours"), Cat(action="nb", kind=kind, entry=e.id))
    screen.rows.append(back(Cat(action="list", kind=kind)))
    return screen


async def _entry(people: People, kind: int, entry_id: int) -> Entry | None:
    name = _kind(kind)
    if name is None:
        return None
    return next((e for e in await people.entries(name) if e.id == entry_id), None)


async def catalogue_action(query: CallbackQuery, callback_data: Cat, state: FSMContext,
                           people: People, user: UserView) -> None:
    kind, action, entry_id = callback_data.kind, callback_data.action, callback_data.entry
    name = _kind(kind)
    if name is None:
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    if action == "list":
        await show(query, catalogue_screen(kind, await people.entries(name), entry_id,
                                           user.language))
        return
    if action == "add":
        await state.set_state(PeopleInput.add)
        await state.update_data(recovery_catalogue={"kind": kind, "entry": 0,
                                                    "message": _message_id(query)})
        hint = (_("Send the new item as: SKU | name") if name == "item" else
                _("Send the new entry as: code | English name | French name"))
        screen = Screen(hint)
        screen.rows.append(back(Cat(action="list", kind=kind)))
        await show(query, screen)
        return
    e = await _entry(people, kind, entry_id)
    if e is None:
        await show(query, catalogue_screen(kind, await people.entries(name), 0, user.language),
                   notice=_("This entry is not known."))
        return
    if action == "show":
        await show(query, entry_screen(kind, e))
    elif action == "ren":
        await state.set_state(PeopleInput.rename)
        await state.update_data(recovery_catalogue={"kind": kind, "entry": e.id,
                                                    "message": _message_id(query)})
        hint = (_("Send the new name.") if name == "item" else
                _("Send the new names as: English name | French name"))
        screen = Screen(hint)
        screen.rows.append(back(Cat(action="show", kind=kind, entry=e.id)))
        await show(query, screen)
    elif action == "on":
        e = await people.set_entry_active(user.id, name, e.id, True)
        await show(query, entry_screen(kind, e, _("Reactivated.")))
    elif action == "nb" and name == "area":
        await show(query, await _neighbours_screen(people, e, user.language))
    else:
        await query.answer(_("This button is no longer valid."), show_alert=True)


def _message_id(query: CallbackQuery) -> int:
    return query.message.message_id if query.message is not None else 0


async def _neighbours_screen(people: People, area: Entry, language: str) -> Screen:
    linked = set(await people.neighbours(area.id))
    screen = Screen(_("Neighbours of {name}: tap to switch.").format(name=area.name(language)))
    for other in await people.entries("area"):
        if other.id != area.id:
            mark = "✅" if other.id in linked else "▫️"
            screen.button(f"{mark} {other.name(language)}",
                          Neighbour(area=area.id, other=other.id))
    screen.rows.append(back(Cat(action="show", kind=KINDS.index("area"), entry=area.id)))
    return screen


async def toggle_neighbour(query: CallbackQuery, callback_data: Neighbour, people: People,
                           user: UserView) -> None:
    try:
        await people.toggle_neighbour(user.id, callback_data.area, callback_data.other)
    except PeopleError as exc:
        await query.answer(_(exc.user_message), show_alert=True)
        return
    area = await _entry(people, KINDS.index("area"), callback_data.area)
    if area is not None:
        await show(query, await _neighbours_screen(people, area, user.language))


async def typed_entry(message: Message, state: FSMContext, people: People,
                      user: UserView) -> None:
    pending = (await state.get_data()).get("recovery_catalogue") or {}
    adding = await state.get_state() == PeopleInput.add.state
    await state.set_state(None)
    await state.update_data(recovery_catalogue=None)
    kind = int(pending.get("kind", -1))
    name = _kind(kind)
    if name is None:
        await message.answer(_("Nothing is waiting for a reason any more."))
        return
    parts = [p.strip() for p in (message.text or "").split("|")]
    try:
        if adding:
            if len(parts) < 2:
                raise _Invalid()
            e = await people.add_entry(user.id, name, parts[0], parts[1],
                                       parts[2] if len(parts) > 2 else None)
            notice = _("Added.")
        else:
            e = await people.rename_entry(user.id, name, int(pending["entry"]), parts[0],
                                          parts[1] if len(parts) > 1 else None)
            notice = _("Renamed.")
    except (PeopleError, _Invalid) as exc:
        text = _(exc.user_message) if isinstance(exc, PeopleError) else _(
            "This value is not valid.")
        await message.answer(text)
        return
    await show(message, entry_screen(kind, e, notice))


class _Invalid(Exception):
    pass


async def _retire_question(pending: confirm.Pending, data: dict[str, Any]) -> str | Screen:
    e = await _entry(_people(data), pending.version, pending.target)
    if e is None or not e.active:
        name = _kind(pending.version) or "service"
        return catalogue_screen(max(0, pending.version), await _people(data).entries(name), 0,
                                data["user"].language)
    return _("Retire {code}? It stays in the history but is no longer offered.").format(
        code=e.code)


async def _retire_run(pending: confirm.Pending, reason: str, data: dict[str, Any]) -> Screen:
    name = _kind(pending.version) or "service"
    try:
        e = await _people(data).set_entry_active(data["user"].id, name, pending.target, False,
                                                 reason=reason)
    except PeopleError as exc:
        screen = catalogue_screen(max(0, pending.version), await _people(data).entries(name), 0,
                                  data["user"].language)
        screen.text = _(exc.user_message) + "\n\n" + screen.text
        return screen
    return entry_screen(pending.version, e, _("Retired."))


def _back_to_entry(pending: confirm.Pending) -> Cat:
    return Cat(action="show", kind=max(0, pending.version), entry=pending.target)


def setup() -> Router:
    router = Router(name="recovery-people")
    router.callback_query.register(open_people, Nav.filter(F.section == SECTION))
    router.callback_query.register(person_action, PersonAct.filter())
    router.callback_query.register(catalogue_action, Cat.filter())
    router.callback_query.register(toggle_neighbour, Neighbour.filter())
    router.message.register(search, StateFilter(PeopleInput.query), F.text,
                            ~F.text.startswith("/"))
    router.message.register(typed_entry, StateFilter(PeopleInput.add, PeopleInput.rename),
                            F.text, ~F.text.startswith("/"))
    for grant in (True, False):
        confirm.register(confirm.Destructive(
            op="role_grant" if grant else "role_revoke",
            reasons=REASONS_GRANT if grant else REASONS_REVOKE,
            question=_role_question(grant), run=_role_run(grant), back=_back_to_person))
    confirm.register(confirm.Destructive(
        op="cat_retire", reasons=REASONS_RETIRE, question=_retire_question, run=_retire_run,
        back=_back_to_entry))
    return router
