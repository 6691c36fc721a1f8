"""The requester's side: /new (a form: service type and area on buttons, address, preferred
time, description with optional photos, urgency, confirm), /status and /cancel.

The form's answers are kept in the FSM data (in the database or Redis), so a form half-way
through survives a restart. Nothing is written until the last step's "Send request"; the
workflow (services.workflow) decides everything after that.
"""

from __future__ import annotations

from html import escape
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.filters import magic
from handlers.keyboards import one_per_row
from handlers.requests.screens import (
    CancelConfirm,
    local_time,
    open_button,
    refusal,
    refuse,
    request_keyboard,
    request_text,
    show,
    state_label,
)
from services.users import UserView
from services.workflow import (
    Action,
    Catalogue,
    NewRequest,
    ServiceRequests,
    StaleVersion,
    WorkflowError,
)
from services.workflow import State as RequestState
from services.workflow.service import MAX_ADDRESS, MAX_DESCRIPTION, MAX_PHOTOS, MAX_TIME_WINDOW


class NewRequestForm(StatesGroup):
    service_type = State()
    area = State()
    address = State()
    time_window = State()
    description = State()
    photos = State()
    urgency = State()
    confirm = State()


class FormStep(CallbackData, prefix="rqn"):
    """A button of the /new form: `step` is type, area, anytime, done, urgent or send."""

    step: str
    value: int = 0


# ------------------------------------------------------------------------------------- /new


async def start_form(
    message: Message, state: FSMContext, catalogue: Catalogue, user: UserView
) -> None:
    types = await catalogue.service_types()
    if not types:
        await message.answer(_("No services are available yet. Please try again later."))
        return
    await state.clear()
    await state.set_state(NewRequestForm.service_type)
    await message.answer(
        _("What do you need? Choose a service (send /cancel to stop):"),
        reply_markup=one_per_row(
            [(t.name(user.language), FormStep(step="type", value=t.id)) for t in types]
        ),
    )


async def pick_type(
    query: CallbackQuery, callback_data: FormStep, state: FSMContext, catalogue: Catalogue,
    user: UserView,
) -> None:
    areas = await catalogue.areas()
    await state.update_data(service_type_id=callback_data.value)
    await state.set_state(NewRequestForm.area)
    await query.answer()
    await show(
        query,
        _("Which area is it in?"),
        one_per_row([(a.name(user.language), FormStep(step="area", value=a.id)) for a in areas]),
    )


async def pick_area(query: CallbackQuery, callback_data: FormStep, state: FSMContext) -> None:
    await state.update_data(area_id=callback_data.value)
    await state.set_state(NewRequestForm.address)
    await query.answer()
    await show(query, _("What is the address where the work is needed?"))


async def address_typed(message: Message, state: FSMContext) -> None:
    text = (message.text or "").strip()
    if not text or len(text) > MAX_ADDRESS:
        await message.answer(
            _("Please send the address in at most {limit} characters.").format(limit=MAX_ADDRESS)
        )
        return
    await state.update_data(address=text)
    await state.set_state(NewRequestForm.time_window)
    await message.answer(
        _("When would suit you? For example: weekdays after 17:00."),
        reply_markup=one_per_row([(_("Any time"), FormStep(step="anytime"))]),
    )


async def _ask_description(target: Message, state: FSMContext) -> None:
    await state.set_state(NewRequestForm.description)
    await target.answer(
        _("Describe the problem in a few words. You can send a photo with a caption too.")
    )


async def window_typed(message: Message, state: FSMContext) -> None:
    text = (message.text or "").strip()
    if len(text) > MAX_TIME_WINDOW:
        await message.answer(
            _("Please keep it under {limit} characters.").format(limit=MAX_TIME_WINDOW)
        )
        return
    await state.update_data(time_window=text)
    await _ask_description(message, state)


async def any_time(query: CallbackQuery, state: FSMContext) -> None:
    await state.update_data(time_window="")
    await query.answer()
    await show(query, _("Any time suits you."))
    if isinstance(query.message, Message):
        await _ask_description(query.message, state)


def _photos_prompt(count: int) -> tuple[str, Any]:
    text = (
        _("Photo added ({count}). Send more, or tap Done.").format(count=count)
        if count
        else _("You can send photos of the problem now, or tap Done.")
    )
    return text, one_per_row([(_("Done"), FormStep(step="done"))])


async def description_typed(message: Message, state: FSMContext) -> None:
    text = (message.text or "").strip()
    if not text or len(text) > MAX_DESCRIPTION:
        await message.answer(
            _("Please describe it in at most {limit} characters.").format(limit=MAX_DESCRIPTION)
        )
        return
    await state.update_data(description=text)
    await state.set_state(NewRequestForm.photos)
    prompt, markup = _photos_prompt(0)
    await message.answer(prompt, reply_markup=markup)


