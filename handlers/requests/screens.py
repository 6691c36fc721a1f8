"""Callback data, texts and keyboards of the service-request screens, shared by the requester's,
the provider's and the warehouse's handlers. Every button acting on a request names the
version its screen showed: a stale one is refused by the workflow and the screen redrawn."""

from __future__ import annotations

import logging
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from aiogram.exceptions import TelegramBadRequest
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, InputMediaPhoto, Message
from aiogram.utils.i18n import gettext as _

from handlers.buttons import OfferAnswer, OpenRequest
from handlers.keyboards import one_per_row
from services.users import UserView
from services.workflow import Action, OfferView, RequestView, State, WorkflowError
from services.workflow.notify import STATE_LABELS, TIER_LABELS

log = logging.getLogger(__name__)


class RequestAct(CallbackData, prefix="rqa"):
    """Take `action` (a services.workflow Action value) on `request`, seen at `version`."""

    action: str
    request: int
    version: int


class CancelConfirm(CallbackData, prefix="rqc"):
    """Yes, cancel `request` (seen at `version`); `request` 0: no, keep it."""

    request: int
    version: int


class RelayStart(CallbackData, prefix="rqm"):
    """Write a message to the other party of `request`."""

    request: int


class PartsStart(CallbackData, prefix="rqp"):
    """Pick a part to record as used on `request`."""

    request: int


class PartPick(CallbackData, prefix="rqi"):
    request: int
    item: int


class ShowPhotos(CallbackData, prefix="rqf"):
    request: int


class OpenOffer(CallbackData, prefix="ofo"):
    offer: int


def action_label(action: Action) -> str:
    labels = {
        Action.START: _("Start work"),
        Action.COMPLETE: _("Mark completed"),
        Action.CONFIRM: _("Confirm"),
        Action.DISPUTE: _("Dispute"),
        Action.CANCEL: _("Cancel request"),
        Action.RESOLVE_CONFIRM: _("Resolve: confirm the work"),
        Action.RESOLVE_REWORK: _("Resolve: resume the work"),
        Action.REMATCH: _("Look for a provider again"),
    }
    return labels.get(action, action.value)


# Actions drawn as buttons on a request screen; the others (assigning by hand, the recovery
# menus) have screens of their own.
DRAWN = (
    Action.START, Action.COMPLETE, Action.CONFIRM, Action.DISPUTE, Action.RESOLVE_CONFIRM,
    Action.RESOLVE_REWORK, Action.REMATCH, Action.CANCEL,
)


def state_label(state: State) -> str:
    return _(STATE_LABELS[state])


def local_time(moment: datetime, timezone: str) -> str:
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError):
        zone = ZoneInfo("UTC")
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def may_see(view: RequestView, user: UserView) -> bool:
    """Its two parties, and the people who run the desk."""
    return view.party_of(user.id) is not None or user.is_admin or "operator" in user.roles


def request_text(view: RequestView, user: UserView, timezone: str, note: str = "") -> str:
    language = user.language
    lines = []
    if note:
        lines += [note, ""]
    title = _("Request #{id}: {service} in {area}").format(
        id=view.id, service=escape(view.service_type.name(language)),
        area=escape(view.area.name(language)),
    )
    lines.append(f"<b>{title}</b>")
    lines.append(_("State: {state} (since {at})").format(
        state=state_label(view.state), at=local_time(view.state_entered_at, timezone)
    ))
    if view.assignee_name:
        lines.append(_("Provider: {name}").format(name=escape(view.assignee_name)))
    if view.party_of(user.id) is not None or user.is_admin:
        lines.append(_("Requester: {name}").format(name=escape(view.requester_name)))
    if view.address_visible_to(user.id) or user.is_admin:
        lines.append(_("Address: {address}").format(address=escape(view.address)))
    if view.time_window:
        lines.append(_("When: {window}").format(window=escape(view.time_window)))
    if view.urgent:
        lines.append(_("Urgent"))
    if view.description:
        lines.append(_("Description: {text}").format(text=escape(view.description)))
    if view.photos:
        lines.append(_("Photos: {count}").format(count=len(view.photos)))
    if view.matching_tier and (user.is_admin or view.party_of(user.id) is not None):
        tier = TIER_LABELS.get(view.matching_tier)
        if tier is not None:
            lines.append(_("Provider found: {tier}").format(tier=_(tier)))
    return "\n".join(lines)


