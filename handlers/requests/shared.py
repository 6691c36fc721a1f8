"""What both parties (and admins) do on a request's screen: open it, act on it with versioned
buttons (a stale one is refused with the screen redrawn), give a reason where one is needed
(dispute, resolving a dispute), relay a message to the other party through the bot, and see
the photos."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _

from bot.config import Settings
from handlers.buttons import OpenRequest
from handlers.filters import magic
from handlers.requests.requester import ask_cancel_confirmation
from handlers.requests.screens import (
    RelayStart,
    RequestAct,
    ShowPhotos,
    may_see,
    refusal,
    refuse,
    request_keyboard,
    request_text,
    send_photos,
    show,
)
from services.users import UserView
from services.workflow import Action, RequestView, ServiceRequests, StaleVersion, WorkflowError

MAX_REASON = 500
MAX_MESSAGE = 2000
NEEDS_REASON = {Action.DISPUTE, Action.RESOLVE_CONFIRM, Action.RESOLVE_REWORK}


class RequestForm(StatesGroup):
    reason = State()  # data: request, version, action
    message = State()  # data: request


async def _visible(
    query_or_message: CallbackQuery | Message, request_id: int,
    service_requests: ServiceRequests, user: UserView,
) -> RequestView | None:
    """The request, if this person may see it; else they are told and None comes back."""
    try:
        view = await service_requests.get(request_id)
    except WorkflowError as exc:
        text = refusal(exc)
    else:
        if may_see(view, user):
            return view
        text = _("This request is not yours.")
    if isinstance(query_or_message, CallbackQuery):
        await query_or_message.answer(text, show_alert=True)
    else:
        await query_or_message.answer(text)
    return None


async def open_request(
    query: CallbackQuery, callback_data: OpenRequest, service_requests: ServiceRequests,
    user: UserView, settings: Settings,
) -> None:
    view = await _visible(query, callback_data.request, service_requests, user)
    if view is None:
        return
    await query.answer()
    # A new message: the button may sit on a notification whose text should stay readable.
    await query.bot.send_message(  # type: ignore[union-attr]
        query.from_user.id, request_text(view, user, settings.timezone),
        reply_markup=request_keyboard(view, user),
    )


async def request_command(
    message: Message, command: CommandObject, service_requests: ServiceRequests,
    user: UserView, settings: Settings,
) -> None:
    """/request N: one request's screen."""
    arg = (command.args or "").strip().lstrip("#")
    if not arg.isdigit():
        await message.answer(_("Send /request followed by the request number, e.g. /request 12."))
        return
    view = await _visible(message, int(arg), service_requests, user)
    if view is not None:
        await message.answer(request_text(view, user, settings.timezone),
                             reply_markup=request_keyboard(view, user))


async def act(
    query: CallbackQuery, callback_data: RequestAct, service_requests: ServiceRequests,
    user: UserView, settings: Settings, state: FSMContext,
) -> None:
    try:
        action = Action(callback_data.action)
    except ValueError:
        await query.answer(_("This button is no longer valid."), show_alert=True)
        return
    request_id, version = callback_data.request, callback_data.version
    if action is Action.CANCEL:
        await ask_cancel_confirmation(query, request_id, version, service_requests, user, settings)
        return
    if action in NEEDS_REASON:
        view = await _visible(query, request_id, service_requests, user)
        if view is None:
            return
        if view.version != version:
            await refuse(query, StaleVersion(view), user, settings.timezone)
            return
        await state.set_state(RequestForm.reason)
        await state.set_data({"request": request_id, "version": version, "action": action.value})
        await query.answer()
        prompt = (
            _("What is wrong with the work on request #{id}? Send it in one message, or /cancel.")
            if action is Action.DISPUTE
            else _("Your reason for resolving request #{id} this way? Send it, or /cancel.")
        )
        await query.bot.send_message(query.from_user.id, prompt.format(id=request_id))  # type: ignore[union-attr]
        return
    try:
        view = await service_requests.transition(request_id, action, user, version)
    except WorkflowError as exc:
        await refuse(query, exc, user, settings.timezone)
        return
    await query.answer(_("Done."))
    await show(query, request_text(view, user, settings.timezone), request_keyboard(view, user))


async def reason_typed(
    message: Message, state: FSMContext, service_requests: ServiceRequests, user: UserView,
    settings: Settings,
) -> None:
    reason = (message.text or "").strip()
    if not reason or len(reason) > MAX_REASON:
        await message.answer(
            _("Please send the reason in at most {limit} characters.").format(limit=MAX_REASON)
        )
        return
    data = await state.get_data()
    await state.clear()
    request_id, version = int(data["request"]), int(data["version"])
    action = Action(data["action"])
    try:
        if action is Action.DISPUTE:
            view = await service_requests.dispute(request_id, user, version, reason)
        else:
            view = await service_requests.resolve_dispute(
                request_id, user, version, confirm=action is Action.RESOLVE_CONFIRM,
                reason=reason,
            )
    except WorkflowError as exc:
        current: RequestView | None = getattr(exc, "current", None)
        if current is None:
            await message.answer(refusal(exc))
        else:
            await message.answer(request_text(current, user, settings.timezone, refusal(exc)),
                                 reply_markup=request_keyboard(current, user))
        return
    note = (
        _("Your dispute is recorded; an admin will look at it.")
        if action is Action.DISPUTE
        else _("The dispute is resolved.")
    )
    await message.answer(request_text(view, user, settings.timezone, note),
                         reply_markup=request_keyboard(view, user))


async def relay_start(
    query: CallbackQuery, callback_data: RelayStart, service_requests: ServiceRequests,
    user: UserView, state: FSMContext,
) -> None:
    view = await _visible(query, callback_data.request, service_requests, user)
    if view is None:
        return
    if not view.can_message(user.id):
        await query.answer(_("Messages cannot be sent on this request now."), show_alert=True)
        return
    await state.set_state(RequestForm.message)
    await state.set_data({"request": view.id})
    await query.answer()
    await query.bot.send_message(  # type: ignore[union-attr]
        query.from_user.id,
        _("Send your message about request #{id}; I will pass it on. Send /cancel to stop.")
        .format(id=view.id),
    )


async def message_typed(
    message: Message, state: FSMContext, service_requests: ServiceRequests, user: UserView
) -> None:
    text = (message.text or "").strip()
    if not text or len(text) > MAX_MESSAGE:
        await message.answer(
            _("Please send a message of at most {limit} characters.").format(limit=MAX_MESSAGE)
        )
        return
    request_id = int((await state.get_data())["request"])
    await state.clear()
    try:
        await service_requests.relay_message(request_id, user, text)
    except WorkflowError as exc:
        await message.answer(refusal(exc))
        return
    await message.answer(_("Sent. The answer will come here."))


async def photos(
    query: CallbackQuery, callback_data: ShowPhotos, service_requests: ServiceRequests,
    user: UserView,
) -> None:
    view = await _visible(query, callback_data.request, service_requests, user)
    if view is None:
        return
    await query.answer()
    await send_photos(query, view.photos)


def setup() -> Router:
    router = Router(name="requests.shared")
    typed = magic(F.text, ~F.text.startswith("/"))
    router.message.register(request_command, Command("request"))
    router.message.register(reason_typed, StateFilter(RequestForm.reason), typed)
    router.message.register(message_typed, StateFilter(RequestForm.message), typed)
    buttons = router.callback_query
    buttons.register(open_request, OpenRequest.filter())
    buttons.register(act, RequestAct.filter())
    buttons.register(relay_start, RelayStart.filter())
    buttons.register(photos, ShowPhotos.filter())
    return router