async def photo_sent(message: Message, state: FSMContext) -> None:
    """A photo at the description step (its caption is the description) or the photos step."""
    assert message.photo  # the filter
    data = await state.get_data()
    photos = list(data.get("photos", []))
    if len(photos) >= MAX_PHOTOS:
        await message.answer(_("That is enough photos ({limit}). Tap Done.").format(
            limit=MAX_PHOTOS))
        return
    photos.append(message.photo[-1].file_id)  # the largest size
    update: dict[str, Any] = {"photos": photos}
    caption = (message.caption or "").strip()
    if caption and not data.get("description"):
        update["description"] = caption[:MAX_DESCRIPTION]
    await state.update_data(**update)
    await state.set_state(NewRequestForm.photos)
    prompt, markup = _photos_prompt(len(photos))
    await message.answer(prompt, reply_markup=markup)


async def photos_done(query: CallbackQuery, state: FSMContext) -> None:
    await state.set_state(NewRequestForm.urgency)
    await query.answer()
    await show(query, _("Is it urgent?"), one_per_row([
        (_("Urgent: as soon as possible"), FormStep(step="urgent", value=1)),
        (_("Not urgent"), FormStep(step="urgent", value=0)),
    ]))


async def pick_urgency(
    query: CallbackQuery, callback_data: FormStep, state: FSMContext, catalogue: Catalogue,
    user: UserView,
) -> None:
    data = await state.update_data(urgent=bool(callback_data.value))
    await state.set_state(NewRequestForm.confirm)
    types = {t.id: t for t in await catalogue.service_types()}
    areas = {a.id: a for a in await catalogue.areas()}
    service = types.get(data.get("service_type_id", 0))
    area = areas.get(data.get("area_id", 0))
    lines = [
        "<b>" + _("Please check your request:") + "</b>",
        _("Service: {name}").format(name=escape(service.name(user.language) if service else "?")),
        _("Area: {name}").format(name=escape(area.name(user.language) if area else "?")),
        _("Address: {address}").format(address=escape(data.get("address", ""))),
        _("When: {window}").format(window=escape(data.get("time_window") or _("any time"))),
        _("Description: {text}").format(text=escape(data.get("description", ""))),
        _("Photos: {count}").format(count=len(data.get("photos", []))),
        _("Urgent") if data.get("urgent") else _("Not urgent"),
    ]
    await query.answer()
    await show(query, "\n".join(lines), one_per_row([
        (_("Send request"), FormStep(step="send", value=1)),
        (_("Cancel"), FormStep(step="send", value=0)),
    ]))


async def send_request(
    query: CallbackQuery, callback_data: FormStep, state: FSMContext,
    service_requests: ServiceRequests, user: UserView, settings: Settings,
) -> None:
    if not callback_data.value:
        await state.clear()
        await query.answer()
        await show(query, _("Cancelled: nothing was changed."))
        return
    data = await state.get_data()
    form = NewRequest(
        service_type_id=int(data.get("service_type_id", 0)),
        area_id=int(data.get("area_id", 0)),
        address=str(data.get("address", "")),
        time_window=str(data.get("time_window", "")),
        description=str(data.get("description", "")),
        photos=tuple(data.get("photos", [])),
        urgent=bool(data.get("urgent", False)),
    )
    try:
        view = await service_requests.open_request(user, form)
    except WorkflowError as exc:
        await state.clear()
        await query.answer()
        await show(query, refusal(exc) + "\n" + _("Send /new to start again."))
        return
    await state.clear()
    if view.state is RequestState.ESCALATED:
        note = _(
            "Your request #{id} is saved. No provider is free right now: an operator has been "
            "told and will find one for you."
        ).format(id=view.id)
    else:
        note = _(
            "Your request #{id} is sent. I am asking providers and will tell you as soon as one "
            "accepts."
        ).format(id=view.id)
    await query.answer()
    await show(query, request_text(view, user, settings.timezone, note),
               request_keyboard(view, user))


async def form_button_out_of_step(query: CallbackQuery) -> None:
    """A button of the form pressed at another step, or after the form ended."""
    await query.answer(_("This button is no longer valid."), show_alert=True)


async def typed_out_of_step(message: Message) -> None:
    """Text where the form waits for a button."""
    await message.answer(_("Please use the buttons above, or send /cancel."))


# ---------------------------------------------------------------------------------- /status


async def status(message: Message, service_requests: ServiceRequests, user: UserView,
                 settings: Settings) -> None:
    views = await service_requests.list_for_requester(user.id)
    if not views:
        await message.answer(_("You have no requests yet. Send /new to open one."))
        return
    lines = ["<b>" + _("Your requests") + "</b>"]
    for view in views:
        line = _("#{id} {service}, {area}: {state}, last change {at}").format(
            id=view.id, service=escape(view.service_type.name(user.language)),
            area=escape(view.area.name(user.language)),
            state=state_label(view.state),
            at=local_time(view.state_entered_at, settings.timezone),
        )
        if view.assignee_name:
            line += " " + _("({name} is on it)").format(name=escape(view.assignee_name))
        lines.append(line)
    await message.answer("\n".join(lines), reply_markup=one_per_row(
        [open_button(v, user) for v in views[:10]]
    ))


