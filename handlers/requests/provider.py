"""The provider's side: job offers (Accept / Decline; the address once accepted), /jobs, the
parts used on a job in progress, /available and /away. Start and Complete are the request
screen's versioned buttons (handlers/requests/shared.py)."""

from __future__ import annotations

from html import escape

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.buttons import OfferAnswer
from handlers.filters import magic
from handlers.keyboards import one_per_row
from handlers.requests.screens import (
    OpenOffer,
    PartPick,
    PartsStart,
    offer_keyboard,
    offer_text,
    open_button,
    refusal,
    request_keyboard,
    request_text,
    send_photos,
    show,
)
from services.inventory import Inventory
from services.users import UserView
from services.workflow import OfferTaken, ServiceRequests, WorkflowError
from services.workflow import State as RequestState


class PartsForm(StatesGroup):
    quantity = State()  # data: request, item


# ----------------------------------------------------------------------------------- offers


async def answer_offer(
    query: CallbackQuery, callback_data: OfferAnswer, service_requests: ServiceRequests,
    user: UserView, settings: Settings,
) -> None:
    if callback_data.answer == "a":
        try:
            view = await service_requests.accept_offer(callback_data.offer, user)
        except OfferTaken as exc:
            await query.answer(refusal(exc), show_alert=True)
            await show(query, refusal(exc))
            return
        except WorkflowError as exc:
            await query.answer(refusal(exc), show_alert=True)
            return
        await query.answer(_("The job is yours."))
        await show(
            query,
            request_text(view, user, settings.timezone, _("You accepted this job.")),
            request_keyboard(view, user),
        )
        return
    if callback_data.answer != "d":
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    try:
        offer = await service_requests.decline_offer(callback_data.offer, user)
    except WorkflowError as exc:
        await query.answer(refusal(exc), show_alert=True)
        return
    await query.answer()
    await show(query, _("You declined job offer #{id}.").format(id=offer.request.id))


async def open_offer(
    query: CallbackQuery, callback_data: OpenOffer, service_requests: ServiceRequests,
    user: UserView,
) -> None:
    """An offer's screen, with its photos: only for the provider it was made to."""
    offers = {o.id: o for o in await service_requests.pending_offers(user)}
    offer = offers.get(callback_data.offer)
    if offer is None:
        await query.answer(_("This offer is no longer open."), show_alert=True)
        return
    await query.answer()
    await query.bot.send_message(  # type: ignore[union-attr]
        query.from_user.id, offer_text(offer, user), reply_markup=offer_keyboard(offer)
    )
    await send_photos(query, offer.request.photos)


# ------------------------------------------------------------------------------------- /jobs


async def jobs(message: Message, service_requests: ServiceRequests, user: UserView) -> None:
    profile = await service_requests.provider_profile(user.id)
    if profile is None:
        await message.answer(_("You are not registered as a provider."))
        return
    offers = await service_requests.pending_offers(user)
    open_jobs = await service_requests.jobs(user)
    if not offers and not open_jobs:
        await message.answer(_("You have no jobs and no offers right now."))
        return
    lines = ["<b>" + _("Your jobs") + "</b>"]
    if not profile.available:
        lines.append(_("You are away: send /available to get new offers."))
    buttons = [
        (
            _("Offer #{id}: {service} in {area}").format(
                id=o.request.id, service=o.request.service_type.name(user.language),
                area=o.request.area.name(user.language),
            ),
            OpenOffer(offer=o.id),
        )
        for o in offers
    ]
    buttons += [open_button(v, user) for v in open_jobs]
    lines.append(_("Offers waiting for your answer: {offers}. Jobs: {jobs}.").format(
        offers=len(offers), jobs=len(open_jobs)))
    await message.answer("\n".join(lines), reply_markup=one_per_row(buttons[:20]))


# ------------------------------------------------------------------------------------ parts