def request_keyboard(view: RequestView, user: UserView) -> InlineKeyboardMarkup:
    allowed = set(view.actions_for(user.id, user.roles))
    buttons: list[tuple[str, CallbackData]] = []
    if view.state is State.IN_PROGRESS and view.party_of(user.id) is not None and (
        view.assignee_user_id == user.id
    ):
        buttons.append((_("Record parts used"), PartsStart(request=view.id)))
    buttons += [
        (action_label(a), RequestAct(action=a.value, request=view.id, version=view.version))
        for a in DRAWN
        if a in allowed
    ]
    if view.can_message(user.id):
        buttons.append((_("Message"), RelayStart(request=view.id)))
    if view.photos:
        buttons.append((_("Show photos"), ShowPhotos(request=view.id)))
    return one_per_row(buttons)


def offer_text(offer: OfferView, user: UserView) -> str:
    view = offer.request
    language = user.language
    title = _("Job offer #{id}: {service} in {area}").format(
        id=view.id, service=escape(view.service_type.name(language)),
        area=escape(view.area.name(language)),
    )
    lines = [f"<b>{title}</b>"]
    if view.urgent:
        lines.append(_("Urgent"))
    if view.time_window:
        lines.append(_("When: {window}").format(window=escape(view.time_window)))
    if view.description:
        lines.append(_("Description: {text}").format(text=escape(view.description)))
    if view.photos:
        lines.append(_("Photos: {count}").format(count=len(view.photos)))
    lines.append(_("You will see the address once you accept."))
    return "\n".join(lines)


def offer_keyboard(offer: OfferView) -> InlineKeyboardMarkup:
    return one_per_row([
        (_("Accept"), OfferAnswer(answer="a", offer=offer.id)),
        (_("Decline"), OfferAnswer(answer="d", offer=offer.id)),
    ])


def open_button(view: RequestView, user: UserView) -> tuple[str, CallbackData]:
    text = _("#{id} {service}: {state}").format(
        id=view.id, service=view.service_type.name(user.language), state=state_label(view.state)
    )
    return text, OpenRequest(request=view.id)


def refusal(exc: WorkflowError) -> str:
    """A refusal in the user's language (the update's)."""
    return _(exc.user_message).format(**exc.params) if exc.params else _(exc.user_message)


async def show(
    query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """Redraw the message the button was on (or send a new one if it cannot be edited)."""
    if isinstance(query.message, Message) and query.message.text is not None:
        try:
            await query.message.edit_text(text, reply_markup=markup)
        except TelegramBadRequest as exc:
            if "message is not modified" not in exc.message:
                raise
            log.debug("request screen already up to date")
        return
    await query.bot.send_message(query.from_user.id, text, reply_markup=markup)  # type: ignore[union-attr]


async def refuse(
    query: CallbackQuery, exc: WorkflowError, user: UserView, timezone: str
) -> None:
    """Answer a refused button with the reason; when the refusal carries the request as it is
    now (a stale version, a state that moved on), redraw the screen with it."""
    await query.answer(refusal(exc), show_alert=True)
    current: RequestView | None = getattr(exc, "current", None)
    if current is not None:
        await show(query, request_text(current, user, timezone), request_keyboard(current, user))


async def send_photos(message_target: Message | CallbackQuery, photos: tuple[str, ...]) -> None:
    bot = message_target.bot
    chat_id = message_target.from_user.id  # type: ignore[union-attr]
    if bot is None or not photos:
        return
    if len(photos) == 1:
        await bot.send_photo(chat_id, photos[0])
        return
    await bot.send_media_group(chat_id, [InputMediaPhoto(media=p) for p in photos[:10]])