# ---------------------------------------------------------------------------------- /cancel


async def cancel_form(message: Message, state: FSMContext) -> None:
    """/cancel inside any form abandons it, as /profile's does."""
    await state.clear()
    await message.answer(_("Cancelled: nothing was changed."))


async def cancel_pick(message: Message, service_requests: ServiceRequests, user: UserView) -> None:
    """/cancel outside a form: which request?"""
    views = [
        v for v in await service_requests.list_for_requester(user.id)
        if Action.CANCEL in v.actions_for(user.id, user.roles)
    ]
    if not views:
        await message.answer(_("You have no request that can still be cancelled."))
        return
    await message.answer(
        _("Which request do you want to cancel?"),
        reply_markup=one_per_row([
            (open_button(v, user)[0], CancelAsk(request=v.id, version=v.version))
            for v in views[:10]
        ]),
    )


class CancelAsk(CallbackData, prefix="rqk"):
    """Ask to confirm cancelling `request`, seen at `version`."""

    request: int
    version: int


async def cancel_ask(
    query: CallbackQuery, callback_data: CancelAsk, service_requests: ServiceRequests,
    user: UserView, settings: Settings,
) -> None:
    await ask_cancel_confirmation(
        query, callback_data.request, callback_data.version, service_requests, user, settings
    )


async def ask_cancel_confirmation(
    query: CallbackQuery, request_id: int, version: int, service_requests: ServiceRequests,
    user: UserView, settings: Settings,
) -> None:
    try:
        view = await service_requests.get(request_id)
    except WorkflowError as exc:
        await query.answer(refusal(exc), show_alert=True)
        return
    if view.version != version:
        await refuse(query, StaleVersion(view), user, settings.timezone)
        return
    await query.answer()
    await show(
        query,
        request_text(view, user, settings.timezone)
        + "\n\n" + _("Cancel this request? Parts already used are returned to stock."),
        one_per_row([
            (_("Yes, cancel it"), CancelConfirm(request=view.id, version=view.version)),
            (_("No, keep it"), CancelConfirm(request=0, version=0)),
        ]),
    )


async def cancel_confirmed(
    query: CallbackQuery, callback_data: CancelConfirm, service_requests: ServiceRequests,
    user: UserView, settings: Settings,
) -> None:
    if not callback_data.request:
        await query.answer()
        await show(query, _("Nothing was changed."))
        return
    try:
        view = await service_requests.cancel(callback_data.request, user, callback_data.version)
    except WorkflowError as exc:
        await refuse(query, exc, user, settings.timezone)
        return
    await query.answer(_("Request cancelled."))
    await show(query, request_text(view, user, settings.timezone), request_keyboard(view, user))


def setup() -> Router:
    router = Router(name="requests.requester")
    form = NewRequestForm
    typed = magic(F.text, ~F.text.startswith("/"))
    messages = router.message
    messages.register(start_form, Command("new"))
    messages.register(status, Command("status"))
    messages.register(cancel_form, Command("cancel"), ~StateFilter(None))
    messages.register(cancel_pick, Command("cancel"))
    messages.register(address_typed, StateFilter(form.address), typed)
    messages.register(window_typed, StateFilter(form.time_window), typed)
    messages.register(description_typed, StateFilter(form.description), typed)
    messages.register(photo_sent, StateFilter(form.description, form.photos), magic(F.photo))
    messages.register(
        typed_out_of_step,
        StateFilter(form.service_type, form.area, form.photos, form.urgency, form.confirm),
        typed,
    )
    buttons = router.callback_query
    buttons.register(pick_type, StateFilter(form.service_type), FormStep.filter(F.step == "type"))
    buttons.register(pick_area, StateFilter(form.area), FormStep.filter(F.step == "area"))
    buttons.register(any_time, StateFilter(form.time_window), FormStep.filter(F.step == "anytime"))
    buttons.register(photos_done, StateFilter(form.photos), FormStep.filter(F.step == "done"))
    buttons.register(
        pick_urgency, StateFilter(form.urgency), FormStep.filter(F.step == "urgent")
    )
    buttons.register(send_request, StateFilter(form.confirm), FormStep.filter(F.step == "send"))
    buttons.register(form_button_out_of_step, FormStep.filter())
    buttons.register(cancel_ask, CancelAsk.filter())
    buttons.register(cancel_confirmed, CancelConfirm.filter())
    return router