async def parts_start(
    query: CallbackQuery, callback_data: PartsStart, service_requests: ServiceRequests,
    inventory: Inventory, user: UserView,
) -> None:
    try:
        view = await service_requests.get(callback_data.request)
    except WorkflowError as exc:
        await query.answer(refusal(exc), show_alert=True)
        return
    if view.assignee_user_id != user.id or view.state is not RequestState.IN_PROGRESS:
        await query.answer(_("Parts can be recorded only on your job in progress."),
                           show_alert=True)
        return
    items = [i for i in await inventory.list_stock() if i.on_hand > 0]
    if not items:
        await query.answer(_("Nothing is in stock."), show_alert=True)
        return
    await query.answer()
    await query.bot.send_message(  # type: ignore[union-attr]
        query.from_user.id,
        _("Which part did you use on request #{id}?").format(id=view.id),
        reply_markup=one_per_row([
            (f"{i.name} ({i.on_hand} {i.unit})", PartPick(request=view.id, item=i.id))
            for i in items[:30]
        ]),
    )


async def part_pick(
    query: CallbackQuery, callback_data: PartPick, inventory: Inventory, state: FSMContext
) -> None:
    try:
        item = await inventory.get(callback_data.item)
    except WorkflowError as exc:
        await query.answer(refusal(exc), show_alert=True)
        return
    await state.set_state(PartsForm.quantity)
    await state.set_data({"request": callback_data.request, "item": item.id})
    await query.answer()
    await show(query, _("How many {unit} of {name}? Send a number, or /cancel.").format(
        unit=escape(item.unit), name=escape(item.name)))


async def quantity_typed(
    message: Message, state: FSMContext, service_requests: ServiceRequests, user: UserView,
    settings: Settings,
) -> None:
    text = (message.text or "").strip()
    if not text.isdigit() or int(text) <= 0:
        await message.answer(_("Please send a whole number above zero, or /cancel."))
        return
    data = await state.get_data()
    await state.clear()
    request_id = int(data["request"])
    try:
        parts = await service_requests.record_parts(request_id, user, [(int(data["item"]),
                                                                        int(text))])
        view = await service_requests.get(request_id)
    except WorkflowError as exc:
        await message.answer(refusal(exc))
        return
    used: dict[str, int] = {}
    units: dict[str, str] = {}
    for part in parts:
        used[part.name] = used.get(part.name, 0) - part.quantity
        units[part.name] = part.unit
    lines = [f"{escape(name)}: {count} {escape(units[name])}" for name, count in used.items()
             if count]
    note = _("Recorded. Parts used on this job:") + "\n" + "\n".join(lines)
    await message.answer(request_text(view, user, settings.timezone, note),
                         reply_markup=request_keyboard(view, user))


# ------------------------------------------------------------------------- availability


async def available(message: Message, service_requests: ServiceRequests, user: UserView) -> None:
    await _set_available(message, service_requests, user, True)


async def away(message: Message, service_requests: ServiceRequests, user: UserView) -> None:
    await _set_available(message, service_requests, user, False)


async def _set_available(
    message: Message, service_requests: ServiceRequests, user: UserView, value: bool
) -> None:
    try:
        await service_requests.set_availability(user, value)
    except WorkflowError as exc:
        await message.answer(refusal(exc))
        return
    await message.answer(
        _("You are available: new job offers will come to you.")
        if value
        else _("You are away: no new job offers until you send /available.")
    )


def setup() -> Router:
    router = Router(name="requests.provider")
    typed = magic(F.text, ~F.text.startswith("/"))
    messages = router.message
    messages.register(jobs, Command("jobs"))
    messages.register(available, Command("available"))
    messages.register(away, Command("away"))
    messages.register(quantity_typed, StateFilter(PartsForm.quantity), typed)
    buttons = router.callback_query
    buttons.register(answer_offer, OfferAnswer.filter())
    buttons.register(open_offer, OpenOffer.filter())
    buttons.register(parts_start, PartsStart.filter())
    buttons.register(part_pick, PartPick.filter())
    return router
